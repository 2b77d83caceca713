"""Statistics of a COCO detection annotation file (class counts, sizes, aspect ratios).

Object sizes use the COCO evaluation buckets, taken from the annotation's ``area``
field (``w * h`` of the box when absent): small ``< 32^2 <=`` medium ``< 96^2 <=`` large.
Crowd annotations (``iscrowd = 1``) are counted apart and left out of every other
statistic, as COCO evaluation treats them as ignore regions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detkit.data.validation import load_coco_json
from detkit.ops.boxes import coco_area_bucket

__all__ = ["BUCKETS", "DatasetStats", "compute_dataset_stats", "format_stats"]

BUCKETS = ("small", "medium", "large")


@dataclass
class DatasetStats:
    """Per-class and per-image statistics of a COCO annotation file.

    ``areas[name]``, ``aspect_ratios[name]`` (box ``w / h``) are float arrays with one
    entry per (non-crowd) object of the class; ``objects_per_image`` has one entry per
    image; ``buckets[name][bucket]`` counts objects per COCO size bucket.
    """

    class_names: list[str]
    num_images: int = 0
    num_crowd: int = 0
    num_orphans: int = 0
    class_counts: Counter = field(default_factory=Counter)
    buckets: dict[str, Counter] = field(default_factory=dict)
    areas: dict[str, np.ndarray] = field(default_factory=dict)
    aspect_ratios: dict[str, np.ndarray] = field(default_factory=dict)
    objects_per_image: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def num_objects(self) -> int:
        """Number of non-crowd annotations on known images."""
        return sum(self.class_counts.values())

    @property
    def empty_images(self) -> int:
        """Images with no (non-crowd) object."""
        return int(np.sum(self.objects_per_image == 0))

    def bucket_totals(self) -> Counter:
        """Objects per COCO size bucket over all classes."""
        total: Counter = Counter()
        for counts in self.buckets.values():
            total.update(counts)
        return total


def compute_dataset_stats(data: Mapping[str, Any] | str | Path) -> DatasetStats:
    """Statistics of a COCO dict or JSON file (the file's structure is checked first)."""
    if not isinstance(data, Mapping):
        data = load_coco_json(data)
    names = {c["id"]: str(c.get("name", c["id"])) for c in data["categories"]}
    ordered = [names[k] for k in sorted(names)]
    stats = DatasetStats(class_names=list(ordered))
    per_image = {img["id"]: 0 for img in data["images"]}
    stats.num_images = len(per_image)
    areas: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    for ann in data.get("annotations", []):
        if ann["image_id"] not in per_image:
            stats.num_orphans += 1
            continue
        if ann.get("iscrowd", 0):
            stats.num_crowd += 1
            continue
        name = names.get(ann["category_id"], f"unknown id {ann['category_id']}")
        if name not in stats.class_names:
            stats.class_names.append(name)
        _, _, w, h = (float(v) for v in ann["bbox"])
        area = float(ann.get("area", w * h))
        per_image[ann["image_id"]] += 1
        stats.class_counts[name] += 1
        stats.buckets.setdefault(name, Counter())[coco_area_bucket(area)] += 1
        areas.setdefault(name, []).append(area)
        ratios.setdefault(name, []).append(w / h if h > 0 else float("nan"))
    stats.areas = {k: np.asarray(v, np.float64) for k, v in areas.items()}
    stats.aspect_ratios = {k: np.asarray(v, np.float64) for k, v in ratios.items()}
    stats.objects_per_image = np.asarray(list(per_image.values()), np.int64)
    return stats


def _quantiles(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return f"{'-':>8}{'-':>8}{'-':>8}"
    lo, mid, hi = np.percentile(values, [5, 50, 95])
    return f"{lo:8.2f}{mid:8.2f}{hi:8.2f}"


def format_stats(stats: DatasetStats) -> str:
    """Plain-text tables: per class counts, size buckets, sqrt(area) and w/h percentiles."""
    opi = stats.objects_per_image
    per_image = (
        "-"
        if opi.size == 0
        else f"mean {opi.mean():.2f}  median {np.median(opi):.0f}  max {opi.max()}"
    )
    lines = [
        f"images: {stats.num_images}  objects: {stats.num_objects}  crowd: {stats.num_crowd}  "
        f"empty images: {stats.empty_images}  annotations on unknown images: {stats.num_orphans}",
        "objects per image: " + per_image,
        "",
        f"{'class':<16}{'count':>7}{'small':>7}{'medium':>8}{'large':>7}"
        f"{'sqrt(area) p5/p50/p95':>24}{'w/h p5/p50/p95':>24}",
    ]
    rows = [(n, stats.buckets.get(n, Counter())) for n in stats.class_names]
    rows.append(("all", stats.bucket_totals()))
    for name, buckets in rows:
        if name == "all":
            count = stats.num_objects
            area = np.concatenate([np.zeros(0), *stats.areas.values()])
            ratio = np.concatenate([np.zeros(0), *stats.aspect_ratios.values()])
        else:
            count = stats.class_counts[name]
            area = stats.areas.get(name, np.zeros(0))
            ratio = stats.aspect_ratios.get(name, np.zeros(0))
        lines.append(
            f"{name:<16}{count:>7}{buckets['small']:>7}{buckets['medium']:>8}{buckets['large']:>7}"
            f"{_quantiles(np.sqrt(area)):>24}{_quantiles(ratio):>24}"
        )
    return "\n".join(lines)
