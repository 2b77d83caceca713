"""COCO bbox evaluation that works on any COCO-format dataset.

Entry point: :func:`evaluate_detections`. It wraps pycocotools (or faster-coco-eval) and fixes
what they get wrong for users:

- an empty detection list gives AP/AR 0 (plus an ``EvaluationWarning``) instead of the
  ``IndexError`` from ``COCO.loadRes([])``;
- ``max_dets`` is honoured everywhere (pycocotools' summary hard-codes 100 / ``maxDets[2]``);
- extra area buckets (e.g. ``{"tiny": (0, 16**2)}``) are reported as "AP_tiny" / "AR_tiny";
- "no ground truth in this bucket" is NaN (``null`` in JSON) with a note, never a -1;
- results and ground truth are validated with clear errors, and neither input is modified
  (pycocotools' ``loadRes`` and ``evaluate`` write into the dicts they are given).

The inputs are checked and copied by :mod:`detkit.evaluation.coco_inputs`. Detections use the
COCO results format: ``{"image_id", "category_id", "bbox": [x, y, w, h],
"score"}`` with the dataset's original category ids (see :mod:`detkit.evaluation.results`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from pycocotools.coco import COCO

from detkit.evaluation.coco_inputs import (  # noqa: F401  (re-exported)
    EvaluationWarning,
    _gc_paused,
    load_coco_gt,
    prepare_detections,
    prepare_ground_truth,
)
from detkit.evaluation.fast import resolve_backend, run_cocoeval
from detkit.evaluation.results import load_results_json
from detkit.evaluation.summary import (
    EvalResult,
    per_class_metrics,
    summarize_metrics,
)
from detkit.ops.boxes import COCO_MEDIUM_AREA, COCO_SMALL_AREA

# COCO area ranges in pixels^2 (small < 32^2 <= medium < 96^2 <= large), "all" first.
COCO_AREA_RANGES: tuple[tuple[str, float, float], ...] = (
    ("all", 0.0, 1e5**2),
    ("small", 0.0, COCO_SMALL_AREA),
    ("medium", COCO_SMALL_AREA, COCO_MEDIUM_AREA),
    ("large", COCO_MEDIUM_AREA, 1e5**2),
)
IOU_TYPES = ("bbox",)


def _area_ranges(
    extra: Mapping[str, tuple[float, float]] | None,
) -> list[tuple[str, float, float]]:
    ranges = list(COCO_AREA_RANGES)
    for name, bounds in (extra or {}).items():
        if name in {r[0] for r in ranges} or not str(name).isidentifier():
            raise ValueError(f"extra area range name {name!r} is reserved or not an identifier")
        lo, hi = (float(v) for v in bounds)
        if not (0.0 <= lo < hi):
            raise ValueError(f"extra area range {name!r} needs 0 <= min < max, got {bounds}")
        ranges.append((str(name), lo, hi))
    return ranges


def _check_max_dets(max_dets: Sequence[int]) -> list[int]:
    values = [int(m) for m in max_dets]
    if not values or any(m < 1 for m in values) or values != sorted(set(values)):
        raise ValueError(f"max_dets must be distinct increasing positive ints, got {max_dets}")
    if len(values) != 3:
        raise ValueError(f"max_dets needs 3 limits (AR1/AR10/AR100 style), got {max_dets}")
    return values


def check_eval_options(max_dets: Sequence[int],
                       extra_area_ranges: Mapping[str, tuple[float, float]] | None) -> None:
    """Raise the ValueError :func:`evaluate_detections` would raise for these options, so a
    tool can check them before inference instead of after it."""
    _check_max_dets(max_dets)
    _area_ranges(extra_area_ranges)


def _class_names(gt: COCO, cat_ids: Sequence[int]) -> list[str]:
    names = [str(gt.cats[c].get("name", c)) for c in cat_ids]
    duplicated = {n for n in names if names.count(n) > 1}
    return [f"{n} (id {c})" if n in duplicated else n for n, c in zip(names, cat_ids, strict=True)]


def _nan_notes(metrics: Mapping[str, float], per_class: Mapping[str, Mapping[str, float]]) -> list:
    notes = []
    missing = [key for key, value in metrics.items() if math.isnan(value)]
    if missing:
        notes.append(f"no ground truth for {', '.join(missing)}: reported as null/NaN, not -1")
    for name, row in per_class.items():
        if all(math.isnan(v) for v in row.values()):
            notes.append(f"class {name!r} has no ground truth: its AP is null and not averaged in")
    return notes


def evaluate_detections(
    coco_gt: COCO | str | os.PathLike | Mapping,
    results: Sequence[Mapping] | str | os.PathLike,
    iou_type: str = "bbox",
    max_dets: Sequence[int] = (1, 10, 100),
    extra_area_ranges: Mapping[str, tuple[float, float]] | None = None,
    backend: str = "auto",
    img_ids: Sequence[int] | None = None,
) -> EvalResult:
    """COCO bbox evaluation of detections against a ground truth.

    Args:
        coco_gt: ground truth as a pycocotools ``COCO``, a path to a COCO JSON file or its dict.
            Any category names and (non-contiguous) ids; images without annotations count.
        results: COCO results, ``{"image_id", "category_id", "bbox": [x, y, w, h] (absolute
            pixels of the original image), "score"}``, or the path of a JSON file holding
            that list; may be empty.
        iou_type: only "bbox" is supported.
        max_dets: three increasing per-image detection limits; AP uses the last.
        extra_area_ranges: extra area buckets {name: (min_area, max_area)} in pixels^2,
            reported as "AP_<name>" / "AR_<name>", e.g. ``{"tiny": (0, 16**2)}``.
        backend: "auto" (faster-coco-eval when installed), "pycocotools", "faster_coco_eval".
        img_ids: images to evaluate (default: every ground-truth image).

    Returns:
        An :class:`EvalResult` (``.stats``, ``.metrics``, ``.per_class``, ``.precision``,
        ``.to_json(path)``, ``.summary_table()``).
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type {iou_type!r} is not supported; valid: {', '.join(IOU_TYPES)}")
    resolve_backend(backend)
    limits = _check_max_dets(max_dets)
    areas = _area_ranges(extra_area_ranges)
    results = load_results_json(results)
    with _gc_paused():
        gt, notes = prepare_ground_truth(load_coco_gt(coco_gt))
        ids = sorted(gt.imgs) if img_ids is None else sorted({int(i) for i in img_ids})
        unknown = set(ids) - set(gt.imgs)
        if unknown:
            raise ValueError(f"img_ids not in the ground truth: {sorted(unknown)[:5]}")
        dt, dt_notes = prepare_detections(gt, results, ids)
        notes += dt_notes
        if not dt.anns:
            notes.append("no detections to evaluate: every AP/AR with ground truth is 0")
            warnings.warn(notes[-1], EvaluationWarning, stacklevel=2)
        cat_ids = sorted(gt.cats)
        acc = run_cocoeval(gt, dt, ids, cat_ids, limits, areas, backend=backend)
    iou_thrs = np.linspace(0.5, 0.95, 10)
    labels = [a[0] for a in areas]
    stats, metrics = summarize_metrics(acc, iou_thrs, limits, labels)
    names = _class_names(gt, cat_ids)
    per_class = per_class_metrics(acc, iou_thrs, names, labels)
    return EvalResult(
        stats=stats,
        metrics=metrics,
        per_class=per_class,
        precision=acc.precision,
        recall=acc.recall,
        iou_thrs=iou_thrs,
        rec_thrs=np.linspace(0.0, 1.0, 101),
        cat_ids=cat_ids,
        class_names=names,
        area_labels=labels,
        max_dets=limits,
        backend=acc.backend,
        num_detections=len(dt.anns),
        notes=notes + _nan_notes(metrics, per_class),
    )


__all__ = [
    "COCO_AREA_RANGES",
    "EvaluationWarning",
    "evaluate_detections",
    "load_coco_gt",
    "prepare_detections",
    "prepare_ground_truth",
]
