"""Data-loader throughput on BCCD at 320, with and without small-object copy-paste + oversampling.

BCCD (Pascal VOC) is converted to COCO JSON in a temporary folder with
``detkit.data.voc.convert_voc_to_coco``; the ``train`` split is loaded with
``detkit.data.coco.CocoDetection``. For 0 and 2 DataLoader workers, the time per image is the
median over ``--runs`` runs (base and copy-paste runs interleaved, first batch excluded as
warm-up); wall time and CPU time (main process + workers) are both reported, since wall
time on a shared machine follows the other jobs' load. Requirement: copy-paste +
oversampling <= 1.25x the base time per image (goal 1.15x).

    python benchmarks/bench_data.py [--runs 5] [--images 96] [--draw batch.png]

``--draw PATH`` writes one copy-paste batch with its boxes (pasted boxes in yellow) to a PNG.
BCCD is found at ``$DETKIT_BCCD`` or ``<repo>/../shared/datasets/BCCD``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from detkit.data.coco import CocoDetection
from detkit.data.collate import collate_detection
from detkit.data.sampling import SmallObjectOversampler, small_object_counts_from_coco
from detkit.data.transforms import build_transforms
from detkit.data.voc import convert_voc_to_coco

INPUT_SIZE = 320
BASE_CFG = [{"type": "HorizontalFlip", "p": 0.5}]
COPY_PASTE_CFG = [*BASE_CFG, {"type": "SmallObjectCopyPaste", "num_copies": 3, "seed": 0}]
COLORS = {"Platelets": (255, 60, 60), "RBC": (60, 220, 60), "WBC": (60, 140, 255)}


def bccd_root() -> Path:
    """BCCD location: $DETKIT_BCCD or the shared datasets folder next to the repository."""
    env = os.environ.get("DETKIT_BCCD")
    root = Path(env) if env else Path(__file__).resolve().parents[1] / ".." / "shared"
    return root if env else root / "datasets" / "BCCD"


def make_dataset(json_path: Path, copy_paste: bool) -> CocoDetection:
    """CocoDetection over ``json_path`` with the base or the copy-paste training pipeline."""
    cfg = COPY_PASTE_CFG if copy_paste else BASE_CFG
    return CocoDetection(
        json_path, transforms=build_transforms(cfg, INPUT_SIZE, train=True), log=None
    )


def make_loader(ds: CocoDetection, copy_paste: bool, workers: int, batch: int) -> DataLoader:
    """DataLoader; with copy-paste, images with small objects are oversampled (repeat 2)."""
    sampler = None
    if copy_paste:
        counts = small_object_counts_from_coco(ds.coco.dataset, ds.ids, input_size=INPUT_SIZE)
        sampler = SmallObjectOversampler(counts, repeat=2, seed=0)
    return DataLoader(
        ds,
        batch_size=batch,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_detection,
    )


def _worker_cpu_seconds(pids: list[int]) -> float:
    """user + system CPU seconds of the given processes (Linux /proc; 0.0 elsewhere)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def time_per_image(loader: DataLoader, images: int) -> tuple[float, float]:
    """(wall, CPU) seconds per image over ``images`` images after a warm-up batch.

    CPU time adds the main process and the DataLoader worker processes; unlike wall time it
    barely changes when other jobs load the machine.
    """
    it = iter(loader)
    next(it)
    pids = [w.pid for w in getattr(it, "_workers", [])]
    seen, start = 0, time.perf_counter()
    cpu_start = time.process_time() + _worker_cpu_seconds(pids)
    while seen < images:
        batch_images, _ = next(it)
        seen += len(batch_images)
    wall = time.perf_counter() - start
    cpu = time.process_time() + _worker_cpu_seconds(pids) - cpu_start
    del it
    return wall / seen, cpu / seen


