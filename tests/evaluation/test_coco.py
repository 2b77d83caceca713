"""Tests of detkit.evaluation.coco: hand-worked COCO cases and parity with pycocotools."""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from detkit.evaluation import EvaluationWarning, evaluate_detections
from detkit.evaluation.fast import fast_backend_available

# pycocotools' precision is tp / (tp + fp + eps): hand-worked values agree to ~1e-16.
near = functools.partial(pytest.approx, abs=1e-12)

# Every hand-worked case runs on each installed backend.
BACKENDS = ["pycocotools"] + (["faster_coco_eval"] if fast_backend_available() else [])


def _gt(boxes: list[tuple[int, int, list[float]]], crowd: frozenset[int] = frozenset(),
        num_images: int = 2, categories: tuple[tuple[int, str], ...] = ((1, "cell"),)) -> dict:
    """GT dict from (image_id, category_id, [x, y, w, h]); indices in ``crowd`` are crowd."""
    anns = [
        {"id": i + 1, "image_id": img, "category_id": cat, "bbox": list(b),
         "area": b[2] * b[3], "iscrowd": int(i in crowd)}
        for i, (img, cat, b) in enumerate(boxes)
    ]
    return {
        "images": [{"id": i, "width": 640, "height": 480} for i in range(1, num_images + 1)],
        "annotations": anns,
        "categories": [{"id": c, "name": n} for c, n in categories],
    }


def _det(img: int, box: list[float], score: float, cat: int = 1) -> dict:
    return {"image_id": img, "category_id": cat, "bbox": list(box), "score": score}


# One GT per image in each area range: small 20x20=400, medium 50x50=2500, large 120x120=14400.
SMALL, MEDIUM, LARGE = [10.0, 10.0, 20.0, 20.0], [100.0, 100.0, 50.0, 50.0], [200, 200, 120, 120]


@pytest.mark.parametrize("backend", BACKENDS)
def test_perfect_predictions_give_one(backend: str) -> None:
    gt = _gt([(1, 1, SMALL), (2, 1, MEDIUM), (3, 2, LARGE)], num_images=3,
             categories=((1, "cell"), (2, "blob")))
    dets = [_det(a["image_id"], a["bbox"], 0.9, a["category_id"]) for a in gt["annotations"]]
    result = evaluate_detections(gt, dets, backend=backend)
    # Every GT is matched at IoU 1.0 by the only detection of its image: precision 1 at every
    # recall point, recall 1 even with maxDets=1 (one GT per image). pycocotools divides by
    # tp + fp + eps, so 1/(1 + 2^-52) = 1 - 2^-53 rounds to 0.9999999999999998: 1e-12 tolerance.
    np.testing.assert_allclose(result.stats, np.ones(12), rtol=0, atol=1e-12)
    cell = result.per_class["cell"]
    assert [cell[k] for k in ("AP", "AP50", "APs", "APm")] == near([1.0] * 4)
    assert math.isnan(cell["APl"])  # "cell" has no large GT


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_predictions_give_zero_and_warn(backend: str) -> None:
    gt = _gt([(1, 1, SMALL), (2, 1, MEDIUM), (2, 1, LARGE)])
    with pytest.warns(EvaluationWarning, match="no detections"):
        result = evaluate_detections(gt, [], backend=backend)
    # GT exists in every bucket and nothing is detected: precision and recall are 0 everywhere.
    np.testing.assert_array_equal(result.stats, np.zeros(12))
    assert result.num_detections == 0


