"""COCO evaluation of a checkpoint: ``tools/test.py [CONFIG] CKPT [--out DIR] [key=value ...]``.

Without CONFIG (a YAML file or a preset name), the config stored in the checkpoint is used.

Evaluates on ``test.ann_file`` when the config sets it, else on ``data.val``. EMA weights are
used when the checkpoint has them. Test-time options come from the config's ``test`` section
(NMS kind and thresholds, score threshold, input size, image pyramid ``test.scales``).
Writes into --out (default ``<checkpoint dir>/eval_<split>``): ``metrics.json``,
``detections.json`` (COCO results, the dataset's own category ids), ``pr_curves.png`` and
``per_class_ap.png``; for two-stage models also ``proposal_recall.json``, the test-time
proposals' recall of the objects (IoU >= 0.5) by size bucket and class, and
``gt_roi_scores.json``, the R-CNN's class probabilities of the ground-truth boxes fed as
RoIs (does the second stage recognise an object that reaches it?).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's detkit

from detkit.cli import help_text  # noqa: E402
from detkit.presets import tool_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=help_text(__doc__))
    parser.add_argument("inputs", nargs="+", metavar="[CONFIG] CHECKPOINT [key=value]",
                        help="optional YAML config or preset name (default: the config stored "
                             "in the checkpoint), the .pth checkpoint, dotted overrides such "
                             "as test.scales=[448,512,576]")
    parser.add_argument("--out", default=None,
                        help="output folder (default: <checkpoint dir>/eval_<split>)")
    parser.add_argument("--no-ema", action="store_true",
                        help="evaluate the raw weights even when the checkpoint has EMA ones")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    found = tool_config(args.inputs, 1)
    if found is None:
        return 2
    cfg, (args.checkpoint,) = found
    from detkit.data.coco import CocoDetection
    from detkit.engine.build import evaluation_split
    from detkit.engine.distributed import resolve_device
    from detkit.engine.evaluate import predict_dataset
    from detkit.engine.inference import (
        Predictor,
        keep_raw,
        load_detector,
        read_test_options,
    )
    from detkit.evaluation import evaluate_detections, save_results_json
    from detkit.evaluation.gt_rois import format_gt_roi_scores, gt_roi_scores, has_roi_classifier
    from detkit.evaluation.plots import save_evaluation_plots
    from detkit.evaluation.proposals import (
        format_recall,
        has_proposals,
        proposal_recall,
        write_recall,
    )

    try:
        options = read_test_options(cfg)
        split, ann_file, img_dir = evaluation_split(cfg)
    except ValueError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / f"eval_{split}"
    try:
        dataset = CocoDetection(ann_file, img_dir, transforms=keep_raw,
                                full_decode=cfg["data"]["full_decode"])
    except (FileNotFoundError, ValueError) as err:  # a missing or invalid annotation file
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        loaded = load_detector(cfg, args.checkpoint, dataset.num_classes,
                               resolve_device(cfg["device"]), options, prefer_ema=not args.no_ema)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    predictor = Predictor.from_options(loaded, options)
    runner = predictor.with_tiles(options.tile, options.tile_overlap)
    sizes = "x".join(str(s) for s in predictor.sizes)
    print(f"evaluating {args.checkpoint} ({loaded.weights} weights) on {split} split "
          f"{ann_file}: {len(dataset)} images, input {sizes}"
          + (f", pyramid merged by {predictor.merge_nms}" if len(predictor.sizes) > 1 else "")
          + (f", sliced: {options.tile}-px windows ({options.tile_overlap:.0%} overlap) + the "
             f"whole image" if options.tile else ""),
          flush=True)
    start = time.perf_counter()
    results = predict_dataset(runner, dataset, cfg["eval"]["batch_size"],
                              cfg["data"]["num_workers"])
    seconds = time.perf_counter() - start
    print(f"{len(results)} detections in {seconds:.1f} s "
          f"({len(dataset) / max(seconds, 1e-9):.1f} images/s)", flush=True)
    detections = save_results_json(results, out / "detections.json")  # kept if eval fails
    result = evaluate_detections(dataset.coco.dataset, results, max_dets=options.max_dets,
                                 extra_area_ranges=options.extra_area_ranges or None)
    print(result.summary_table(), flush=True)
    model = loaded.model
    if has_proposals(model) and len(predictor.sizes) == 1:
        recall = proposal_recall(model, dataset, predictor.sizes[0],
                                 device=next(model.parameters()).device)
        print(format_recall(recall), flush=True)
        write_recall(out / "proposal_recall.json", recall)
    if has_roi_classifier(model) and len(predictor.sizes) == 1:
        scores = gt_roi_scores(model, dataset, predictor.sizes[0],
                               device=next(model.parameters()).device)
        print(format_gt_roi_scores(scores), flush=True)
        write_recall(out / "gt_roi_scores.json", scores)
    paths = {"metrics": result.to_json(out / "metrics.json"), "detections": detections,
             **save_evaluation_plots(result, out)}
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
