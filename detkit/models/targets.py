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
  exactly as they were, and keeps a two-stage head from pooling an empty region.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

__all__ = ["PER_BOX_KEYS", "DegenerateBoxWarning", "validate_targets"]

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


def validate_targets(targets: Sequence[Mapping[str, Any]], num_classes: int
                     ) -> list[Mapping[str, Any]]:
    """Check training targets and drop their zero-area boxes (see the module docstring).

    Returns the targets in order: the same objects where nothing was dropped, else a copy
    whose per-box entries (:data:`PER_BOX_KEYS`) keep only the boxes of positive area.
    """
    out: list[Mapping[str, Any]] = []
    dropped = 0
    for i, target in enumerate(targets):
        degenerate = _check_one(i, target, num_classes)
        count = int(degenerate.sum())
        if count == 0:
            out.append(target)
            continue
        dropped += count
        keep = ~degenerate
        n = len(degenerate)
        out.append({k: (v[keep] if k in PER_BOX_KEYS and isinstance(v, Tensor)
                        and v.dim() > 0 and v.shape[0] == n else v)
                    for k, v in target.items()})
    if dropped:
        warnings.warn(f"{dropped} zero-area ground-truth box(es) in this batch dropped: no "
                      "anchor or proposal can match them (remove them in the data pipeline)",
                      DegenerateBoxWarning, stacklevel=3)
    return out
