"""IoU-family box regression losses on matched pairs of xyxy boxes.

The functions take ``boxes1 [N, 4]`` (predictions) and ``boxes2 [N, 4]``
(targets) in (x1, y1, x2, y2) and are call-compatible with
``torchvision.ops.{generalized,distance,complete}_box_iou_loss``:
``(boxes1, boxes2, reduction="none", eps=1e-7)``.

- IoU loss  = 1 - IoU
- GIoU loss = 1 - IoU + (|C| - |A ∪ B|) / |C|           (Rezatofighi et al. 2019)
- DIoU loss = 1 - IoU + rho^2(b, b_gt) / c^2            (Zheng et al. 2020)
- CIoU loss = DIoU loss + alpha * v,
  v = 4 / pi^2 * (atan(w_gt / h_gt) - atan(w / h))^2,
  alpha = v / ((1 - IoU) + v), computed without gradient as in the authors'
  code and torchvision (Zheng et al. 2020)

Half precision and integer inputs are computed in float32. An empty input
with ``reduction="mean"`` or ``"sum"`` returns a zero that still carries a
gradient; an unknown ``reduction`` raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.ops.boxes import _iou_terms, aspect_term, shifted_divisor

__all__ = ["iou_loss", "giou_loss", "diou_loss", "ciou_loss", "IoULoss", "box_loss_fn"]

_REDUCTIONS = ("none", "mean", "sum")


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    """Apply ``reduction`` ("none" | "mean" | "sum"); empty "mean" gives a zero with grad."""
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"unknown reduction {reduction!r}; valid: {', '.join(_REDUCTIONS)}")


def _check(boxes1: Tensor, boxes2: Tensor, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; valid: {', '.join(_REDUCTIONS)}")
    if boxes1.shape != boxes2.shape:
        raise ValueError(
            f"box losses need boxes1 and boxes2 of one shape, got {tuple(boxes1.shape)} "
            f"and {tuple(boxes2.shape)}"
        )


def iou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """1 - IoU for matched xyxy boxes ``[N, 4]`` -> ``[N]`` (or a scalar when reduced)."""
    _check(boxes1, boxes2, reduction)
    iou = _iou_terms(boxes1, boxes2, eps)[0]
    return reduce_loss(1 - iou, reduction)


def giou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """GIoU loss 1 - IoU + (|C| - |A ∪ B|) / |C| (Rezatofighi et al. 2019), xyxy ``[N, 4]``."""
    _check(boxes1, boxes2, reduction)
    iou, union, enclose, *_ = _iou_terms(boxes1, boxes2, eps)
    return reduce_loss(1 - iou + (enclose - union) / shifted_divisor(enclose, eps), reduction)


def diou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """DIoU loss 1 - IoU + rho^2 / c^2 (Zheng et al. 2020) for matched xyxy boxes ``[N, 4]``."""
    _check(boxes1, boxes2, reduction)
    iou, _, _, dist, *_ = _iou_terms(boxes1, boxes2, eps)
    return reduce_loss(1 - iou + dist, reduction)


def ciou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """CIoU loss = DIoU loss + alpha * v (Zheng et al. 2020), alpha without gradient.

    ``boxes1`` are predictions and ``boxes2`` targets, both ``[N, 4]`` xyxy;
    v = 4 / pi^2 * (atan(w_gt / h_gt) - atan(w / h))^2 and
    alpha = v / ((1 - IoU) + v + eps).
    """
    _check(boxes1, boxes2, reduction)
    iou, _, _, dist, w1, h1, w2, h2 = _iou_terms(boxes1, boxes2, eps)
    v = aspect_term(w1, h1, w2, h2, eps)
    with torch.no_grad():
        alpha = v / ((1 - iou) + v + eps)
    return reduce_loss(1 - iou + dist + alpha * v, reduction)


def _smooth_l1(boxes1: Tensor, boxes2: Tensor, reduction: str = "none", beta: float = 1.0 / 9):
    """Smooth-L1 summed over the 4 coordinates -> ``[N]`` (for box deltas, not IoU)."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; valid: {', '.join(_REDUCTIONS)}")
    loss = F.smooth_l1_loss(boxes1.float(), boxes2.float(), reduction="none", beta=beta).sum(-1)
    return reduce_loss(loss, reduction)


_LOSSES: dict[str, Callable[..., Tensor]] = {
    "iou": iou_loss,
    "giou": giou_loss,
    "diou": diou_loss,
    "ciou": ciou_loss,
    "smooth_l1": _smooth_l1,
}


def box_loss_fn(kind: str) -> Callable[..., Tensor]:
    """The box loss callable for ``kind`` in smooth_l1 | iou | giou | diou | ciou.

    IoU kinds take decoded xyxy boxes; "smooth_l1" is meant for encoded deltas
    (it sums over the 4 coordinates, beta = 1/9 by default).
    Every callable has the signature ``(boxes1, boxes2, reduction="none") -> Tensor``.
    """
    if kind not in _LOSSES:
        raise ValueError(f"unknown box loss {kind!r}; valid: {', '.join(sorted(_LOSSES))}")
    return _LOSSES[kind]


class IoULoss(nn.Module):
    """Module form of the IoU-family losses with per-box weights and a ``loss_weight``.

    ``forward(pred [N, 4], target [N, 4], weight [N] | None) -> Tensor``: the
    per-box losses are multiplied by ``weight`` (e.g. mixup ratios), reduced
    ("mean" divides by N, so weights below 1 lower a box's share), then
    multiplied by ``loss_weight``.
    """

    def __init__(
        self,
        kind: str = "ciou",
        reduction: str = "mean",
        loss_weight: float = 1.0,
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        if kind not in ("iou", "giou", "diou", "ciou"):
            raise ValueError(f"unknown IoU loss {kind!r}; valid: ciou, diou, giou, iou")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; valid: {', '.join(_REDUCTIONS)}")
        self.kind, self.reduction, self.loss_weight, self.eps = kind, reduction, loss_weight, eps

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        loss = _LOSSES[self.kind](pred, target, reduction="none", eps=self.eps)
        if weight is not None:
            if weight.shape != loss.shape:
                raise ValueError(
                    f"weight must have shape {tuple(loss.shape)}, got {tuple(weight.shape)}"
                )
            loss = loss * weight
        return self.loss_weight * reduce_loss(loss, self.reduction)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, reduction={self.reduction}, loss_weight={self.loss_weight}"
