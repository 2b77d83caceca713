"""The training loss of a step: the model's own losses, optionally plus distillation.

The trainer calls ``loss(model, images, targets) -> dict of scalar losses`` inside its
autocast region and sums the values. :class:`ModelLoss` is the plain case (the model's
train-mode output); :class:`DistillationLoss` adds ``loss_distill``, Hinton et al. 2015
knowledge distillation on class logits taken through the detector protocol
(:meth:`detkit.models.detectors.protocol.DetkitDetector.distillation_logits`):

    loss_distill = weight * T^2 * KL(softmax(t / T) || softmax(s / T))

averaged over the logit rows (dense detectors: every anchor; two-stage: the R-CNN rows of the
ground-truth boxes), with the teacher in eval mode and without gradient.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detkit.engine.ema import unwrap

__all__ = ["DistillationLoss", "ModelLoss", "flat_logits"]


def flat_logits(x: Tensor | Sequence[Tensor]) -> Tensor:
    """Class logits as [N, C]: a tensor [..., C] or a list of per-level tensors [..., C]."""
    if isinstance(x, list | tuple):
        return torch.cat([t.reshape(-1, t.shape[-1]) for t in x], dim=0)
    return x.reshape(-1, x.shape[-1])


class ModelLoss:
    """``dict(model(images, targets))``: the model's own training losses."""

    teacher: nn.Module | None = None

    def __call__(self, model: nn.Module, images: list[Tensor],
                 targets: list[dict[str, Any]]) -> dict[str, Tensor]:
        """The losses of one batch (train mode)."""
        return dict(model(images, targets))


def _family(model: nn.Module) -> str:
    from detkit.models.detectors.protocol import DetkitDetector

    return model.distillation_kind if isinstance(model, DetkitDetector) else ""


class DistillationLoss(ModelLoss):
    """The model's losses plus ``loss_distill`` from a frozen ``teacher`` (module docstring).

    Raises ValueError unless student and teacher are detkit detectors of the same
    distillation family.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, weight: float = 1.0,
                 temperature: float = 4.0) -> None:
        kind = _family(unwrap(student))
        if not kind or kind != _family(teacher):
            raise ValueError(f"distillation needs student and teacher of the same family "
                             f"(both 'dense' or both 'roi'); got {type(unwrap(student)).__name__}"
                             f" ({kind or 'none'}) and {type(teacher).__name__} "
                             f"({_family(teacher) or 'none'})")
        self.teacher = teacher.eval()
        self.weight = float(weight)
        self.temperature = float(temperature)

    def distill(self, student: nn.Module, images: list[Tensor],
                targets: Sequence[Mapping[str, Tensor]]) -> Tensor:
        """``weight * distillation_loss(student logits, teacher logits, T)``."""
        from detkit.losses import distillation_loss

        with torch.no_grad():
            t = flat_logits(self.teacher.distillation_logits(images, targets))
        s = flat_logits(student.distillation_logits(images, targets))
        if s.shape != t.shape:
            raise ValueError(f"distillation: student logits {tuple(s.shape)} and teacher "
                             f"logits {tuple(t.shape)} differ; use matching class counts/heads")
        return distillation_loss(s.float(), t.float(), self.temperature) * self.weight

    def __call__(self, model: nn.Module, images: list[Tensor],
                 targets: list[dict[str, Any]]) -> dict[str, Tensor]:
        """The model's losses and ``loss_distill`` (the student seen through DDP)."""
        losses = super().__call__(model, images, targets)
        losses["loss_distill"] = self.distill(unwrap(model), images, targets)
        return losses
