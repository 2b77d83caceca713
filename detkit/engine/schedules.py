"""Learning-rate schedules by iteration: warmup, then cosine or step decay.

Follows "Bag of Tricks for Image Classification" (He et al. 2019) and "Bag of Freebies for
Training Object Detection Neural Networks" (Zhang et al. 2019): a linear (or constant) warmup
over the first ``warmup_iters`` iterations, then cosine decay over the remaining iterations
(or step decay at milestones), and the linear scaling rule for the base learning rate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch.optim import Optimizer


def scaled_lr(base_lr: float, total_batch_size: int, base_batch_size: int) -> float:
    """Linear scaling rule (Goyal et al. 2017): ``base_lr * total_batch / base_batch``."""
    if total_batch_size <= 0 or base_batch_size <= 0:
        raise ValueError(f"batch sizes must be positive, got total={total_batch_size}, "
                         f"base={base_batch_size}")
    return base_lr * total_batch_size / base_batch_size


@dataclass(frozen=True)
class ScheduleSpec:
    """Shape of the LR multiplier over ``max_iters`` iterations.

    warmup: "linear" (factor rises from ``warmup_factor`` to 1 at ``warmup_iters``),
    "constant" (``warmup_factor`` until ``warmup_iters``) or "none".
    decay: "cosine" (from 1 at the end of warmup to ``min_lr_ratio`` at ``max_iters``),
    "step" (times ``gamma`` at each milestone iteration) or "none".
    """

    max_iters: int
    warmup: str = "linear"
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    decay: str = "cosine"
    milestones: Sequence[int] = field(default_factory=tuple)
    gamma: float = 0.1
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup not in ("linear", "constant", "none"):
            raise ValueError(f"unknown warmup {self.warmup!r}; use linear, constant or none")
        if self.decay not in ("cosine", "step", "none"):
            raise ValueError(f"unknown decay {self.decay!r}; use cosine, step or none")
        if self.max_iters <= 0:
            raise ValueError(f"max_iters must be positive, got {self.max_iters}")
        if self.warmup_iters < 0:
            raise ValueError(f"warmup_iters must be >= 0, got {self.warmup_iters}")


class ScheduleWarning(UserWarning):
    """A schedule that runs but is probably not what was meant (e.g. warmup as long as the run)."""


def check_warmup(spec: ScheduleSpec) -> bool:
    """Warn (:class:`ScheduleWarning`) when warmup lasts as long as the run or longer.

    Then the learning rate never reaches ``base_lr`` and cosine / step decay never starts: a
    preset's ``warmup_iters: 200`` on a 72-iteration run trained at a fraction of its LR.
    Returns True when it warned.
    """
    if spec.warmup == "none" or spec.warmup_iters < spec.max_iters:
        return False
    warnings.warn(
        f"ScheduleWarning: warmup lasts {spec.warmup_iters} iterations but the run has "
        f"{spec.max_iters}: the LR never reaches base_lr and the decay never starts; give "
        "schedule.warmup_epochs (or a smaller schedule.warmup_iters)",
        ScheduleWarning, stacklevel=2)
    return True


def warmup_iterations(warmup_iters: int, warmup_epochs: float | None, iters_per_epoch: int,
                      warmup_fraction: float | None = None, max_iters: int = 0) -> int:
    """Warmup length in iterations, from the first of these that is given:
    ``warmup_fraction`` of the run (``round(fraction * max_iters)``: 0.1 of 300 = 30), then
    ``warmup_epochs`` (``round(epochs * iters_per_epoch)``: 2 epochs of 25 = 50), else
    ``warmup_iters``. The first two carry from one dataset (or budget) to another."""
    if warmup_fraction is not None:
        if not (math.isfinite(warmup_fraction) and 0 <= warmup_fraction <= 1):
            raise ValueError(f"schedule.warmup_fraction must be in [0, 1], got {warmup_fraction}")
        return int(round(warmup_fraction * max_iters))
    if warmup_epochs is None:
        return int(warmup_iters)
    if not (math.isfinite(warmup_epochs) and warmup_epochs >= 0):
        raise ValueError(f"schedule.warmup_epochs must be >= 0, got {warmup_epochs}")
    return int(round(warmup_epochs * iters_per_epoch))


def decay_factor(it: int, spec: ScheduleSpec) -> float:
    """Decay multiplier at iteration ``it`` (ignoring warmup)."""
    if spec.decay == "step":
        return spec.gamma ** sum(1 for m in spec.milestones if it >= m)
    if spec.decay == "cosine":
        start = min(spec.warmup_iters if spec.warmup != "none" else 0, spec.max_iters - 1)
        span = spec.max_iters - start
        progress = min(max(it - start, 0) / span, 1.0)
        cos = 0.5 * (1.0 + math.cos(math.pi * progress))
        return spec.min_lr_ratio + (1.0 - spec.min_lr_ratio) * cos
    return 1.0


def lr_factor(it: int, spec: ScheduleSpec) -> float:
    """LR multiplier at iteration ``it`` (0-based): warmup factor times decay factor.

    During linear warmup the factor is ``w + (1 - w) * it / warmup_iters``; at and after
    ``warmup_iters`` it is the decay factor alone.
    """
    decay = decay_factor(it, spec)
    if spec.warmup == "none" or it >= spec.warmup_iters:
        return decay
    if spec.warmup == "constant":
        return spec.warmup_factor * decay
    alpha = it / spec.warmup_iters
    return (spec.warmup_factor * (1.0 - alpha) + alpha) * decay


class IterationScheduler:
    """Sets every param group's lr to ``initial_lr * lr_factor(it)`` once per iteration.

    Call :meth:`step` after each optimizer step. State (for checkpoints) is the iteration
    count only; the shape comes from the config.
    """

    def __init__(self, optimizer: Optimizer, spec: ScheduleSpec, last_iter: int = 0) -> None:
        self.optimizer = optimizer
        self.spec = spec
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.last_iter = last_iter
        self._apply()

    def _apply(self) -> None:
        factor = lr_factor(self.last_iter, self.spec)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def refresh(self) -> None:
        """Set the learning rates again for the current iteration (after ``spec`` changed)."""
        self._apply()

    def step(self) -> None:
        """Advance one iteration and set the new learning rates."""
        self.last_iter += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """Current learning rate of each param group."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Primitive-only state: {"last_iter": int}."""
        return {"last_iter": self.last_iter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the iteration count and re-apply the learning rates."""
        self.last_iter = int(state["last_iter"])
        self._apply()
