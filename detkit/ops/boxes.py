"""Box utilities: formats, area, clipping and the IoU family.

Every function here is pure (inputs are never modified) and works on
``Tensor[N, 4]`` boxes in (x1, y1, x2, y2) absolute coordinates unless a
format argument says otherwise. Pairwise forms return ``Tensor[N, M]``; the
``aligned_*`` forms compare ``boxes1[i]`` with ``boxes2[i]`` and return
``Tensor[N]``. Half precision and integer inputs are computed in float32.

Formulas (``eps`` guards every division; default 1e-7):

- IoU  = |A ∩ B| / (|A ∪ B| + eps)
- GIoU = IoU - (|C| - |A ∪ B|) / (|C| + eps), C the smallest enclosing box
  (a "+ eps" divisor is held at eps where it is within eps of zero, which only
  inverted boxes reach: ``shifted_divisor``)
  (Rezatofighi et al., CVPR 2019)
- DIoU = IoU - rho^2(b, b_gt) / (c^2 + eps), rho the distance between the
  centres, c the diagonal of C (Zheng et al., AAAI 2020)
- CIoU = DIoU - alpha * v, v = 4 / pi^2 * (atan(w2 / h2) - atan(w1 / h1))^2,
  alpha = v / ((1 - IoU) + v + eps) (Zheng et al., AAAI 2020)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "COCO_MEDIUM_AREA",
    "COCO_SMALL_AREA",
    "coco_area_bucket",
    "box_convert",
    "box_area",
    "clip_boxes_to_image",
    "remove_small_boxes",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "complete_box_iou",
    "aligned_box_iou",
    "aligned_generalized_box_iou",
    "aligned_distance_box_iou",
    "aligned_complete_box_iou",
]

# COCO size buckets, in pixels^2: small < 32^2 <= medium < 96^2 <= large
COCO_SMALL_AREA = 32.0**2
COCO_MEDIUM_AREA = 96.0**2


def coco_area_bucket(area: float) -> str:
    """COCO size bucket of a box area in pixels^2: small < 32^2 <= medium < 96^2 <= large."""
    if area < COCO_SMALL_AREA:
        return "small"
    return "medium" if area < COCO_MEDIUM_AREA else "large"

_FORMATS = ("xyxy", "xywh", "cxcywh")


def upcast(t: Tensor) -> Tensor:
    """Return ``t`` as float32 when it is half, bfloat16 or integer; else unchanged."""
    if t.dtype in (torch.float32, torch.float64):
        return t
    return t.float()


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert ``Tensor[..., 4]`` boxes between "xyxy", "xywh" and "cxcywh".

    xywh is (x1, y1, width, height) as in COCO; cxcywh is (centre x, centre y,
    width, height). Returns a new tensor.
    """
    for fmt in (in_fmt, out_fmt):
        if fmt not in _FORMATS:
            raise ValueError(f"unknown box format {fmt!r}; valid formats: {', '.join(_FORMATS)}")
    if in_fmt == out_fmt:
        return boxes.clone()
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        x1, y1, x2, y2 = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        x1, y1, x2, y2 = a - c / 2, b - d / 2, a + c / 2, b + d / 2
    else:
        x1, y1, x2, y2 = a, b, c, d
    if out_fmt == "xyxy":
        out = (x1, y1, x2, y2)
    elif out_fmt == "xywh":
        out = (x1, y1, x2 - x1, y2 - y1)
    else:
        out = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
    return torch.stack(out, dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``Tensor[..., 4]`` xyxy boxes -> ``Tensor[...]`` (negative sides count as 0)."""
    boxes = upcast(boxes)
    w = (boxes[..., 2] - boxes[..., 0]).clamp(min=0)
    h = (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    return w * h


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip ``Tensor[N, 4]`` xyxy boxes to an image of ``size = (height, width)``."""
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (``Tensor[K]`` int64) of xyxy boxes whose both sides are >= ``min_size``."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return torch.where((w >= min_size) & (h >= min_size))[0]


def _iou_terms(b1: Tensor, b2: Tensor, eps: float) -> tuple[Tensor, ...]:
    """Broadcast ``b1``, ``b2`` (``[..., 4]`` xyxy) and return the shared terms.

    Returns (iou, union, enclosing area, rho^2 / (c^2 + eps), w1, h1, w2, h2).
    """
    b1, b2 = upcast(b1), upcast(b2)
    x1, y1, x2, y2 = b1.unbind(-1)
    x1g, y1g, x2g, y2g = b2.unbind(-1)
    w1, h1 = x2 - x1, y2 - y1
    w2, h2 = x2g - x1g, y2g - y1g
    iw = (torch.minimum(x2, x2g) - torch.maximum(x1, x1g)).clamp(min=0)
    ih = (torch.minimum(y2, y2g) - torch.maximum(y1, y1g)).clamp(min=0)
    inter = iw * ih
    union = w1 * h1 + w2 * h2 - inter
    iou = inter / shifted_divisor(union, eps)
    cw = torch.maximum(x2, x2g) - torch.minimum(x1, x1g)
    ch = torch.maximum(y2, y2g) - torch.minimum(y1, y1g)
    rho2 = ((x1 + x2 - x1g - x2g) ** 2 + (y1 + y2 - y1g - y2g) ** 2) / 4
    dist = rho2 / (cw**2 + ch**2 + eps)
    return iou, union, cw * ch, dist, w1, h1, w2, h2


def shifted_divisor(t: Tensor, eps: float) -> Tensor:
    """``t + eps``, held at ``eps`` where it lies within ``eps`` of zero.

    For the non-negative quantities of valid boxes this is just ``t + eps``;
    inverted boxes (x2 < x1) can make a height, union or enclosing area
    negative, and the hold keeps such a divisor away from exactly zero.
    """
    shifted = t + eps
    return torch.where(shifted.abs() < eps, torch.full_like(shifted, eps), shifted)


def aspect_term(w1: Tensor, h1: Tensor, w2: Tensor, h2: Tensor, eps: float) -> Tensor:
    """CIoU's v = 4 / pi^2 * (atan(w2 / h2) - atan(w1 / h1))^2 (eps guards h = 0).

    Each height is shifted by ``eps`` (:func:`shifted_divisor`), so the value
    and the gradient stay finite for every finite box, h = -eps included.
    """
    diff = torch.atan(w2 / shifted_divisor(h2, eps)) - torch.atan(w1 / shifted_divisor(h1, eps))
    return (4 / math.pi**2) * diff**2


def _giou(b1: Tensor, b2: Tensor, eps: float) -> Tensor:
    iou, union, enclose, *_ = _iou_terms(b1, b2, eps)
    return iou - (enclose - union) / shifted_divisor(enclose, eps)


def _diou(b1: Tensor, b2: Tensor, eps: float) -> Tensor:
    iou, _, _, dist, *_ = _iou_terms(b1, b2, eps)
    return iou - dist


def _ciou(b1: Tensor, b2: Tensor, eps: float) -> Tensor:
    iou, _, _, dist, w1, h1, w2, h2 = _iou_terms(b1, b2, eps)
    v = aspect_term(w1, h1, w2, h2, eps)
    alpha = v / ((1 - iou) + v + eps)
    return iou - dist - alpha * v


def _check_aligned(boxes1: Tensor, boxes2: Tensor) -> None:
    if boxes1.shape != boxes2.shape:
        raise ValueError(
            f"aligned IoU needs boxes of the same shape, got {tuple(boxes1.shape)} "
            f"and {tuple(boxes2.shape)}"
        )


def box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise IoU of xyxy ``boxes1 [N, 4]`` and ``boxes2 [M, 4]`` -> ``[N, M]``."""
    return _iou_terms(boxes1[:, None, :], boxes2[None, :, :], eps)[0]


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise GIoU (Rezatofighi et al. 2019) of xyxy boxes -> ``[N, M]`` in [-1, 1]."""
    return _giou(boxes1[:, None, :], boxes2[None, :, :], eps)


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise DIoU (Zheng et al. 2020) = IoU - rho^2 / c^2 of xyxy boxes -> ``[N, M]``."""
    return _diou(boxes1[:, None, :], boxes2[None, :, :], eps)


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise CIoU (Zheng et al. 2020) = DIoU - alpha * v of xyxy boxes -> ``[N, M]``."""
    return _ciou(boxes1[:, None, :], boxes2[None, :, :], eps)


def aligned_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """IoU of ``boxes1[i]`` with ``boxes2[i]`` (both ``[N, 4]`` xyxy) -> ``[N]``."""
    _check_aligned(boxes1, boxes2)
    return _iou_terms(boxes1, boxes2, eps)[0]


def aligned_generalized_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """GIoU of ``boxes1[i]`` with ``boxes2[i]`` (both ``[N, 4]`` xyxy) -> ``[N]``."""
    _check_aligned(boxes1, boxes2)
    return _giou(boxes1, boxes2, eps)


def aligned_distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """DIoU of ``boxes1[i]`` with ``boxes2[i]`` (both ``[N, 4]`` xyxy) -> ``[N]``."""
    _check_aligned(boxes1, boxes2)
    return _diou(boxes1, boxes2, eps)


def aligned_complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """CIoU of ``boxes1[i]`` with ``boxes2[i]`` (both ``[N, 4]`` xyxy) -> ``[N]``."""
    _check_aligned(boxes1, boxes2)
    return _ciou(boxes1, boxes2, eps)
