"""Fine-tuning from a whole-detector checkpoint (``model.load_from``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from detkit.config import load_config
from detkit.engine.build import build_model_from_cfg
from detkit.engine.finetune import load_detector_weights

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo_synthetic.yaml"


def _model(num_classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model_from_cfg(load_config(DEMO)["model"], num_classes)


def test_matching_tensors_load_and_the_class_sized_layer_is_reinitialised(tmp_path: Path) -> None:
    source = _model(3, seed=0)
    path = tmp_path / "src.pth"
    torch.save({"model": source.state_dict()}, path)
    target = _model(2, seed=1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_detector_weights(target, path)
    # the demo head predicts 3 anchors x K classes per cell: 3 x 3 = 9 channels in the
    # checkpoint, 3 x 2 = 6 in the new model; every other tensor has the same shape
    assert report.reinitialised == [
        "head.cls_logits.weight: checkpoint [9, 64, 3, 3] vs model [6, 64, 3, 3]",
        "head.cls_logits.bias: checkpoint [9] vs model [6]"]
    assert report.missing == [] and report.unexpected == [] and report.weights == "model"
    now, src = target.state_dict(), source.state_dict()
    assert len(report.loaded) == len(now) - 2
    for key in report.loaded:
        assert torch.equal(now[key], src[key]), key
    for key in ("head.cls_logits.weight", "head.cls_logits.bias"):
        assert torch.equal(now[key], before[key])  # the new model's own initialisation
    assert "re-initialised (shape differs) head.cls_logits.bias" in "\n".join(report.lines())


def test_ema_weights_preferred_and_foreign_keys_named(tmp_path: Path) -> None:
    model = _model(3, seed=0)
    ema_state = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    ema_state["extra.weight"] = torch.zeros(1)
    del ema_state["head.cls_logits.bias"]
    path = tmp_path / "src.pth"
    torch.save({"model": model.state_dict(), "ema": {"module": ema_state}}, path)
    target = _model(3, seed=2)
    report = load_detector_weights(target, path)
    assert report.weights == "ema"
    assert report.unexpected == ["extra.weight"] and report.missing == ["head.cls_logits.bias"]
    key = "head.cls_logits.weight"
    assert torch.equal(target.state_dict()[key], model.state_dict()[key] + 1)


def _train(tmp_path: Path, work: str, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "train.py"), str(DEMO), "--work-dir",
         str(tmp_path / work), "--no-progress", "data.synthetic.num_images=10",
         "data.synthetic.image_size=64", "data.img_size=64", "data.batch_size=4",
         "schedule.max_iters=2", "schedule.warmup_iters=1", "eval.interval=0",
         "data.val.ann_file=null", *overrides],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_a_run_starts_from_another_runs_checkpoint(tmp_path: Path) -> None:
    first = _train(tmp_path, "a", f"data.synthetic.out_dir={tmp_path / 'syn3'}")
    assert first.returncode == 0, first.stderr[-2000:]
    res = _train(tmp_path, "b", f"data.synthetic.out_dir={tmp_path / 'syn2'}",
                 "data.synthetic.classes=[circle,cross]",
                 f"model.load_from={tmp_path / 'a' / 'last.pth'}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "loaded 82 of the model's 84 tensors" in res.stdout
    assert "re-initialised (shape differs) head.cls_logits.weight" in res.stdout
    missing = _train(tmp_path, "c", f"data.synthetic.out_dir={tmp_path / 'syn_c'}",
                     f"model.load_from={tmp_path / 'none.pth'}")
    assert missing.returncode == 2
    assert f"model.load_from: checkpoint {tmp_path / 'none.pth'} not found" in missing.stderr
    assert not (tmp_path / "syn_c").exists()  # refused before any data was made