def benchmark(json_path: Path, runs: int, images: int, batch: int) -> list[tuple]:
    """Rows (workers, metric, base s/img, copy-paste s/img), medians over ``runs``."""
    datasets = {cp: make_dataset(json_path, cp) for cp in (False, True)}
    rows = []
    for workers in (0, 2):
        times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(runs):
            for cp in (False, True):
                loader = make_loader(datasets[cp], cp, workers, batch)
                times[cp].append(time_per_image(loader, images))
        for k, metric in enumerate(("wall", "cpu")):
            base = statistics.median(t[k] for t in times[False])
            cp_time = statistics.median(t[k] for t in times[True])
            rows.append((workers, metric, base, cp_time))
    return rows


def print_table(rows: list[tuple]) -> None:
    """Print the throughput table and the copy-paste / base ratio per worker setting."""
    print(f"BCCD train, input {INPUT_SIZE}, median per setting (cp+os: copy-paste + oversampling)")
    header = f"{'workers':>7} | {'time':>4} | {'base ms/img':>11} | {'base img/s':>10} | "
    header += f"{'cp+os ms/img':>12} | {'cp+os img/s':>11} | {'ratio':>6} | verdict"
    print(header)
    print("-" * len(header))
    for workers, metric, base, cp in rows:
        ratio = cp / base
        verdict = "goal met" if ratio <= 1.15 else ("ok" if ratio <= 1.25 else "TOO SLOW")
        print(
            f"{workers:>7} | {metric:>4} | {base * 1e3:>11.2f} | {1 / base:>10.1f} | "
            f"{cp * 1e3:>12.2f} | {1 / cp:>11.1f} | {ratio:>5.2f}x | {verdict}"
        )
    print("img/s of 'cpu' rows = images per CPU-second; wall rows depend on the machine's load")


def draw_batch(json_path: Path, out_png: Path, batch: int = 4, seed: int = 0) -> Path:
    """Draw one copy-paste + oversampling batch (2 x 2 grid) with its boxes to ``out_png``.

    Original boxes are coloured by class (Platelets red, RBC green, WBC blue); pasted boxes
    (those past the image's original box count) are yellow.
    """
    torch.manual_seed(seed)
    ds = make_dataset(json_path, copy_paste=True)
    loader = make_loader(ds, True, 0, batch)
    images, targets = next(iter(loader))
    index_of = {img_id: i for i, img_id in enumerate(ds.ids)}
    tiles = []
    for image, target in zip(images, targets, strict=True):
        tile = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8).copy()
        n_orig = len(ds.raw_target(index_of[target["image_id"]])["boxes"])
        for k, (box, label) in enumerate(zip(target["boxes"], target["labels"], strict=True)):
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            name = ds.class_names[int(label) - 1]
            color = (255, 230, 0) if k >= n_orig else COLORS.get(name, (255, 255, 255))
            cv2.rectangle(tile, (x1, y1), (x2 - 1, y2 - 1), color, 1)
        tiles.append(tile)
    while len(tiles) % 2:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + 2], axis=1) for i in range(0, len(tiles), 2)]
    grid = np.concatenate(rows, axis=0)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return out_png


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: convert BCCD, run the benchmark and/or draw a batch."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per setting (median)")
    parser.add_argument("--images", type=int, default=96, help="images timed per run")
    parser.add_argument("--batch", type=int, default=8, help="batch size")
    parser.add_argument("--draw", type=Path, default=None, help="write one batch to this PNG")
    parser.add_argument("--no-bench", action="store_true", help="only draw, skip timing")
    args = parser.parse_args(argv)
    root = bccd_root()
    if not (root / "Annotations").is_dir():
        print(f"BCCD not found at {root} (set DETKIT_BCCD)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        report = convert_voc_to_coco(root, tmp)
        json_path = Path(tmp) / "train.json"
        print(f"converted BCCD: {report.images} images, {report.kept} objects -> {json_path.name}")
        if args.draw is not None:
            print(f"drew one batch to {draw_batch(json_path, args.draw)}")
        if not args.no_bench:
            print_table(benchmark(json_path, args.runs, args.images, args.batch))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
