"""Folder throughput of ``predict``: images/s against today's one-at-a-time loop, same run.

The trained ThunderNet-lite BCCD checkpoint predicts BCCD test images (files decoded from
disk each time) through :class:`detkit.api.Detector`. The peer is the one-at-a-time loop
(batch 1, decoding in the main process, eager PyTorch); the other settings add batching,
decoding workers (:mod:`detkit.engine.prefetch`) and BatchNorm folding. Settings take
turns round by round; the median images/s of ``--rounds`` rounds is printed with its ratio
to the peer's and the 1-minute load average.

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_predict.py [--images 32] [--rounds 3]
[--json PATH]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP waits

import torch
import yaml
from latency_parts import BCCD_TEST, SUITE_CHECKPOINTS, write_json

SETTINGS = {  # name: (batch size, workers, runtime)
    "one at a time (peer)": (1, 0, "torch"),
    "batch 8": (8, 0, "torch"),
    "batch 8 + 1 worker": (8, 1, "torch"),
    "batch 8 + 1 worker, folded": (8, 1, "folded"),
}


def detector(ckpt_dir: Path, runtime: str):  # -> detkit.api.Detector
    """The trained ThunderNet-lite (seed 0, fold 0) as a Detector with ``runtime``."""
    from detkit.api import Detector
    from detkit.engine.inference import load_detector, read_test_options

    folder = ckpt_dir / "thundernet_full_s0_f0"
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    options = read_test_options(cfg)
    loaded = load_detector(cfg, folder / "last.pth", 3, "cpu", options)
    det = Detector(loaded, cfg, ["RBC", "WBC", "Platelets"], options)
    if runtime != "torch":
        det.use_runtime(runtime)
    return det


def main() -> None:
    """Parse arguments, time the settings, print images/s and ratios."""
    from detkit.api import coco_image_files

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ckpt-dir", type=Path,
                        default=SUITE_CHECKPOINTS)
    parser.add_argument("--ann-file", type=Path, default=BCCD_TEST)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    files = coco_image_files(args.ann_file)[: args.images]
    detectors = {name: detector(args.ckpt_dir, runtime)
                 for name, (_, _, runtime) in SETTINGS.items()}
    rates: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, (batch, workers, _) in SETTINGS.items():
            start = time.perf_counter()
            count = len(detectors[name].predict(files, batch_size=batch, workers=workers))
            rates[name].append(count / (time.perf_counter() - start))
    peer = statistics.median(rates["one at a time (peer)"])
    print(f"predict on {len(files)} BCCD test images, {args.threads} threads, median of "
          f"{args.rounds} rounds (load average {os.getloadavg()[0]:.2f})")
    print(f"{'setting':30s} {'images/s':>9s} {'x peer':>7s}")
    for name, values in rates.items():
        value = statistics.median(values)
        print(f"{name:30s} {value:9.2f} {value / peer:7.2f}")
    best = max(statistics.median(v) for v in rates.values())
    print(f"goal >= 2x the one-at-a-time loop: {best / peer:.2f}x "
          f"({'met' if best >= 2 * peer else 'MISSED'})")
    if args.json:
        write_json(args.json, {"threads": args.threads, "images": len(files),
                               "rounds": args.rounds,
                               "images_per_s": {n: statistics.median(v) for n, v in rates.items()},
                               "settings": {n: dict(zip(("batch", "workers", "runtime"), v,
                                                        strict=True))
                                            for n, v in SETTINGS.items()}})


if __name__ == "__main__":
    main()
