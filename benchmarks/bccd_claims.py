"""Claims, per-seed values, spreads and verdicts of the BCCD benchmark (render_bccd.py).

A paper's claim is that ``with_row`` beats ``without_row`` on a metric. The verdict compares
the measured delta (mean over seeds) with the seed-to-seed spread (max - min): "holds" when the
gain is larger than the spread, "does not hold" when the loss is, "noise" when the delta is
inside it, "undetermined" when no row involved has two seeds yet.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bccd

CLASSES = ("Platelets", "RBC", "WBC")


@dataclass(frozen=True)
class Claim:
    """A paper's claim: ``with_row`` beats ``without_row`` on ``metric`` (NMS: kinds)."""

    name: str
    with_row: str
    without_row: str
    metric: str
    paper: str
    relative: bool = False


CLAIMS: tuple[Claim, ...] = (
    Claim("CIoU loss over IoU loss", bccd.FULL, "tn_loss_iou", "AP",
          "+2.6 AP (DIoU paper, YOLOv3 on VOC)"),
    Claim("CIoU loss over smooth-L1", bccd.FULL, "tn_loss_smooth_l1", "AP",
          "+2.6 AP over IoU loss (DIoU paper, YOLOv3 on VOC)"),
    Claim("DIoU-NMS over NMS", "tn_nms:diou_nms", "tn_nms:nms", "AP",
          "+0.1 to +0.5 AP (DIoU paper)"),
    Claim("copy-paste + oversampling, Platelets AP", "tn_small_objects", bccd.FULL,
          "Platelets", "+7.1% relative on small objects (Kisantal 2019)", relative=True),
    Claim("copy-paste + oversampling, APs", "tn_small_objects", bccd.FULL, "APs",
          "+7.1% relative on small objects (Kisantal 2019)", relative=True),
    Claim("copy-paste + oversampling at equal steps, Platelets AP", "tn_small_objects",
          "tn_steps_matched", "Platelets", "+7.1% relative on small objects (Kisantal 2019)",
          relative=True),
    Claim("copy-paste + oversampling at equal steps, APs", "tn_small_objects",
          "tn_steps_matched", "APs", "+7.1% relative on small objects (Kisantal 2019)",
          relative=True),
    Claim("CEM", bccd.FULL, "tn_no_cem", "AP", "+1.7 AP (ThunderNet, COCO)"),
    Claim("SAM", bccd.FULL, "tn_no_sam", "AP", "+1.3 AP (ThunderNet, COCO)"),
)


def metric_of(result: Mapping[str, Any], metric: str, nms_kind: str | None = None
              ) -> float | None:
    """A metric of one run: a COCO metric name or a class name (that class's AP)."""
    src = result["nms_kinds"][nms_kind] if nms_kind else result
    if metric in CLASSES or metric in (src.get("per_class") or {}):
        value = (src.get("per_class") or {}).get(metric, {}).get("AP")
    else:
        value = (src.get("metrics") or {}).get(metric)
    return float(value) if isinstance(value, int | float) else None


def values(results: Mapping[str, Sequence[Mapping[str, Any]]], ref: str, metric: str
           ) -> list[float]:
    """Per-seed values of ``metric`` for a row reference ``row`` or ``row:nms_kind``."""
    row, _, kind = ref.partition(":")
    found = [metric_of(r, metric, kind or None) for r in results.get(row, [])
             if not kind or kind in r.get("nms_kinds", {})]
    return [v for v in found if v is not None]


def class_ap50(runs: Sequence[Mapping[str, Any]], name: str) -> list[float]:
    """Per-seed AP50 of class ``name``."""
    found = [((r.get("per_class") or {}).get(name) or {}).get("AP50") for r in runs]
    return [float(v) for v in found if isinstance(v, int | float)]


def spread(vals: Sequence[float]) -> float | None:
    """Seed-to-seed spread (max - min) or None with fewer than two seeds."""
    return max(vals) - min(vals) if len(vals) >= 2 else None


def verdict(delta: float, noise: float | None) -> str:
    """"holds" / "does not hold" / "noise" / "undetermined" for a claimed gain (delta > 0)."""
    if noise is None:
        return "undetermined (one seed, no spread measured)"
    if abs(delta) <= noise:
        return "noise"
    return "holds" if delta > 0 else "does not hold"


def claim_outcome(claim: Claim, results: Mapping[str, Sequence[Mapping[str, Any]]]
                  ) -> dict[str, Any] | None:
    """Means, delta (absolute or relative), spread and verdict of a claim; None if not run."""
    with_v = values(results, claim.with_row, claim.metric)
    without_v = values(results, claim.without_row, claim.metric)
    if not with_v or not without_v:
        return None
    a, b = statistics.fmean(with_v), statistics.fmean(without_v)
    spreads = [s for s in (spread(with_v), spread(without_v)) if s is not None]
    source = "these rows"
    if not spreads:
        full = spread(values(results, bccd.FULL, claim.metric))
        spreads, source = ([full], "full-model seeds") if full is not None else ([], "")
    noise = max(spreads) if spreads else None
    delta = a - b
    shown = delta / b if claim.relative and b > 0 else delta
    rel_noise = noise / b if claim.relative and b > 0 and noise is not None else noise
    return {"with": a, "without": b, "delta": delta, "shown": shown, "noise": noise,
            "shown_noise": rel_noise, "spread_source": source, "verdict": verdict(delta, noise),
            "seeds": (len(with_v), len(without_v))}
