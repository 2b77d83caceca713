"""Sliced inference against single-scale and an image pyramid on the suite's checkpoints.

The k-fold suite's checkpoints of one row and seed (``<row>_s<seed>_f<fold>/last.pth``) each
predict their own held-out fold of BCCD (640 x 480 images) three ways:

* ``single``: one 320-px letterbox (what the row was trained and tested at);
* ``pyramid``: letterboxes of ``--pyramid`` sizes merged by the model's NMS kind;
* ``sliced``: ``--tile``-px windows sharing ``--overlap`` of a side, each at 320 (full
  resolution), plus the whole image, merged by the model's NMS kind
  (:mod:`detkit.engine.slicing`).

The folds' predictions are pooled into one COCO evaluation over every image; AP, APs and
Platelets AP are compared with ``single`` by a paired bootstrap over images
(:func:`detkit.evaluation.bootstrap.paired_bootstrap`, 95% interval, verdict), and the median
seconds per image of each mode is printed with its ratio to ``single`` (measured in the same
run; quote them with the load average printed beside them).

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_slicing.py [--row thundernet_full]
[--seed 0] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP waits

import torch
import yaml
from latency_parts import SUITE_CHECKPOINTS

FOLDS = SUITE_CHECKPOINTS.parent / "folds_k3"


class _Timed:
    """A predictor that records the seconds of every ``predict`` call."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seconds = inner, []

    def predict(self, images: Any) -> Any:
        start = time.perf_counter()
        out = self.inner.predict(images)
        self.seconds.append(time.perf_counter() - start)
        return out


def predict_fold(folder: Path, ann_file: Path, img_dir: Path, mode: str, args: Any
                 ) -> tuple[list[dict[str, Any]], list[float]]:
    """COCO results of one fold's checkpoint on its held-out images, and seconds per image."""
    from detkit.data.coco import CocoDetection
    from detkit.engine.evaluate import predict_dataset
    from detkit.engine.inference import Predictor, keep_raw, load_detector, read_test_options

    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    options = read_test_options(cfg)
    dataset = CocoDetection(ann_file, img_dir, transforms=keep_raw)
    loaded = load_detector(cfg, folder / "last.pth", dataset.num_classes, "cpu", options)
    sizes = args.pyramid if mode == "pyramid" else [options.img_size]
    predictor = Predictor(loaded.model, sizes, device=loaded.device)
    timed = _Timed(predictor.with_tiles(args.tile if mode == "sliced" else None, args.overlap))
    results = predict_dataset(timed, dataset, batch_size=1)  # one image per call: its time
    return results, timed.seconds


def main() -> None:
    """Predict every fold three ways, pool, bootstrap against single-scale, print."""
    from detkit.evaluation import evaluate_detections
    from detkit.evaluation.bootstrap import build_eval_table, paired_bootstrap

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--row", default="thundernet_full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--ckpt-dir", type=Path, default=SUITE_CHECKPOINTS)
    parser.add_argument("--folds-dir", type=Path, default=FOLDS)
    parser.add_argument("--img-dir", type=Path, default=Path("data") / "bccd")
    parser.add_argument("--tile", type=int, default=320)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--pyramid", type=lambda s: [int(v) for v in s.split(",")],
                        default=[320, 480, 640])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gt = json.loads((args.folds_dir / "all.json").read_text())
    modes = ("single", "pyramid", "sliced")
    pooled: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    times: dict[str, list[float]] = {m: [] for m in modes}
    for fold in range(args.k):
        folder = args.ckpt_dir / f"{args.row}_s{args.seed}_f{fold}"
        ann = args.folds_dir / f"fold{fold}_test.json"
        for mode in modes:
            res, secs = predict_fold(folder, ann, args.img_dir, mode, args)
            pooled[mode].extend(res)
            times[mode].extend(secs)
    metrics = {m: evaluate_detections(gt, pooled[m]) for m in modes}
    tables = {m: {area: build_eval_table(gt, pooled[m], area) for area in ("all", "small")}
              for m in modes}
    load = os.getloadavg()[0]
    base_time = statistics.median(times["single"])
    print(f"{args.row} seed {args.seed}: {len(gt['images'])} BCCD images pooled over "
          f"{args.k} folds; tile {args.tile} overlap {args.overlap}, pyramid {args.pyramid}; "
          f"{args.threads} thread(s), load average {load:.2f}")
    print(f"{'mode':8s} {'AP':>6s} {'APs':>6s} {'Plt AP':>7s} {'s/img':>7s} {'x single':>8s}")
    out: dict[str, Any] = {"row": args.row, "seed": args.seed, "tile": args.tile,
                           "overlap": args.overlap, "pyramid": args.pyramid,
                           "threads": args.threads, "load_avg": load, "modes": {}}
    for m in modes:
        value = statistics.median(times[m])
        plt = metrics[m].per_class.get("Platelets", {}).get("AP", float("nan"))
        print(f"{m:8s} {metrics[m].metrics['AP']:6.3f} {metrics[m].metrics['APs']:6.3f} "
              f"{plt:7.3f} {value:7.3f} {value / base_time:8.2f}")
        out["modes"][m] = {"AP": metrics[m].metrics["AP"], "APs": metrics[m].metrics["APs"],
                           "Platelets_AP": plt, "median_s_per_image": value}
    for m in ("pyramid", "sliced"):
        for label, area, category in (("AP", "all", None), ("APs", "small", None),
                                      ("Platelets AP", "all", "Platelets")):
            b = paired_bootstrap([tables[m][area]], [tables["single"][area]],
                                 category=category, paired_seeds=True)
            print(f"{m} - single, {label}: {b.delta:+.3f} [{b.low:+.3f}, {b.high:+.3f}] "
                  f"{b.verdict}")
            out["modes"][m][f"delta_{label}"] = {"delta": b.delta, "low": b.low,
                                                 "high": b.high, "verdict": b.verdict}
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
