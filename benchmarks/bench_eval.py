"""Benchmark: detkit's COCO evaluator against plain pycocotools on synthetic data.

500 images with ~10 ground-truth boxes each (Poisson), 100 detections per image (jittered
copies of the ground truth plus random boxes). Times the median of several runs of

- pycocotools: ``COCO.loadRes`` + ``COCOeval.evaluate/accumulate/summarize``;
- detkit: ``evaluate_detections(coco_gt, results)`` (backend "auto"; also "pycocotools");

and checks that the 12 numbers are identical (pycocotools' -1 counts as detkit's NaN).
Target: detkit <= 0.25x pycocotools' time (goal 0.15x). Exit status 1 when it is missed.

``--counts N [N ...]`` times the growth with the image count instead (same synthetic
input per count, the evaluators taking turns run by run, medians): detkit against
pycocotools and, when detkit's "auto" backend is faster-coco-eval, against that package's
own plain recipe (its COCO + ``COCOeval_faster``), so detkit's overhead over the library it
calls is visible. ``--plot PNG`` draws the curves, ``--json PATH`` writes them.

Usage: python benchmarks/bench_eval.py [--images 500] [--dets 100] [--runs 3] [--compare-backends]
       python benchmarks/bench_eval.py --counts 500 1000 2000 5000 [--runs 1] [--plot P] [--json J]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP waits
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.evaluation import evaluate_detections, resolve_backend


def synthetic_case(
    num_images: int, dets_per_image: int, gt_per_image: float, num_classes: int, seed: int
) -> tuple[dict, list[dict]]:
    """COCO ground truth and detections (boxes of 4..300 px in 640x480 images)."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": 640, "height": 480})
        count = int(rng.poisson(gt_per_image))
        sizes = rng.uniform(4, 300, size=(count, 2))
        for w, h in sizes:
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            anns.append({"id": len(anns) + 1, "image_id": image_id,
                         "category_id": int(rng.integers(1, num_classes + 1)),
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        own = anns[len(anns) - count:]
        for k in range(dets_per_image):
            if own and k < 4 * count:
                ann = own[k % count]
                x, y, w, h = ann["bbox"]
                jx, jy, jw, jh = rng.normal(0, 0.1, size=4) * [w, h, w, h]
                box, cat = [x + jx, y + jy, max(w + jw, 1.0), max(h + jh, 1.0)], ann["category_id"]
            else:
                w, h = rng.uniform(4, 300, size=2)
                box = [rng.uniform(0, 640 - w), rng.uniform(0, 480 - h), w, h]
                cat = int(rng.integers(1, num_classes + 1))
            dets.append({"image_id": image_id, "category_id": cat, "bbox": box,
                         "score": float(rng.random())})
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, num_classes + 1)]
    return {"images": images, "annotations": anns, "categories": categories}, dets


def coco_from(dataset: dict) -> COCO:
    """pycocotools COCO object around a deep copy of ``dataset``."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(dataset)
        coco.createIndex()
    return coco


def plain_pycocotools(coco_gt: COCO, dets: list[dict]) -> np.ndarray:
    """The usual recipe: loadRes + evaluate + accumulate + summarize; returns stats."""
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats, dtype=np.float64)


def fresh(dets: list[dict]) -> list[dict]:
    """A copy of ``dets`` that ``loadRes`` may write into (new dicts and bbox lists)."""
    return [dict(d, bbox=list(d["bbox"])) for d in dets]


def faster_coco(dataset: dict) -> object:
    """faster-coco-eval's own COCO object around a deep copy of ``dataset``."""
    from faster_coco_eval import COCO as FasterCOCO

    with contextlib.redirect_stdout(io.StringIO()):
        return FasterCOCO(copy.deepcopy(dataset))


def plain_faster(coco_gt: object, dets: list[dict]) -> np.ndarray:
    """faster-coco-eval's own recipe: loadRes + COCOeval_faster evaluate / accumulate /
    summarize on its COCO object; returns stats."""
    from faster_coco_eval import COCOeval_faster

    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval_faster(coco_gt, coco_gt.loadRes(dets), "bbox",  # type: ignore[attr-defined]
                                    print_function=lambda *_a, **_k: None)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats, dtype=np.float64)


