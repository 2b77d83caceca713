"""The ``detkit`` console command: one entry point over the tools.

``detkit SUBCOMMAND ARGS...``; ``detkit SUBCOMMAND --help`` shows each one's options.

=========  ====================================================================
train      ``detkit train CONFIG|PRESET [--work-dir DIR] [key=value ...]``
test       ``detkit test [CONFIG] CKPT [--out DIR]`` (COCO metrics)
predict    ``detkit predict [CONFIG] CKPT SOURCE --out DIR`` (drawn images + JSON)
export     ``detkit export [CONFIG] CKPT --out model.onnx``
eval       ``detkit eval GT.json RESULTS.json [--out DIR]`` (a COCO results file)
convert    ``detkit convert --voc-root DIR --out-dir OUT`` (Pascal VOC -> COCO)
analyze    ``detkit analyze ANN.json [--out DIR]`` (dataset statistics)
browse     ``detkit browse ANN.json [--out DIR]`` (ground truth drawn, conversion marks)
coverage   ``detkit coverage CONFIG ANN.json`` (anchor coverage)
info       ``detkit info CONFIG|PRESET|CKPT`` (parameters, MACs, latency)
features   ``detkit features [CONFIG] CKPT IMAGE --out DIR`` (feature maps, SAM attention)
demo       ``detkit demo`` (train, test and draw on synthetic data)
presets    ``detkit presets`` (the config names ``train`` accepts)
=========  ====================================================================

The commands that wrap a script of ``tools/`` run that script's ``main``, so both entry points
behave the same; those scripts ship with the source tree (an editable install).
"""

from __future__ import annotations

import os

# Shared CPUs: OpenMP threads that spin while waiting slow every step down many times over
# when another process holds a core (measured: 20 training steps took 111 s instead of 10 s);
# passive waiting avoids that; export OMP_WAIT_POLICY to override. It must be set before torch
# loads, so every tool imports detkit.cli (for help_text) before anything else of detkit.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["COMMANDS", "help_text", "main"]

TOOLS_DIR = Path(__file__).resolve().parents[1] / "tools"

# command -> (tools/ script or "package.module", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("tools/train.py", "train a detector from a config or preset"),
    "test": ("tools/test.py", "COCO evaluation of a checkpoint"),
    "predict": ("tools/infer.py", "detect objects in images, draw them, write JSON"),
    "export": ("tools/export.py", "export a checkpoint to ONNX and check it"),
    "eval": ("detkit.evaluation.cli", "evaluate a COCO results file against a ground truth"),
    "convert": ("tools/convert_voc.py", "convert Pascal VOC annotations to COCO JSON"),
    "analyze": ("tools/analyze_dataset.py", "statistics and plots of a COCO annotation file"),
    "browse": ("tools/browse_gt.py", "draw a dataset's ground truth, conversion problems marked"),
    "coverage": ("tools/anchor_coverage.py", "share of ground-truth boxes anchors cover"),
    "info": ("detkit.models.info", "parameters, MACs and latency of a model"),
    "features": ("tools/visualize_features.py", "feature maps and SAM attention of one image"),
    "demo": ("tools/demo.py", "train, test and draw on generated data (about 3 min on 2 cores)"),
    "presets": ("detkit.presets", "list the preset config names"),
}


def help_text(doc: str | None) -> str:
    """A module docstring's first paragraph as plain text for ``--help``: lines joined, RST
    markup (````code````, ``:func:`name```) reduced to its text."""
    para = (doc or "").strip().split("\n\n")[0]
    text = " ".join(line.strip() for line in para.splitlines())
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


def _entry(target: str) -> Callable[[list[str]], int | None]:
    """The ``main(argv)`` of a tools/ script or a package module."""
    if not target.startswith("tools/"):
        return importlib.import_module(target).main
    path = TOOLS_DIR / Path(target).name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: this command runs the source tree's "
                                f"tools/ scripts (install detkit from a clone: pip install -e .)")
    spec = importlib.util.spec_from_file_location(f"detkit_tool_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items())
    return (f"usage: detkit COMMAND [ARGS ...]\n\ncommands:\n{rows}\n\n"
            f"'detkit COMMAND --help' describes a command's arguments.")


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its command; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] in ("-V", "--version"):
        from detkit import __version__

        print(f"detkit {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        from detkit.config import close_names

        near = close_names(name, COMMANDS, cutoff=0.6)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        print(f"detkit: unknown command '{name}'{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        entry = _entry(COMMANDS[name][0])
    except FileNotFoundError as err:
        print(f"detkit {name}: {err}", file=sys.stderr)
        return 2
    sys.argv = [f"detkit {name}", *rest]  # argparse's prog and usage line
    code = entry(rest)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
