"""Benchmark suite: every row and claim on any COCO dataset, k-fold, at equal training time.

Usage::

    python benchmarks/suite.py list                       # rows, and the folds already run
    python benchmarks/suite.py run ROW [ROW ...] --seeds 0,1,2
    python benchmarks/suite.py run ROW --data DIR [--img-dir IMGS] [--name NAME]
    python benchmarks/suite.py latency ROW [ROW ...]     # finished rows, back to back

``--data DIR`` holds the COCO split files (``train.json``, ``val.json``, ``test.json``; any
of them) and ``--img-dir`` the folder their ``file_name`` paths are relative to (default DIR).
Without ``--data`` the suite runs on BCCD, converted once from ``../shared/datasets/BCCD``
(or ``$DETKIT_BCCD``) into ``data/bccd``. Everything a run reports (metrics, latency image,
anchor coverage, curves, proposal recall) comes from the chosen dataset.

Protocol (:mod:`kfold`): all splits are pooled and cut into ``--k`` folds (3); fold ``f`` trains
on the others and predicts fold ``f``; the held-out predictions are pooled into one COCO
evaluation over every image. The model evaluated is the last one (``last.pth``): no
checkpoint is selected on the images it is scored on.

Budget: every row trains ``--minutes`` (2) per fold on an idle 2-core machine; its
``schedule.max_iters`` is that budget divided by the row's seconds per iteration on such a
machine, read from ``calibration.json`` in the results folder. A row missing there is measured
(30 iterations, the median of the last 25) and recorded with the load average at the time; on
a busy machine that figure is too slow, so measure all rows of a comparison back to back, or
write idle-machine figures. Rows that change only the training recipe (loss, augmentation,
schedule) take the full model's iterations instead, so they compare at equal steps. Warmup is
a fraction of the run (``schedule.warmup_fraction``), so it means the same on every dataset.

Resumable: a finished fold (its result JSON exists) is skipped; a fold whose work folder holds
``last.pth`` resumes from it. Either is refused, naming the keys, when the row's YAML now sets
another value than the kept fold was made with (:mod:`suite_store`). Results go to
``benchmarks/results/<name>/k<k>_<minutes>min/<row>_s<seed>_f<fold>.json``, with the fold's
held-out detections beside it (``.dets.json.gz``). The "nms" row trains nothing: it predicts
every fold with the full model's fold checkpoints once per NMS kind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
# The suite measures latency while rows train in the background. Without passive waiting,
# OpenMP threads spin and a 2-thread forward pass slows several times over whenever another
# process holds a core (the 56 ms vs 12.4 ms of ThunderNet-lite in latency.json). The tools
# set the same; it must precede the first torch import (suite_measure imports it lazily).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from kfold import Dataset, Folds, write_folds  # noqa: E402
from suite_measure import (  # noqa: E402
    anchor_coverage_rows,
    curves_from_log,
    inference_latency,
    median_images_per_s,
    nms_milliseconds,
    read_log,
)
from suite_rows import NMS_KINDS, Row, find_row  # noqa: E402
from suite_store import check_kept_fold, compact, json_safe, write_dets  # noqa: E402

RESULTS_DIR = Path("benchmarks") / "results"
WORK_ROOT = Path("work_dirs") / "bench"
BCCD_DIR = Path("data") / "bccd"
CALIBRATION_ITERS = 30


@dataclass(frozen=True)
class Context:
    """Where one suite invocation reads and writes, and its budget."""

    dataset: Dataset
    folds: Folds
    out: Path
    work: Path
    minutes: float

    def result(self, row: str, seed: int, fold: int) -> Path:
        """Result JSON of (row, seed, fold)."""
        return self.out / f"{row}_s{seed}_f{fold}.json"

    def dets(self, row: str, seed: int, fold: int) -> Path:
        """Held-out detections of (row, seed, fold), gzip JSON."""
        return self.out / f"{row}_s{seed}_f{fold}.dets.json.gz"

    def work_dir(self, row: str, seed: int, fold: int) -> Path:
        """Training folder of (row, seed, fold)."""
        return self.work / f"{row}_s{seed}_f{fold}"


# ----------------------------------------------------------------- data
def bccd_root() -> Path:
    """The BCCD VOC folder: ``$DETKIT_BCCD`` or ``../shared/datasets/BCCD`` beside the repo."""
    env = os.environ.get("DETKIT_BCCD")
    return Path(env) if env else REPO / ".." / "shared" / "datasets" / "BCCD"


def ensure_bccd(data_dir: Path = BCCD_DIR) -> Path:
    """Convert BCCD to COCO JSON in ``data_dir`` with tools/convert_voc.py unless already there."""
    if all((data_dir / f"{split}.json").is_file() for split in ("train", "val", "test")):
        return data_dir
    root = bccd_root()
    if not (root / "Annotations").is_dir():
        raise FileNotFoundError(f"BCCD not found at {root}; set DETKIT_BCCD to its VOC folder")
    subprocess.run([sys.executable, "tools/convert_voc.py", "--voc-root", str(root),
                    "--out-dir", str(data_dir)], check=True)
    return data_dir


def make_context(data: str | None, img_dir: str | None, name: str | None, k: int,
                 minutes: float, out_root: Path = RESULTS_DIR, work_root: Path = WORK_ROOT
                 ) -> Context:
    """The dataset (BCCD unless ``data`` is given), its folds and the output folders."""
    if minutes <= 0:
        raise ValueError(f"--minutes must be positive, got {minutes}")
    folder = Path(data) if data else ensure_bccd()
    dataset = Dataset.from_folder(folder, Path(img_dir) if img_dir else None, name)
    tag = f"{dataset.name}/k{k}_{minutes:g}min"
    folds = write_folds(dataset, k, work_root / dataset.name / f"folds_k{k}")
    return Context(dataset, folds, out_root / tag, work_root / tag, minutes)


# ----------------------------------------------------------------- running
def run_command(cmd: Sequence[str]) -> float:
    """Run ``cmd`` in the repository root (output streams through); return its seconds."""
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    start = time.perf_counter()
    subprocess.run([str(c) for c in cmd], check=True)
    return time.perf_counter() - start


def seconds_per_iteration(log: Path, skip: int = 5) -> float:
    """Median seconds of one training iteration from a log with a record per iteration."""
    train, _ = read_log(log)
    t = [r["train_seconds"] for r in train if "train_seconds" in r]
    steps = [b - a for a, b in zip(t, t[1:], strict=False)][skip:]
    if not steps:
        raise ValueError(f"{log}: too few timed iterations to calibrate")
    return float(statistics.median(steps))


def calibration(ctx: Context, row: Row) -> dict[str, Any]:
    """Seconds per iteration of ``row`` on this dataset (measured once, then read back)."""
    path = ctx.out / "calibration.json"
    table = json.loads(path.read_text()) if path.is_file() else {}
    if row.name not in table:
        work = ctx.work / "calibration" / row.name
        shutil.rmtree(work, ignore_errors=True)
        train, _ = ctx.folds.files[0]
        run_command([sys.executable, "tools/train.py", str(row.config), "--work-dir", str(work),
                     "--no-progress", f"schedule.max_iters={CALIBRATION_ITERS}",
                     "train.log_interval=1", "eval.interval=0", "data.val.ann_file=null",
                     f"data.train.ann_file={train}", f"data.train.img_dir={ctx.dataset.img_dir}"])
        table = json.loads(path.read_text()) if path.is_file() else {}
        table[row.name] = {"s_per_iter": seconds_per_iteration(work / "log.jsonl"),
                           "load_avg": os.getloadavg()[0],
                           "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return table[row.name]


def max_iters(ctx: Context, row: Row) -> int:
    """The row's training length: ``minutes`` at its own measured speed, or the iterations of
    the row it takes its steps from."""
    if row.steps_of:
        return max_iters(ctx, find_row(row.steps_of))
    return max(1, round(ctx.minutes * 60.0 / calibration(ctx, row)["s_per_iter"]))


def train_overrides(ctx: Context, row: Row, seed: int, fold: int, iters: int) -> list[str]:
    """tools/train.py overrides of a fold: its training images, length, and (fold 0 only) a
    held-out curve: the held-out fold is evaluated 4 times during training (never used to
    choose the model: the suite tests ``last.pth``)."""
    from detkit.config import load_config

    cfg = load_config(row.config)
    train, test = ctx.folds.files[fold]
    n_train = len(json.loads(Path(train).read_text())["images"])
    run_epochs = iters / max(1, n_train // cfg["data"]["batch_size"])
    out = [f"seed={seed}", f"data.train.ann_file={train}",
           f"data.train.img_dir={ctx.dataset.img_dir}", f"schedule.max_iters={iters}"]
    if fold == 0:
        out += [f"data.val.ann_file={test}", f"data.val.img_dir={ctx.dataset.img_dir}",
                f"eval.interval={max(1, int(run_epochs) // 4)}"]
    else:
        out += ["data.val.ann_file=null", "eval.interval=0"]
    if cfg["schedule"]["decay"] == "step":
        # step decay at 2/3 and 5/6 of the run, where [4, 5] of 6 epochs put it
        out.append(f"schedule.milestones=[{max(1, round(run_epochs * 4 / 6))},"
                   f"{max(1, round(run_epochs * 5 / 6))}]")
    return out


def test_overrides(ctx: Context, fold: int, nms: str | None = None) -> list[str]:
    """tools/test.py overrides that predict the held-out fold (and set the NMS kind)."""
    _, test = ctx.folds.files[fold]
    out = [f"test.ann_file={test}", f"test.img_dir={ctx.dataset.img_dir}"]
    return out + ([f"test.nms={nms}"] if nms else [])


def fold_overrides(ctx: Context, row: Row, seed: int, fold: int) -> list[str]:
    """The overrides of one (row, seed, fold) on the row's config: those of training for a
    "train" row, the seed for an "nms" row (which only tests)."""
    if row.kind == "nms":
        return [f"seed={seed}"]
    return train_overrides(ctx, row, seed, fold, max_iters(ctx, row))


def fold_config(ctx: Context, row: Row, seed: int, fold: int) -> dict[str, Any]:
    """The resolved config of one (row, seed, fold) (:func:`fold_overrides` applied)."""
    from detkit.config import load_config

    return load_config(row.config, fold_overrides(ctx, row, seed, fold))


def train_fold(ctx: Context, row: Row, seed: int, fold: int) -> dict[str, Any]:
    """Train (or resume) and test one fold of a "train" row; return its measurements."""
    work = ctx.work_dir(row.name, seed, fold)
    iters = max_iters(ctx, row)
    overrides = train_overrides(ctx, row, seed, fold, iters)
    resume = (work / "last.pth").is_file()
    if work.exists() and not resume:
        shutil.rmtree(work)
    train_cmd = [sys.executable, "tools/train.py", str(row.config), "--work-dir", str(work),
                 "--no-progress", *(["--resume"] if resume else []), *overrides]
    test_cmd = [sys.executable, "tools/test.py", str(row.config), str(work / "last.pth"),
                "--out", str(work / "test"), f"seed={seed}", *test_overrides(ctx, fold)]
    train_s = run_command(train_cmd)
    test_s = run_command(test_cmd)
    cfg = fold_config(ctx, row, seed, fold)
    metrics = json.loads((work / "test" / "metrics.json").read_text())
    dets = json.loads((work / "test" / "detections.json").read_text())
    write_dets(ctx.dets(row.name, seed, fold), compact(dets))
    recall_file = work / "test" / "proposal_recall.json"
    gt_roi_file = work / "test" / "gt_roi_scores.json"
    train_log, _ = read_log(work / "log.jsonl")
    body: dict[str, Any] = {
        "config": cfg, "commands": [" ".join(c[1:]) for c in (train_cmd, test_cmd)],
        "resumed": resume, "max_iters": iters,
        "fold_metrics": {k: v for k, v in metrics.items() if k != "per_class"},
        "train_wall_s": train_s, "test_wall_s": test_s,
        "train_seconds": train_log[-1].get("train_seconds") if train_log else None,
        "train_images_per_s": median_images_per_s(work / "log.jsonl"),
        "proposal_recall": (json.loads(recall_file.read_text())
                            if recall_file.is_file() else None),
        "gt_roi_scores": (json.loads(gt_roi_file.read_text())
                          if gt_roi_file.is_file() else None),
    }
    if fold == 0:
        body["curves"] = curves_from_log(work / "log.jsonl")
        body["latency_ms"] = inference_latency(cfg, work / "last.pth", ctx.folds.all_file,
                                               ctx.dataset.img_dir)
        body["latency_load_avg"] = os.getloadavg()[0]
        body["anchor_coverage"] = anchor_coverage_rows(cfg, ctx.folds.all_file)
    return body


def nms_fold(ctx: Context, row: Row, seed: int, fold: int) -> dict[str, Any]:
    """Predict one fold with the full model's fold checkpoint once per NMS kind."""
    ckpt = ctx.work_dir(row.checkpoint_of, seed, fold) / "last.pth"
    if not ckpt.is_file() or not ctx.result(row.checkpoint_of, seed, fold).is_file():
        raise FileNotFoundError(f"{ckpt} missing: run `python benchmarks/suite.py run "
                                f"{row.checkpoint_of} --seeds {seed}` first")
    cfg = fold_config(ctx, row, seed, fold)
    _, test = ctx.folds.files[fold]
    kinds, commands, all_dets = {}, [], {}
    for kind in NMS_KINDS:
        out = ctx.work_dir(row.name, seed, fold) / kind
        cmd = [sys.executable, "tools/test.py", str(row.config), str(ckpt), "--out", str(out),
               f"seed={seed}", *test_overrides(ctx, fold, kind)]
        run_command(cmd)
        metrics = json.loads((out / "metrics.json").read_text())
        all_dets[kind] = compact(json.loads((out / "detections.json").read_text()))
        kinds[kind] = {"fold_metrics": {k: v for k, v in metrics.items() if k != "per_class"},
                       "nms_ms_per_image": nms_milliseconds(cfg, ckpt, Path(test),
                                                            ctx.dataset.img_dir, kind)}
        commands.append(" ".join(cmd[1:]))
    write_dets(ctx.dets(row.name, seed, fold), all_dets)
    return {"config": cfg, "commands": commands, "checkpoint": str(ckpt), "nms_kinds": kinds}


