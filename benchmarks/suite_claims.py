"""Pooled results and claim verdicts of the benchmark suite (render_suite.py).

A run of a row is complete for a seed when all ``k`` folds have a result; its held-out
detections are pooled over the folds and evaluated once on every image of the dataset. A
paper's claim is that ``with_row`` beats ``without_row`` on a metric; its delta gets a paired
bootstrap 95% interval over images and seeds (:func:`detkit.evaluation.bootstrap.
paired_bootstrap`, 1000 replicates) and a verdict: holds (interval above 0), contradicted
(below 0), unresolved (contains 0). Rows ``row:kind`` refer to one NMS kind of an "nms" row;
the two sides of an NMS claim are the same models, so their seeds are paired too.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import suite_rows

from detkit.evaluation import evaluate_detections
from detkit.evaluation.bootstrap import BootstrapResult, build_eval_table, paired_bootstrap

FULL = suite_rows.FULL
REPLICATES = 1000


@dataclass(frozen=True)
class Claim:
    """``with_row`` beats ``without_row`` on ``metric`` ("AP", "AP50", "APs" or a class name)."""

    name: str
    with_row: str
    without_row: str
    metric: str
    paper: str

    @property
    def rows(self) -> tuple[str, str]:
        """The suite rows behind the two sides (``row:kind`` names its row)."""
        return self.with_row.split(":")[0], self.without_row.split(":")[0]

    @property
    def same_models(self) -> bool:
        """Both sides are test-time settings of the same trained models (seeds paired)."""
        return self.rows[0] == self.rows[1]


CLAIMS: tuple[Claim, ...] = (
    Claim("CIoU loss over smooth-L1", FULL, "tn_loss_smooth_l1", "AP",
          "CIoU > smooth-L1 (DIoU paper, Faster R-CNN on COCO: +1.4 AP over L1-type losses)"),
    Claim("CIoU loss over IoU loss", FULL, "tn_loss_iou", "AP",
          "+2.6 AP over IoU loss (DIoU paper, YOLOv3 on VOC)"),
    Claim("CIoU loss over GIoU loss", FULL, "tn_loss_giou", "AP", "CIoU > GIoU (DIoU paper)"),
    Claim("CIoU loss over DIoU loss", FULL, "tn_loss_diou", "AP", "CIoU > DIoU (DIoU paper)"),
    Claim("DIoU-NMS over NMS", "tn_nms:diou_nms", "tn_nms:nms", "AP",
          "+0.1 to +0.5 AP (DIoU paper)"),
    Claim("Soft-NMS over NMS", "tn_nms:soft_nms", "tn_nms:nms", "AP",
          "+1 to +1.7 AP (Soft-NMS paper, COCO)"),
    Claim("copy-paste + oversampling, Platelets AP (equal steps)", "tn_small_objects", FULL,
          "Platelets", "+7.1% relative on small objects (Kisantal 2019)"),
    Claim("copy-paste + oversampling, APs (equal steps)", "tn_small_objects", FULL, "APs",
          "+7.1% relative on small objects (Kisantal 2019)"),
    Claim("small-object tools together, Platelets AP", "tn_platelets", FULL, "Platelets",
          "densified small anchors and copy-paste find small objects (FaceBoxes, Kisantal)"),
    Claim("small anchors, Platelets AP", "tn_small_anchors", FULL, "Platelets",
          "densified small anchors cover small objects (FaceBoxes)"),
    Claim("instance-balanced R-CNN foreground RoIs, Platelets AP", "tn_balanced_rois", FULL,
          "Platelets", "balanced sampling helps rare, small instances (Libra R-CNN, CVPR 2019)"),
    Claim("instance-balanced R-CNN foreground RoIs, AP", "tn_balanced_rois", FULL, "AP",
          "+0.9 AP from IoU-balanced and instance-balanced sampling (Libra R-CNN, COCO)"),
    Claim("CEM", FULL, "tn_no_cem", "AP", "+1.7 AP (ThunderNet, COCO)"),
    Claim("CEM context branches started at zero over the paper's start", FULL,
          "tn_cem_paper_init", "AP", "detkit's from-scratch fix (issue measurement: test AP "
          "0.152 -> 0.211 on the 72-image split)"),
    Claim("CEM context behind zero-start gates over zero-start weights", "tn_cem_scale", FULL,
          "AP", "the other from-scratch start: Kaiming branches gated at 0 (ReZero, LayerScale)"),
    Claim("CEM with gated context over no CEM", "tn_cem_scale", "tn_no_cem", "AP",
          "+1.7 AP (ThunderNet, COCO)"),
    Claim("SAM", FULL, "tn_no_sam", "AP", "+1.3 AP (ThunderNet, COCO)"),
    Claim("anchor densification + scale compensation", "dense_anchors_on", "dense_anchors_off",
          "AP", "FaceBoxes / S3FD: better recall of small faces"),
    Claim("label smoothing", "tn_label_smoothing", FULL, "AP", "+0.3 to +1 AP (Bag of Freebies)"),
    Claim("visually coherent mixup", "tn_mixup", FULL, "AP", "+1 to +1.5 AP (Bag of Freebies)"),
    Claim("warmup", FULL, "tn_no_warmup", "AP", "stabler start (Goyal et al.; Bag of Freebies)"),
    Claim("cosine over step decay", FULL, "tn_step", "AP", "+0.5 to +1 AP (Bag of Freebies)"),
    Claim("ACNet blocks", "tn_acnet", FULL, "AP", "+0 to +1 AP (ACNet, ICCV 2019)"),
    Claim("learned augmentation policy v0", "tn_autoaug", FULL, "AP",
          "higher COCO AP (Zoph et al. 2019)"),
    # Unequal test cost: the pyramid runs the network at 256, 320 and 384 px, (256^2 + 320^2
    # + 384^2) / 320^2 = 3.08x the pixels of one 320 pass.
    Claim("multi-scale training + 3-scale test pyramid (3.1x test pixels), AP", "tn_multiscale",
          FULL, "AP", "higher AP from multi-scale training (YOLOv3 in Bag of Freebies; SNIP)"),
    Claim("multi-scale training + 3-scale test pyramid (3.1x test pixels), APs",
          "tn_multiscale", FULL, "APs", "better small-object AP (SNIP, 2018)"),
    Claim("SNIP valid ranges over plain multi-scale, APs", "tn_snip", "tn_multiscale", "APs",
          "better small-object AP (SNIP, 2018)"),
    Claim("SNIP valid ranges over plain multi-scale, AP", "tn_snip", "tn_multiscale", "AP",
          "higher AP, most of it on small objects (SNIP, 2018)"),
    Claim("ThunderNet-lite over Faster R-CNN MBv3 (equal time)", FULL, "fasterrcnn_mbv3", "AP",
          "detkit's goal: at least the peer's AP at <= 0.3x its latency"),
)


def load_folds(results_dir: Path) -> dict[tuple[str, int], dict[int, dict[str, Any]]]:
    """Fold results per (row, seed): {fold: result dict} (calibration and others skipped)."""
    out: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}
    for path in sorted(results_dir.glob("*_f*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and {"row", "seed", "fold"} <= set(data):
            out.setdefault((data["row"], int(data["seed"])), {})[int(data["fold"])] = data
    return out


def read_dets(results_dir: Path, row: str, seed: int, fold: int) -> Any:
    """Held-out detections of one fold (a list, or {kind: list} for an "nms" row)."""
    path = results_dir / f"{row}_s{seed}_f{fold}.dets.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


@dataclass
class Pooled:
    """One complete (row[:kind], seed): its folds, pooled detections and pooled metrics."""

    row: str
    seed: int
    folds: dict[int, dict[str, Any]]
    dets: list[dict[str, Any]]
    metrics: dict[str, Any]
    per_class: dict[str, Any]
    tables: dict[str, Any]


def pool_runs(results_dir: Path, gt: Mapping[str, Any], k: int
              ) -> dict[str, list[Pooled]]:
    """Every complete (row, seed), keyed by row (and "row:kind" for NMS kinds), by seed."""
    out: dict[str, list[Pooled]] = {}
    for (row, seed), folds in sorted(load_folds(results_dir).items()):
        if sorted(folds) != list(range(k)):
            continue
        per_fold = [read_dets(results_dir, row, seed, f) for f in range(k)]
        if isinstance(per_fold[0], dict):
            variants = {f"{row}:{kind}": [d[kind] for d in per_fold] for kind in per_fold[0]}
        else:
            variants = {row: per_fold}
        for name, lists in variants.items():
            dets = [d for fold_dets in lists for d in fold_dets]
            result = evaluate_detections(gt, dets)
            out.setdefault(name, []).append(Pooled(name, seed, folds, dets, result.metrics,
                                                   result.per_class, {}))
    return out


def _tables(run: Pooled, gt: Mapping[str, Any], area: str) -> Any:
    if area not in run.tables:
        run.tables[area] = build_eval_table(gt, run.dets, area=area)
    return run.tables[area]


def metric_value(run: Pooled, metric: str) -> float | None:
    """A pooled metric of one run (a COCO metric or a class's AP)."""
    if metric in run.metrics:
        value = run.metrics[metric]
    else:
        value = (run.per_class.get(metric) or {}).get("AP")
    return float(value) if isinstance(value, int | float) else None


def judge(claim: Claim, runs: Mapping[str, Sequence[Pooled]], gt: Mapping[str, Any]
          ) -> BootstrapResult | None:
    """The claim's bootstrap result, or None while either side has no complete run."""
    a, b = runs.get(claim.with_row, []), runs.get(claim.without_row, [])
    if not a or not b:
        return None
    area = "small" if claim.metric == "APs" else "all"
    iou = 0.5 if claim.metric == "AP50" else None
    category = None if claim.metric in ("AP", "AP50", "APs") else claim.metric
    paired = claim.same_models
    if paired:
        seeds = sorted({r.seed for r in a} & {r.seed for r in b})
        a = [r for r in a if r.seed in seeds]
        b = [r for r in b if r.seed in seeds]
    return paired_bootstrap([_tables(r, gt, area) for r in a], [_tables(r, gt, area) for r in b],
                            iou=iou, category=category, replicates=REPLICATES,
                            paired_seeds=paired)