def test_pycocotools_load_res_crashes_on_empty_list(pycocotools_reference) -> None:
    # The failure evaluate_detections works around: loadRes([]) indexes anns[0].
    with pytest.raises(IndexError):
        pycocotools_reference(_gt([(1, 1, SMALL)]), [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_crowd_match_is_ignored_not_false_positive(backend: str) -> None:
    crowd_region = [300.0, 300.0, 200.0, 150.0]
    gt = _gt([(1, 1, MEDIUM), (1, 1, crowd_region)], crowd=frozenset({1}))
    inside_crowd = [320.0, 320.0, 60.0, 60.0]  # IoU with a crowd GT = inter / det area = 1.0
    dets = [_det(1, inside_crowd, 0.95), _det(1, MEDIUM, 0.9)]
    result = evaluate_detections(gt, dets, backend=backend)
    # The 0.95 detection matches the crowd region and is ignored: the ranked list is just TP(0.9)
    # -> precision 1 at every recall point -> AP = 1.0.
    assert result.metrics["AP"] == near(1.0)
    # Control: without the crowd region the same detection is a false positive ranked first:
    # FP(0.95) P=0 R=0, TP(0.9) P=1/2 R=1 -> envelope 1/2 at all 101 points -> AP = 0.5.
    no_crowd = _gt([(1, 1, MEDIUM)])
    assert evaluate_detections(no_crowd, dets, backend=backend).metrics["AP"] == near(0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_false_positive_at_known_rank(backend: str, tmp_path) -> None:
    gt = _gt([(1, 1, MEDIUM), (2, 1, MEDIUM)])
    far = [400.0, 300.0, 50.0, 50.0]  # no overlap with any GT
    dets = [_det(1, MEDIUM, 0.9), _det(1, far, 0.8), _det(2, MEDIUM, 0.7)]
    result = evaluate_detections(gt, dets, backend=backend)
    # Ranked: TP(.9) P=1 R=.5; FP(.8) P=1/2 R=.5; TP(.7) P=2/3 R=1.
    # Envelope (max precision at recall >= r): 1 for r in {0, .01, ..., .50} (51 points),
    # 2/3 for r in {.51, ..., 1.0} (50 points): AP = (51 * 1 + 50 * 2/3) / 101 = 0.834983...
    expected = (51 * 1.0 + 50 * (2.0 / 3.0)) / 101
    assert result.metrics["AP"] == near(expected)
    assert result.metrics["AP50"] == near(expected)
    assert result.metrics["APm"] == near(expected)
    # Both GT are medium: no GT in small/large -> NaN, written as null, with a note.
    assert math.isnan(result.metrics["APs"]) and math.isnan(result.metrics["ARl"])
    saved = json.loads(result.to_json(tmp_path / "metrics.json").read_text())
    assert saved["APs"] is None and saved["AP"] == pytest.approx(expected)
    assert saved["per_class"]["cell"]["AP50"] == pytest.approx(expected)
    assert any("APs" in note for note in saved["notes"])
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_class"} <= set(saved)


def _max_dets_case() -> tuple[dict, list[dict]]:
    """Two GT on one image; 60 ranked detections with TPs at ranks 40 and 60."""
    gt = _gt([(1, 1, [0.0, 0.0, 40.0, 40.0]), (1, 1, [100.0, 0.0, 40.0, 40.0])], num_images=1)
    dets = []
    for rank in range(1, 61):
        score = 1.0 - rank / 100.0
        if rank == 40:
            dets.append(_det(1, [0.0, 0.0, 40.0, 40.0], score))
        elif rank == 60:
            dets.append(_det(1, [100.0, 0.0, 40.0, 40.0], score))
        else:
            dets.append(_det(1, [300.0 + rank, 300.0, 20.0, 20.0], score))
    return gt, dets


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_dets_is_honoured(backend: str, pycocotools_reference) -> None:
    gt, dets = _max_dets_case()
    capped = evaluate_detections(gt, dets, max_dets=(1, 10, 50), backend=backend)
    # maxDets 50 keeps TP at rank 40 only: P=1/40 at R=.5, recall 1 never reached ->
    # AP = 51 * (1/40) / 101; AR50 = 0.5.
    assert capped.metrics["AP"] == near(51 * (1 / 40) / 101)
    assert capped.metrics["AR50"] == near(0.5) and capped.metrics["AR10"] == near(0.0)
    assert capped.stats[0] == capped.metrics["AP"] and capped.stats[8] == near(0.5)
    full = evaluate_detections(gt, dets, backend=backend)
    # maxDets 100 also reaches rank 60: P=2/60=1/30 > 1/40, so the envelope is 1/30 everywhere.
    assert full.metrics["AP"] == near(1 / 30)
    assert full.metrics["AR100"] == near(1.0)
    # pycocotools' summarize() looks up maxDets=100 for AP and reports -1 here.
    assert pycocotools_reference(gt, dets, max_dets=(1, 10, 50)).stats[0] == -1


@pytest.mark.parametrize("backend", BACKENDS)
def test_extra_area_bucket(backend: str, pycocotools_reference) -> None:
    tiny = [5.0, 5.0, 10.0, 10.0]  # area 100 < 16^2
    gt = _gt([(1, 1, tiny), (1, 1, MEDIUM)], num_images=1)
    result = evaluate_detections(gt, [_det(1, tiny, 0.9)], extra_area_ranges={"tiny": (0, 256)},
                                 backend=backend)
    # Tiny GT found, medium GT missed: AP_tiny = APs = 1, APm = 0, and over all areas
    # R reaches 0.5 with P=1 -> AP = 51 / 101.
    assert result.metrics["AP_tiny"] == near(1.0) and result.metrics["AR_tiny"] == near(1.0)
    assert result.metrics["APs"] == near(1.0) and result.metrics["APm"] == near(0.0)
    assert result.metrics["AP"] == near(51 / 101)
    assert result.per_class["cell"]["AP_tiny"] == near(1.0)
    ref = pycocotools_reference(
        gt, [_det(1, tiny, 0.9)],
        area_ranges={"all": (0, 1e10), "small": (0, 1024), "medium": (1024, 9216),
                     "large": (9216, 1e10), "tiny": (0, 256)},
    )
    assert result.metrics["AP_tiny"] == near(ref.eval["precision"][:, :, :, 4, 2].mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parity_with_pycocotools(seed: int, random_case, pycocotools_reference) -> None:
    gt, dets = random_case(seed)
    before = copy.deepcopy((gt, dets))
    result = evaluate_detections(gt, dets, backend="pycocotools")
    ref = pycocotools_reference(gt, dets)
    # Same numbers bit for bit, except that pycocotools' -1 ("no GT in bucket") is NaN here.
    np.testing.assert_array_equal(result.stats, np.where(ref.stats == -1, np.nan, ref.stats))
    assert (gt, dets) == before  # inputs untouched (pycocotools' loadRes would add keys)
    for cat_id, name in zip(result.cat_ids, result.class_names, strict=True):
        # Reference per-class AP: pycocotools restricted to this single category.
        single = pycocotools_reference(gt, dets, cat_ids=[cat_id])
        ap = result.per_class[name]["AP"]
        assert (math.isnan(ap) and single.stats[0] == -1) or ap == pytest.approx(single.stats[0])


def test_custom_dataset_ids_names_and_empty_images() -> None:
    gt = _gt([(1, 5, MEDIUM)], num_images=3, categories=((5, "RBC"), (17, "no-gt class")))
    # Image 2 has no annotations: a detection there is a false positive ranked first:
    # FP(.9) P=0, TP(.8) P=1/2 R=1 -> AP = 0.5.
    result = evaluate_detections(gt, [_det(2, MEDIUM, 0.9, 5), _det(1, MEDIUM, 0.8, 5)])
    assert result.metrics["AP"] == near(0.5)
    assert result.cat_ids == [5, 17]
    assert math.isnan(result.per_class["no-gt class"]["AP"])
    assert any("no-gt class" in note for note in result.notes)
    assert "RBC" in result.summary_table() and "n/a" in result.summary_table()


def test_missing_area_and_iscrowd_are_filled_with_warning() -> None:
    gt = _gt([(1, 1, MEDIUM)])
    for ann in gt["annotations"]:
        del ann["area"], ann["iscrowd"]
    with pytest.warns(EvaluationWarning) as record:
        result = evaluate_detections(gt, [_det(1, MEDIUM, 0.5)])
    assert sorted(str(w.message) for w in record) == [
        "1 ground-truth annotations had no 'area'; used bbox w*h",
        "1 ground-truth annotations had no 'iscrowd'; used 0",
    ]
    assert result.metrics["APm"] == near(1.0)  # area filled as 50 * 50 = 2500: medium


def test_bad_input_raises_clear_errors() -> None:
    gt = _gt([(1, 1, MEDIUM)])
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_detections(gt, [_det(99, MEDIUM, 0.5)])
    with pytest.raises(ValueError, match="category ids"):
        evaluate_detections(gt, [_det(1, MEDIUM, 0.5, cat=0)])
    with pytest.raises(ValueError, match="no 'score'"):
        evaluate_detections(gt, [{"image_id": 1, "category_id": 1, "bbox": MEDIUM}])
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_detections(gt, [_det(1, [0, 0, float("nan"), 1], 0.5)])
    with pytest.raises(ValueError, match="max_dets"):
        evaluate_detections(gt, [], max_dets=(10, 1, 100))
    with pytest.raises(ValueError, match="iou_type"):
        evaluate_detections(gt, [], iou_type="segm")
    with pytest.raises(ValueError, match="valid: auto"):
        evaluate_detections(gt, [_det(1, MEDIUM, 0.5)], backend="fastest")


def test_img_ids_subset_and_path_input(tmp_path) -> None:
    gt = _gt([(1, 1, MEDIUM), (2, 1, MEDIUM)])
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    dets = [_det(1, MEDIUM, 0.9), _det(2, [400.0, 400.0, 10.0, 10.0], 0.95)]
    with pytest.warns(EvaluationWarning, match="1 detections on images outside img_ids"):
        result = evaluate_detections(str(path), dets, img_ids=[1])
    # Only image 1 is evaluated: one GT, one exact TP -> AP = 1.
    assert result.metrics["AP"] == near(1.0)


def _bccd_root() -> Path:
    env = os.environ.get("DETKIT_BCCD")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "BCCD"


def _voc_split_as_coco(root: Path, split: str) -> dict:
    """Minimal VOC -> COCO conversion for the test (bbox = [xmin, ymin, xmax-xmin, ymax-ymin])."""
    names = ("RBC", "WBC", "Platelets")
    images, anns = [], []
    for image_id, stem in enumerate((root / "ImageSets/Main" / f"{split}.txt").read_text().split()):
        tree = ET.parse(root / "Annotations" / f"{stem}.xml").getroot()
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{stem}.jpg"})
        for obj in tree.iter("object"):
            x1, y1, x2, y2 = (float(obj.find("bndbox").findtext(k))
                              for k in ("xmin", "ymin", "xmax", "ymax"))
            anns.append({"id": len(anns) + 1, "image_id": image_id,
                         "category_id": names.index(obj.findtext("name").strip()) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                         "iscrowd": 0})
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    return {"images": images, "annotations": anns, "categories": categories}


def test_bccd_val_perfect_boxes_and_the_zero_area_box() -> None:
    root = _bccd_root()
    if not (root / "Annotations").is_dir():
        pytest.skip(f"BCCD not found at {root} (set DETKIT_BCCD to its folder)")
    gt = _voc_split_as_coco(root, "val")
    dets = [_det(a["image_id"], a["bbox"], 1.0, a["category_id"]) for a in gt["annotations"]
            if a["area"] > 0]
    zero = [a for a in gt["annotations"] if a["area"] == 0]
    assert [(a["category_id"], a["bbox"]) for a in zero] == [(1, [504.0, 337.0, 0.0, 0.0])]
    with pytest.warns(EvaluationWarning, match="1 ground-truth boxes have zero width or height"):
        result = evaluate_detections(gt, dets)
    # WBC and Platelets are found exactly: AP 1. RBC misses only its zero-area box (no detection
    # can reach IoU > 0 with it): max recall (N-1)/N > 0.99 with precision 1, so 100 of the 101
    # recall points (0 .. 0.99) get precision 1 and r = 1.0 gets 0: AP_RBC = 100/101.
    n_rbc = sum(a["category_id"] == 1 for a in gt["annotations"])
    assert (n_rbc - 1) / n_rbc > 0.99
    assert result.per_class["RBC"]["AP"] == near(100 / 101)
    assert result.per_class["WBC"]["AP"] == near(1.0)
    assert result.metrics["AP"] == near((100 / 101 + 2) / 3)


def test_duplicate_class_names_stay_apart() -> None:
    gt = _gt([(1, 3, MEDIUM), (2, 8, MEDIUM)], categories=((3, "cell"), (8, "cell")))
    # Only category 3 is detected: its AP is 1, category 8's is 0; both rows kept.
    result = evaluate_detections(gt, [_det(1, MEDIUM, 0.9, cat=3)])
    assert set(result.per_class) == {"cell (id 3)", "cell (id 8)"}
    assert result.per_class["cell (id 3)"]["AP"] == near(1.0)
    assert result.per_class["cell (id 8)"]["AP"] == near(0.0)


def test_ground_truth_problems_are_reported() -> None:
    gt = _gt([(1, 1, MEDIUM), (1, 99, MEDIUM)])  # category 99 is not declared
    with pytest.warns(EvaluationWarning, match="1 ground-truth annotations use a category_id"):
        result = evaluate_detections(gt, [_det(1, MEDIUM, 0.9)])
    assert result.metrics["AP"] == near(1.0)  # the undeclared class is not evaluated
    gt["annotations"][1]["id"] = gt["annotations"][0]["id"]
    with pytest.raises(ValueError, match="unique 'id'"):
        evaluate_detections(gt, [])
    with pytest.raises(ValueError, match="must be integers"):
        evaluate_detections(_gt([(1, 1, MEDIUM)]), [_det(1.5, MEDIUM, 0.9)])


@pytest.mark.faults
@pytest.mark.parametrize("backend", BACKENDS)
def test_negative_gt_area_is_repaired_not_dropped(backend: str) -> None:
    """Issue 13: half the GT with a negative 'area' left every metric (AP 0.004 -> 0.008).

    Two GT boxes, one detection matching the first exactly. With both areas valid,
    recall is 1/2 and AP = 0.5 (precision 1 up to recall 0.5, then nothing: 51 of 101
    recall points at 1.0 -> 51/101). A negative area on the unmatched GT used to hide it,
    giving recall 1 and AP 1; repaired from its bbox (20 x 20 = 400) it counts again.
    """
    gt = _gt([(1, 1, SMALL), (2, 1, SMALL)])
    gt["annotations"][1]["area"] = -400.0
    with pytest.warns(EvaluationWarning, match="negative or non-finite 'area'"):
        result = evaluate_detections(gt, [_det(1, SMALL, 0.9)], backend=backend)
    assert result.metrics["AP"] == near(51 / 101)
    assert gt["annotations"][1]["area"] == -400.0  # the caller's dict is untouched


@pytest.mark.faults
def test_string_scores_are_refused_not_coerced() -> None:
    """Issue 13: a results file with "score": "0.9" was silently coerced."""
    gt = _gt([(1, 1, SMALL)])
    det = _det(1, SMALL, 0.9)
    det["score"] = "0.9"
    with pytest.raises(ValueError, match="detection 0 has score '0.9' \\(str\\)"):
        evaluate_detections(gt, [det])


def test_valid_area_values() -> None:
    from detkit.evaluation.coco_inputs import _valid_area

    # a real number in [0, inf): 0 and ints count; booleans, strings, negatives, inf, NaN not
    assert _valid_area(0) and _valid_area(0.5) and _valid_area(2500)
    for bad in (True, False, "3", -1.0, math.inf, math.nan, None):
        assert not _valid_area(bad), bad


def test_option_checks_and_their_messages() -> None:
    from detkit.evaluation.coco import check_eval_options

    assert check_eval_options((1, 10, 100), {"tiny": (0, 256)}) is None
    with pytest.raises(ValueError, match=r"max_dets needs 3 limits \(AR1/AR10/AR100 style\)"):
        check_eval_options((1, 10), None)
    with pytest.raises(ValueError, match="distinct increasing positive ints"):
        check_eval_options((0, 10, 100), None)
    with pytest.raises(ValueError, match="'small' is reserved or not an identifier"):
        check_eval_options((1, 10, 100), {"small": (0, 10)})
    with pytest.raises(ValueError, match="'two words' is reserved or not an identifier"):
        check_eval_options((1, 10, 100), {"two words": (0, 10)})
    # min == max is an empty range
    with pytest.raises(ValueError, match=r"'flat' needs 0 <= min < max, got \(5, 5\)"):
        check_eval_options((1, 10, 100), {"flat": (5, 5)})


def test_ground_truth_index_and_messages() -> None:
    from detkit.evaluation.coco_inputs import prepare_ground_truth

    gt = _gt([(1, 1, MEDIUM), (2, 3, SMALL), (2, 1, LARGE)],
             categories=((1, "cell"), (3, "other")))
    coco, notes = prepare_ground_truth(gt)
    assert notes == []
    # the private copy answers pycocotools' own index queries
    assert coco.getImgIds(catIds=[1]) == [1, 2] and coco.getImgIds(catIds=[3]) == [2]
    assert sorted(coco.getAnnIds(imgIds=[2])) == [2, 3]
    with pytest.raises(ValueError, match="ground truth has no 'images' list"):
        prepare_ground_truth({"categories": gt["categories"]})


def test_bad_detection_boxes_are_refused() -> None:
    gt = _gt([(1, 1, MEDIUM)])
    with pytest.raises(ValueError, match=r"detection boxes must be \[x, y, w, h\] numbers"):
        evaluate_detections(gt, [_det(1, ["a", 0, 1, 1], 0.5)])
    with pytest.raises(ValueError, match=r"must be \[x, y, w, h\]; got array shape \(1, 3\)"):
        evaluate_detections(gt, [_det(1, [0, 0, 1], 0.5)])


def test_unknown_img_ids_name_the_first_five() -> None:
    gt = _gt([(1, 1, MEDIUM)])
    first_five = r"img_ids not in the ground truth: \[91, 92, 93, 94, 95\]$"
    with pytest.raises(ValueError, match=first_five):
        evaluate_detections(gt, [], img_ids=[1, 91, 92, 93, 94, 95, 96])


def test_notes_keep_ground_truth_repairs_and_name_the_missing_metrics() -> None:
    # one medium GT box (50 x 50) without 'area', no detections: the repair note, the
    # no-detection note and the NaN note for the small and large buckets all end up in notes
    gt = _gt([(1, 1, MEDIUM)])
    del gt["annotations"][0]["area"]
    with pytest.warns(EvaluationWarning) as record:
        result = evaluate_detections(gt, [])
    assert len(record) == 2
    assert result.notes == [
        "1 ground-truth annotations had no 'area'; used bbox w*h",
        "no detections to evaluate: every AP/AR with ground truth is 0",
        "no ground truth for APs, APl, ARs, ARl: reported as null/NaN, not -1",
    ]


def test_category_without_a_name_is_called_by_its_id() -> None:
    gt = _gt([(1, 4, MEDIUM)], categories=((4, "x"),))
    del gt["categories"][0]["name"]
    result = evaluate_detections(gt, [_det(1, MEDIUM, 0.9, cat=4)])
    assert result.class_names == ["4"] and result.per_class["4"]["AP"] == near(1.0)


def test_ground_truth_repairs_are_counted_and_applied() -> None:
    from detkit.evaluation.coco_inputs import prepare_ground_truth

    def ann(i, bbox, cat=1, **extra):
        return {"id": i, "image_id": 1, "category_id": cat, "bbox": bbox, **extra}

    dataset = {
        "images": [{"id": 1, "width": 640, "height": 480}],
        "categories": [{"id": 1, "name": "cell"}],
        # no "annotations" key on purpose first
    }
    coco, notes = prepare_ground_truth(dataset)
    assert notes == [] and coco.anns == {}
    dataset["annotations"] = [
        ann(1, [0, 0, 0, 5], area=0.0, iscrowd=0),  # zero width: degenerate
        ann(2, [0, 0, 5, 0], area=0.0),  # zero height, no iscrowd: degenerate, repaired crowd
        ann(3, [0, 0, 0.5, 0.5], area=0.25, iscrowd=0),  # small but not degenerate
        ann(4, [0, 0, 0, 0], area=0.0, iscrowd=1),  # a degenerate crowd region is not counted
        ann(5, [0, 0, 10, 20], iscrowd=0),  # no area: 10 * 20 = 200
        ann(6, [0, 0, 10, 20], area=-3.0, iscrowd=0),  # negative area: 200
        ann(7, [0, 0, 10, 20], area=math.inf, iscrowd=0),  # non-finite area: 200
        ann(8, [0, 0, 10, 20], area=50.0, iscrowd=0),  # a valid area (e.g. a mask's) is kept
        ann(9, [0, 0, 10, 20]),  # no area, no iscrowd
        ann(10, [0, 0, 10, 20], cat=8, area=200.0, iscrowd=0),  # unknown category
        ann(11, [0, 0, 10, 20], cat=9, area=200.0, iscrowd=0),  # unknown category
    ]
    with pytest.warns(EvaluationWarning) as record:
        coco, notes = prepare_ground_truth(dataset)
    assert notes == [
        "2 ground-truth annotations had no 'area'; used bbox w*h",
        "2 ground-truth annotations had a negative or non-finite 'area' (outside every area "
        "range, so they would leave every metric); used bbox w*h",
        "2 ground-truth annotations had no 'iscrowd'; used 0",
        "2 ground-truth annotations use a category_id missing from 'categories'; they are not "
        "evaluated",
        "2 ground-truth boxes have zero width or height: no detection can match them (IoU 0), "
        "so they count as missed",
    ]
    assert len(record) == 5
    assert [coco.anns[i]["area"] for i in (5, 6, 7, 8, 9)] == [200.0, 200.0, 200.0, 50.0, 200.0]
    assert coco.anns[2]["iscrowd"] == 0 and coco.anns[9]["iscrowd"] == 0
    # the caller's dicts are untouched
    assert "area" not in dataset["annotations"][4] and "iscrowd" not in dataset["annotations"][1]


def test_ground_truth_structure_errors() -> None:
    from detkit.evaluation.coco_inputs import load_coco_gt, prepare_ground_truth

    images = [{"id": 1, "width": 640, "height": 480}]
    cats = [{"id": 1, "name": "cell"}]
    with pytest.raises(ValueError, match="^ground truth has no categories$"):
        prepare_ground_truth({"images": images, "categories": []})
    with pytest.raises(ValueError, match=r"need unique 'id' values \(COCO format\)$"):
        prepare_ground_truth({"images": images, "categories": cats, "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}] * 2})
    with pytest.raises(ValueError, match=r"^ground-truth annotation 7 needs bbox \[x, y, w, h\]$"):
        prepare_ground_truth({"images": images, "categories": cats, "annotations": [
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1]}]})
    with pytest.raises(ValueError, match="^annotation 7 refers to unknown image 99$"):
        prepare_ground_truth({"images": images, "categories": cats, "annotations": [
            {"id": 7, "image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1]}]})
    with pytest.raises(TypeError, match="a path or a dict, got <class 'int'>"):
        load_coco_gt(42)


def test_detection_checks_count_and_name_the_first_bad_one() -> None:
    from detkit.evaluation.coco_inputs import prepare_detections, prepare_ground_truth

    cats = tuple((c, f"c{c}") for c in range(1, 13))  # 12 categories
    gt, _ = prepare_ground_truth(_gt([(1, 1, MEDIUM)], categories=cats))
    ok = _det(1, MEDIUM, 0.5)
    # the second detection has no score
    with pytest.raises(ValueError, match="^detection 1 has no 'score'"):
        prepare_detections(gt, [ok, {"image_id": 1, "category_id": 1, "bbox": MEDIUM}], [1])
    # a NaN score alone; one bad box among two is counted once, at its index
    with pytest.raises(ValueError, match=r"^1 detections have .* \(first: index 1\)$"):
        prepare_detections(gt, [ok, _det(1, MEDIUM, float("nan"))], [1])
    with pytest.raises(ValueError, match=r"^1 detections have .* \(first: index 1\)$"):
        prepare_detections(gt, [ok, _det(1, [0, 0, float("inf"), 1], 0.5)], [1])
    with pytest.raises(ValueError, match=r"^1 detections have .* \(first: index 1\)$"):
        prepare_detections(gt, [ok, _det(1, [0, 0, -1, 1], 0.5)], [1])
    # zero and sub-pixel sizes are allowed
    dt, _ = prepare_detections(gt, [ok, _det(1, [0, 0, 0, 0.5], 0.5)], [1])
    # ids start at 1, image ids stay ints, every detection is iscrowd 0 with area w * h
    assert sorted(dt.anns) == [1, 2]
    assert type(dt.anns[1]["image_id"]) is int and type(dt.anns[1]["category_id"]) is int
    assert [dt.anns[i]["iscrowd"] for i in (1, 2)] == [0, 0]
    assert dt.anns[1]["area"] == 2500.0 and dt.anns[2]["area"] == 0.0
    unknown = [_det(i, MEDIUM, 0.5) for i in range(91, 97)]
    with pytest.raises(ValueError, match=r"not in the ground truth: \[91, 92, 93, 94, 95\] "
                                         r"\(6 ids\)$"):
        prepare_detections(gt, unknown, [1])
    bad_cats = [_det(1, MEDIUM, 0.5, cat=c) for c in range(20, 26)]
    with pytest.raises(ValueError, match=r"category ids \[20, 21, 22, 23, 24\] that the ground "
                                         r"truth does not define \(\[1, 2, 3, 4, 5, 6, 7, 8, 9, "
                                         r"10\]\.\.\.\)"):
        prepare_detections(gt, bad_cats, [1])
