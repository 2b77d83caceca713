"""Batch-1 latency against input size: ThunderNet-lite eager and folded next to SSDlite.

The trained BCCD checkpoints of ``thundernet_full`` and ``ssdlite`` (``--ckpt-dir``, see
``bench_latency.py``; SSDlite with 100 candidates per class into its NMS) run on BCCD test
images letterboxed to each of ``--sizes``. detkit's models take the letterboxed tensor as
it is; torchvision's SSD resizes inside itself, so its transform is set to the same square
size (:func:`set_input_size`), otherwise it would shrink every input back to 320. At each
size the three models take turns call by call (``latency_parts.split_times``: median total,
network and post-processing ms); the table prints each figure against SSDlite at the same
size and against the model's own 320 figure, next to the pixel ratio.

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_latency_size.py [--sizes 320 480 640
960] [--runs 15] [--plot docs/img/latency_vs_size.png] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP waits
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_latency import PEER, bccd_images, load_row, ssdlite  # noqa: E402
from latency_parts import BCCD_TEST, SUITE_CHECKPOINTS, growth, plot_curves, split_times, write_json  # noqa: E402  # noqa: E402

SIZES = (320, 480, 640, 960)


def set_input_size(model: torch.nn.Module, size: int) -> torch.nn.Module:
    """Make a torchvision detector resize its inputs to ``size`` x ``size`` (in place).

    torchvision's SSD / Faster R-CNN resize inside ``model.transform``
    (``GeneralizedRCNNTransform``: ``min_size``, ``max_size`` and, for SSD, ``fixed_size``);
    detkit's detectors have no resizing step and are returned unchanged.
    """
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    transform = getattr(model, "transform", None)
    if isinstance(transform, GeneralizedRCNNTransform):
        transform.min_size = (int(size),)
        transform.max_size = int(size)
        if transform.fixed_size is not None:
            transform.fixed_size = (int(size), int(size))
    return model


def build(ckpt_dir: Path) -> dict[str, torch.nn.Module]:
    """The three series' models: ThunderNet-lite eager and folded, SSDlite (peer) eager."""
    from detkit.models.fuse import fold_batchnorm

    tn = load_row(ckpt_dir, "thundernet_full")
    return {"ThunderNet-lite eager": tn, "ThunderNet-lite folded": fold_batchnorm(tn),
            f"{PEER} eager": ssdlite(ckpt_dir=ckpt_dir)}


def sweep(models: dict[str, torch.nn.Module], ann_file: Path, sizes: list[int], images: int,
          runs: int) -> dict[str, dict[int, dict[str, float]]]:
    """{series: {size: {"total", "network", "post"} median ms}}, models interleaved per size."""
    out: dict[str, dict[int, dict[str, float]]] = {name: {} for name in models}
    for size in sizes:
        inputs = bccd_images(ann_file, images, size)
        for model in models.values():
            set_input_size(model, size)
        fns = {name: (m, (lambda i, m=m, x=inputs: m([x[i % len(x)]])))
               for name, m in models.items()}
        with torch.no_grad():
            ms = split_times(fns, runs)
        for name, row in ms.items():
            out[name][size] = row
        print(f"size {size}: " + ", ".join(f"{n} {r['total']:.1f} ms" for n, r in ms.items()),
              flush=True)
    return out


def report(result: dict[str, dict[int, dict[str, float]]], threads: int, runs: int) -> None:
    """Print the table: total / network / post ms, x SSDlite at that size, x own first size."""
    peer = result[f"{PEER} eager"]
    sizes = sorted(peer)
    print(f"\nLatency vs input size, batch 1, {threads} threads, median of {runs} calls "
          f"(load average {os.getloadavg()[0]:.2f})")
    print(f"{'model':28s} {'size':>5s} {'total':>8s} {'network':>8s} {'post':>6s} "
          f"{'x SSDlite':>9s} {'x own ' + str(sizes[0]):>9s} {'pixels x':>8s}")
    for name, rows in result.items():
        first = rows[sizes[0]]["total"]
        for size in sizes:
            row = rows[size]
            print(f"{name:28s} {size:5d} {row['total']:8.1f} {row['network']:8.1f} "
                  f"{row['post']:6.1f} {row['total'] / peer[size]['total']:9.2f} "
                  f"{row['total'] / first:9.2f} {(size / sizes[0]) ** 2:8.2f}")
    for name, rows in result.items():
        print(f"{name}: {sizes[-1]} / {sizes[0]} = "
              f"{growth({s: r['total'] for s, r in rows.items()}):.2f}x")


def main() -> None:
    """Parse arguments, sweep the sizes, print, plot and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--images", type=int, default=4, help="BCCD test images cycled")
    parser.add_argument("--ckpt-dir", type=Path, default=SUITE_CHECKPOINTS)
    parser.add_argument("--ann-file", type=Path, default=BCCD_TEST)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = sweep(build(args.ckpt_dir), args.ann_file, sorted(args.sizes), args.images,
                   args.runs)
    report(result, args.threads, args.runs)
    totals = {name: {s: r["total"] for s, r in rows.items()} for name, rows in result.items()}
    if args.plot:
        plot_curves(totals, args.plot, "input side (pixels, square letterbox)",
                    "ms per image (median, batch 1)",
                    f"Latency vs input size (CPU, {args.threads} threads)")
    if args.json:
        record: dict[str, Any] = {"threads": args.threads, "runs": args.runs,
                                  "sizes": sorted(args.sizes), "latency_ms": result}
        write_json(args.json, record)


if __name__ == "__main__":
    main()
