"""Anchor coverage: a hand-worked data set, the command line, and BCCD with and without
densification (skipped when the data set is absent)."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from detkit.models.anchors import AnchorGenerator, anchor_generator_from_preset
from detkit.models.coverage import anchor_coverage
from detkit.ops.boxes import coco_area_bucket as area_bucket

ROOT = Path(__file__).resolve().parents[2]
BCCD = Path(os.environ.get("DETKIT_BCCD", ROOT / ".." / "shared" / "datasets" / "BCCD"))


@pytest.fixture(autouse=True)
def _one_thread():
    # the machine's cores are shared; one thread is faster than contending for them
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "anchor_coverage", ROOT / "tools" / "anchor_coverage.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _coco():
    # one 640 x 480 image: letterbox to 320 scales boxes by 320 / 640 = 0.5
    anns = [
        [1, [8, 8, 64, 64], 0],  # -> (4, 4, 36, 36), medium (1024 px^2)
        [2, [0, 0, 16, 16], 0],  # -> (0, 0, 8, 8), small (64 px^2)
        [1, [8, 8, 112, 64], 0],  # -> (4, 4, 60, 36), medium (1792 px^2)
        [1, [100, 100, 50, 50], 1],  # crowd: not scored
        [2, [5, 5, 0, 3], 0],  # zero area: not scored
    ]
    return {
        "images": [{"id": 7, "width": 640, "height": 480, "file_name": "a.jpg"}],
        "categories": [{"id": 1, "name": "cell"}, {"id": 2, "name": "dot"}],
        "annotations": [
            {
                "id": i + 1,
                "image_id": 7,
                "category_id": c,
                "bbox": b,
                "area": b[2] * b[3],
                "iscrowd": crowd,
            }
            for i, (c, b, crowd) in enumerate(anns)
        ],
    }


def test_area_buckets():
    assert [area_bucket(a) for a in (1023.9, 1024, 9215.9, 9216)] == [
        "small",
        "medium",
        "medium",
        "large",
    ]


def test_hand_worked_coverage():
    # 32 x 32 anchors at stride 8, centres 4 + 8 j: one is exactly (4, 4, 36, 36)
    gen = AnchorGenerator([8], [[32.0]])
    report = anchor_coverage(_coco(), gen, input_size=320)
    rows = {(r.bucket, r.class_name): r for r in report.rows}
    assert report.num_anchors == 40 * 40
    assert (report.crowd_skipped, report.zero_area_skipped) == (1, 1)
    # box 1: IoU 1. box 3 (56 x 32): best anchor inside it, IoU 1024 / 1792 = 0.5714
    medium = rows[("medium", "cell")]
    assert (medium.count, medium.covered) == (2, 2)
    assert medium.mean_best_iou == pytest.approx((1 + 1024 / 1792) / 2, rel=1e-5)
    # the 8 x 8 dot lies inside 32 x 32 anchors: IoU 64 / 1024 = 0.0625, not covered
    small = rows[("small", "dot")]
    assert (small.count, small.covered) == (1, 0)
    assert small.mean_best_iou == pytest.approx(0.0625, rel=1e-5)
    total = rows[("all", "all")]
    assert (total.count, total.covered) == (3, 2)
    assert total.mean_best_iou == pytest.approx((1 + 1024 / 1792 + 0.0625) / 3, rel=1e-5)
    assert rows[("large", "all")].count == 0 and rows[("large", "all")].coverage == 0.0
    assert "not scored: 1 crowd box(es), 1 zero-area box(es)" in report.table()


def test_cli_preset_density_switch(tmp_path, capsys):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(_coco()))
    tool = _load_tool()
    assert tool.main(["faceboxes", str(ann), "--strides", "8", "--no-density"]) == 0
    # faceboxes on stride 8: sizes 8, 16, 32 -> 3 anchors per cell, 40 * 40 cells
    assert "4800 anchors" in capsys.readouterr().out
    out_dir = tmp_path / "out"
    assert (
        tool.main(["faceboxes", str(ann), "--strides", "8", "--density", "--out", str(out_dir)])
        == 0
    )
    # densities 4, 2, 1 -> 16 + 4 + 1 = 21 per cell
    assert "33600 anchors" in capsys.readouterr().out
    assert (out_dir / "coverage.png").stat().st_size > 0
    assert "densification on" in (out_dir / "coverage.txt").read_text()
    assert tool.main(["no_such_preset", str(ann)]) == 2


def test_cli_yaml_config(tmp_path, capsys):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(_coco()))
    cfg = tmp_path / "model.yaml"
    cfg.write_text(
        "model:\n  type: dense_detector\n  backbone: snet49\n  neck_channels: 16\n"
        "  head_convs: 1\n  anchors: s3fd\n"
    )
    tool = _load_tool()
    assert tool.main([str(cfg), str(ann), "--no-density"]) == 0
    # S3FD on P3-P7 at 320: 40^2 + 20^2 + 10^2 + 5^2 + 3^2 = 2134 anchors
    assert "2134 anchors" in capsys.readouterr().out
    assert tool.main([str(cfg), str(ann), "model.anchors=faceboxes", "--density"]) == 0
    # 21 anchors per cell on the same 2134 cells
    assert f"{21 * 2134} anchors" in capsys.readouterr().out
    # RetinaNet anchors are >= 4x their stride (32 on stride 8: round(4 * 8 / 32) = 1), so
    # --density adds nothing: the title says so instead of "densification off"
    assert tool.main([str(cfg), str(ann), "model.anchors=retinanet", "--density"]) == 0
    out = capsys.readouterr().out
    assert "densification on, but every density is 1" in out and f"{9 * 2134} anchors" in out


@pytest.mark.skipif(not (BCCD / "Annotations").is_dir(), reason=f"BCCD not found at {BCCD}")
def test_bccd_densification_covers_small_platelets(tmp_path):
    from detkit.data.voc import convert_voc_to_coco

    convert_voc_to_coco(BCCD, tmp_path)
    coco = json.loads((tmp_path / "val.json").read_text())
    strides = [8, 16, 32, 64, 128]
    off = anchor_coverage(coco, anchor_generator_from_preset("faceboxes", strides), 320)
    on = anchor_coverage(
        coco, anchor_generator_from_preset("faceboxes", strides, densify=True), 320
    )
    get = {(r.bucket, r.class_name): r for r in off.rows}
    get_on = {(r.bucket, r.class_name): r for r in on.rows}
    # the BCCD conversion drops the two zero-area boxes; every kept box is scored once
    assert get[("all", "all")].count == sum(1 for a in coco["annotations"] if not a["iscrowd"])
    assert get_on[("small", "Platelets")].count == get[("small", "Platelets")].count > 0
    assert get_on[("small", "Platelets")].coverage > get[("small", "Platelets")].coverage


def test_plot_is_written_where_asked_at_7_by_4_inches(tmp_path):
    import cv2

    from detkit.models.coverage import plot_coverage

    report = anchor_coverage(_coco(), AnchorGenerator([8], [[32.0]]), input_size=320)
    out = plot_coverage(report, str(tmp_path / "coverage.png"))
    assert out == tmp_path / "coverage.png"
    assert cv2.imread(str(out)).shape == (400, 700, 3)  # 7 x 4 in at 100 dpi


def test_a_model_without_anchors_is_named():
    from detkit.models.coverage import model_anchor_generator

    with pytest.raises(ValueError, match="^the model Sequential has no AnchorGenerator$"):
        model_anchor_generator(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)))
