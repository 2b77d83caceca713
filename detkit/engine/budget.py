"""A training budget in minutes (``schedule.time_budget``), as users know it from other toolkits.

The run ends when its training time reaches the budget, and the LR schedule is stretched over
the budget rather than over ``schedule.epochs``: the schedule's length in iterations is
re-estimated from the measured seconds per iteration, first after ``calibrate_iters``
iterations and then at every epoch end, as ``floor(budget / seconds_per_iteration)``.
Warmup stays as configured (in iterations); step-decay milestones keep their fraction of the
run. Training time counts the loop (data loading, forward, backward, optimizer step) and not
the evaluations or checkpoint writes, so that rows with different validation sets compare at
equal training cost. The stop is a normal end of training: final evaluation, ``last.pth`` and
``best.pth``. The elapsed training time is part of the checkpoint, so ``--resume`` continues the
same budget.

In multi-process runs every rank takes rank 0's estimate (all ranks must stop together).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.distributed as dist

from detkit.engine.schedules import IterationScheduler

__all__ = ["TimeBudget"]


class TimeBudget:
    """Converts a budget in minutes into the run's length in iterations (module docstring).

    Args:
        minutes: the training budget (> 0).
        calibrate_iters: iterations measured before the first estimate (20).
        min_iters: the estimate never goes below this many iterations (1).
    """

    def __init__(self, minutes: float, calibrate_iters: int = 20, min_iters: int = 1) -> None:
        if not (math.isfinite(minutes) and minutes > 0):
            raise ValueError(f"schedule.time_budget must be a positive number of minutes, "
                             f"got {minutes}")
        if calibrate_iters < 1:
            raise ValueError(f"calibrate_iters must be >= 1, got {calibrate_iters}")
        self.seconds = float(minutes) * 60.0
        self.calibrate_iters = int(calibrate_iters)
        self.min_iters = max(1, int(min_iters))

    def estimate(self, train_seconds: float, done_iters: int) -> int:
        """Iterations that fit the budget at the measured rate ``train_seconds / done_iters``.

        E.g. 30 s for 20 iterations and a 1-minute budget: ``floor(60 / 1.5) = 40``. Never less
        than ``done_iters + 1`` while time is left, nor than ``min_iters``; ``done_iters`` once
        the budget is spent.
        """
        if done_iters <= 0 or train_seconds <= 0:
            raise ValueError("estimate needs at least one timed iteration")
        if train_seconds >= self.seconds:
            return max(done_iters, self.min_iters)
        fit = math.floor(self.seconds / (train_seconds / done_iters))
        return max(fit, done_iters + 1, self.min_iters)

    def due(self, done_iters: int, epoch_end: bool) -> bool:
        """Whether to re-estimate now: at ``calibrate_iters`` and at each later epoch end."""
        return done_iters == self.calibrate_iters or (epoch_end and done_iters
                                                       >= self.calibrate_iters)

    def spent(self, train_seconds: float) -> bool:
        """True once the training time has reached the budget."""
        return train_seconds >= self.seconds

    def apply(self, scheduler: IterationScheduler, max_iters: int) -> int:
        """Stretch ``scheduler``'s schedule to ``max_iters`` (rank 0's value in multi-process
        runs); returns the value applied. Milestones keep their fraction of the run."""
        max_iters = _from_rank0(int(max_iters))
        spec = scheduler.spec
        if max_iters != spec.max_iters:
            scale = max_iters / spec.max_iters
            milestones = tuple(int(round(m * scale)) for m in spec.milestones)
            scheduler.spec = replace(spec, max_iters=max_iters, milestones=milestones)
            scheduler.refresh()
        return max_iters


def _from_rank0(value: int) -> int:
    """``value`` of rank 0 on every rank (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())
