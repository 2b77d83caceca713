"""The kill -9 loop of the fault suite (docs/reliability.md).

One tiny 12-iteration run is killed with SIGKILL four times, at iterations and moments
drawn from a fixed seed: after a training step, in the middle of a checkpoint write (the
temporary file written, not yet renamed) and right after the rename. Every kill is
followed by a resume of the same work dir. After each kill ``last.pth`` must load and hold
the last completed save; the final run must reproduce the uninterrupted run's losses bit
for bit; the temporary files of the interrupted writes are removed (and counted) on resume.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from detkit.engine.checkpoint import load_checkpoint
from detkit.engine.logging import read_jsonl

from ._tiny import tiny_config, tiny_trainer

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MAX_ITERS = 12
KILLS = 4
MOMENTS = ("step", "write", "rename")

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path[:0] = [{repo!r}, {here!r}]
    import _tiny
    from detkit.engine import checkpoint
    from detkit.engine.workdir import prepare_work_dir
    work_dir, kill_at, moment, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    cfg = _tiny.tiny_config(schedule={{"max_iters": {max_iters}}})
    notices = prepare_work_dir(work_dir, resume=resume == "1", overwrite=False)
    print("|".join(notices), flush=True)
    trainer = _tiny.tiny_trainer(work_dir, cfg)
    if resume == "1":
        trainer.resume(os.path.join(work_dir, "last.pth"))

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def at_kill_point():
        return trainer.state.global_iter == kill_at

    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):  # "write": the temporary file is complete, the rename not yet done
        real_fsync(fd)
        if moment == "write" and at_kill_point():
            die()

    def replace(src, dst):  # "rename": the new last.pth is in place, the dir not yet synced
        real_replace(src, dst)
        if moment == "rename" and at_kill_point():
            die()

    checkpoint.os.fsync, checkpoint.os.replace = fsync, replace

    def after_step(losses):
        if moment == "step" and at_kill_point():
            die()

    trainer.after_step = after_step
    trainer.train()
""")


def _losses(work_dir: Path) -> list[tuple[int, float]]:
    return [(r["iter"], r["loss"]) for r in read_jsonl(work_dir / "log.jsonl")
            if r["kind"] == "train"]


def kill_plan(seed: int = 9) -> list[tuple[int, str]]:
    """KILLS distinct kill iterations in 2..MAX_ITERS-1, each with a moment."""
    rng = random.Random(seed)
    iters = sorted(rng.sample(range(2, MAX_ITERS), KILLS))
    return [(it, rng.choice(MOMENTS)) for it in iters]


@pytest.mark.faults
def test_random_kills_during_training_and_checkpoint_writes(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(repo=str(REPO), here=str(HERE), max_iters=MAX_ITERS))
    full, work = tmp_path / "full", tmp_path / "work"
    tiny_trainer(full, tiny_config(schedule={"max_iters": MAX_ITERS})).train()

    plan = kill_plan()
    assert {m for _, m in plan} == set(MOMENTS)  # seed 9: 3 step, 6 rename, 7 step, 9 write
    survived, temp_removed = 0, 0
    for n, (kill_at, moment) in enumerate([*plan, (-1, "none")]):
        proc = subprocess.run([sys.executable, str(script), str(work), str(kill_at), moment,
                               "1" if n else "0"], capture_output=True, text=True, timeout=120)
        if "temporary checkpoint file" in proc.stdout:
            temp_removed += 1
        if kill_at < 0:
            assert proc.returncode == 0, proc.stderr[-2000:]
            break
        assert proc.returncode == -9, proc.stderr[-2000:]
        survived += 1
        # checkpoints are saved every step; a kill inside the write of step k leaves k - 1
        saved = load_checkpoint(work / "last.pth")["trainer"]["global_iter"]
        assert saved == (kill_at - 1 if moment == "write" else kill_at), (kill_at, moment)
        tmp_left = list(work.glob(".last.pth.*.tmp"))
        assert len(tmp_left) == (1 if moment == "write" else 0)

    assert survived == KILLS
    assert temp_removed == sum(m == "write" for _, m in plan)  # each torn write cleaned once
    assert not list(work.glob("*.tmp")) and not list(work.glob(".*.tmp"))
    assert _losses(work) == _losses(full)  # bitwise, every step 1..12
    assert [it for it, _ in _losses(full)] == list(range(1, MAX_ITERS + 1))
    a, b = load_checkpoint(full / "last.pth"), load_checkpoint(work / "last.pth")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
