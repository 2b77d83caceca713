"""Shared synthetic COCO cases for the evaluation tests."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def make_random_case(
    seed: int, num_images: int = 12, cat_ids: Sequence[int] = (3, 7, 42)
) -> tuple[dict, list[dict]]:
    """Random GT (some crowd boxes, some empty images, sizes across all area ranges) and
    detections (jittered copies of GT plus random boxes), both in COCO format."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id * 10, "width": 640, "height": 480})
        count = 0 if image_id % 5 == 0 else int(rng.integers(1, 6))
        for _ in range(count):
            w, h = rng.uniform(4, 220, size=2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            cat = int(rng.choice(cat_ids))
            crowd = int(rng.random() < 0.1)
            anns.append({"id": len(anns) + 1, "image_id": image_id * 10, "category_id": cat,
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": crowd})
            for _ in range(int(rng.integers(0, 3))):
                jitter = rng.normal(0, 0.08, size=4) * [w, h, w, h]
                dets.append({"image_id": image_id * 10, "category_id": cat,
                             "bbox": [x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]],
                             "score": float(rng.random())})
        for _ in range(int(rng.integers(0, 8))):
            w, h = rng.uniform(4, 220, size=2)
            dets.append({"image_id": image_id * 10, "category_id": int(rng.choice(cat_ids)),
                         "bbox": [rng.uniform(0, 640 - w), rng.uniform(0, 480 - h), w, h],
                         "score": float(rng.random())})
    categories = [{"id": c, "name": f"class_{c}"} for c in cat_ids]
    return {"images": images, "annotations": anns, "categories": categories}, dets


def run_pycocotools(
    gt: dict,
    dets: list[dict],
    max_dets: Sequence[int] = (1, 10, 100),
    area_ranges: dict[str, tuple[float, float]] | None = None,
    cat_ids: Sequence[int] | None = None,
) -> COCOeval:
    """Plain pycocotools reference run (deep copies, so the inputs stay untouched)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.maxDets = list(max_dets)
        if area_ranges is not None:
            evaluator.params.areaRng = [list(v) for v in area_ranges.values()]
            evaluator.params.areaRngLbl = list(area_ranges)
        if cat_ids is not None:
            evaluator.params.catIds = list(cat_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


@pytest.fixture
def random_case() -> Callable[..., tuple[dict, list[dict]]]:
    """Factory fixture: ``random_case(seed)`` -> (gt dict, detections)."""
    return make_random_case


@pytest.fixture
def pycocotools_reference() -> Callable[..., COCOeval]:
    """Factory fixture running plain pycocotools on a (gt, detections) pair."""
    return run_pycocotools
