"""COCO evaluation: metrics (pycocotools / faster-coco-eval), results conversion, plots.

Typical use::

    from detkit.evaluation import detections_to_coco_results, evaluate_detections

    results = detections_to_coco_results(outputs, targets, label_to_category)
    result = evaluate_detections("annotations/val.json", results)
    print(result.summary_table())
    result.to_json("work_dir/metrics.json")

Plots live in :mod:`detkit.evaluation.plots` (imports matplotlib, so it is not imported here).
"""

from detkit.evaluation.coco import EvaluationWarning, evaluate_detections, load_coco_gt
from detkit.evaluation.fast import fast_backend_available, resolve_backend
from detkit.evaluation.results import (
    all_gather_results,
    detections_to_coco_results,
    label_to_category_from_coco,
    load_results_json,
    merge_rank_results,
    save_results_json,
)
from detkit.evaluation.summary import EvalResult

__all__ = [
    "EvalResult",
    "EvaluationWarning",
    "all_gather_results",
    "detections_to_coco_results",
    "evaluate_detections",
    "fast_backend_available",
    "label_to_category_from_coco",
    "load_coco_gt",
    "load_results_json",
    "merge_rank_results",
    "resolve_backend",
    "save_results_json",
]