def run_fold(ctx: Context, name: str, seed: int, fold: int) -> Path:
    """Run one (row, seed, fold) unless its result exists; return the result path. A kept
    result or half-trained run made with another config is refused (:mod:`suite_store`)."""
    path = ctx.result(name, seed, fold)
    row = find_row(name)
    from detkit.config import explicit_config

    check_kept_fold(path, ctx.work_dir(name, seed, fold),
                    explicit_config(row.config, fold_overrides(ctx, row, seed, fold)))
    if path.is_file():
        print(f"done already: {path}", flush=True)
        return path
    start = time.perf_counter()
    body = (nms_fold if row.kind == "nms" else train_fold)(ctx, row, seed, fold)
    import torch

    result = {"row": row.name, "group": row.group, "title": row.title, "seed": seed,
              "fold": fold, "k": ctx.folds.k, "dataset": ctx.dataset.name,
              "minutes": ctx.minutes, "budget": row.budget_text, "kind": row.kind,
              "baseline": row.baseline, **body, "wall_s": time.perf_counter() - start,
              "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "load_avg": os.getloadavg()[0],
              "torch": str(torch.__version__), "threads": torch.get_num_threads()}
    path.parent.mkdir(parents=True, exist_ok=True)
    result["config"] = json_safe(result["config"])  # SNIP's open ranges: "inf" strings
    path.write_text(json.dumps(result, indent=1, allow_nan=False, default=str) + "\n")
    print(f"wrote {path}", flush=True)
    return path


