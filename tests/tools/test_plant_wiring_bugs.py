"""Tests for tools/plant_wiring_bugs.py (the planted-bug check of docs/testing.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "plant_wiring_bugs.py"


def _tool():
    spec = importlib.util.spec_from_file_location("plant_wiring_bugs", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_snippet_occurs_once_and_every_named_test_exists() -> None:
    tool = _tool()
    root = tool.ROOT
    assert len(tool.BUGS) == 7  # the seven survivors of issue 16
    for bug in tool.BUGS:
        assert (root / bug.path).read_text().count(bug.old) == 1, bug.key
        assert bug.old != bug.new
        for test in bug.tests:
            file, name = test.split("::")
            assert f"def {name}(" in (root / file).read_text(), test


def test_plant_runs_the_tests_on_the_planted_source_and_restores_it(tmp_path: Path) -> None:
    tool = _tool()
    (tmp_path / "m.py").write_text("x = a < b\n")
    bug = tool.Bug("k", "t", "m.py", "a < b", "a <= b", ("t1", "t2"))
    seen = []

    def runner(test: str) -> int:
        seen.append((test, (tmp_path / "m.py").read_text()))
        return 1 if test == "t1" else 0

    assert tool.plant(bug, tmp_path, runner) == [("t1", 1), ("t2", 0)]
    assert seen == [("t1", "x = a <= b\n"), ("t2", "x = a <= b\n")]
    assert (tmp_path / "m.py").read_text() == "x = a < b\n"

    def boom(test: str) -> int:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tool.plant(bug, tmp_path, boom)
    assert (tmp_path / "m.py").read_text() == "x = a < b\n"  # restored on an interrupt too
    (tmp_path / "m.py").write_text("a < b; a < b\n")
    with pytest.raises(LookupError, match="occurs 2 times"):
        tool.plant(bug, tmp_path, runner)
