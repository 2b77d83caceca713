"""Cross-entropy with label smoothing as in "Bag of Freebies" (Zhang et al. 2019).

The target distribution puts 1 - epsilon on the true class and spreads
epsilon evenly over the other C - 1 classes:
q_i = 1 - epsilon if i = y else epsilon / (C - 1).
(``torch.nn.CrossEntropyLoss(label_smoothing=e)`` differs: it spreads e over
all C classes, the true one included.)
"""

from __future__ import annotations

import torch
from torch import Tensor

from detkit.ops.iou_loss import reduce_loss

__all__ = ["label_smoothing_cross_entropy"]


def label_smoothing_cross_entropy(
    logits: Tensor,
    target: Tensor,
    epsilon: float = 0.1,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Smoothed cross-entropy of ``logits [N, C]`` against class indices ``target [N]``.

    loss_n = -sum_i q_i * log softmax(logits_n)_i with q as in the module
    docstring; ``weight [N]`` multiplies each sample's loss (e.g. mixup
    ratios) before the reduction ("mean" divides by N). epsilon = 0 gives
    plain cross-entropy.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, C], got {tuple(logits.shape)}")
    num_classes = logits.shape[1]
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
    if num_classes < 2 and epsilon > 0:
        raise ValueError("label smoothing needs at least 2 classes")
    log_p = torch.log_softmax(logits.float(), dim=1)
    off = epsilon / (num_classes - 1) if num_classes > 1 else 0.0
    q = torch.full_like(log_p, off)
    q.scatter_(1, target.long()[:, None], 1.0 - epsilon)
    loss = -(q * log_p).sum(dim=1)
    if weight is not None:
        loss = loss * weight.to(loss.dtype)
    return reduce_loss(loss, reduction)
