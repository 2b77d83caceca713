"""Ground-truth browser: boxes drawn where the annotations put them, conversion marks first."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detkit.evaluation.draw import label_color
from detkit.evaluation.gt_browser import MARK_COLOR, draw_ground_truth, read_marks

TOOL = Path(__file__).resolve().parents[2] / "tools" / "browse_gt.py"


def _dataset(root: Path) -> Path:
    """Two grey 80 x 60 images; image 2 holds a dropped zero-size box and a clipped one."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(root / name), np.full((60, 80, 3), 128, np.uint8))
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 80, "height": 60},
                       {"id": 2, "file_name": "b.png", "width": 80, "height": 60}],
            "categories": [{"id": 7, "name": "cell"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 20, 30, 20],
                 "area": 600, "iscrowd": 0},
                {"id": 2, "image_id": 2, "category_id": 7, "bbox": [50, 30, 30, 30],
                 "area": 900, "iscrowd": 0}]}
    ann = root / "train.json"
    ann.write_text(json.dumps(coco))
    (root / "conversion_report.json").write_text(json.dumps({"marks": [
        {"file_name": "b.png", "class": "cell", "bbox": [5.0, 40.0, 0.0, 0.0],
         "reason": "dropped: zero or negative size"},
        {"file_name": "b.png", "class": "cell", "bbox": [50.0, 30.0, 40.0, 40.0],
         "reason": "clipped to the image"}]}))
    return ann


def test_boxes_drawn_where_the_annotations_are_and_marked_images_first(tmp_path: Path) -> None:
    ann = _dataset(tmp_path / "data")
    summary = draw_ground_truth(ann, ann.parent, tmp_path / "out",
                                ann.parent / "conversion_report.json", images=1)
    # one picture allowed: the marked image 2 comes before image 1
    assert [p.name for p in summary.pictures] == ["000002_b.png"]
    assert (summary.marked_images, summary.marks_drawn) == (1, 2)
    full = draw_ground_truth(ann, ann.parent, tmp_path / "all",
                             ann.parent / "conversion_report.json", images=0)
    assert len(full.pictures) == 2
    a = cv2.cvtColor(cv2.imread(str(tmp_path / "all" / "000001_a.png")), cv2.COLOR_BGR2RGB)
    # image 1's box [10, 20, 30, 20] is xyxy (10, 20)-(40, 40): its bottom edge at y = 40
    # (no caption there) is drawn in class 1's colour; the background stays grey
    assert tuple(a[40, 25]) == label_color(1)
    assert tuple(a[50, 60]) == (128, 128, 128)
    b = cv2.cvtColor(cv2.imread(str(tmp_path / "all" / "000002_b.png")), cv2.COLOR_BGR2RGB)
    # the zero-size box at (5, 40) is a red cross centred on its point
    assert tuple(b[40, 5]) == MARK_COLOR


def test_a_file_that_is_not_a_report_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="not a conversion report"):
        read_marks(bad)
    assert read_marks(None) == {}


def test_tool_finds_the_report_beside_the_annotations(tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("browse_gt_tool", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    ann = _dataset(tmp_path / "data")
    assert tool.main([str(ann), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "2 images drawn" in out
    assert "marked: 000002_b.png" in out  # image 2 holds the marks; named <id>_<name>
    assert tool.main([str(tmp_path / "missing.json")]) == 2
    assert "not found" in capsys.readouterr().err
