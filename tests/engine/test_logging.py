"""JSON-lines log, resume truncation, ETA format and the PNG curves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detkit.engine.logging import (
    TrainLogger,
    format_eta,
    plot_curves,
    read_jsonl,
    truncate_jsonl,
)


def test_logger_writes_jsonl_and_plots(tmp_path: Path) -> None:
    log = TrainLogger(tmp_path, total_iters=4, use_tqdm=False)
    for it in range(1, 5):
        log.train_step(it, 0, {"loss": 1.0 / it, "rpn_box": 0.5 / it}, lr=0.1, images_per_s=8.0)
    log.write({"kind": "eval", "iter": 4, "epoch": 0, "AP": 0.25, "AP50": 0.5})
    log.close()
    records = read_jsonl(tmp_path / "log.jsonl")
    assert [r["iter"] for r in records] == [1, 2, 3, 4, 4]
    assert records[1]["loss"] == 0.5 and records[1]["lr"] == 0.1
    written = plot_curves(tmp_path / "log.jsonl", tmp_path)
    assert [p.name for p in written] == ["loss.png", "ap.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_truncate_drops_records_after_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    lines = [json.dumps({"kind": "train", "iter": i}) for i in range(1, 6)]
    path.write_text("\n".join(lines) + "\n{\"kind\": \"tra")  # torn last line
    assert truncate_jsonl(path, 3) == 2  # iters 4 and 5 dropped; the torn line is unreadable
    assert [r["iter"] for r in read_jsonl(path)] == [1, 2, 3]


def test_format_eta() -> None:
    assert format_eta(3725) == "1:02:05"  # 3600 + 2 * 60 + 5
    assert format_eta(-3) == "0:00:00"


def test_disabled_logger_writes_nothing(tmp_path: Path) -> None:
    log = TrainLogger(tmp_path / "rank1", total_iters=2, enabled=False)
    log.train_step(1, 0, {"loss": 1.0}, lr=0.1, images_per_s=1.0)
    assert not (tmp_path / "rank1").exists()


def test_missing_tensorboard_gives_one_line_notice(tmp_path: Path, monkeypatch, capsys) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    log = TrainLogger(tmp_path, total_iters=1, use_tqdm=False)
    log.close()
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["tensorboard not installed: TensorBoard scalars skipped "
                   "(pip install tensorboard to enable)"]
    assert log._tb is None


def test_tensorboard_scalars_are_written(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="TensorBoard scalars need the tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = TrainLogger(tmp_path, total_iters=2, use_tqdm=False)
    log.train_step(1, 0, {"loss": 2.0}, lr=0.1, images_per_s=8.0)
    log.train_step(2, 0, {"loss": 1.5}, lr=0.05, images_per_s=8.0)
    log.write({"kind": "eval", "iter": 2, "epoch": 0, "AP": 0.25})
    log.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 2.0), (2, 1.5)]
    assert [(e.step, e.value) for e in events.Scalars("eval/AP")] == [(2, 0.25)]


def test_no_progress_bar_lines_when_stderr_is_not_a_terminal(tmp_path: Path, capsys) -> None:
    # pytest's captured stderr is not a terminal: the bar must stay silent
    log = TrainLogger(tmp_path, total_iters=50, use_tqdm=True)
    for it in range(1, 51):
        log.train_step(it, 0, {"loss": 1.0}, lr=0.1, images_per_s=8.0)
    log.close()
    assert log._bar is not None and log._bar.disable
    assert "train:" not in capsys.readouterr().err
