"""detkit.evaluation.errors: each stage of the COCO error breakdown on cases worked by hand."""

from __future__ import annotations

import math

import pytest

from detkit.evaluation import evaluate_detections
from detkit.evaluation.errors import ERROR_STAGES, error_breakdown


def _gt() -> dict:
    """Two images, one small (10 x 10) object each: a cat on image 1, a dog on image 2;
    cats and dogs share the supercategory "animal", the car (id 5) does not."""
    return {"images": [{"id": 1}, {"id": 2}],
            "categories": [{"id": 1, "name": "cat", "supercategory": "animal"},
                           {"id": 2, "name": "dog", "supercategory": "animal"},
                           {"id": 5, "name": "car", "supercategory": "vehicle"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100,
                 "iscrowd": 0},
                {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 10, 10], "area": 100,
                 "iscrowd": 0},
                {"id": 3, "image_id": 2, "category_id": 5, "bbox": [40, 40, 10, 10],
                 "area": 100, "iscrowd": 0}]}


def _det(image_id: int, cat: int, box: list[float], score: float) -> dict:
    return {"image_id": image_id, "category_id": cat, "bbox": box, "score": score}


def test_perfect_detections_give_one_everywhere() -> None:
    gt = _gt()
    dets = [_det(1, 1, [0, 0, 10, 10], 0.9), _det(2, 2, [0, 0, 10, 10], 0.9),
            _det(2, 5, [40, 40, 10, 10], 0.9)]
    ap = error_breakdown(gt, dets).ap
    assert all(ap["all"][s] == pytest.approx(1.0) for s in ERROR_STAGES)
    assert all(math.isnan(ap["large"][s]) for s in ERROR_STAGES)  # no large objects


def test_similar_class_and_localisation_errors() -> None:
    gt = _gt()
    dets = [
        # cat: found, but loosely: [2, 0, 10, 10] vs [0, 0, 10, 10] -> IoU 80 / 120 = 0.67,
        # a TP at IoU .5, a miss at .75
        _det(1, 1, [2, 0, 10, 10], 0.9),
        # cat class also fires on the dog (a similar-class confusion), scoring higher
        _det(2, 1, [0, 0, 10, 10], 0.95),
        # dog: found exactly
        _det(2, 2, [0, 0, 10, 10], 0.8),
        # car: found exactly
        _det(2, 5, [40, 40, 10, 10], 0.8),
    ]
    ap = error_breakdown(gt, dets).ap["all"]
    # COCO's own AP50 / AP75 (pycocotools via evaluate_detections) equal C50 / C75
    coco = evaluate_detections(gt, dets, backend="pycocotools").metrics
    assert ap["C50"] == pytest.approx(coco["AP50"])
    assert ap["C75"] == pytest.approx(coco["AP75"])
    # cat at IoU .5: ranked [FP 0.95 (on the dog), TP 0.9]: precision 1/2 at recall 1, so the
    # interpolated precision is 0.5 at every recall point: AP 0.5; dog and car 1.0:
    # C50 = (0.5 + 1 + 1) / 3. At .75 the cat's TP is lost too: C75 = (0 + 1 + 1) / 3.
    assert ap["C50"] == pytest.approx(2.5 / 3)
    assert ap["C75"] == pytest.approx(2.0 / 3)
    # Loc (IoU .1) changes nothing here; Sim forgives the cat box on the (animal) dog: 1.0
    assert ap["Loc"] == pytest.approx(2.5 / 3)
    assert ap["Sim"] == pytest.approx(1.0)
    assert ap["Oth"] == pytest.approx(1.0) and ap["BG"] == pytest.approx(1.0)


def test_other_class_background_and_missed() -> None:
    gt = _gt()
    dets = [
        _det(1, 1, [0, 0, 10, 10], 0.9),      # cat: exact
        _det(2, 1, [40, 40, 10, 10], 0.95),   # cat fires on the car: other-class error
        _det(2, 2, [60, 60, 10, 10], 0.99),   # dog fires on background first ...
        _det(2, 2, [0, 0, 10, 10], 0.5),      # ... then finds the dog
        # the car is never detected
    ]
    ap = error_breakdown(gt, dets).ap["all"]
    # cat: FP first then TP -> AP 0.5 at C50 / Loc / Sim (car is a vehicle), 1.0 at Oth;
    # dog: background FP first -> 0.5 up to Oth, 1.0 at BG; car: 0 until FN.
    assert ap["Sim"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert ap["Oth"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert ap["BG"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    assert ap["FN"] == pytest.approx(1.0)
    assert "FN-BG: missed" in error_breakdown(gt, dets).table()


def test_no_detections_and_files(tmp_path) -> None:
    gt = _gt()
    result = error_breakdown(gt, [])
    assert result.ap["all"]["C50"] == 0.0 and result.ap["all"]["FN"] == 1.0
    paths = result.save(tmp_path)
    assert paths["errors_png"].stat().st_size > 0 and paths["errors_json"].is_file()


def test_annotations_without_area_get_the_box_area() -> None:
    # the same objects without "area": error_breakdown fills in w * h = 100 (small), so every
    # AP equals that of the annotated set (NaN where both have no objects)
    gt = _gt()
    bare = {**gt, "annotations": [{k: v for k, v in a.items() if k != "area"}
                                  for a in gt["annotations"]]}
    dets = [_det(1, 1, [0, 0, 10, 10], 0.9), _det(2, 1, [0, 0, 10, 10], 0.8)]
    with_area, without = error_breakdown(gt, dets).ap, error_breakdown(bare, dets).ap
    # by hand: the cat (found first, AP 1), the dog and the car (AP 0): C75 = 1 / 3
    assert without["small"]["C75"] == pytest.approx(1 / 3)
    for area, row in with_area.items():
        assert [without[area][s] for s in ERROR_STAGES] == pytest.approx(
            [row[s] for s in ERROR_STAGES], nan_ok=True), area
    assert "area" not in bare["annotations"][0]  # the input is not modified


def test_picture_is_one_3_2_inch_panel_per_area_at_100_dpi(tmp_path) -> None:
    import cv2

    paths = error_breakdown(_gt(), []).save(tmp_path)
    # 4 areas (all, small, medium, large) x 3.2 in wide, 3.2 in high, 100 dpi
    assert cv2.imread(str(paths["errors_png"])).shape == (320, 1280, 3)
