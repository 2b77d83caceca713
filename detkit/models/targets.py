"""Training targets of every detkit detector: one validator, one zero-area-box policy.

A training target is a mapping with ``boxes`` ``Tensor[N, 4]`` (x1, y1, x2, y2, input pixels)
and ``labels`` ``Tensor[N]`` in 1..K, plus optional per-box entries (``weights``, ``area``,
``iscrowd``, ``masks``) aligned with the boxes and per-image entries (``ignore_boxes``, ...).

:func:`validate_targets` is called by the dense detector's loss and by ThunderNet before any
loss is computed. Its policy:

* malformed targets raise ``ValueError`` naming the image: missing keys, shapes other than
  [N, 4] / [N], labels outside 1..K, inverted boxes (x2 < x1 or y2 < y1);
* zero-area boxes (x2 == x1 or y2 == y1, which detkit's dataset validation removes but a
  custom dataset or augmentation may produce) are dropped with one
  :class:`DegenerateBoxWarning` per batch. Such a box has IoU 0 with every anchor and
  proposal, so no matcher can assign it: dropping it leaves the dense detector's losses
  exactly as they were, and keeps a two-stage head from pooling an empty region;
* SNIP (:mod:`detkit.models.snip`): a target with a ``valid_range`` entry ``(low, high)``
  (written by the multi-scale resizer) keeps as ground truth only the boxes whose size
  ``sqrt(w * h)`` lies in ``[low, high)``; the others leave every per-box entry and are
  appended to ``invalid_boxes`` ``Tensor[M, 4]``, which the matchers ignore anchors around.
  The step is idempotent, so validating twice changes nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from detkit.models.snip import in_valid_range

__all__ = ["PER_BOX_KEYS", "DegenerateBoxWarning", "select_boxes", "validate_targets"]

# entries of a target indexed like ``boxes`` (row i describes box i)
PER_BOX_KEYS = ("boxes", "labels", "weights", "area", "iscrowd", "masks")


class DegenerateBoxWarning(UserWarning):
    """Ground-truth boxes of zero width or height: no anchor can match them (IoU 0)."""


def _check_one(i: int, target: Mapping[str, Any], num_classes: int) -> Tensor:
    """Raise for a malformed target ``i``; return its zero-area mask ``Tensor[N]`` (bool)."""
    if "boxes" not in target or "labels" not in target:
        raise ValueError(f"target {i} needs 'boxes' and 'labels', has {sorted(target)}")
    boxes, labels = target["boxes"], target["labels"]
    if boxes.dim() != 2 or boxes.shape[1] != 4 or labels.shape != boxes.shape[:1]:
        raise ValueError(f"target {i}: boxes {tuple(boxes.shape)} / labels "
                         f"{tuple(labels.shape)}; expected [N, 4] and [N]")
    if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) > num_classes):
        raise ValueError(f"target {i}: labels must be in 1..{num_classes}, got "
                         f"{int(labels.min())}..{int(labels.max())}")
    if boxes.numel() and bool((boxes[:, 2:] < boxes[:, :2]).any()):
        raise ValueError(f"target {i}: boxes must be (x1, y1, x2, y2) with x2 >= x1, y2 >= y1")
    return (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)


def select_boxes(target: Mapping[str, Any], keep: Tensor) -> dict[str, Any]:
    """A copy of ``target`` whose per-box entries (:data:`PER_BOX_KEYS`) keep the rows where
    ``keep`` (``Tensor[N]`` bool) is True; per-image entries are shared, not copied."""
    n = keep.shape[0]
    return {k: (v[keep] if k in PER_BOX_KEYS and isinstance(v, Tensor)
                and v.dim() > 0 and v.shape[0] == n else v)
            for k, v in target.items()}


def _split_invalid(target: Mapping[str, Any], degenerate: Tensor) -> dict[str, Any]:
    """SNIP: boxes outside ``target["valid_range"]`` moved to ``invalid_boxes``; zero-area
    boxes dropped (``degenerate`` ``Tensor[N]`` bool)."""
    boxes = target["boxes"]
    valid = in_valid_range(boxes, target["valid_range"])
    invalid = boxes[~degenerate & ~valid].to(boxes.dtype).reshape(-1, 4)
    out = select_boxes(target, ~degenerate & valid)
    before = target.get("invalid_boxes")
    if before is not None:
        invalid = torch.cat([torch.as_tensor(before).to(invalid).reshape(-1, 4), invalid])
    out["invalid_boxes"] = invalid
    return out


def validate_targets(targets: Sequence[Mapping[str, Any]], num_classes: int
                     ) -> list[Mapping[str, Any]]:
    """Check training targets, drop their zero-area boxes and, for targets with a
    ``valid_range``, move the boxes outside it to ``invalid_boxes`` (module docstring).

    Returns the targets in order: the same objects where nothing was dropped and no
    ``valid_range`` is set, else a copy whose per-box entries (:data:`PER_BOX_KEYS`) keep only
    the remaining boxes.
    """
    out: list[Mapping[str, Any]] = []
    dropped = 0
    for i, target in enumerate(targets):
        degenerate = _check_one(i, target, num_classes)
        count = int(degenerate.sum())
        dropped += count
        if target.get("valid_range") is not None:
            out.append(_split_invalid(target, degenerate))
        elif count == 0:
            out.append(target)
        else:
            out.append(select_boxes(target, ~degenerate))
    if dropped:
        warnings.warn(f"{dropped} zero-area ground-truth box(es) in this batch dropped: no "
                      "anchor or proposal can match them (remove them in the data pipeline)",
                      DegenerateBoxWarning, stacklevel=3)
    return out
