"""train.early_stop: stop after `patience` evaluations without a better val metric, best.pth
holding the best evaluation's weights."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from detkit.config import ConfigError, load_config
from detkit.engine.checkpoint import load_checkpoint
from detkit.engine.logging import read_jsonl

from ._tiny import tiny_config, tiny_trainer


def _scripted(trainer, values: list[dict[str, float]]) -> list[dict[str, torch.Tensor]]:
    """Make ``trainer`` evaluate to ``values`` in turn; returns the weights seen per call."""
    seen: list[dict[str, torch.Tensor]] = []

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        seen.append(copy.deepcopy(model.state_dict()))
        return values[len(seen) - 1]

    trainer.evaluator = evaluate
    return seen


def _cfg(patience: int, metric: str = "AP") -> dict:
    # 16 images, batches of 4: 4 iterations per epoch; 40 iterations = 10 epochs
    return tiny_config(schedule={"max_iters": 40}, eval={"interval": 1},
                       train={"ema": {"enabled": False}, "checkpoint_interval": 0,
                              "early_stop": {"patience": patience, "metric": metric}})


def test_stops_after_patience_evaluations_and_keeps_the_best(tmp_path: Path) -> None:
    trainer = tiny_trainer(tmp_path, _cfg(patience=2))
    aps = [0.1, 0.3, 0.2, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    seen = _scripted(trainer, [{"AP": a, "AP50": 0.0} for a in aps])
    state = trainer.train()
    # epoch 0: 0.1 (best), epoch 1: 0.3 (best, iteration 8), epoch 2: 0.2 (1 without),
    # epoch 3: 0.25 (2 without = patience) -> stop at iteration 4 x 4 = 16
    assert len(seen) == 4 and state.global_iter == 16 and state.epoch == 4
    best = load_checkpoint(tmp_path / "best.pth")
    assert best["trainer"]["best_ap"] == pytest.approx(0.3)
    assert best["trainer"]["global_iter"] == 8
    for name, value in best["model"].items():
        assert torch.equal(value, seen[1][name])
    last = load_checkpoint(tmp_path / "last.pth")
    assert last["trainer"]["global_iter"] == 16 and last["trainer"]["evals_since_best"] == 2
    evals = [r for r in read_jsonl(tmp_path / "log.jsonl") if r["kind"] == "eval"]
    assert [r["iter"] for r in evals] == [4, 8, 12, 16]


def test_patience_zero_trains_to_the_end(tmp_path: Path) -> None:
    trainer = tiny_trainer(tmp_path, _cfg(patience=0))
    seen = _scripted(trainer, [{"AP": 0.5 - 0.01 * i} for i in range(10)])
    assert trainer.train().global_iter == 40 and len(seen) == 10
    assert load_checkpoint(tmp_path / "best.pth")["trainer"]["global_iter"] == 4


def test_metric_chooses_best_and_must_exist(tmp_path: Path) -> None:
    trainer = tiny_trainer(tmp_path / "a", _cfg(patience=1, metric="AP50"))
    # AP50 improves at epoch 1 and not at epoch 2 -> stop at iteration 12; AP is ignored
    _scripted(trainer, [{"AP": 0.9, "AP50": 0.1}, {"AP": 0.0, "AP50": 0.2},
                        {"AP": 1.0, "AP50": 0.2}])
    assert trainer.train().global_iter == 12
    assert load_checkpoint(tmp_path / "a" / "best.pth")["trainer"]["best_ap"] == 0.2
    trainer = tiny_trainer(tmp_path / "b", _cfg(patience=1, metric="APx"))
    _scripted(trainer, [{"AP": 0.1}])
    with pytest.raises(ValueError, match="'APx' is not an evaluation metric; valid: AP"):
        trainer.train()


def test_config_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: {type: dense_detector}\n")
    cfg = load_config(path, ["train.early_stop.patience=3"])
    assert cfg["train"]["early_stop"] == {"patience": 3, "metric": "AP"}
    assert load_config(path)["train"]["early_stop"]["patience"] == 0  # off by default
    with pytest.raises(ConfigError, match="train.early_stop.patience' must be in"):
        load_config(path, ["train.early_stop.patience=-1"])
