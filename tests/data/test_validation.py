"""Tests for detkit.data.validation and detkit.data.image_io (bad inputs, counts, messages)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from detkit.data.image_io import check_image_file, read_image_rgb
from detkit.data.validation import AnnotationFormatError, load_coco_json, validate_coco

W, H = 32, 24
CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 42, "name": "bird"}]


def _write_image(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def _ann(ann_id: int, image_id: int, bbox: list, cat: int = 3, **kw) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": bbox, **kw}


def _dataset(tmp_path: Path, n_images: int, annotations: list, name: str = "train.json") -> Path:
    images = []
    for i in range(1, n_images + 1):
        _write_image(tmp_path / "img" / f"{i}.jpg", seed=i)
        images.append({"id": i, "file_name": f"img/{i}.jpg", "width": W, "height": H})
    path = tmp_path / name
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES})
    )
    return path


def _lines(caplog: pytest.LogCaptureFixture, kind: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if f": {kind}: " in r.getMessage()]


def test_clean_dataset_has_no_problem(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    path = _dataset(tmp_path, 2, [_ann(1, 1, [1, 2, 10, 5]), _ann(2, 2, [0, 0, 32, 24], 42)])
    clean, report = validate_coco(path)
    assert sum(report.counts.values()) == 0
    assert (report.images_kept, report.annotations_kept) == (2, 2)
    assert clean["annotations"][0]["bbox"] == [1.0, 2.0, 10.0, 5.0]
    assert clean["annotations"][0]["area"] == 50.0  # 10 * 5, no area field given


def test_truncated_jpeg_is_caught(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    path = _dataset(
        tmp_path, 3, [_ann(1, 1, [1, 1, 5, 5]), _ann(2, 2, [1, 1, 5, 5]), _ann(3, 2, [2, 2, 5, 5])]
    )
    jpg = tmp_path / "img" / "2.jpg"
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError), Image.open(jpg) as im:  # independent check: PIL agrees
        im.load()
    clean, report = validate_coco(path)
    assert report.counts["unreadable_image"] == 1
    assert report.counts["annotation_of_dropped_image"] == 2  # both annotations of image 2
    assert [img["id"] for img in clean["images"]] == [1, 3]
    (line,) = _lines(caplog, "unreadable_image")
    assert "unreadable_image: 1 " in line and "img/2.jpg (truncated)" in line
    (line,) = _lines(caplog, "annotation_of_dropped_image")
    assert "annotation_of_dropped_image: 2 " in line and "img/2.jpg" in line


def test_missing_file(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    path = _dataset(tmp_path, 2, [_ann(1, 1, [1, 1, 5, 5])])
    (tmp_path / "img" / "2.jpg").unlink()
    _, report = validate_coco(path)
    assert report.counts["missing_image"] == 1
    (line,) = _lines(caplog, "missing_image")
    assert "missing_image: 1 " in line and "img/2.jpg" in line


def test_zero_and_negative_size_boxes_dropped(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    anns = [_ann(1, 1, [1, 1, 0, 5]), _ann(2, 1, [1, 1, 5, -3]), _ann(3, 1, [1, 1, 5, 5])]
    clean, report = validate_coco(_dataset(tmp_path, 1, anns))
    assert report.counts["degenerate_box"] == 2
    assert [a["id"] for a in clean["annotations"]] == [3]
    (line,) = _lines(caplog, "degenerate_box")
    assert "degenerate_box: 2 " in line and "img/1.jpg" in line


def test_box_past_border_clipped_and_outside_dropped(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    anns = [_ann(1, 1, [20, 10, 30, 10]), _ann(2, 1, [-4, -2, 8, 6]), _ann(3, 1, [40, 0, 5, 5])]
    clean, report = validate_coco(_dataset(tmp_path, 1, anns))
    assert report.counts["clipped_box"] == 2
    assert report.counts["outside_box"] == 1
    # [20, 10, 30, 10] spans x 20..50 -> clipped to 20..32 (W): w = 12, area 12 * 10 = 120
    assert clean["annotations"][0]["bbox"] == [20.0, 10.0, 12.0, 10.0]
    assert clean["annotations"][0]["area"] == 120.0
    # [-4, -2, 8, 6] spans x -4..4, y -2..4 -> 0..4, 0..4
    assert clean["annotations"][1]["bbox"] == [0.0, 0.0, 4.0, 4.0]
    assert "clipped_box: 2 " in _lines(caplog, "clipped_box")[0]
    assert "outside_box: 1 " in _lines(caplog, "outside_box")[0]


def test_unknown_category_dropped(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    anns = [_ann(1, 1, [1, 1, 5, 5], cat=5), _ann(2, 1, [1, 1, 5, 5], cat=7)]
    clean, report = validate_coco(_dataset(tmp_path, 1, anns))
    assert report.counts["unknown_category"] == 1
    assert [a["category_id"] for a in clean["annotations"]] == [7]
    assert "unknown_category: 1 " in _lines(caplog, "unknown_category")[0]


def test_duplicate_ids_and_unknown_image(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    anns = [_ann(1, 1, [1, 1, 5, 5]), _ann(1, 2, [1, 1, 5, 5]), _ann(2, 9, [1, 1, 5, 5])]
    path = _dataset(tmp_path, 2, anns)
    data = json.loads(path.read_text())
    data["images"].append(dict(data["images"][0]))  # image id 1 again
    path.write_text(json.dumps(data))
    clean, report = validate_coco(path)
    assert report.counts["duplicate_image_id"] == 1
    assert report.counts["duplicate_annotation_id"] == 1
    assert report.counts["unknown_image_id"] == 1
    assert len(clean["images"]) == 2
    assert report.images_in == 3 and report.images_dropped == 1
    # 3 annotations in: 1 kept + 2 dropped, every one accounted for
    assert report.annotations_in == report.annotations_kept + report.annotations_dropped == 3


def test_empty_images_kept_or_dropped(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    anns = [_ann(1, 1, [1, 1, 5, 5]), _ann(2, 2, [1, 1, 5, 5], iscrowd=1)]
    path = _dataset(tmp_path, 3, anns)
    clean, report = validate_coco(path)
    # image 2 has only a crowd box and image 3 nothing: both are negatives
    assert report.counts["empty_image"] == 2
    assert len(clean["images"]) == 3
    assert "kept as negative" in _lines(caplog, "empty_image")[0]
    clean, report = validate_coco(path, keep_empty=False)
    assert [img["id"] for img in clean["images"]] == [1]
    assert report.counts["annotation_of_dropped_image"] == 1  # the crowd box of image 2
    assert report.annotations_in == report.annotations_kept + report.annotations_dropped
    assert (report.images_in, report.images_kept, report.images_dropped) == (3, 1, 2)


def test_crowd_boxes_kept_and_counted(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    anns = [_ann(1, 1, [1, 1, 5, 5]), _ann(2, 1, [2, 2, 9, 9], iscrowd=1)]
    clean, report = validate_coco(_dataset(tmp_path, 1, anns))
    assert report.counts["crowd_box"] == 1
    assert [a["iscrowd"] for a in clean["annotations"]] == [0, 1]
    assert "crowd_box: 1 " in _lines(caplog, "crowd_box")[0]


def test_examples_limited_to_five(tmp_path):
    anns = [_ann(i, i, [1, 1, 0, 0]) for i in range(1, 8)] + [_ann(99, 1, [1, 1, 3, 3])]
    _, report = validate_coco(_dataset(tmp_path, 7, anns), log=None)
    assert report.counts["degenerate_box"] == 7
    assert report.examples["degenerate_box"] == [f"img/{i}.jpg" for i in range(1, 6)]


def test_malformed_json_names_file_and_field(tmp_path):
    bad = tmp_path / "train.json"
    bad.write_text('{"images": [')
    with pytest.raises(AnnotationFormatError, match=r"train\.json: not valid JSON"):
        load_coco_json(bad)
    path = _dataset(tmp_path, 1, [_ann(1, 1, [1, 1, 5, 5]), _ann(2, 1, [1, 1, 5])])
    with pytest.raises(AnnotationFormatError, match=r"train\.json: annotations\[1\]\.bbox must"):
        validate_coco(path)
    data = json.loads(path.read_text())
    del data["categories"]
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationFormatError, match=r"train\.json: 'categories' is missing"):
        validate_coco(path)


def test_nothing_usable_fails_fast(tmp_path):
    path = _dataset(tmp_path, 1, [_ann(1, 1, [1, 1, 5, 5])])
    (tmp_path / "img" / "1.jpg").unlink()
    with pytest.raises(AnnotationFormatError, match="no usable images"):
        validate_coco(path, log=None)
    path = _dataset(tmp_path, 1, [_ann(1, 1, [1, 1, 0, 5])])
    with pytest.raises(AnnotationFormatError, match="no usable"):
        validate_coco(path, log=None)


def test_check_image_file_png_and_size(tmp_path):
    png = tmp_path / "a.png"
    assert cv2.imwrite(str(png), np.zeros((7, 9, 3), np.uint8))
    assert check_image_file(png) == (None, (7, 9))
    png.write_bytes(png.read_bytes()[:-6])
    assert check_image_file(png)[0] == "truncated"
    assert check_image_file(tmp_path / "none.jpg") == ("missing", None)


def test_size_mismatch_uses_file_size(tmp_path):
    path = _dataset(tmp_path, 1, [_ann(1, 1, [1, 1, 40, 5])])
    data = json.loads(path.read_text())
    data["images"][0]["width"] = 64  # the file is 32 wide
    path.write_text(json.dumps(data))
    clean, report = validate_coco(path, log=None)
    assert report.counts["size_mismatch"] == 1
    assert clean["images"][0]["width"] == W
    assert clean["annotations"][0]["bbox"] == [1.0, 1.0, 31.0, 5.0]  # clipped at 32


def test_read_image_rgb_matches_pil(tmp_path):
    png = tmp_path / "a.png"
    image = np.random.default_rng(3).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(image).save(png)
    np.testing.assert_array_equal(read_image_rgb(png), image)
    with pytest.raises(FileNotFoundError):
        read_image_rgb(tmp_path / "none.png")


@pytest.mark.parametrize("full_decode", [False, True])
def test_truncated_jpeg_caught_with_and_without_full_decode(tmp_path, full_decode):
    path = tmp_path / "a.jpg"
    _write_image(path)
    data = path.read_bytes()
    assert check_image_file(path, full_decode=full_decode) == (None, (H, W))
    for cut in (2, len(data) // 3):  # only the end marker lost; cut inside the scan data
        path.write_bytes(data[:-cut])
        problem, size = check_image_file(path, full_decode=full_decode)
        assert problem is not None and size is None


def test_without_image_checks_needs_sizes(tmp_path):
    path = _dataset(tmp_path, 1, [_ann(1, 1, [1, 1, 5, 5])])
    (tmp_path / "img" / "1.jpg").unlink()  # not looked at when check_images=False
    clean, report = validate_coco(path, check_images=False, log=None)
    assert report.images_kept == 1 and clean["images"][0]["width"] == W
    data = json.loads(path.read_text())
    del data["images"][0]["height"]
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationFormatError, match=r"train\.json: images\[0\]\.width/height"):
        validate_coco(path, check_images=False, log=None)


@pytest.mark.faults
def test_negative_area_is_replaced_by_the_box_area_and_counted(tmp_path, caplog):
    """Issue 13: a negative GT 'area' passed validation and left every metric."""
    anns = [_ann(1, 1, [1, 1, 4, 5], area=-20.0), _ann(2, 1, [2, 2, 3, 3], area=9.0)]
    clean, report = validate_coco(_dataset(tmp_path, 1, anns))
    # 4 x 5 = 20 replaces -20; the valid area 9 is kept as given
    assert [a["area"] for a in clean["annotations"]] == [20.0, 9.0]
    assert report.counts["bad_area"] == 1 and report.annotations_kept == 2
    assert _lines(caplog, "bad_area")


@pytest.mark.faults
def test_sub_pixel_sliver_is_degenerate_not_clipped(tmp_path, caplog):
    """Issue 13: a 1e-9-wide box inside the image was reported "clipped" and reached the
    target with zero width (5 + 1e-9 == 5 in float32)."""
    anns = [_ann(1, 1, [5, 5, 1e-9, 4]), _ann(2, 1, [5, 5, 0.5, 4]), _ann(3, 1, [W - 2, 1, 5, 3])]
    clean, report = validate_coco(_dataset(tmp_path, 1, anns))
    assert report.counts["degenerate_box"] == 1 and report.counts["clipped_box"] == 1
    # box 2 is inside and kept as given; box 3 (x2 = W + 3) is clipped to width 2
    assert [a["bbox"] for a in clean["annotations"]] == [[5, 5, 0.5, 4], [W - 2, 1, 2, 3]]
