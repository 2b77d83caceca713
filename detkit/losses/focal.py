"""Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from detkit.ops.iou_loss import reduce_loss

__all__ = ["sigmoid_focal_loss"]


def sigmoid_focal_loss(
    inputs: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    """FL(p_t) = -alpha_t * (1 - p_t)^gamma * log(p_t), element-wise.

    inputs: logits of any shape; targets: same shape, values in [0, 1]
    (1 for the true class). p_t = p if t = 1 else 1 - p with p = sigmoid(x);
    alpha_t = alpha * t + (1 - alpha) * (1 - t); a negative ``alpha``
    disables the weighting. Half precision is computed in float32.
    """
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} differ")
    x = inputs.float()
    t = targets.to(x.dtype)
    p = x.sigmoid()
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return reduce_loss(loss, reduction)
