"""Tests for benchmarks/kfold.py (the suite's datasets and k-fold protocol)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

kfold = importlib.import_module("kfold")
CATS = [{"id": 1, "name": "cell"}]


def _split(path: Path, ids: range) -> None:
    images = [{"id": i, "file_name": f"img/{i}.jpg", "width": 10, "height": 10} for i in ids]
    anns = [{"id": 1, "image_id": i, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 25,
             "iscrowd": 0} for i in ids]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATS}))


def test_folds_cover_every_image_once_and_are_reproducible(tmp_path: Path) -> None:
    _split(tmp_path / "train.json", range(1, 8))
    _split(tmp_path / "test.json", range(8, 11))
    data = kfold.Dataset.from_folder(tmp_path)
    assert data.name == tmp_path.name and len(data.ann_files) == 2  # no val.json: skipped
    folds = kfold.write_folds(data, 3, tmp_path / "folds")
    pooled = json.loads(folds.all_file.read_text())
    # 10 images pooled, annotation ids renumbered 1..10 (both splits used id 1)
    assert len(pooled["images"]) == 10
    assert sorted(a["id"] for a in pooled["annotations"]) == list(range(1, 11))
    tests = []
    for train_file, test_file in folds.files:
        train = {im["id"] for im in json.loads(train_file.read_text())["images"]}
        test = {im["id"] for im in json.loads(test_file.read_text())["images"]}
        assert not train & test and len(train | test) == 10
        tests.append(test)
    # every image is held out exactly once; 10 images in 3 folds: sizes 4, 3, 3
    assert sorted(i for t in tests for i in t) == list(range(1, 11))
    assert sorted(len(t) for t in tests) == [3, 3, 4]
    again = kfold.fold_of_images(pooled["images"], 3)
    assert again == kfold.fold_of_images(list(reversed(pooled["images"])), 3)


def test_pooling_refuses_overlaps(tmp_path: Path) -> None:
    _split(tmp_path / "train.json", range(1, 4))
    _split(tmp_path / "val.json", range(3, 5))
    with pytest.raises(ValueError, match="image id 3 is in both"):
        kfold.pool_splits([tmp_path / "train.json", tmp_path / "val.json"])
    with pytest.raises(ValueError, match="no train.json/val.json/test.json"):
        kfold.Dataset.from_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="k >= 2"):
        kfold.fold_of_images([{"id": 1, "file_name": "a"}], 1)
    dets = [[{"image_id": 1, "score": 0.5}], [{"image_id": 1, "score": 0.4}]]
    with pytest.raises(ValueError, match="fold 1 predicts images another fold predicted"):
        kfold.pooled_detections(dets)
    assert len(kfold.pooled_detections([[{"image_id": 1}], [{"image_id": 2}]])) == 2