def scaling(counts: list[int], args: argparse.Namespace) -> dict[str, dict[int, float]]:
    """Seconds per evaluator and image count (median of ``args.runs``, turns taken per run).

    Every evaluator gets the ground truth already indexed (each its own COCO object, built
    untimed, as in :func:`main`) and the same detections (fresh copies where ``loadRes``
    writes into them).
    """
    auto = resolve_backend("auto")
    peer = "pycocotools COCOeval (peer)"
    out: dict[str, dict[int, float]] = {}
    for n, count in enumerate(sorted(counts)):
        gt, dets = synthetic_case(count, args.dets, args.gt, args.classes, args.seed)
        peer_gt, detkit_gt = coco_from(gt), coco_from(gt)
        kinds: dict[str, Callable[[], np.ndarray]] = {
            peer: lambda c=peer_gt, d=dets: plain_pycocotools(c, fresh(d)),
            f"detkit evaluate_detections ({auto})":
                lambda c=detkit_gt, d=dets: evaluate_detections(c, d, backend=auto).stats,
        }
        if auto == "faster_coco_eval":
            faster_gt = faster_coco(gt)
            kinds["faster-coco-eval COCOeval_faster"] = (
                lambda c=faster_gt, d=dets: plain_faster(c, fresh(d)))
        times: dict[str, list[float]] = {k: [] for k in kinds}
        stats: dict[str, np.ndarray] = {}
        warmup = 1 if n == 0 else 0  # imports and first-call costs, once
        for run in range(args.runs + warmup):
            for name, fn in kinds.items():
                gc.collect()
                start = time.perf_counter()
                stats[name] = fn()
                if run >= warmup:
                    times[name].append(time.perf_counter() - start)
        ref = stats[peer]
        expected = np.where(ref == -1, np.nan, ref)
        line = []
        for name in kinds:
            out.setdefault(name, {})[count] = statistics.median(times[name])
            same = np.allclose(np.where(stats[name] == -1, np.nan, stats[name]), expected,
                               atol=1e-6, equal_nan=True)
            line.append(f"{name} {out[name][count]:.2f} s"
                        f"{'' if same else ' (stats DIFFER)'}")
        print(f"{count} images, {len(dets)} detections: " + ", ".join(line), flush=True)
        if args.json:  # after every count, so a run stopped by a time limit keeps its figures
            from latency_parts import write_json

            write_json(args.json, {"dets_per_image": args.dets, "runs": args.runs,
                                   "seconds": out})
    return out


def scaling_report(out: dict[str, dict[int, float]], args: argparse.Namespace) -> None:
    """Table of seconds and ratios to pycocotools per image count; plot on request."""
    from latency_parts import growth, plot_curves

    peer = out["pycocotools COCOeval (peer)"]
    print(f"\nEvaluation time vs image count ({args.dets} detections / image, "
          f"median of {args.runs}, load average {os.getloadavg()[0]:.2f})")
    print(f"{'evaluator':44s} " + " ".join(f"{c:>14d}" for c in sorted(peer)) + "  growth")
    for name, values in out.items():
        cells = " ".join(f"{values[c]:7.2f} ({values[c] / peer[c]:.2f}x)" for c in sorted(peer))
        print(f"{name:44s} {cells}  {growth(values):.1f}x")
    print(f"images: {max(peer) / min(peer):.1f}x; in brackets x pycocotools")
    if args.plot:
        plot_curves(out, args.plot, "images (synthetic, ~10 GT / 100 detections each)",
                    "seconds per evaluation (median)", "COCO evaluation time vs image count")


def median_time(fn: Callable[[], np.ndarray], runs: int) -> tuple[float, np.ndarray]:
    """Median wall time of ``runs`` calls after one warm-up call; returns (seconds, stats)."""
    stats = fn()
    times = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        stats = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), stats


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print times, ratios and the stats check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--dets", type=int, default=100, help="detections per image")
    parser.add_argument("--gt", type=float, default=10.0, help="mean GT boxes per image")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compare-backends", action="store_true",
                        help="also time detkit with backend='pycocotools'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--counts", type=int, nargs="+", default=None,
                        help="time the growth over these image counts instead")
    parser.add_argument("--plot", type=Path, default=None, help="--counts: curves PNG")
    parser.add_argument("--json", type=Path, default=None, help="--counts: figures JSON")
    args = parser.parse_args(argv)
    if args.counts:
        scaling_report(scaling(args.counts, args), args)
        return 0

    gt, dets = synthetic_case(args.images, args.dets, args.gt, args.classes, args.seed)
    print(f"{args.images} images, {len(gt['annotations'])} GT boxes, {len(dets)} detections, "
          f"{args.classes} classes; median of {args.runs} runs")

    # loadRes writes into the detections, so every pycocotools run gets fresh copies (untimed).
    gt_coco = coco_from(gt)
    copies = [copy.deepcopy(dets) for _ in range(args.runs + 1)]
    t_ref, ref = median_time(lambda: plain_pycocotools(gt_coco, copies.pop()), args.runs)
    expected = np.where(ref == -1, np.nan, ref)
    print(f"pycocotools COCOeval (loadRes+evaluate+accumulate+summarize): {t_ref:.3f} s")

    auto = resolve_backend("auto")
    ok = True
    backends = [auto, "pycocotools"] if args.compare_backends else [auto]
    for backend in dict.fromkeys(backends):
        coco = coco_from(gt)
        seconds, stats = median_time(
            lambda b=backend, c=coco: evaluate_detections(c, dets, backend=b).stats, args.runs
        )
        same = bool(np.array_equal(stats, expected, equal_nan=True))
        diff = float(np.nanmax(np.abs(stats - expected)))
        ratio = seconds / t_ref
        print(f"detkit evaluate_detections(backend={backend!r}): {seconds:.3f} s, "
              f"ratio {ratio:.3f}x, stats identical: {same} (max |diff| {diff:.1e})")
        if backend == auto:
            ok = same and ratio <= 0.25
            print(f"target <= 0.25x: {'met' if ratio <= 0.25 else 'MISSED'}; "
                  f"goal <= 0.15x: {'met' if ratio <= 0.15 else 'missed'}")
    print("stats:", np.array2string(expected, precision=4))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
