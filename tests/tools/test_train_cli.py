"""tools/train.py: argument parsing, config errors before any work, a tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from detkit.engine.checkpoint import load_checkpoint
from detkit.engine.logging import read_jsonl

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "tools" / "train.py"
DEMO = REPO / "configs" / "demo_synthetic.yaml"


def _load_tool():
    spec = importlib.util.spec_from_file_location("detkit_train_tool", TRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TRAIN), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_parse_args_resume_forms() -> None:
    tool = _load_tool()
    a = tool.parse_args(["cfg.yaml", "--resume", "optim.base_lr=0.1", "seed=2"])
    assert a.resume == "auto" and a.overrides == ["optim.base_lr=0.1", "seed=2"]
    b = tool.parse_args(["cfg.yaml", "--resume", "w/last.pth", "--work-dir", "w", "seed=2"])
    assert b.resume == "w/last.pth" and b.work_dir == "w" and b.overrides == ["seed=2"]
    c = tool.parse_args(["cfg.yaml", "seed=2", "--no-progress"])
    assert c.resume is None and c.overrides == ["seed=2"] and c.no_progress


def test_seed_everything_sets_the_thread_count_only_when_asked() -> None:
    import torch

    tool = _load_tool()
    before = torch.get_num_threads()
    try:
        tool.seed_everything(0, False, 1)
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        tool.seed_everything(0, False, None)  # null: torch's count is left as it was
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_config_errors_exit_before_work(tmp_path: Path) -> None:
    res = _run(str(DEMO), "--work-dir", str(tmp_path / "w"), "optim.base_lrr=0.1", cwd=tmp_path)
    assert res.returncode == 2
    assert ("unknown config key 'optim.base_lrr' (override 'optim.base_lrr=0.1'); did you mean "
            "'optim.base_lr'?") in res.stderr
    res = _run(str(DEMO), "--work-dir", str(tmp_path / "w"), "data.batch_size=big", cwd=tmp_path)
    assert res.returncode == 2 and "'data.batch_size' expects int, got str 'big'" in res.stderr
    if importlib.util.find_spec("detkit.models.build") is not None:
        res = _run(str(DEMO), "--work-dir", str(tmp_path / "w"), "model.neck_chanels=64",
                   cwd=tmp_path)
        assert res.returncode == 2
        assert ("unknown config key 'model.neck_chanels' for model type 'dense_detector'; did "
                "you mean 'model.neck_channels'?") in res.stderr
    assert not (tmp_path / "w").exists()  # nothing was built or written


def test_demo_config_runs_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "work"
    res = _run(str(DEMO), "--work-dir", str(work), "--no-progress",
               f"data.synthetic.out_dir={tmp_path / 'syn'}", "data.synthetic.num_images=10",
               "data.synthetic.image_size=64", "data.img_size=64", "data.batch_size=4",
               "schedule.max_iters=2", "schedule.warmup_iters=1", "train.log_interval=1",
               "eval.interval=1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    # 10 images -> 8 train; lr = 0.004 x 4 / 8 = 0.002 by the linear scaling rule
    assert "linear scaling rule: lr = 0.004 x 4 / 8 = 0.002" in res.stdout
    assert (work / "config.yaml").is_file() and (work / "loss.png").is_file()
    records = read_jsonl(work / "log.jsonl")
    assert [r["iter"] for r in records if r["kind"] == "train"] == [1, 2]
    assert [r["iter"] for r in records if r["kind"] == "eval"] == [2]
    ckpt = load_checkpoint(work / "last.pth")
    assert ckpt["config"]["data"]["batch_size"] == 4  # resolved config stored in checkpoints
    assert ckpt["trainer"]["global_iter"] == 2


@pytest.mark.faults
def test_cuda_without_cuda_is_a_config_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    res = _run(str(DEMO), "--work-dir", str(tmp_path / "w"), "device=cuda", cwd=tmp_path)
    assert res.returncode == 2
    assert "config error: device=cuda requested but CUDA is not available" in res.stderr
    assert "Traceback" not in res.stderr
