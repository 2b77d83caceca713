"""Tests for detkit.data.coco: items, label maps, raw access, results written back."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.cocoeval import COCOeval
from torch.utils.data import DataLoader

from detkit.data.coco import (
    CocoDetection,
    build_label_maps,
    to_tensor_target,
)
from detkit.data.collate import collate_detection
from detkit.evaluation import detections_to_coco_results

CATEGORIES = [{"id": 42, "name": "bird"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]


def _make(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    images = []
    for i, (h, w) in enumerate([(20, 30), (16, 16), (12, 10)], start=1):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        images.append({"id": 10 * i, "file_name": f"{i}.png", "width": w, "height": h})
    anns = [
        {"id": 1, "image_id": 10, "category_id": 42, "bbox": [2, 3, 10, 4], "area": 33.0},
        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [0, 0, 5, 5]},
        {"id": 3, "image_id": 10, "category_id": 7, "bbox": [1, 1, 8, 8], "iscrowd": 1},
        {"id": 4, "image_id": 20, "category_id": 7, "bbox": [4, 4, 6, 2]},
    ]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return path


def test_label_maps_round_trip_non_contiguous_ids():
    cat_to_label, label_to_cat, names = build_label_maps(CATEGORIES)
    # ids sorted: 3, 7, 42 -> labels 1, 2, 3
    assert cat_to_label == {3: 1, 7: 2, 42: 3}
    assert label_to_cat == {1: 3, 2: 7, 3: 42}
    assert names == ["cat", "dog", "bird"]
    assert all(label_to_cat[cat_to_label[c["id"]]] == c["id"] for c in CATEGORIES)


def test_item_matches_contract(tmp_path):
    ds = CocoDetection(_make(tmp_path))
    assert len(ds) == 3 and ds.num_classes == 3
    image, target = ds[0]
    reference = np.asarray(Image.open(tmp_path / "1.png"), dtype=np.float32) / 255.0
    assert image.dtype == torch.float32 and image.shape == (3, 20, 30)
    torch.testing.assert_close(image, torch.from_numpy(reference).permute(2, 0, 1))
    # bbox [2, 3, 10, 4] -> xyxy [2, 3, 12, 7]; [0, 0, 5, 5] -> [0, 0, 5, 5]
    torch.testing.assert_close(target["boxes"], torch.tensor([[2.0, 3, 12, 7], [0, 0, 5, 5]]))
    assert target["labels"].tolist() == [3, 1]  # cat ids 42 and 3
    assert target["labels"].dtype == torch.int64
    assert target["area"].tolist() == [33.0, 25.0]  # given area; 5 * 5
    assert target["iscrowd"].tolist() == [0, 0]
    torch.testing.assert_close(target["ignore_boxes"], torch.tensor([[1.0, 1, 9, 9]]))
    assert target["weights"].tolist() == [1.0, 1.0]
    assert target["image_id"] == 10 and target["orig_size"] == (20, 30)
    assert target["img_scale"] == 1.0


def test_empty_image_has_empty_tensors(tmp_path):
    ds = CocoDetection(_make(tmp_path))
    _, target = ds[2]
    assert target["boxes"].shape == (0, 4) and target["ignore_boxes"].shape == (0, 4)
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    assert ds.report.counts["empty_image"] == 1


def test_load_raw_and_transforms_callable(tmp_path):
    seen = {}

    def transforms(image, target):
        seen["image"], seen["target"] = image, target
        return to_tensor_target(image[:, ::-1], target)

    ds = CocoDetection(_make(tmp_path), transforms=transforms)
    raw_image, raw_target = ds.load_raw(1)
    assert raw_image.dtype == np.uint8 and raw_image.shape == (16, 16, 3)
    np.testing.assert_array_equal(raw_image, np.asarray(Image.open(tmp_path / "2.png")))
    assert raw_target["boxes"].dtype == np.float32
    np.testing.assert_array_equal(raw_target["boxes"], [[4.0, 4.0, 10.0, 6.0]])
    image, _ = ds[1]
    assert isinstance(seen["image"], np.ndarray) and seen["image"].shape == (16, 16, 3)
    np.testing.assert_array_equal(seen["target"]["labels"], [2])
    flipped = torch.from_numpy(raw_image[:, ::-1].copy()).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(image, flipped)


def test_to_tensor_target_does_not_modify_input():
    image = np.full((2, 3, 3), 255, np.uint8)
    target = {"boxes": np.array([[0, 0, 1, 1]], np.float32), "labels": np.array([1]), "x": 5}
    out_image, out = to_tensor_target(image, target)
    assert out_image.shape == (3, 2, 3) and float(out_image.max()) == 1.0
    assert isinstance(target["boxes"], np.ndarray) and out["x"] == 5
    assert out["labels"].dtype == torch.int64
    out["boxes"][0, 0] = 7.0
    assert image.max() == 255


def test_dataloader_with_collate(tmp_path):
    loader = DataLoader(CocoDetection(_make(tmp_path)), batch_size=3, collate_fn=collate_detection)
    images, targets = next(iter(loader))
    assert [tuple(im.shape) for im in images] == [(3, 20, 30), (3, 16, 16), (3, 12, 10)]
    assert [t["image_id"] for t in targets] == [10, 20, 30]


def test_results_written_back_with_original_ids(tmp_path):
    ds = CocoDetection(_make(tmp_path))
    results = []
    for i in range(len(ds)):
        target = ds.raw_target(i)
        scores = np.ones(len(target["labels"]))
        output = {"boxes": target["boxes"], "scores": scores, "labels": target["labels"]}
        results += detections_to_coco_results([output], [target], ds.label_to_cat_id)
    assert sorted(r["category_id"] for r in results) == [3, 7, 42]
    gt = ds.coco  # the validated index: every annotation has iscrowd, as COCOeval needs
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # ground truth fed back as detections: pycocotools finds AP = 1 only if ids and
    # boxes went back to the original category ids and [x, y, w, h] exactly
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_package_exports_lazily():
    import detkit.data

    assert detkit.data.CocoDetection is CocoDetection
    assert detkit.data.collate_detection is collate_detection
    with pytest.raises(AttributeError, match="no_such_name"):
        detkit.data.no_such_name  # noqa: B018