def remeasure_latency(ctx: Context, names: Sequence[str], seed: int = 0, rounds: int = 3
                      ) -> dict[str, Any]:
    """Latency of the rows' fold-0 models of ``seed`` measured back to back, ``rounds`` times
    in turn (the median per row), so a busy machine slows every row alike; written to
    ``latency.json`` in the results folder, which the renderer prefers."""
    from detkit.config import load_config

    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        for name in names:
            row = find_row(name)
            ckpt = ctx.work_dir(name, seed, 0) / "last.pth"
            if not ckpt.is_file():
                raise FileNotFoundError(f"{ckpt} missing: run `python benchmarks/suite.py run "
                                        f"{name} --seeds {seed}` first")
            cfg = load_config(row.config, [f"seed={seed}"])
            times[name].append(inference_latency(cfg, ckpt, ctx.folds.all_file,
                                                 ctx.dataset.img_dir))
    table = {"seed": seed, "rounds": rounds, "load_avg": os.getloadavg()[0],
             "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "latency_ms": {n: statistics.median(v) for n, v in times.items()}}
    path = ctx.out / "latency.json"
    path.write_text(json.dumps(table, indent=1) + "\n")
    return table


def fold_status(ctx: Context, name: str, seed: int) -> str:
    """"3/3" style count of the finished folds of (row, seed)."""
    done = sum(ctx.result(name, seed, f).is_file() for f in range(ctx.folds.k))
    return f"{done}/{ctx.folds.k}"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    from suite_rows import ROWS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "list", "latency"),
                        help="run rows, list them, or measure the latency of finished rows "
                             "back to back")
    parser.add_argument("rows", nargs="*", help="row names (see `list`); run: at least one")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (0,1,2)")
    parser.add_argument("--data", default=None, help="folder of train/val/test.json (BCCD)")
    parser.add_argument("--img-dir", default=None, help="image folder (default: --data)")
    parser.add_argument("--name", default=None, help="dataset name (default: folder name)")
    parser.add_argument("--k", type=int, default=3, help="folds (3)")
    parser.add_argument("--minutes", type=float, default=2.0,
                        help="training minutes per fold and row (2)")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    try:
        ctx = make_context(args.data, args.img_dir, args.name, args.k, args.minutes)
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        if args.command == "list":
            for row in ROWS:
                done = " ".join(f"s{s}:{fold_status(ctx, row.name, s)}" for s in seeds)
                print(f"{row.name:<20} {row.group:<13} {done:<22} {row.title}")
            return 0
        if not args.rows:
            parser.error(f"{args.command} needs at least one row")
        if args.command == "latency":
            table = remeasure_latency(ctx, args.rows, seeds[0])
            for name, ms in table["latency_ms"].items():
                print(f"{name}: {ms:.1f} ms (load average {table['load_avg']:.2f})")
            return 0
        for name in args.rows:
            find_row(name)
        for name in args.rows:
            for seed in seeds:
                for fold in range(ctx.folds.k):
                    run_fold(ctx, name, seed, fold)
    except (ValueError, FileNotFoundError, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
