"""Tests for detkit.data.voc and tools/convert_voc.py (tiny VOC tree and BCCD)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from detkit.data.coco import CocoDetection
from detkit.data.voc import convert_voc_to_coco, parse_voc_xml, voc_box_to_coco

ROOT = Path(__file__).resolve().parents[2]
BCCD = Path(os.environ.get("DETKIT_BCCD", ROOT / ".." / "shared" / "datasets" / "BCCD"))
TOOL = ROOT / "tools" / "convert_voc.py"


def _xml(filename: str, w: int, h: int, objects: list[tuple]) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    return (
        f"<annotation><filename>{filename}</filename><size><width>{w}</width>"
        f"<height>{h}</height><depth>3</depth></size>{objs}</annotation>"
    )


def _tiny_voc(root: Path) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    records = {
        "a": [("dog", (1, 1, 10, 20), 0), ("cat", (5, 5, 30, 12), 1)],
        "b": [("cat", (3, 4, 3, 9), 0), ("zebra", (2, 2, 8, 8), 0), ("dog", (20, 10, 45, 30), 0)],
    }
    for stem, objects in records.items():
        image = np.zeros((30, 40, 3), np.uint8)
        assert cv2.imwrite(str(root / "JPEGImages" / f"{stem}.jpg"), image)
        (root / "Annotations" / f"{stem}.xml").write_text(_xml(f"{stem}.jpg", 40, 30, objects))
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("b\n")
    (root / "ImageSets" / "Main" / "dog_train.txt").write_text("a  1\nb -1\n")  # per-class list
    return root


def test_voc_box_convention():
    # VOC pixels 1..10 x 1..20 -> 0-based corners: x = 1-1 = 0, w = 10-1 = 9, h = 20-1 = 19
    assert voc_box_to_coco((1, 1, 10, 20)) == [0.0, 0.0, 9.0, 19.0]
    assert voc_box_to_coco((504, 337, 504, 337))[2:] == [0.0, 0.0]  # zero size


def test_tiny_voc_tree(tmp_path):
    out = tmp_path / "coco"
    report = convert_voc_to_coco(_tiny_voc(tmp_path / "voc"), out)
    assert report.classes == ["cat", "dog", "zebra"]  # alphabetical
    assert (report.images, report.objects, report.kept) == (2, 5, 4)
    assert report.difficult == 1
    assert report.dropped == ["b.xml: cat [3, 4, 3, 9] (zero or negative size)"]
    # dog (20, 10, 45, 30) -> x 19..44, y 9..29: clipped at W = 40 to w = 21
    assert report.clipped == ["b.xml: dog [20, 10, 45, 30]"]
    assert set(report.splits) == {"train", "val"}  # dog_train.txt skipped
    train = json.loads((out / "train.json").read_text())
    assert [c["name"] for c in train["categories"]] == ["cat", "dog", "zebra"]
    assert [im["id"] for im in train["images"]] == [1, 2]
    anns = {a["id"]: a for a in train["annotations"]}
    assert anns[1]["bbox"] == [0.0, 0.0, 9.0, 19.0] and anns[1]["category_id"] == 2
    assert anns[2]["iscrowd"] == 1 and anns[2]["bbox"] == [4.0, 4.0, 25.0, 7.0]
    assert anns[4]["bbox"] == [19.0, 9.0, 21.0, 20.0] and anns[4]["area"] == 420.0
    for im in train["images"]:  # file names are relative to OUT and resolve from there
        assert not Path(im["file_name"]).is_absolute()
        assert (out / im["file_name"]).resolve() == (
            tmp_path / "voc" / "JPEGImages" / Path(im["file_name"]).name
        ).resolve()
    val = json.loads((out / "val.json").read_text())
    assert [a["id"] for a in val["annotations"]] == [3, 4]  # same ids as in train.json
    ds = CocoDetection(out / "train.json", log=None)
    target = ds.raw_target(0)
    np.testing.assert_array_equal(target["ignore_boxes"], [[4.0, 4.0, 29.0, 11.0]])
    assert target["labels"].tolist() == [2]


def test_conversion_report_marks_dropped_and_clipped_boxes(tmp_path):
    out = tmp_path / "coco"
    convert_voc_to_coco(_tiny_voc(tmp_path / "voc"), out)
    marks = json.loads((out / "conversion_report.json").read_text())["marks"]
    # b.xml: cat (3, 4, 3, 9) -> x 3-1 = 2, y 4-1 = 3, w 3-3 = 0, h 9-4 = 5: dropped;
    # dog (20, 10, 45, 30) -> [19, 9, 25, 20] as read, clipped at W = 40 when written
    assert marks == [
        {"file_name": "../voc/JPEGImages/b.jpg", "class": "cat", "bbox": [2.0, 3.0, 0.0, 5.0],
         "reason": "dropped: zero or negative size"},
        {"file_name": "../voc/JPEGImages/b.jpg", "class": "dog", "bbox": [19.0, 9.0, 25.0, 20.0],
         "reason": "clipped to the image"}]


def test_explicit_classes_drop_unknown(tmp_path):
    report = convert_voc_to_coco(_tiny_voc(tmp_path / "voc"), tmp_path / "o", ["dog", "cat"])
    assert report.classes == ["dog", "cat"]
    assert "b.xml: zebra [2, 2, 8, 8] (class not in the class list)" in report.dropped
    assert report.kept == 3  # 5 objects - zero-size cat - zebra
    cats = json.loads((tmp_path / "o" / "train.json").read_text())["categories"]
    assert [(c["id"], c["name"]) for c in cats] == [(1, "dog"), (2, "cat")]


def test_bad_xml_names_file(tmp_path):
    root = _tiny_voc(tmp_path / "voc")
    (root / "Annotations" / "a.xml").write_text(_xml("a.jpg", 40, 30, [("dog", (1, 1, "x", 4), 0)]))
    with pytest.raises(ValueError, match=r"a\.xml: object\[0\]: bndbox must hold 4 numbers"):
        parse_voc_xml(root / "Annotations" / "a.xml")


def test_bccd_conversion(tmp_path, capsys):
    if not (BCCD / "Annotations").is_dir():
        pytest.skip(f"BCCD dataset not found at {BCCD} (set DETKIT_BCCD)")
    spec = importlib.util.spec_from_file_location("convert_voc", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--voc-root", str(BCCD), "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "images: 364  objects: 4,888  kept: 4,886 (RBC 4,153, WBC 372, Platelets 361)" in out
    assert "dropped BloodImage_00338.xml: RBC [504, 337, 504, 337] (zero or negative size)" in out
    assert "dropped BloodImage_00343.xml: RBC [181, 329, 181, 329] (zero or negative size)" in out
    # the two broken boxes, as read (504 - 1 = 503, 337 - 1 = 336, zero size), for the browser
    marks = json.loads((tmp_path / "conversion_report.json").read_text())["marks"]
    assert [(Path(m["file_name"]).name, m["bbox"]) for m in marks] == [
        ("BloodImage_00338.jpg", [503.0, 336.0, 0.0, 0.0]),
        ("BloodImage_00343.jpg", [180.0, 328.0, 0.0, 0.0])]
    counts = {}
    for split in ("train", "val", "test", "trainval"):
        data = json.loads((tmp_path / f"{split}.json").read_text())
        counts[split] = (len(data["images"]), len(data["annotations"]))
    assert [counts[s][0] for s in ("train", "val", "test", "trainval")] == [205, 87, 72, 292]
    # splits partition the kept objects: train + val = trainval, trainval + test = all
    assert counts["train"][1] + counts["val"][1] == counts["trainval"][1]
    assert counts["trainval"][1] + counts["test"][1] == 4886
    ds = CocoDetection(tmp_path / "trainval.json", log=None)
    assert ds.class_names == ["Platelets", "RBC", "WBC"]
    assert sum(ds.report.counts.values()) == 0  # the converter left nothing to fix
    # category-id round trip through the dataset's maps
    assert all(ds.label_to_cat_id[ds.cat_id_to_label[c]] == c for c in (1, 2, 3))


@pytest.mark.faults
def test_nan_and_inf_coordinates_are_dropped_and_named(tmp_path):
    """Issue 13: NaN reached the JSON (then the loader rejected the whole file) and inf
    was clipped silently."""
    root = _tiny_voc(tmp_path / "voc")
    (root / "Annotations" / "a.xml").write_text(_xml("a.jpg", 40, 30, [
        ("dog", (1, 1, 10, 20), 0), ("dog", ("nan", 1, 10, 20), 0), ("cat", (5, 5, "inf", 12), 0),
    ]))
    out = tmp_path / "coco"
    report = convert_voc_to_coco(root, out)
    assert [d.split(" (")[-1] for d in report.dropped if d.startswith("a.xml")] == [
        "non-finite coordinate)", "non-finite coordinate)"]
    text = (out / "train.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    CocoDetection(out / "train.json", log=None)  # loads


@pytest.mark.faults
@pytest.mark.parametrize("content, message", [
    ("a\nb 1\n", "train.txt:2: a split list needs one image id per line"),
    ("\n\n", "train.txt: empty split list"),
])
def test_bad_split_lists_fail_naming_the_file(tmp_path, content, message):
    """Issue 13: one two-column line or an empty list silently dropped the whole split."""
    root = _tiny_voc(tmp_path / "voc")
    (root / "ImageSets" / "Main" / "train.txt").write_text(content)
    with pytest.raises(ValueError, match=message):
        convert_voc_to_coco(root, tmp_path / "coco")
    assert not (tmp_path / "coco").exists()  # failed before writing anything


@pytest.mark.faults
def test_difficult_false_is_not_difficult_and_bad_flags_name_the_file(tmp_path):
    root = _tiny_voc(tmp_path / "voc")
    (root / "Annotations" / "a.xml").write_text(_xml("a.jpg", 40, 30, [
        ("dog", (1, 1, 10, 20), "false"), ("cat", (5, 5, 30, 12), "True")]))
    report = convert_voc_to_coco(root, tmp_path / "coco")
    anns = json.loads((tmp_path / "coco" / "train.json").read_text())["annotations"]
    assert [a["iscrowd"] for a in anns if a["image_id"] == 1] == [0, 1]  # dog 0, cat 1
    assert any("dog_train.txt" in s for s in report.skipped_lists)
    (root / "Annotations" / "a.xml").write_text(_xml("a.jpg", 40, 30, [
        ("dog", (1, 1, 10, 20), "maybe")]))
    with pytest.raises(ValueError, match=r"a.xml: object\[0\]: <difficult> must be 0 or 1"):
        convert_voc_to_coco(root, tmp_path / "coco2")
    (root / "Annotations" / "a.xml").write_text(
        "<annotation><size><width>wide</width></size></annotation>")
    with pytest.raises(ValueError, match="a.xml: <size> must hold numbers"):
        convert_voc_to_coco(root, tmp_path / "coco3")


def test_missing_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOC root folder not found: .*nowhere"):
        convert_voc_to_coco(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "voc").mkdir()
    with pytest.raises(FileNotFoundError, match="has no Annotations/ folder"):
        convert_voc_to_coco(tmp_path / "voc", tmp_path / "out")
