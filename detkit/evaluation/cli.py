"""``detkit eval GT.json RESULTS.json [--out DIR]``: evaluate an existing COCO results file.

Prints the COCO table and per-class AP (:func:`detkit.evaluation.evaluate_detections`, the same
numbers as pycocotools), the confusion matrix and the error breakdown by object size; with
``--out`` writes ``metrics.json``, ``pr_curves.png``, ``per_class_ap.png``,
``confusion_matrix.png`` / ``.json`` and ``errors.png`` / ``.json`` there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="detkit eval", description=__doc__.splitlines()[0])
    parser.add_argument("gt", help="COCO ground-truth annotation file (JSON)")
    parser.add_argument("results", help="COCO results file: a JSON list of {image_id, "
                                        "category_id, bbox [x, y, w, h], score}")
    parser.add_argument("--out", default=None, help="folder for metrics.json and the plots")
    parser.add_argument("--backend", default="auto",
                        choices=("auto", "pycocotools", "faster_coco_eval"),
                        help="COCOeval implementation (default: faster-coco-eval if installed)")
    parser.add_argument("--conf", type=float, default=0.25,
                        help="score threshold of the confusion matrix (default 0.25)")
    parser.add_argument("--iou", type=float, default=0.5,
                        help="IoU that makes a match in the confusion matrix (default 0.5)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for unusable input)."""
    args = parse_args(argv)
    from detkit.evaluation import evaluate_detections, load_coco_gt, load_results_json
    from detkit.evaluation.confusion import confusion_matrix
    from detkit.evaluation.errors import error_breakdown

    try:
        gt = load_coco_gt(args.gt)
        results = load_results_json(args.results)
        result = evaluate_detections(gt, results, backend=args.backend)
        confusion = confusion_matrix(gt, results, score_threshold=args.conf,
                                     iou_threshold=args.iou)
        errors = error_breakdown(gt, results)
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(results)} detections on {len(gt['images'])} images ({args.results})")
    print(result.summary_table())
    print()
    print(confusion.table())
    print()
    print(errors.table())
    if args.out:
        from detkit.evaluation.plots import save_evaluation_plots

        out = Path(args.out)
        paths = {"metrics": result.to_json(out / "metrics.json"),
                 **save_evaluation_plots(result, out),
                 **confusion.save(out), **errors.save(out)}
        for name, path in paths.items():
            print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
