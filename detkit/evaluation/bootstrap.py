"""Paired bootstrap of COCO AP over images (and seeds): is a delta between two detectors real?

COCO AP is not a mean over images, so its standard error needs a resampling of images with the
whole metric recomputed on each resample (Efron's bootstrap). pycocotools' per-image matching
(``COCOeval.evaluateImg``) does not depend on which other images are evaluated, so it runs
once; a resample is then a weight per image (how often it was drawn) and AP is accumulated
with those weights, exactly as pycocotools' ``accumulate`` would on the resampled image list
(an image drawn twice counts its detections and ground truth twice). Tested against
pycocotools on data sets with duplicated images.

Per category ``c`` and IoU threshold ``t`` (area range and ``max_dets`` fixed), with the
detections of every image sorted by decreasing score (stable) and image weights ``w``::

    TP_t = cumsum(w[img] * (matched_t & ~ignored_t)),  FP_t = cumsum(w[img] * (~matched_t &
    ~ignored_t)),  n_c = sum_i w_i * (non-ignored ground truth of c in image i)
    recall = TP / n_c,  precision = TP / (TP + FP + eps), made non-increasing from the right
    AP_{c,t} = mean over the 101 recall points r of precision at the first recall >= r (0 if none)

AP = mean of AP_{c,t} over IoU thresholds .50:.05:.95 and over categories with ``n_c > 0``.

:func:`paired_bootstrap`: two rows A and B evaluated on the same images, each with one table
per seed. Each replicate draws the images with replacement (shared by A and B: the pairing)
and, per row, its seeds with replacement; the replicate's delta is mean_seeds(A) -
mean_seeds(B). The 95% interval is the 2.5th-97.5th percentile of the replicates. Verdict:
"holds" (interval above 0), "contradicted" (below 0), "unresolved" (contains 0).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools.cocoeval import COCOeval

from detkit.evaluation.coco import (
    COCO_AREA_RANGES,
    load_coco_gt,
    prepare_detections,
    prepare_ground_truth,
)

__all__ = ["BootstrapResult", "EvalTable", "build_eval_table", "paired_bootstrap", "verdict"]

_REC_THRS = np.linspace(0.0, 1.0, 101)
_EPS = np.spacing(1)


@dataclass(frozen=True)
class _CategoryTable:
    image_index: np.ndarray  # [D] int, index of each detection's image
    good_tp: np.ndarray  # [T, D] float, matched and not ignored
    good_fp: np.ndarray  # [T, D] float, unmatched and not ignored
    gt_per_image: np.ndarray  # [N] float, non-ignored ground truth of the category per image


@dataclass(frozen=True)
class EvalTable:
    """Per-image COCO matching of one detector on one image set, for one area range.

    ``image_ids`` [N]: the evaluated images (weights follow this order); ``categories``:
    category id -> its table; ``names``: category id -> name.
    """

    image_ids: tuple[int, ...]
    categories: Mapping[int, _CategoryTable]
    names: Mapping[int, str]

    def ap(self, weights: np.ndarray | None = None, iou: float | None = None,
           category: str | int | None = None) -> float:
        """COCO AP with per-image ``weights`` [N] (None: all 1).

        ``iou``: one threshold (e.g. 0.5 for AP50) instead of the mean over .50:.95;
        ``category``: one category (id or name) instead of the mean over categories.
        Returns NaN when no selected category has ground truth.
        """
        w = np.ones(len(self.image_ids)) if weights is None else np.asarray(weights, float)
        cats = self._select(category)
        values = []
        for cat in cats:
            table = self.categories[cat]
            n_gt = float(np.dot(w, table.gt_per_image))
            if n_gt <= 0:
                continue
            rows = slice(None) if iou is None else [_iou_row(iou)]
            values.append(float(np.mean(_ap_rows(table, w, n_gt, rows))))
        return float(np.mean(values)) if values else float("nan")

    def _select(self, category: str | int | None) -> list[int]:
        if category is None:
            return sorted(self.categories)
        if isinstance(category, str):
            found = [c for c, n in self.names.items() if n == category]
            if not found:
                raise ValueError(f"no category named {category!r}; have "
                                 f"{sorted(self.names.values())}")
            return found
        if category not in self.categories:
            raise ValueError(f"no category id {category!r}")
        return [int(category)]


def _iou_row(iou: float) -> int:
    thresholds = np.linspace(0.5, 0.95, 10)
    row = int(np.argmin(np.abs(thresholds - iou)))
    if abs(thresholds[row] - iou) > 1e-9:
        raise ValueError(f"iou must be one of .50:.05:.95, got {iou}")
    return row


def _ap_rows(table: _CategoryTable, w: np.ndarray, n_gt: float, rows: slice | list[int]
             ) -> np.ndarray:
    """AP per IoU threshold [T'] of one category under image weights ``w``."""
    tp_w, fp_w = table.good_tp[rows], table.good_fp[rows]
    if tp_w.shape[1] == 0:
        return np.zeros(tp_w.shape[0])
    dw = w[table.image_index]
    tp = np.cumsum(tp_w * dw, axis=1)
    fp = np.cumsum(fp_w * dw, axis=1)
    recall = tp / n_gt
    precision = tp / (tp + fp + _EPS)
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    out = np.empty(tp.shape[0])
    for t in range(tp.shape[0]):
        idx = np.searchsorted(recall[t], _REC_THRS, side="left")
        ok = idx < recall.shape[1]
        out[t] = np.where(ok, envelope[t, np.minimum(idx, recall.shape[1] - 1)], 0.0).mean()
    return out


def build_eval_table(coco_gt: object, results: Sequence[Mapping], area: str = "all",
                     max_det: int = 100) -> EvalTable:
    """Run pycocotools' per-image matching once and keep what weighted AP needs.

    ``coco_gt``: COCO object, JSON path or dict; ``results``: COCO results (``image_id``,
    ``category_id``, ``bbox`` [x, y, w, h], ``score``); ``area``: "all" | "small" | "medium" |
    "large" (COCO's ranges on the ground truth's ``area``); ``max_det``: detections per image.
    """
    ranges = {name: (lo, hi) for name, lo, hi in COCO_AREA_RANGES}
    if area not in ranges:
        raise ValueError(f"area must be one of {sorted(ranges)}, got {area!r}")
    gt, _ = prepare_ground_truth(load_coco_gt(coco_gt))
    img_ids = sorted(gt.imgs)
    dt, _ = prepare_detections(gt, results, img_ids)
    ev = COCOeval(gt, dt, "bbox")
    ev.params.imgIds = img_ids
    ev.params.catIds = sorted(gt.cats)
    ev.params.maxDets = [max_det]
    ev.params.areaRng = [list(ranges[area])]
    ev.params.areaRngLbl = [area]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    position = {img: i for i, img in enumerate(img_ids)}
    tables = {}
    per_cat = len(img_ids)
    for k, cat in enumerate(ev.params.catIds):
        chunk = ev.evalImgs[k * per_cat:(k + 1) * per_cat]
        tables[cat] = _category_table(chunk, position, max_det, len(img_ids))
    names = {c: str(gt.cats[c].get("name", c)) for c in gt.cats}
    return EvalTable(tuple(img_ids), tables, names)


def _category_table(chunk: Sequence[dict | None], position: Mapping[int, int], max_det: int,
                    num_images: int) -> _CategoryTable:
    scores, images, matched, ignored = [], [], [], []
    gt_count = np.zeros(num_images)
    for e in chunk:
        if e is None:
            continue
        i = position[e["image_id"]]
        gt_count[i] = float(np.sum(np.asarray(e["gtIgnore"]) == 0))
        d = len(e["dtScores"][:max_det])
        if d == 0:
            continue
        scores.append(np.asarray(e["dtScores"][:max_det], float))
        images.append(np.full(d, i))
        matched.append(np.asarray(e["dtMatches"])[:, :d] > 0)
        ignored.append(np.asarray(e["dtIgnore"])[:, :d].astype(bool))
    if not scores:
        empty = np.zeros((10, 0))
        return _CategoryTable(np.zeros(0, int), empty, empty, gt_count)
    s = np.concatenate(scores)
    order = np.argsort(-s, kind="mergesort")  # pycocotools' stable order
    m = np.concatenate(matched, axis=1)[:, order]
    ig = np.concatenate(ignored, axis=1)[:, order]
    return _CategoryTable(np.concatenate(images)[order], (m & ~ig).astype(float),
                          (~m & ~ig).astype(float), gt_count)


@dataclass(frozen=True)
class BootstrapResult:
    """Point delta (all images, mean over seeds), its 95% interval, SE and verdict."""

    delta: float
    low: float
    high: float
    se: float
    replicates: int
    verdict: str


def verdict(low: float, high: float) -> str:
    """"holds" when the interval is above 0, "contradicted" below 0, else "unresolved"."""
    if low > 0:
        return "holds"
    if high < 0:
        return "contradicted"
    return "unresolved"


def paired_bootstrap(tables_a: Sequence[EvalTable], tables_b: Sequence[EvalTable],
                     iou: float | None = None, category: str | int | None = None,
                     replicates: int = 1000, seed: int = 0, paired_seeds: bool = False
                     ) -> BootstrapResult:
    """Bootstrap the delta mean_seeds(AP(A)) - mean_seeds(AP(B)) (module docstring).

    ``tables_a`` / ``tables_b``: one :class:`EvalTable` per seed of each row, all on the same
    images (same ``image_ids``). ``iou`` / ``category``: as in :meth:`EvalTable.ap`.
    ``paired_seeds``: table ``j`` of A and of B come from the same trained model (e.g. two
    test-time NMS kinds), so a replicate draws one set of seeds for both.
    """
    if not tables_a or not tables_b:
        raise ValueError("each row needs at least one table (one per seed)")
    ids = tables_a[0].image_ids
    if any(t.image_ids != ids for t in (*tables_a, *tables_b)):
        raise ValueError("paired bootstrap needs every table on the same images")
    if paired_seeds and len(tables_a) != len(tables_b):
        raise ValueError("paired_seeds needs as many tables in A as in B")
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")

    def row_value(tables: Sequence[EvalTable], w: np.ndarray | None, picks: Sequence[int]
                  ) -> float:
        return float(np.nanmean([tables[j].ap(w, iou, category) for j in picks]))

    point = (row_value(tables_a, None, range(len(tables_a)))
             - row_value(tables_b, None, range(len(tables_b))))
    rng = np.random.default_rng(seed)
    n = len(ids)
    deltas = np.empty(replicates)
    for r in range(replicates):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
        pa = rng.integers(0, len(tables_a), len(tables_a))
        pb = pa if paired_seeds else rng.integers(0, len(tables_b), len(tables_b))
        deltas[r] = row_value(tables_a, w, pa) - row_value(tables_b, w, pb)
    deltas = deltas[np.isfinite(deltas)]
    low, high = (float(v) for v in np.percentile(deltas, [2.5, 97.5]))
    return BootstrapResult(point, low, high, float(np.std(deltas, ddof=1)), len(deltas),
                           verdict(low, high))
