"""BCCD benchmark runner: ``python benchmarks/bccd.py run ROW [--seed S] [--out DIR]`` / ``list``.

One run trains a row's config (``configs/bench/<row>.yaml``) on BCCD train with
``tools/train.py`` (best.pth = best val AP), evaluates best.pth on BCCD test with
``tools/test.py`` and writes ``<out>/<row>_s<seed>.json``: the resolved config, seed, test
metrics and per-class AP, wall time, median training images/s, inference latency (batch 1,
320 input, 2 threads, median), the training curves, PR curves and the detections of three test
images (what ``benchmarks/render_bccd.py`` draws). The "nms" row trains nothing: it evaluates
the full model's checkpoint of the same seed once per NMS kind and times the NMS.

BCCD is read from ``../shared/datasets/BCCD`` next to the repository (or ``$DETKIT_BCCD``) and
converted once into ``data/bccd`` with ``tools/convert_voc.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bccd_measure import (  # noqa: E402
    anchor_coverage_rows,
    curves_from_log,
    inference_latency,
    median_images_per_s,
    nms_milliseconds,
    pr_and_drawn,
)

CONFIG_DIR = Path("configs") / "bench"
DATA_DIR = Path("data") / "bccd"
WORK_ROOT = Path("work_dirs") / "bench"
RESULTS_DIR = Path("benchmarks") / "results"
NMS_KINDS = ("nms", "diou_nms", "soft_nms", "cluster_nms")


@dataclass(frozen=True)
class Row:
    """One benchmark row: a config under configs/bench, its table group and its kind.

    ``kind`` is "train" (train + test) or "nms" (test-time NMS kinds on the checkpoint of
    ``checkpoint_of``). ``baseline`` is the row an ablation's delta is taken against.
    """

    name: str
    group: str
    title: str
    kind: str = "train"
    baseline: str | None = None
    checkpoint_of: str | None = None

    @property
    def config(self) -> Path:
        """Config file of the row (relative to the repository root)."""
        return CONFIG_DIR / f"{self.checkpoint_of or self.name}.yaml"


FULL = "thundernet_full"
ROWS: tuple[Row, ...] = (
    Row(FULL, "main", "ThunderNet-lite SNet49 (CEM, SAM, CIoU, DIoU-NMS)"),
    Row("tn_nms", "nms", "test-time NMS kinds on the full model's checkpoint", kind="nms",
        checkpoint_of=FULL),
    Row("dense_fpn", "main", "dense detector, SNet49 + FPN"),
    Row("ssdlite", "main", "torchvision ssdlite320_mobilenet_v3_large (peer)"),
    Row("fasterrcnn_mbv3", "main", "torchvision fasterrcnn_mobilenet_v3_large_320_fpn (peer)"),
    Row("dense_ssh", "main", "dense detector, SNet49 + SSH"),
    Row("tn_loss_smooth_l1", "box_loss", "R-CNN box loss smooth-L1", baseline=FULL),
    Row("tn_loss_iou", "box_loss", "R-CNN box loss IoU", baseline=FULL),
    Row("tn_loss_giou", "box_loss", "R-CNN box loss GIoU", baseline=FULL),
    Row("tn_loss_diou", "box_loss", "R-CNN box loss DIoU", baseline=FULL),
    Row("tn_small_objects", "small_objects", "copy-paste + oversampling on", baseline=FULL),
    Row("tn_small_anchors", "small_objects", "RPN anchors 16-256 px, 16 px densified 2x2",
        baseline=FULL),
    Row("tn_steps_matched", "small_objects", "control: no augmentation, 240 steps like "
        "tn_small_objects", baseline=FULL),
    Row("tn_no_cem", "thundernet", "without CEM", baseline=FULL),
    Row("tn_no_sam", "thundernet", "without SAM", baseline=FULL),
    Row("dense_anchors_off", "anchors", "FPN, FaceBoxes sizes, no densification, IoU matching"),
    Row("dense_anchors_on", "anchors", "densification + scale-compensation matching on",
        baseline="dense_anchors_off"),
    Row("tn_label_smoothing", "tricks", "label smoothing 0.1", baseline=FULL),
    Row("tn_mixup", "tricks", "visually coherent mixup", baseline=FULL),
    Row("tn_step", "tricks", "step decay instead of cosine", baseline=FULL),
    Row("tn_no_warmup", "tricks", "warmup off", baseline=FULL),
)
ROW_BY_NAME: dict[str, Row] = {row.name: row for row in ROWS}


def find_row(name: str) -> Row:
    """The row called ``name``; ValueError naming the valid rows otherwise."""
    if name not in ROW_BY_NAME:
        raise ValueError(f"unknown row {name!r}; rows: {', '.join(ROW_BY_NAME)}")
    return ROW_BY_NAME[name]


def result_path(out: Path, row: str, seed: int) -> Path:
    """Where the result JSON of (row, seed) is written."""
    return out / f"{row}_s{seed}.json"


# ----------------------------------------------------------------- data
def bccd_root() -> Path:
    """The BCCD VOC folder: ``$DETKIT_BCCD`` or ``../shared/datasets/BCCD`` beside the repo."""
    env = os.environ.get("DETKIT_BCCD")
    return Path(env) if env else REPO / ".." / "shared" / "datasets" / "BCCD"


def ensure_bccd(data_dir: Path = DATA_DIR) -> Path:
    """Convert BCCD to COCO JSON in ``data_dir`` with tools/convert_voc.py unless already there."""
    if all((data_dir / f"{split}.json").is_file() for split in ("train", "val", "test")):
        return data_dir
    root = bccd_root()
    if not (root / "Annotations").is_dir():
        raise FileNotFoundError(f"BCCD not found at {root}; set DETKIT_BCCD to its VOC folder")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")]).rstrip(os.pathsep)}
    subprocess.run([sys.executable, "tools/convert_voc.py", "--voc-root", str(root),
                    "--out-dir", str(data_dir)], check=True, env=env)
    return data_dir


def test_overrides(data_dir: Path, nms: str | None = None) -> list[str]:
    """tools/test.py overrides that evaluate on BCCD test (and set the NMS kind).

    Uses the config's ``test`` section when the schema has one; otherwise points
    ``data.val`` at the test split and sets the NMS in the model section.
    """
    from detkit.config import SCHEMA

    ann, img = data_dir / "test.json", data_dir
    if "test" in SCHEMA:
        out = [f"test.ann_file={ann}", f"test.img_dir={img}"]
        return out + ([f"test.nms={nms}"] if nms else [])
    out = [f"data.val.ann_file={ann}", f"data.val.img_dir={img}"]
    return out + ([f"model.nms={nms}"] if nms else [])


# ----------------------------------------------------------------- running
def _python(args: Sequence[str]) -> list[str]:
    return [sys.executable, *args]


def run_command(cmd: Sequence[str], runner: Callable[..., Any] = subprocess.run) -> float:
    """Run ``cmd`` in the repository root (output streams through); return its seconds."""
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    start = time.perf_counter()
    runner([str(c) for c in cmd], check=True)
    return time.perf_counter() - start


def train_and_test(row: Row, seed: int, data_dir: Path, work_root: Path,
                   overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Train a "train" row, evaluate its best.pth on test; return the measurements."""
    from detkit.config import load_config

    work = work_root / f"{row.name}_s{seed}"
    if work.exists():
        shutil.rmtree(work)
    commands = [
        _python(["tools/train.py", str(row.config), "--work-dir", str(work), "--no-progress",
                 f"seed={seed}", *overrides]),
        _python(["tools/test.py", str(row.config), str(work / "best.pth"), "--out",
                 str(work / "test"), f"seed={seed}", *overrides, *test_overrides(data_dir)]),
    ]
    train_s = run_command(commands[0])
    test_s = run_command(commands[1])
    cfg = load_config(row.config, [f"seed={seed}", *overrides])
    metrics = json.loads((work / "test" / "metrics.json").read_text())
    return {
        "config": cfg,
        "commands": [" ".join(c[1:]) for c in commands],
        "metrics": {k: v for k, v in metrics.items() if k != "per_class"},
        "per_class": metrics.get("per_class", {}),
        "train_wall_s": train_s,
        "test_wall_s": test_s,
        "train_images_per_s": median_images_per_s(work / "log.jsonl"),
        "latency_ms": inference_latency(cfg, work / "best.pth", data_dir),
        "latency_load_avg": os.getloadavg()[0],
        "curves": curves_from_log(work / "log.jsonl"),
        "anchor_coverage": anchor_coverage_rows(cfg, data_dir),
        **pr_and_drawn(data_dir, work / "test" / "detections.json"),
    }


