"""detkit.evaluation.confusion: a hand-built case counted cell by cell."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detkit.evaluation.confusion import confusion_matrix


def _case() -> tuple[dict, list[dict]]:
    """Image 1: a cat (id 3) at [0, 0, 10, 10], a dog (id 7) at [20, 0, 10, 10], a crowd box
    at [50, 50, 20, 20]. Image 2: one dog at [0, 0, 10, 10]."""
    gt = {"images": [{"id": 1}, {"id": 2}],
          "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 0},
              {"id": 2, "image_id": 1, "category_id": 7, "bbox": [20, 0, 10, 10], "iscrowd": 0},
              {"id": 3, "image_id": 1, "category_id": 3, "bbox": [50, 50, 20, 20], "iscrowd": 1},
              {"id": 4, "image_id": 2, "category_id": 7, "bbox": [0, 0, 10, 10], "iscrowd": 0}]}
    dets = [
        # the cat found as a cat (IoU 1); a second, lower cat box on it finds it taken
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": 3, "bbox": [1, 0, 10, 10], "score": 0.8},
        # the dog detected as a cat: [21, 0, 10, 10] vs [20, 0, 10, 10] -> IoU 90 / 110 = 0.82
        {"image_id": 1, "category_id": 3, "bbox": [21, 0, 10, 10], "score": 0.7},
        # on the crowd box: not counted anywhere
        {"image_id": 1, "category_id": 7, "bbox": [52, 52, 16, 16], "score": 0.6},
        # image 2: a dog box at IoU [0,0,10,10] vs [6,0,10,10] = 40 / 160 = 0.25 < 0.5
        {"image_id": 2, "category_id": 7, "bbox": [6, 0, 10, 10], "score": 0.95},
        # below the score threshold: ignored
        {"image_id": 2, "category_id": 7, "bbox": [0, 0, 10, 10], "score": 0.1},
    ]
    return gt, dets


def test_counts_by_hand() -> None:
    gt, dets = _case()
    cm = confusion_matrix(gt, dets, score_threshold=0.25, iou_threshold=0.5)
    assert cm.class_names == ["cat", "dog"]  # category-id order: 3, 7
    expected = np.array([
        # cat  dog  missed
        [1, 0, 0],   # gt cat: found as cat
        [1, 0, 1],   # gt dog: one found as cat, image 2's dog missed
        [1, 1, 0],   # background: the duplicate cat box, image 2's off dog box
    ])
    np.testing.assert_array_equal(cm.matrix, expected)
    text = cm.table()
    assert "background" in text and "missed" in text


def test_threshold_changes_the_counts() -> None:
    gt, dets = _case()
    # IoU 0.25 now matches image 2's dog box, and the 0.1-score box stays out
    cm = confusion_matrix(gt, dets, score_threshold=0.25, iou_threshold=0.2)
    assert cm.matrix[1, 1] == 1 and cm.matrix[1, 2] == 0
    # score 0.05 admits the 0.1 box: it finds image 2's dog taken -> background
    cm = confusion_matrix(gt, dets, score_threshold=0.05, iou_threshold=0.2)
    assert cm.matrix[2, 1] == 1


def test_saves_files_and_rejects_bad_input(tmp_path) -> None:
    gt, dets = _case()
    paths = confusion_matrix(gt, dets).save(tmp_path)
    assert paths["confusion_png"].stat().st_size > 0
    assert '"matrix"' in paths["confusion_json"].read_text()
    assert json.loads(paths["confusion_json"].read_text()) == json.loads(
        json.dumps(confusion_matrix(gt, dets).to_dict()))
    with pytest.raises(ValueError, match="category_id 9"):
        confusion_matrix(gt, [{"image_id": 1, "category_id": 9, "bbox": [0, 0, 1, 1],
                               "score": 1.0}])
    with pytest.raises(ValueError, match="iou_threshold"):
        confusion_matrix(gt, dets, iou_threshold=0.0)
