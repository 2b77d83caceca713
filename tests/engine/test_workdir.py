"""The work-dir guard: a used work dir needs --resume, another --work-dir or --overwrite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from detkit.engine.workdir import (
    WorkDirInUseError,
    check_work_dir,
    prepare_work_dir,
    remove_stale_temp_files,
    run_outputs,
)

REPO = Path(__file__).resolve().parents[2]


def _used(work: Path) -> Path:
    work.mkdir(parents=True)
    (work / "best.pth").write_bytes(b"best")
    (work / "last.pth").write_bytes(b"last")
    (work / "log.jsonl").write_text('{"kind": "train", "iter": 1}\n')
    (work / "config.yaml").write_text("seed: 0\n")
    (work / "tb").mkdir()
    return work


def test_fresh_or_config_only_dirs_are_not_used(tmp_path: Path) -> None:
    assert run_outputs(tmp_path / "missing") == []
    (tmp_path / "config.yaml").write_text("seed: 0\n")  # a run that failed before training
    (tmp_path / "log.jsonl").write_text("")
    assert run_outputs(tmp_path) == []
    check_work_dir(tmp_path, resume=False, overwrite=False)


@pytest.mark.faults
def test_used_dir_is_refused_and_left_untouched(tmp_path: Path) -> None:
    work = _used(tmp_path / "w")
    with pytest.raises(WorkDirInUseError) as err:
        prepare_work_dir(work, resume=False, overwrite=False)
    message = str(err.value)
    for hint in ("best.pth", "last.pth", "log.jsonl", "--resume", "--work-dir", "--overwrite"):
        assert hint in message
    assert (work / "best.pth").read_bytes() == b"best" and (work / "tb").is_dir()
    assert prepare_work_dir(work, resume=True, overwrite=False) == []  # resume keeps all
    assert (work / "last.pth").read_bytes() == b"last"


def test_overwrite_removes_the_earlier_run_and_says_so(tmp_path: Path) -> None:
    work = _used(tmp_path / "w")
    (work / "notes.txt").write_text("mine")  # not a run output: kept
    (work / ".last.pth.abc123.tmp").write_bytes(b"torn")
    notices = prepare_work_dir(work, resume=False, overwrite=True)
    # 5 outputs: best.pth, config.yaml, last.pth, log.jsonl and the tb folder
    assert "removed the earlier run's 5 outputs" in notices[0]
    assert "removed 1 temporary checkpoint file" in notices[1]
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]


def test_stale_temp_files_are_counted(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f".last.pth.{i}.tmp").write_bytes(b"x" * 10)
    (tmp_path / "last.pth").write_bytes(b"ok")
    assert remove_stale_temp_files(tmp_path) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


@pytest.mark.faults
def test_train_cli_refuses_a_used_work_dir_before_any_work(tmp_path: Path) -> None:
    """Issue 13: repeating a training command replaced best.pth, last.pth and mixed logs."""
    work = _used(tmp_path / "w")
    res = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train.py"), str(REPO / "configs" /
         "demo_synthetic.yaml"), "--work-dir", str(work), "--no-progress"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "already holds a run" in res.stderr and "--overwrite" in res.stderr
    assert (work / "best.pth").read_bytes() == b"best"
    assert (work / "config.yaml").read_text() == "seed: 0\n"
