"""LR schedules at hand-computed points; the linear scaling rule."""

from __future__ import annotations

import math

import pytest
import torch

from detkit.engine.schedules import IterationScheduler, ScheduleSpec, lr_factor, scaled_lr

COSINE = ScheduleSpec(max_iters=110, warmup="linear", warmup_iters=10, warmup_factor=0.1,
                      decay="cosine")


def test_linear_warmup_then_cosine_points() -> None:
    assert lr_factor(0, COSINE) == pytest.approx(0.1)  # warmup start: warmup_factor
    # it=5: 0.1 * (1 - 5/10) + 5/10 = 0.55
    assert lr_factor(5, COSINE) == pytest.approx(0.55)
    assert lr_factor(10, COSINE) == pytest.approx(1.0)  # warmup end: full lr
    # cosine over [10, 110]: midpoint it=60 -> 0.5 * (1 + cos(pi/2)) = 0.5
    assert lr_factor(60, COSINE) == pytest.approx(0.5)
    # it=35: progress 0.25 -> 0.5 * (1 + cos(pi/4)) = 0.853553...
    assert lr_factor(35, COSINE) == pytest.approx(0.5 * (1 + math.sqrt(0.5)))
    assert lr_factor(110, COSINE) == pytest.approx(0.0)


def test_cosine_floor_and_constant_warmup() -> None:
    spec = ScheduleSpec(max_iters=110, warmup="constant", warmup_iters=10, warmup_factor=0.2,
                        decay="cosine", min_lr_ratio=0.1)
    assert lr_factor(3, spec) == pytest.approx(0.2)
    assert lr_factor(9, spec) == pytest.approx(0.2)
    assert lr_factor(10, spec) == pytest.approx(1.0)
    # midpoint: 0.1 + 0.9 * 0.5 = 0.55; end: the floor 0.1
    assert lr_factor(60, spec) == pytest.approx(0.55)
    assert lr_factor(110, spec) == pytest.approx(0.1)


def test_step_decay() -> None:
    spec = ScheduleSpec(max_iters=100, warmup="none", decay="step", milestones=(30, 60),
                        gamma=0.1)
    assert [lr_factor(i, spec) for i in (0, 29, 30, 59, 60, 99)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


def test_scheduler_sets_group_lrs_and_restores() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD([{"params": params}], lr=0.2)
    sched = IterationScheduler(opt, COSINE)
    assert sched.get_last_lr() == pytest.approx([0.02])  # 0.2 * 0.1
    for _ in range(5):
        sched.step()
    assert sched.get_last_lr() == pytest.approx([0.11])  # 0.2 * 0.55
    other = IterationScheduler(torch.optim.SGD(params, lr=0.2), COSINE)
    other.load_state_dict(sched.state_dict())
    assert other.get_last_lr() == pytest.approx([0.11])


def test_linear_scaling_rule() -> None:
    assert scaled_lr(0.02, 64, 16) == pytest.approx(0.08)  # 0.02 * 64 / 16
    assert scaled_lr(0.01, 2, 16) == pytest.approx(0.00125)  # 0.01 * 2 / 16
    with pytest.raises(ValueError, match="positive"):
        scaled_lr(0.01, 0, 16)


def test_bad_spec_names_the_choices() -> None:
    with pytest.raises(ValueError, match="linear, constant or none"):
        ScheduleSpec(max_iters=10, warmup="exp")


def test_warmup_as_long_as_the_run_warns_by_name() -> None:
    from detkit.engine.schedules import ScheduleWarning, check_warmup

    # the preset case: 200 warmup iterations on a 72-iteration run
    with pytest.warns(ScheduleWarning, match="warmup lasts 200 iterations but the run has 72"):
        assert check_warmup(ScheduleSpec(max_iters=72, warmup_iters=200))
    with pytest.warns(ScheduleWarning):
        assert check_warmup(ScheduleSpec(max_iters=72, warmup_iters=72))
    assert not check_warmup(ScheduleSpec(max_iters=72, warmup_iters=71))
    assert not check_warmup(ScheduleSpec(max_iters=72, warmup="none", warmup_iters=500))


def test_warmup_in_epochs_or_as_a_fraction() -> None:
    from detkit.engine.schedules import warmup_iterations

    assert warmup_iterations(500, None, 25) == 500  # plain iterations
    assert warmup_iterations(500, 2.0, 25) == 50  # 2 epochs x 25 iterations
    assert warmup_iterations(500, 2.0, 15) == 30  # the same 2 epochs on a smaller dataset
    # a fraction of the run wins over both: 0.1 x 432 = 43.2 -> 43
    assert warmup_iterations(500, 2.0, 25, warmup_fraction=0.1, max_iters=432) == 43
    with pytest.raises(ValueError, match="warmup_fraction"):
        warmup_iterations(0, None, 25, warmup_fraction=1.5, max_iters=10)
    with pytest.raises(ValueError, match="warmup_epochs"):
        warmup_iterations(0, -1.0, 25)


def test_build_trainer_warns_when_warmup_outlasts_the_run(tmp_path) -> None:
    from detkit.engine.schedules import ScheduleWarning

    from ._tiny import tiny_config, tiny_trainer

    cfg = tiny_config(schedule={"max_iters": 10, "warmup_iters": 200})
    with pytest.warns(ScheduleWarning, match="200 iterations but the run has 10"):
        tiny_trainer(tmp_path, cfg)
    cfg = tiny_config(schedule={"max_iters": 10, "warmup_iters": 200, "warmup_fraction": 0.2})
    trainer = tiny_trainer(tmp_path / "b", cfg)
    assert trainer.scheduler.spec.warmup_iters == 2  # 0.2 x 10
