"""SNIP scale-aware training and testing (Singh & Davis, "An Analysis of Scale Invariance in
Object Detection - SNIP", CVPR 2018).

With multi-scale training, a detector is asked to find very small objects in the smallest
images and very large ones in the largest, sizes far from those it sees at other scales.
SNIP gives every training scale a *valid range* of object sizes: at that scale only the
objects whose size lies in the range are trained as ground truth; the others are *invalid*
and ignored, neither positive nor negative. At test time, each scale of an image pyramid
keeps only the detections whose size lies in its range before the scales are merged.

Conventions used throughout detkit:

* an object's size is ``sqrt(w * h)`` of its xyxy box, **in the pixels of the network
  input** at that scale (the resized training image; the letterboxed pyramid level), which
  is what the anchors and receptive fields see;
* a valid range ``(low, high)`` is half-open: ``low <= size < high`` (``high`` may be
  ``inf``); adjacent ranges thus split the sizes without overlap, overlapping ones (as in
  the paper) give an object to several scales.

Training: :class:`detkit.data.multiscale.MultiScaleResizer` writes the drawn scale's range
into each target as ``valid_range``; :func:`detkit.models.targets.validate_targets` moves the
boxes outside it to ``invalid_boxes``; the matcher (:class:`detkit.models.matching.Matcher`)
turns every anchor / RoI that is not positive and overlaps an invalid box with IoU at or above
its negative threshold into an ignored one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from detkit.ops.boxes import box_area

__all__ = ["ValidRange", "box_sizes", "in_valid_range", "keep_in_valid_range",
           "valid_range_of"]

ValidRange = tuple[float, float]


def valid_range_of(value: Sequence[float]) -> ValidRange:
    """``(low, high)`` floats from a two-element sequence; raises ValueError unless
    ``0 <= low < high`` (``high`` may be ``inf``)."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"a valid range must be [min, max], got {value!r}") from None
    if math.isnan(low) or math.isnan(high) or not 0.0 <= low < high or math.isinf(low):
        raise ValueError(f"a valid range [min, max] needs 0 <= min < max, got {value!r}")
    return low, high


def box_sizes(boxes: Tensor) -> Tensor:
    """``Tensor[N]``: ``sqrt(w * h)`` of xyxy ``boxes`` ``Tensor[N, 4]`` (float32 at least)."""
    return torch.sqrt(box_area(boxes.reshape(-1, 4)))


def in_valid_range(boxes: Tensor, valid_range: Sequence[float]) -> Tensor:
    """``Tensor[N]`` bool: ``low <= sqrt(w * h) < high`` for xyxy ``boxes`` ``Tensor[N, 4]``."""
    low, high = valid_range_of(valid_range)
    sizes = box_sizes(boxes)
    return (sizes >= low) & (sizes < high)


def keep_in_valid_range(det: Mapping[str, Tensor], valid_range: Sequence[float] | None
                        ) -> dict[str, Tensor]:
    """One pyramid level's detections restricted to its valid range (SNIP's test rule).

    ``det``: ``boxes`` ``Tensor[D, 4]`` xyxy in that level's input pixels, plus ``scores`` and
    ``labels`` ``Tensor[D]`` (and any other per-detection entry of length D). Returns a new
    dict with the detections whose box size lies in ``valid_range``; None keeps them all.
    """
    if valid_range is None:
        return dict(det)
    keep = in_valid_range(det["boxes"], valid_range)
    n = keep.shape[0]
    return {k: v[keep] if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == n else v
            for k, v in det.items()}
