"""Anchor coverage of a COCO data set: can the anchors reach every ground-truth box?

For every non-crowd ground-truth box, scaled as the letterbox would scale its
image to ``input_size`` (longest side -> ``input_size``, so boxes are multiplied
by ``input_size / max(h, w)``; padding goes right/bottom and moves nothing),
the best IoU over all anchors of an ``input_size x input_size`` input is
computed. Results are grouped by class and by COCO area bucket of the *scaled*
box (small < 32^2 <= medium < 96^2 <= large, in input pixels): the share of
boxes with an anchor at IoU >= ``iou_threshold`` (0.5) and the mean best IoU.

Crowd boxes (``iscrowd = 1``, ignore regions) and boxes of zero area are not
scored; their counts are part of the report.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from detkit.models.anchors import AnchorGenerator
from detkit.ops.boxes import box_iou, coco_area_bucket

__all__ = [
    "AREA_BUCKETS",
    "CoverageReport",
    "CoverageRow",
    "anchor_coverage",
    "best_anchor_iou",
    "model_anchor_generator",
    "plot_coverage",
]

AREA_BUCKETS = ("small", "medium", "large")


def model_anchor_generator(model: torch.nn.Module) -> AnchorGenerator:
    """The model's (first) :class:`AnchorGenerator`: a dense detector's, ThunderNet's RPN's.

    ValueError when the model has none (e.g. a torchvision peer).
    """
    for module in model.modules():
        if isinstance(module, AnchorGenerator):
            return module
    raise ValueError(f"the model {type(model).__name__} has no AnchorGenerator")


def best_anchor_iou(boxes: Tensor, anchors: Tensor, chunk: int = 65536) -> Tensor:
    """``Tensor[N]``: each xyxy box's highest IoU with any of ``anchors`` [A, 4]."""
    if boxes.numel() == 0:
        return torch.zeros(0)
    best = torch.zeros(boxes.shape[0])
    for start in range(0, anchors.shape[0], chunk):
        iou = box_iou(boxes, anchors[start : start + chunk])
        best = torch.maximum(best, iou.max(dim=1).values)
    return best


@dataclass(frozen=True)
class CoverageRow:
    """One table row: boxes of ``class_name`` (or "all") in ``bucket`` (or "all")."""

    bucket: str
    class_name: str
    count: int
    covered: int
    mean_best_iou: float

    @property
    def coverage(self) -> float:
        """Share of boxes with an anchor at or above the IoU threshold (0 when empty)."""
        return self.covered / self.count if self.count else 0.0


@dataclass
class CoverageReport:
    """Per-bucket, per-class coverage and what was not scored."""

    input_size: int
    iou_threshold: float
    rows: list[CoverageRow] = field(default_factory=list)
    num_anchors: int = 0
    crowd_skipped: int = 0
    zero_area_skipped: int = 0

    def table(self) -> str:
        """A fixed-width text table of the rows and the skip counts."""
        head = f"{'bucket':<8} {'class':<12} {'boxes':>6} {'IoU>=' + str(self.iou_threshold):>8} "
        head += f"{'covered%':>9} {'mean best IoU':>14}"
        lines = [f"input {self.input_size}x{self.input_size}, {self.num_anchors} anchors", head]
        for r in self.rows:
            if r.count == 0:  # no boxes of this class in this bucket: nothing to measure
                lines.append(f"{r.bucket:<8} {r.class_name:<12} {0:>6} {0:>8} "
                             f"{'n/a':>9} {'n/a':>14}")
                continue
            lines.append(
                f"{r.bucket:<8} {r.class_name:<12} {r.count:>6} {r.covered:>8} "
                f"{100 * r.coverage:>8.1f}% {r.mean_best_iou:>14.3f}"
            )
        lines.append(
            f"not scored: {self.crowd_skipped} crowd box(es), "
            f"{self.zero_area_skipped} zero-area box(es)"
        )
        return "\n".join(lines)


def _scaled_boxes(
    coco: Mapping[str, Any], input_size: int
) -> tuple[dict[int, list[tuple[list[float], int]]], int, int]:
    """Per image id: (scaled xyxy box, category id) pairs; plus crowd and zero-area counts."""
    images = {img["id"]: img for img in coco["images"]}
    per_image: dict[int, list[tuple[list[float], int]]] = defaultdict(list)
    crowd = zero = 0
    for ann in coco["annotations"]:
        if ann.get("iscrowd", 0):
            crowd += 1
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w <= 0 or h <= 0:
            zero += 1
            continue
        img = images[ann["image_id"]]
        s = input_size / max(float(img["height"]), float(img["width"]))
        per_image[ann["image_id"]].append(
            ([x * s, y * s, (x + w) * s, (y + h) * s], int(ann["category_id"]))
        )
    return per_image, crowd, zero


def anchor_coverage(
    coco: Mapping[str, Any],
    generator: AnchorGenerator,
    input_size: int = 320,
    iou_threshold: float = 0.5,
) -> CoverageReport:
    """Coverage of ``coco`` (a COCO JSON dict) by ``generator``'s anchors (module docstring)."""
    anchors = generator.concat(generator.feature_sizes_for((input_size, input_size)))
    per_image, crowd, zero = _scaled_boxes(coco, input_size)
    names = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
    stats: dict[tuple[str, str], list[float]] = defaultdict(list)
    for items in per_image.values():
        boxes = torch.tensor([b for b, _ in items], dtype=torch.float32)
        best = best_anchor_iou(boxes, anchors).tolist()
        for (box, cat), iou in zip(items, best, strict=True):
            bucket = coco_area_bucket((box[2] - box[0]) * (box[3] - box[1]))
            for key in ((bucket, names[cat]), (bucket, "all"), ("all", names[cat]), ("all", "all")):
                stats[key].append(iou)
    report = CoverageReport(
        input_size,
        iou_threshold,
        num_anchors=int(anchors.shape[0]),
        crowd_skipped=crowd,
        zero_area_skipped=zero,
    )
    class_names = [names[k] for k in sorted(names)] + ["all"]
    for bucket in (*AREA_BUCKETS, "all"):
        for name in class_names:
            values = stats.get((bucket, name), [])
            report.rows.append(
                CoverageRow(
                    bucket=bucket,
                    class_name=name,
                    count=len(values),
                    covered=sum(v >= iou_threshold for v in values),
                    mean_best_iou=sum(values) / len(values) if values else 0.0,
                )
            )
    return report


def plot_coverage(report: CoverageReport, path: str | Path, title: str = "") -> Path:
    """Bar chart of coverage (%) per area bucket, one bar per class; writes ``path`` (PNG)."""
    from matplotlib.figure import Figure

    buckets = [*AREA_BUCKETS, "all"]
    classes = list(dict.fromkeys(r.class_name for r in report.rows))
    lookup = {(r.bucket, r.class_name): r for r in report.rows}
    width = 0.8 / len(classes)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for i, name in enumerate(classes):
        xs = [b + (i - (len(classes) - 1) / 2) * width for b in range(len(buckets))]
        ys = [100 * lookup[(b, name)].coverage for b in buckets]
        ax.bar(xs, ys, width=width, label=name)
    ax.set_xticks(range(len(buckets)), buckets)
    ax.set_ylabel(f"boxes with an anchor at IoU >= {report.iou_threshold} (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title or f"anchor coverage at {report.input_size} px")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    return out
