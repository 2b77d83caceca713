"""Tests for detkit.data.stats and tools/analyze_dataset.py on a hand-made JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from detkit.data.stats import compute_dataset_stats, format_stats
from detkit.ops.boxes import coco_area_bucket as area_bucket

TOOL = Path(__file__).resolve().parents[2] / "tools" / "analyze_dataset.py"


def _data() -> dict:
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 200} for i in (1, 2, 3)]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 5, "bbox": [0, 0, 10, 10], "area": 100.0},
        {"id": 2, "image_id": 1, "category_id": 5, "bbox": [0, 0, 64, 16], "area": 1024.0},
        {"id": 3, "image_id": 1, "category_id": 9, "bbox": [0, 0, 20, 40], "area": 9215.0},
        {"id": 4, "image_id": 2, "category_id": 9, "bbox": [0, 0, 96, 96]},
        {"id": 5, "image_id": 2, "category_id": 9, "bbox": [0, 0, 50, 50], "iscrowd": 1},
    ]
    cats = [{"id": 9, "name": "b"}, {"id": 5, "name": "a"}]
    return {"images": images, "annotations": anns, "categories": cats}


def test_area_bucket_edges():
    # COCO: small < 32^2 = 1024 <= medium < 96^2 = 9216 <= large
    assert [area_bucket(a) for a in (1023.9, 1024, 9215.9, 9216)] == [
        "small",
        "medium",
        "medium",
        "large",
    ]


def test_stats_hand_counts():
    stats = compute_dataset_stats(_data())
    assert stats.class_names == ["a", "b"]  # by category id: 5, 9
    assert stats.class_counts == {"a": 2, "b": 2}  # crowd box not counted
    assert stats.num_crowd == 1 and stats.num_images == 3 and stats.num_objects == 4
    assert stats.objects_per_image.tolist() == [3, 1, 0] and stats.empty_images == 1
    # a: areas 100 (small), 1024 (medium); b: 9215 (medium), 96*96 = 9216 (large)
    assert stats.buckets["a"] == {"small": 1, "medium": 1}
    assert stats.buckets["b"] == {"medium": 1, "large": 1}
    assert stats.bucket_totals() == {"small": 1, "medium": 2, "large": 1}
    # w / h: 10/10 = 1, 64/16 = 4; 20/40 = 0.5, 96/96 = 1
    np.testing.assert_allclose(stats.aspect_ratios["a"], [1.0, 4.0])
    np.testing.assert_allclose(stats.aspect_ratios["b"], [0.5, 1.0])
    table = format_stats(stats)
    assert "images: 3  objects: 4  crowd: 1  empty images: 1" in table
    row_b = next(line for line in table.splitlines() if line.startswith("b "))
    assert row_b.split()[:5] == ["b", "2", "0", "1", "1"]


def test_tool_writes_table_and_plots(tmp_path, capsys):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(_data()))
    spec = importlib.util.spec_from_file_location("analyze_dataset", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(path), "--out", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    assert "objects per image: mean 1.33" in out  # 4 objects / 3 images
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == [
        "aspect_ratios.png",
        "class_counts.png",
        "objects_per_image.png",
        "size_buckets.png",
        "sizes.png",
    ]
    assert all((tmp_path / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    path.write_text("{")
    assert tool.main([str(path)]) == 1
    assert "ann.json: not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [{"images": []}, []])
def test_stats_reject_malformed(tmp_path, bad):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="x.json"):
        compute_dataset_stats(path)