def nms_ablation(row: Row, seed: int, data_dir: Path, work_root: Path,
                 overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Evaluate the checkpoint of ``row.checkpoint_of`` with every NMS kind."""
    from detkit.config import load_config

    ckpt = work_root / f"{row.checkpoint_of}_s{seed}" / "best.pth"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt} missing: run `python benchmarks/bccd.py run "
                                f"{row.checkpoint_of} --seed {seed}` first")
    cfg = load_config(row.config, [f"seed={seed}", *overrides])
    kinds, commands, wall = {}, [], 0.0
    for kind in NMS_KINDS:
        out = work_root / f"{row.name}_s{seed}" / kind
        cmd = _python(["tools/test.py", str(row.config), str(ckpt), "--out", str(out),
                       f"seed={seed}", *overrides, *test_overrides(data_dir, kind)])
        wall += run_command(cmd)
        metrics = json.loads((out / "metrics.json").read_text())
        kinds[kind] = {"metrics": {k: v for k, v in metrics.items() if k != "per_class"},
                       "per_class": metrics.get("per_class", {}),
                       "nms_ms_per_image": nms_milliseconds(cfg, ckpt, data_dir, kind)}
        commands.append(" ".join(cmd[1:]))
    return {"config": cfg, "commands": commands, "checkpoint": str(ckpt), "nms_kinds": kinds,
            "test_wall_s": wall}


def budget_dirs(epochs: int | None, out: Path, work_root: Path) -> tuple[Path, Path]:
    """Result and work folders of a budget: the base budget's, or ``epochs<N>/`` inside them."""
    if epochs is None:
        return out, work_root
    return out / f"epochs{epochs}", work_root / f"epochs{epochs}"


def budget_overrides(row: Row, epochs: int | None) -> list[str]:
    """Config overrides of the budget check: ``schedule.epochs=N``; a row whose length is
    fixed in steps (``schedule.max_iters``, the step-matched control) scales its steps by
    ``N / base epochs``, so it keeps matching the row it controls."""
    if epochs is None:
        return []
    if epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    if row.kind != "train":
        raise ValueError(f"row {row.name!r} trains nothing: no epoch budget to change")
    from detkit.config import load_config

    schedule = load_config(REPO / row.config)["schedule"]
    if schedule["max_iters"]:
        return [f"schedule.max_iters={round(schedule['max_iters'] * epochs / schedule['epochs'])}"]
    return [f"schedule.epochs={epochs}"]


def run_row(name: str, seed: int, out: Path, data_dir: Path = DATA_DIR,
            work_root: Path = WORK_ROOT, overrides: Sequence[str] = (),
            epochs: int | None = None) -> Path:
    """Run one (row, seed) and write its result JSON; return the JSON's path.

    ``overrides`` (dotted ``key=value``) change the budget: for smoke tests only; they are
    recorded in the JSON and the renderer marks such results. ``epochs``: the budget check,
    the same row trained for ``epochs`` epochs instead of the base budget's; its results go to
    ``<out>/epochs<N>/`` and its work folders to ``<work_root>/epochs<N>/``.
    """
    row = find_row(name)
    budget = budget_overrides(row, epochs)
    out, work_root = budget_dirs(epochs, out, work_root)
    ensure_bccd(data_dir)
    start = time.perf_counter()
    body = (nms_ablation if row.kind == "nms" else train_and_test)(row, seed, data_dir, work_root,
                                                                 [*budget, *overrides])
    import torch

    result = {"row": row.name, "group": row.group, "title": row.title, "seed": seed,
              "kind": row.kind, "baseline": row.baseline, "overrides": list(overrides),
              "budget_epochs": epochs, **body,
              "wall_s": time.perf_counter() - start,
              "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "torch": str(torch.__version__), "threads": torch.get_num_threads()}
    path = result_path(out, row.name, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, allow_nan=False, default=str) + "\n")
    print(f"wrote {path}", flush=True)
    return path


def remeasure_latency(name: str, seed: int, out: Path, data_dir: Path = DATA_DIR,
                      work_root: Path = WORK_ROOT) -> float:
    """Measure a finished run's latency again (e.g. on an idle machine) and update its JSON."""
    path = result_path(out, name, seed)
    result = json.loads(path.read_text())
    ckpt = work_root / f"{name}_s{seed}" / "best.pth"
    if "latency_ms" not in result or not ckpt.is_file():
        raise FileNotFoundError(f"{path} has no latency or {ckpt} is missing")
    result["latency_ms"] = inference_latency(result["config"], ckpt, data_dir)
    result["latency_load_avg"] = os.getloadavg()[0]
    path.write_text(json.dumps(result, indent=1, allow_nan=False, default=str) + "\n")
    return result["latency_ms"]


def list_rows(out: Path) -> list[str]:
    """One line per row: name, group, seeds with a result in ``out``, title."""
    lines = []
    for row in ROWS:
        seeds = sorted(int(p.stem.rsplit("_s", 1)[1]) for p in out.glob(f"{row.name}_s*.json")
                       if p.stem.rsplit("_s", 1)[0] == row.name)
        done = ",".join(map(str, seeds)) if seeds else "not run yet"
        lines.append(f"{row.name:<20} {row.group:<14} seeds: {done:<12} {row.title}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one row")
    run.add_argument("row", help="row name (see `list`)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", default=str(RESULTS_DIR), help="folder of the result JSON files")
    run.add_argument("--set", nargs="*", default=[], metavar="key=value",
                     help="config overrides for smoke tests (recorded; not the benchmark budget)")
    run.add_argument("--epochs", type=int, default=None,
                     help="budget check: train for this many epochs instead of the base "
                          "budget (results in <out>/epochs<N>/)")
    lat = sub.add_parser("latency", help="measure the latency of finished runs again")
    lat.add_argument("rows", nargs="+", help="ROW or ROW:SEED")
    lat.add_argument("--out", default=str(RESULTS_DIR))
    lst = sub.add_parser("list", help="list the rows and the seeds already run")
    lst.add_argument("--out", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    os.chdir(REPO)
    if args.command == "list":
        print("\n".join(list_rows(Path(args.out))))
        return 0
    if args.command == "latency":
        for item in args.rows:
            name, _, seed = item.partition(":")
            ms = remeasure_latency(name, int(seed or 0), Path(args.out))
            print(f"{item}: {ms:.1f} ms (load average {os.getloadavg()[0]:.2f})", flush=True)
        return 0
    try:
        run_row(args.row, args.seed, Path(args.out), overrides=args.set, epochs=args.epochs)
    except (ValueError, FileNotFoundError, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
