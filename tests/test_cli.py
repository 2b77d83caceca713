"""detkit.cli: the ``detkit`` command dispatches to the tools and names unknown commands."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

from detkit.cli import COMMANDS, help_text, main


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_usage_lists_every_command() -> None:
    code, out, _ = _run("--help")
    assert code == 0
    for name in ("train", "test", "predict", "export", "eval", "convert", "analyze"):
        assert name in COMMANDS and f"  {name} " in out


def test_unknown_command_suggests_the_nearest() -> None:
    code, _, err = _run("trian")
    assert code == 2 and "did you mean 'train'?" in err


def test_presets_and_a_tool_run_through_the_command() -> None:
    code, out, _ = _run("presets")
    assert code == 0 and "dense_ssh_bccd" in out and "configs/bench/thundernet_full.yaml" in out
    # `detkit train` resolves a preset name; a bad override stops before any work
    code, _, err = _run("train", "demo_synthetic", "optim.base_rl=1")
    assert code == 2 and "did you mean 'optim.base_lr'?" in err


def test_python_dash_m_entry_point() -> None:
    done = subprocess.run([sys.executable, "-m", "detkit", "--version"], capture_output=True,
                          text=True, check=True)
    assert done.stdout.startswith("detkit ")


def test_help_text_is_plain() -> None:
    doc = "Run ``tools/x.py CONFIG\n[--out DIR]``, see :func:`detkit.load`.\n\nMore text."
    assert help_text(doc) == "Run tools/x.py CONFIG [--out DIR], see detkit.load."
