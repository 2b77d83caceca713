"""COCOeval backends: pycocotools (always) and faster-coco-eval (optional, C++).

Both backends run the same COCO matching (Lin et al. 2014, "Microsoft COCO: Common Objects in
Context"): greedy matching by decreasing score, crowd ground truth as ignore regions, 101 recall
points, and produce the same ``eval["precision"]`` / ``eval["recall"]`` arrays. detkit only uses
them for ``evaluate()`` + ``accumulate()``; the summary numbers are computed by
:mod:`detkit.evaluation.summary`, so both backends go through one summarising code path.

``faster-coco-eval`` is an optional dependency (extra ``fast``). ``backend="auto"`` picks it when
it is importable and falls back to pycocotools otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO

BACKENDS = ("auto", "pycocotools", "faster_coco_eval")


@dataclass(frozen=True)
class AccumulatedEval:
    """Raw output of COCOeval.accumulate().

    Attributes:
        precision: float64 [T, R, K, A, M] (IoU thresholds, recall points, categories, area
            ranges, max-detection limits); -1 where a category has no ground truth in an area range.
        recall: float64 [T, K, A, M]; -1 where there is no ground truth.
        scores: float64 [T, R, K, A, M]; detection score at which each recall point is reached.
        backend: name of the backend that produced the arrays.
    """

    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    backend: str


@functools.lru_cache(maxsize=1)
def fast_backend_available() -> bool:
    """Return True when the optional ``faster_coco_eval`` package imports (checked once)."""
    try:
        importlib.import_module("faster_coco_eval")
    except ImportError:
        return False
    return True


def resolve_backend(backend: str) -> str:
    """Map ``"auto"`` to the best installed backend and validate explicit names.

    Raises:
        ValueError: unknown backend name.
        ImportError: ``"faster_coco_eval"`` requested but not installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown evaluation backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "faster_coco_eval" if fast_backend_available() else "pycocotools"
    if backend == "faster_coco_eval" and not fast_backend_available():
        raise ImportError(
            "backend='faster_coco_eval' needs the optional package faster-coco-eval "
            "(pip install 'detkit[fast]' or pip install faster-coco-eval)"
        )
    return backend


def _configure(
    evaluator: object,
    img_ids: Sequence[int],
    cat_ids: Sequence[int],
    max_dets: Sequence[int],
    area_ranges: Sequence[tuple[str, float, float]],
) -> None:
    """Write detkit's evaluation parameters into a freshly built COCOeval's ``params``."""
    params = evaluator.params  # type: ignore[attr-defined]
    params.imgIds = [int(i) for i in img_ids]
    params.catIds = [int(c) for c in cat_ids]
    params.maxDets = [int(m) for m in max_dets]
    params.areaRng = [[float(lo), float(hi)] for _, lo, hi in area_ranges]
    params.areaRngLbl = [name for name, _, _ in area_ranges]


def _accumulated(ev: dict, backend: str) -> AccumulatedEval:
    """The accumulated arrays of a COCOeval-like ``eval`` dict, as float64."""
    return AccumulatedEval(
        np.asarray(ev["precision"], dtype=np.float64),
        np.asarray(ev["recall"], dtype=np.float64),
        np.asarray(ev["scores"], dtype=np.float64),
        backend,
    )


def _run_pycocotools(coco_gt: COCO, coco_dt: COCO, **params: Sequence) -> AccumulatedEval:
    from pycocotools.cocoeval import COCOeval

    # pycocotools prints progress to stdout; keep evaluation quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        _configure(evaluator, **params)
        evaluator.evaluate()
        evaluator.accumulate()
    return _accumulated(evaluator.eval, "pycocotools")


def _silent(*_args: object, **_kwargs: object) -> None:
    """Print function handed to faster-coco-eval so that it logs nothing."""
    return None


def _run_faster(coco_gt: COCO, coco_dt: COCO, **params: Sequence) -> AccumulatedEval:
    from faster_coco_eval import COCOeval_faster

    evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=_silent)
    _configure(evaluator, **params)
    evaluator.evaluate()
    evaluator.accumulate()
    return _accumulated(evaluator.eval, "faster_coco_eval")


def run_cocoeval(
    coco_gt: COCO,
    coco_dt: COCO,
    img_ids: Sequence[int],
    cat_ids: Sequence[int],
    max_dets: Sequence[int],
    area_ranges: Sequence[tuple[str, float, float]],
    backend: str = "auto",
) -> AccumulatedEval:
    """Run COCO bbox matching and accumulation with the chosen backend.

    Args:
        coco_gt: ground truth (boxes ``bbox`` = [x, y, w, h], ``area``, ``iscrowd`` present).
        coco_dt: detections indexed as a COCO object (``bbox``, ``score``, ``area``, ``id``).
        img_ids: images to evaluate.
        cat_ids: categories to evaluate; the K axis of the output follows their sorted order.
        max_dets: increasing detection limits per image; the M axis follows this order.
        area_ranges: (label, min_area, max_area) per area range; the first must be "all".
        backend: "auto", "pycocotools" or "faster_coco_eval".

    Returns:
        The accumulated precision / recall / score arrays.
    """
    name = resolve_backend(backend)
    runner = _run_faster if name == "faster_coco_eval" else _run_pycocotools
    return runner(
        coco_gt,
        coco_dt,
        img_ids=img_ids,
        cat_ids=cat_ids,
        max_dets=max_dets,
        area_ranges=area_ranges,
    )
