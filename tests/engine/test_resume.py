"""--resume: the config's settings apply, the checkpoint's state is restored, bad pairs refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detkit.engine.resume import ResumeError

from ._tiny import TinyDetector, tiny_config, tiny_trainer

REPO = Path(__file__).resolve().parents[2]


def _first_run(work: Path) -> None:
    tiny_trainer(work, tiny_config(schedule={"max_iters": 4})).train()


@pytest.mark.faults
def test_resume_applies_lr_weight_decay_and_momentum_overrides(tmp_path: Path, capsys) -> None:
    """Issue 13: the checkpoint's lr, weight decay and momentum used to win silently."""
    work = tmp_path / "w"
    _first_run(work)
    cfg = tiny_config(schedule={"max_iters": 6},
                      optim={"base_lr": 0.05, "weight_decay": 0.0, "momentum": 0.5})
    trainer = tiny_trainer(work, cfg)
    trainer.resume(work / "last.pth")
    out = capsys.readouterr().out
    assert "optim.base_lr" in out and "the config's values apply from here on" in out
    assert "weight_decay: 0.001 -> 0.0" in out and "momentum: 0.9 -> 0.5" in out
    decay_group = trainer.optimizer.param_groups[0]
    # linear scaling: 0.05 x batch 4 / base batch 4 = 0.05; after warmup (3 iters) the
    # factor at iteration 4 of the default cosine schedule is below 1 but above 0
    assert decay_group["initial_lr"] == pytest.approx(0.05)
    assert 0 < decay_group["lr"] <= 0.05
    assert decay_group["weight_decay"] == 0.0 and decay_group["momentum"] == 0.5
    # the state (momentum buffers) is the checkpoint's, not a fresh optimizer's
    saved = torch.load(work / "last.pth", weights_only=True)["optimizer"]["state"]
    state = trainer.optimizer.state_dict()["state"]
    assert state.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(state[key]["momentum_buffer"], value["momentum_buffer"])
    trainer.train()  # runs on with the new values
    assert trainer.state.global_iter == 6


@pytest.mark.faults
def test_resume_with_another_optimizer_type_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "w"
    _first_run(work)
    trainer = tiny_trainer(work, tiny_config(optim={"type": "adamw"}))
    with pytest.raises(ResumeError, match="optim.type=sgd, the config asks for optim.type=adamw"):
        trainer.resume(work / "last.pth")


@pytest.mark.faults
def test_resume_with_another_architecture_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "w"
    _first_run(work)
    trainer = tiny_trainer(work, tiny_config(), model=TinyDetector(num_classes=5))
    with pytest.raises(ResumeError, match="weights do not fit the model built from the config"):
        trainer.resume(work / "last.pth")


@pytest.mark.faults
def test_failed_resume_leaves_config_yaml_alone(tmp_path: Path) -> None:
    """Issue 13: a failed resume overwrote config.yaml before failing."""
    work = tmp_path / "w"
    _first_run(work)  # a TinyDetector checkpoint: does not fit the demo's detector
    (work / "config.yaml").write_text("the earlier run's config\n")
    res = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train.py"),
         str(REPO / "configs" / "demo_synthetic.yaml"), "--work-dir", str(work), "--resume",
         "--no-progress", f"data.synthetic.out_dir={tmp_path / 'syn'}",
         "data.synthetic.num_images=6", "data.synthetic.image_size=64", "data.img_size=64",
         "data.batch_size=2", "optim.type=sgd"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "weights do not fit" in res.stderr and "Traceback" not in res.stderr
    assert (work / "config.yaml").read_text() == "the earlier run's config\n"
