"""Exponential moving average of model weights (Polyak averaging), as in YOLOX / timm.

After each optimizer step: ``ema = d * ema + (1 - d) * model`` for floating-point parameters
and buffers; integer buffers (e.g. BatchNorm's num_batches_tracked) are copied. With
``tau > 0`` the decay ramps up as ``d_t = decay * (1 - exp(-t / tau))`` (t = update count),
so early, poor weights fade quickly.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """Return the module inside a DistributedDataParallel / DataParallel wrapper."""
    return model.module if hasattr(model, "module") and isinstance(
        model, nn.parallel.DistributedDataParallel | nn.DataParallel) else model


class ModelEMA:
    """Keeps an eval-mode copy of ``model`` whose weights are the EMA of the trained ones."""

    def __init__(self, model: nn.Module, decay: float = 0.9998, tau: float = 2000.0,
                 updates: int = 0) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates

    def current_decay(self) -> float:
        """Decay used by the next update: ``decay * (1 - exp(-updates / tau))`` or ``decay``."""
        if self.tau <= 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current weights."""
        self.updates += 1
        d = self.current_decay()
        source = unwrap(model).state_dict()
        for name, value in self.module.state_dict().items():
            new = source[name].detach()
            if value.dtype.is_floating_point:
                value.mul_(d).add_(new.to(value.dtype), alpha=1.0 - d)
            else:
                value.copy_(new)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and primitives only: {"module": state_dict, "updates": int}."""
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the averaged weights and the update count."""
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
