"""Tests for detkit.evaluation.bootstrap: weighted COCO AP and the paired bootstrap."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from detkit.evaluation import evaluate_detections
from detkit.evaluation.bootstrap import build_eval_table, paired_bootstrap, verdict

from .conftest import make_random_case

GT = {
    "images": [{"id": 1, "width": 50, "height": 50, "file_name": "a.jpg"},
               {"id": 2, "width": 50, "height": 50, "file_name": "b.jpg"}],
    "categories": [{"id": 7, "name": "cell"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 10, 10], "area": 100,
         "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 7, "bbox": [0, 0, 10, 10], "area": 100,
         "iscrowd": 0},
    ],
}
# image 1: a hit (0.9); image 2: a miss far away (0.8), then a hit (0.7)
DETS = [
    {"image_id": 1, "category_id": 7, "bbox": [0, 0, 10, 10], "score": 0.9},
    {"image_id": 2, "category_id": 7, "bbox": [30, 30, 10, 10], "score": 0.8},
    {"image_id": 2, "category_id": 7, "bbox": [0, 0, 10, 10], "score": 0.7},
]


def test_hand_worked_weighted_ap() -> None:
    table = build_eval_table(GT, DETS)
    # all weights 1: TP, FP, TP -> recall .5, .5, 1; precision 1, .5, 2/3; envelope 1, 2/3, 2/3;
    # the 51 recall points 0.00..0.50 read 1, the 50 points 0.51..1.00 read 2/3 (every IoU
    # threshold: the hits are exact, the miss has IoU 0)
    expected = (51 * 1.0 + 50 * 2.0 / 3.0) / 101
    assert table.ap() == pytest.approx(expected, abs=1e-12)
    # image 1 drawn twice, image 2 never: one hit per ground truth, AP 1
    assert table.ap(np.array([2.0, 0.0])) == pytest.approx(1.0)
    # image 2 alone: FP then TP -> recall 0, 1 with precision 0, 1/2: every point reads 1/2
    assert table.ap(np.array([0.0, 1.0])) == pytest.approx(0.5)
    assert table.ap(category="cell") == pytest.approx(expected)
    with pytest.raises(ValueError, match="no category named"):
        table.ap(category="rbc")


def _duplicated(gt: dict, dets: list[dict], counts: np.ndarray) -> tuple[dict, list[dict]]:
    """The data set with image i repeated counts[i] times under new ids."""
    images, anns, out = [], [], []
    for i, im in enumerate(gt["images"]):
        for _ in range(int(counts[i])):
            new = 1000 + len(images)
            images.append({**im, "id": new})
            for a in gt["annotations"]:
                if a["image_id"] == im["id"]:
                    anns.append({**a, "id": len(anns) + 1, "image_id": new})
            out += [{**d, "image_id": new} for d in dets if d["image_id"] == im["id"]]
    return {**gt, "images": images, "annotations": anns}, out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_ap_equals_pycocotools_on_the_resampled_data_set(seed: int) -> None:
    # random GT with crowd regions, empty images and every area range (conftest)
    gt, dets = make_random_case(seed)
    n = len(gt["images"])
    counts = np.bincount(np.random.default_rng(seed + 10).integers(0, n, n), minlength=n)
    warnings.simplefilter("ignore")
    ref = evaluate_detections(*_duplicated(gt, dets, counts), backend="pycocotools")
    full = evaluate_detections(gt, dets, backend="pycocotools")
    table, small = build_eval_table(gt, dets), build_eval_table(gt, dets, area="small")
    w = counts.astype(float)
    assert table.ap() == pytest.approx(full.metrics["AP"], abs=1e-12)
    assert table.ap(w) == pytest.approx(ref.metrics["AP"], abs=1e-12)
    assert table.ap(w, iou=0.5) == pytest.approx(ref.metrics["AP50"], abs=1e-12)
    assert small.ap(w) == pytest.approx(ref.metrics["APs"], abs=1e-12, nan_ok=True)
    name = next(iter(ref.per_class))
    assert table.ap(w, category=name) == pytest.approx(ref.per_class[name]["AP"], abs=1e-12,
                                                       nan_ok=True)


def test_paired_bootstrap_verdicts() -> None:
    better = build_eval_table(GT, DETS)
    worse = build_eval_table(GT, [DETS[1]])  # only the miss: AP 0 on every resample
    result = paired_bootstrap([better], [worse], replicates=200, seed=0)
    assert result.delta == pytest.approx((51 + 50 * 2 / 3) / 101)
    # every resample holds a ground truth, so A's AP is >= 0.5 and B's is 0
    assert result.low >= 0.5 and result.verdict == "holds"
    # A's AP per resample of the two images: {1, 1} 1.0, {2, 2} 0.5 (the miss first, then the
    # hit: precision 1/2 at recall 1), {1, 2} the point value; each extreme has probability
    # 1/4, so the 2.5 % and 97.5 % percentiles of 200 weighted replicates are 0.5 and 1.0
    assert (result.low, result.high) == pytest.approx((0.5, 1.0))
    flipped = paired_bootstrap([worse], [better], replicates=200, seed=0)
    assert flipped.high <= -0.5 and flipped.verdict == "contradicted"
    same = paired_bootstrap([better], [better], replicates=50)
    assert same.delta == 0.0 and same.low == 0.0 == same.high and same.verdict == "unresolved"
    assert verdict(-0.01, 0.02) == "unresolved"
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap([better], [build_eval_table({**GT, "images": GT["images"][:1],
                                                       "annotations": GT["annotations"][:1]},
                                                      DETS[:1])])


def test_a_category_without_detections_has_ap_zero() -> None:
    # both ground-truth boxes missed (no detection at all): AP 0 at every threshold and under
    # any image weights, as pycocotools gives
    table = build_eval_table(GT, [])
    assert table.ap() == 0.0 and table.ap(np.array([2.0, 0.0]), iou=0.5) == 0.0
    with pytest.warns(UserWarning, match="no detections to evaluate"):
        reference = evaluate_detections(GT, [], backend="pycocotools")
    assert reference.metrics["AP"] == 0.0
