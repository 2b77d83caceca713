"""Knowledge distillation loss (Hinton et al., "Distilling the Knowledge in a Neural
Network", 2015)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["distillation_loss"]


def distillation_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0
) -> Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) * T^2, averaged over rows.

    Logits are ``[..., C]``; every leading position is one distribution and
    the result is the mean over them ("batchmean"). The teacher is detached.
    The T^2 factor keeps gradient magnitudes comparable across temperatures.
    An empty input returns a zero that still carries a gradient.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student {tuple(student_logits.shape)} and teacher "
            f"{tuple(teacher_logits.shape)} differ"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    c = student_logits.shape[-1]
    s = student_logits.float().reshape(-1, c) / temperature
    t = teacher_logits.detach().float().reshape(-1, c) / temperature
    if s.shape[0] == 0:
        return 0.0 * student_logits.sum()
    log_ps = torch.log_softmax(s, dim=1)
    log_pt = torch.log_softmax(t, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=1)
    return kl.mean() * temperature**2
