"""Summary numbers from COCOeval's accumulated arrays, and the ``EvalResult`` container.

COCO metrics (Lin et al. 2014): AP is the mean precision over 10 IoU thresholds (.50:.05:.95),
101 recall points and all categories; AR is the mean of the best recall over IoU thresholds and
categories. pycocotools' ``summarize()`` hard-codes ``maxDets=100`` for the headline AP and
``maxDets[2]`` for the rest (so ``maxDets=[1, 10, 50]`` gives AP = -1) and reports "no ground truth"
as -1. Here every AP / area AR uses the largest limit in ``max_dets``, one AR is reported per
limit, and "no ground truth" is NaN in memory and ``null`` in JSON, with a note explaining it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detkit.evaluation.fast import AccumulatedEval

STANDARD_AREAS = {"small": "s", "medium": "m", "large": "l"}
PER_CLASS_KEYS = ("AP", "AP50", "APs", "APm", "APl")


def mean_valid(values: np.ndarray) -> float:
    """Mean over entries > -1 (COCOeval's "no ground truth" marker); NaN when none is valid."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else math.nan


def _iou_index(iou_thrs: np.ndarray, value: float) -> int:
    hits = np.flatnonzero(np.isclose(iou_thrs, value))
    if hits.size == 0:
        raise ValueError(f"IoU threshold {value} is not among {iou_thrs.tolist()}")
    return int(hits[0])


def area_metric_name(kind: str, label: str) -> str:
    """Metric key for an area range: ("AP", "small") -> "APs", ("AR", "tiny") -> "AR_tiny"."""
    suffix = STANDARD_AREAS.get(label)
    return f"{kind}{suffix}" if suffix else f"{kind}_{label}"


def summarize_metrics(
    acc: AccumulatedEval,
    iou_thrs: np.ndarray,
    max_dets: Sequence[int],
    area_labels: Sequence[str],
) -> tuple[np.ndarray, dict[str, float]]:
    """Compute the pycocotools ``stats`` vector and a named metric dict.

    ``stats`` layout (pycocotools order; 12 numbers for three ``max_dets``): AP, AP50, AP75,
    APs, APm, APl, AR@max_dets[0..], ARs, ARm, ARl. All AP and area-AR numbers use
    ``max_dets[-1]``. ``metrics`` holds the same values under "AP", "AP50", ..., "AR1", "AR10",
    "AR100", ..., plus "AP_<name>" / "AR_<name>" for every extra area range.

    Args:
        acc: accumulated arrays; precision [T, R, K, A, M], recall [T, K, A, M].
        iou_thrs: the T IoU thresholds.
        max_dets: the M detection limits, increasing.
        area_labels: the A area labels, "all" first.
    """
    prec, rec = acc.precision, acc.recall
    m_last = len(max_dets) - 1
    t50, t75 = _iou_index(iou_thrs, 0.5), _iou_index(iou_thrs, 0.75)
    a_idx = {label: i for i, label in enumerate(area_labels)}

    metrics: dict[str, float] = {
        "AP": mean_valid(prec[:, :, :, 0, m_last]),
        "AP50": mean_valid(prec[t50, :, :, 0, m_last]),
        "AP75": mean_valid(prec[t75, :, :, 0, m_last]),
    }
    for label in area_labels[1:]:
        metrics[area_metric_name("AP", label)] = mean_valid(prec[:, :, :, a_idx[label], m_last])
    for m, limit in enumerate(max_dets):
        metrics[f"AR{limit}"] = mean_valid(rec[:, :, 0, m])
    for label in area_labels[1:]:
        metrics[area_metric_name("AR", label)] = mean_valid(rec[:, :, a_idx[label], m_last])

    order = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    order += [f"AR{limit}" for limit in max_dets] + ["ARs", "ARm", "ARl"]
    stats = np.array([metrics[key] for key in order], dtype=np.float64)
    return stats, metrics


def per_class_metrics(
    acc: AccumulatedEval,
    iou_thrs: np.ndarray,
    class_names: Sequence[str],
    area_labels: Sequence[str],
) -> dict[str, dict[str, float]]:
    """Per-category AP, AP50, APs, APm, APl (+ "AP_<name>" for extra areas) at the largest maxDets.

    Each value is the mean of ``precision[:, :, k, area, -1]`` (or the IoU=.5 row for AP50) over
    the valid entries, NaN when the category has no ground truth in that area range.
    """
    prec = acc.precision
    t50 = _iou_index(iou_thrs, 0.5)
    table: dict[str, dict[str, float]] = {}
    for k, name in enumerate(class_names):
        row = {
            "AP": mean_valid(prec[:, :, k, 0, -1]),
            "AP50": mean_valid(prec[t50, :, k, 0, -1]),
        }
        for a, label in enumerate(area_labels[1:], start=1):
            row[area_metric_name("AP", label)] = mean_valid(prec[:, :, k, a, -1])
        table[name] = row
    return table


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


@dataclass
class EvalResult:
    """Outcome of :func:`detkit.evaluation.evaluate_detections`.

    Attributes:
        stats: float64 [12] in pycocotools order (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100,
            ARs, ARm, ARl for the default ``max_dets``); NaN where there is no ground truth.
        metrics: the same numbers by name, plus "AP_<name>" / "AR_<name>" extra area buckets.
        per_class: {class name: {"AP", "AP50", "APs", "APm", "APl", ...}}.
        precision: float64 [T, R, K, A, M] from COCOeval (-1 = no ground truth) for PR curves.
        recall: float64 [T, K, A, M].
        iou_thrs: [T] IoU thresholds; rec_thrs: [R] recall points.
        cat_ids: [K] original category ids (sorted), class_names: [K] their names.
        area_labels: [A] area range labels ("all" first); max_dets: [M] detection limits.
        notes: explanations for NaN values and warnings raised during evaluation.
        backend: "pycocotools" or "faster_coco_eval"; num_detections: evaluated detections.
    """

    stats: np.ndarray
    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]]
    precision: np.ndarray
    recall: np.ndarray
    iou_thrs: np.ndarray
    rec_thrs: np.ndarray
    cat_ids: list[int]
    class_names: list[str]
    area_labels: list[str]
    max_dets: list[int]
    backend: str
    num_detections: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dict: every metric at top level, ``per_class``, ``notes``; NaN -> None."""
        out: dict = {key: _json_number(value) for key, value in self.metrics.items()}
        out["per_class"] = {
            name: {key: _json_number(value) for key, value in row.items()}
            for name, row in self.per_class.items()
        }
        out["notes"] = list(self.notes)
        out["backend"] = self.backend
        out["max_dets"] = list(self.max_dets)
        out["num_detections"] = self.num_detections
        return out

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write ``metrics.json`` (AP, AP50, AP75, APs, APm, APl, ..., per_class); returns the path.

        Values without ground truth are written as ``null`` (a note in "notes" says why).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return path

    def summary_table(self) -> str:
        """Human-readable text: the headline metrics (pycocotools style) and a per-class table."""
        lines = []
        limit = self.max_dets[-1]
        iou_all = f"{self.iou_thrs[0]:0.2f}:{self.iou_thrs[-1]:0.2f}"
        for key, value in self.metrics.items():
            kind = "Average Precision (AP)" if key.startswith("AP") else "Average Recall    (AR)"
            iou = {"AP50": "0.50", "AP75": "0.75"}.get(key, iou_all)
            area, dets = "all", limit
            for label in self.area_labels[1:]:
                if key in (area_metric_name("AP", label), area_metric_name("AR", label)):
                    area = label
            if key.startswith("AR") and key[2:].isdigit():
                dets = int(key[2:])
            shown = "  n/a" if math.isnan(value) else f"{value:0.3f}"
            lines.append(
                f" {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={dets:>3d} ] = {shown}"
                f"   ({key})"
            )
        columns = list(next(iter(self.per_class.values())).keys()) if self.per_class else []
        width = max([len("class")] + [len(name) for name in self.per_class])
        lines.append("")
        lines.append(f"{'class':<{width}} " + " ".join(f"{c:>7}" for c in columns))
        for name, row in self.per_class.items():
            cells = ["    n/a" if math.isnan(v) else f"{v:7.3f}" for v in row.values()]
            lines.append(f"{name:<{width}} " + " ".join(cells))
        if any(math.isnan(v) for row in self.per_class.values() for v in row.values()):
            lines.append("n/a: no ground truth of that class in that area range")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)
