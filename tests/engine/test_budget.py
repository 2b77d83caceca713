"""Tests for detkit.engine.budget (schedule.time_budget) and its trainer wiring."""

from __future__ import annotations

import math

import pytest
import torch

from detkit.engine import trainer as trainer_module
from detkit.engine.budget import TimeBudget
from detkit.engine.schedules import IterationScheduler, ScheduleSpec, lr_factor

from ._tiny import TinyDetector, tiny_config, tiny_trainer


def test_estimate_spent_and_due() -> None:
    budget = TimeBudget(1.0, calibrate_iters=20)
    # 30 s for 20 iterations = 1.5 s each; 60 s / 1.5 s = 40 iterations
    assert budget.estimate(30.0, 20) == 40
    # 59 s for 20 iterations: floor(60 / 2.95) = 20, but time is left: at least 21
    assert budget.estimate(59.0, 20) == 21
    # the budget is spent: the run ends where it is
    assert budget.estimate(61.0, 20) == 20 and budget.spent(60.0) and not budget.spent(59.9)
    assert budget.due(20, epoch_end=False) and not budget.due(19, epoch_end=True)
    assert budget.due(33, epoch_end=True) and not budget.due(33, epoch_end=False)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="time_budget"):
            TimeBudget(bad)


def test_apply_stretches_the_schedule_and_its_milestones() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    spec = ScheduleSpec(max_iters=100, warmup="linear", warmup_iters=10, decay="step",
                        milestones=(50, 75), gamma=0.1)
    sched = IterationScheduler(opt, spec, last_iter=30)
    assert TimeBudget(1.0).apply(sched, 200) == 200
    # milestones keep their fraction: 50 / 100 and 75 / 100 of 200 = 100 and 150
    assert sched.spec.max_iters == 200 and tuple(sched.spec.milestones) == (100, 150)
    assert sched.spec.warmup_iters == 10  # warmup is not stretched
    assert opt.param_groups[0]["lr"] == pytest.approx(lr_factor(30, sched.spec))


class _Clock:
    """Fake ``time.perf_counter``: advances 1.5 s per model forward, nothing otherwise."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _TimedDetector(TinyDetector):
    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self.clock = clock

    def forward(self, images, targets=None):  # type: ignore[no-untyped-def]
        self.clock.now += 1.5
        return super().forward(images, targets)


def test_trainer_stops_at_the_budget_with_the_schedule_stretched(tmp_path, monkeypatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(trainer_module.time, "perf_counter", clock)
    # provisional length 10 iterations (from the config), budget 1 minute
    cfg = tiny_config(schedule={"max_iters": 10, "warmup_iters": 3, "time_budget": 1.0,
                                "decay": "cosine"})
    trainer = tiny_trainer(tmp_path, cfg, model=_TimedDetector(clock))
    state = trainer.train()
    # calibration at iteration 9 (before the provisional end): 13.5 s / 9 = 1.5 s per
    # iteration, so 60 s hold 40 iterations; 40 x 1.5 s = 60 s = the budget
    assert state.global_iter == 40
    assert trainer.scheduler.spec.max_iters == 40
    assert state.train_seconds == pytest.approx(60.0)
    # the LR followed the stretched cosine: at iteration 40 it is lr_factor(40) of the base
    spec = trainer.scheduler.spec
    base = trainer.optimizer.param_groups[0]["initial_lr"]
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(base * lr_factor(40, spec))
    # the stop is a normal checkpoint that records the training time
    ckpt = torch.load(tmp_path / "last.pth", weights_only=True)
    assert ckpt["trainer"]["global_iter"] == 40
    assert ckpt["trainer"]["train_seconds"] == pytest.approx(60.0)
    # a resume from it re-estimates the stretched length (not in the config, which says 10)
    # from the saved time: 60 s / 40 iterations = 1.5 s each, 60 s hold 40
    resumed = tiny_trainer(tmp_path, cfg, model=_TimedDetector(clock))
    resumed.resume(tmp_path / "last.pth")
    assert resumed.options.max_iters == 40 and resumed.scheduler.spec.max_iters == 40


def test_a_complete_epoch_re_estimates_the_length(tmp_path) -> None:
    cfg = tiny_config(schedule={"max_iters": 10, "warmup_iters": 3, "time_budget": 1.0})
    trainer = tiny_trainer(tmp_path, cfg)
    # past calibration: 30 s for 24 iterations = 1.25 s each; 60 s hold 48 iterations
    trainer.state.global_iter, trainer.state.train_seconds = 24, 30.0
    trainer._end_epoch(advance=True, complete=True)
    assert trainer.options.max_iters == 48 and trainer.scheduler.spec.max_iters == 48
    assert trainer.epoch_complete is False and trainer.state.epoch == 1
    # training stopped inside an epoch (the loader did not run out): no new estimate
    trainer.state.train_seconds = 48.0
    trainer._end_epoch(advance=False, complete=False)
    assert trainer.options.max_iters == 48 and trainer.state.epoch == 1
