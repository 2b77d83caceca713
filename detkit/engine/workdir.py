"""The work-dir guard: a finished or interrupted run is never overwritten unasked.

A work dir "holds a run" when it contains a checkpoint (``*.pth``) or a non-empty
``log.jsonl``. Training into such a folder needs one of:

- ``--resume`` (continue that run),
- another ``--work-dir`` (start a new run elsewhere), or
- ``--overwrite`` (replace it: the earlier run's outputs are deleted first, so the new
  ``log.jsonl`` does not mix two runs).

Leftover temporary checkpoint files of a killed save (``.last.pth.*.tmp``) are removed by
:func:`remove_stale_temp_files` with a count, so they do not pile up.
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = [
    "WorkDirInUseError",
    "run_outputs",
    "check_work_dir",
    "prepare_work_dir",
    "remove_stale_temp_files",
]

# the files and folders a training run writes into its work dir (config.yaml is rewritten
# on every start, so it alone does not make a folder "used")
_RUN_FILES = ("log.jsonl", "loss.png", "ap.png", "config.yaml")
_RUN_DIRS = ("tb",)


class WorkDirInUseError(ValueError):
    """Training would overwrite an earlier run without --resume or --overwrite."""


def run_outputs(work_dir: str | Path) -> list[Path]:
    """The earlier run's outputs in ``work_dir`` that make it "used" (sorted; may be empty)."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    found = sorted(p for p in work_dir.glob("*.pth") if p.is_file())
    log = work_dir / "log.jsonl"
    if log.is_file() and log.stat().st_size > 0:
        found.append(log)
    return found


def check_work_dir(work_dir: str | Path, resume: bool, overwrite: bool) -> None:
    """Raise :class:`WorkDirInUseError` when ``work_dir`` holds a run and neither flag is set.

    The message names the files found and the three ways forward.
    """
    if resume or overwrite:
        return
    found = run_outputs(work_dir)
    if found:
        names = ", ".join(p.name for p in found[:5]) + (" ..." if len(found) > 5 else "")
        raise WorkDirInUseError(
            f"work dir {work_dir} already holds a run ({names}); nothing was changed. "
            f"Pass --resume to continue it, --work-dir NEW_DIR to start a new run elsewhere, "
            f"or --overwrite to replace it"
        )


def prepare_work_dir(work_dir: str | Path, resume: bool, overwrite: bool) -> list[str]:
    """Check the guard, then create ``work_dir``; with ``overwrite`` (and no ``resume``)
    delete the earlier run's outputs. Returns notices for the user (what was removed)."""
    work_dir = Path(work_dir)
    check_work_dir(work_dir, resume, overwrite)
    notices: list[str] = []
    if overwrite and not resume:
        removed = run_outputs(work_dir)
        removed += [work_dir / n for n in _RUN_FILES if (work_dir / n).is_file()]
        removed = sorted(set(removed))
        for path in removed:
            path.unlink()
        for name in _RUN_DIRS:
            if (work_dir / name).is_dir():
                shutil.rmtree(work_dir / name)
                removed.append(work_dir / name)
        if removed:
            notices.append(f"--overwrite: removed the earlier run's {len(removed)} outputs "
                           f"from {work_dir} ({', '.join(p.name for p in removed)})")
    work_dir.mkdir(parents=True, exist_ok=True)
    removed_tmp = remove_stale_temp_files(work_dir)
    if removed_tmp:
        notices.append(f"removed {removed_tmp} temporary checkpoint file(s) left by an "
                       f"interrupted save in {work_dir}")
    return notices


def remove_stale_temp_files(work_dir: str | Path) -> int:
    """Delete ``.<name>.pth.*.tmp`` files (an interrupted atomic save); return how many.

    Only call this before training starts: a save in progress writes such a file.
    """
    count = 0
    for path in Path(work_dir).glob(".*.pth.*.tmp"):
        if path.is_file():
            path.unlink()
            count += 1
    return count
