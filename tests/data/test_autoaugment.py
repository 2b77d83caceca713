"""Policy v0 of Zoph et al.: magnitudes from the paper's table, box-aware operations worked by
hand, and the config transform inside the albumentations step."""

from __future__ import annotations

import numpy as np
import pytest

from detkit.data.autoaugment import (
    POLICY_V0,
    DetectionAutoAugment,
    affine,
    apply_operation,
    color,
    cutout,
    level_to_arg,
    sharpness,
    translate_only_bboxes,
)
from detkit.data.transforms import AlbumentationsStep, build_albumentation


def test_policy_v0_and_magnitudes() -> None:
    assert [tuple(op[0] for op in sub) for sub in POLICY_V0] == [
        ("TranslateX_BBox", "Equalize"), ("TranslateY_Only_BBoxes", "Cutout"),
        ("Sharpness", "ShearX_BBox"), ("ShearY_BBox", "TranslateY_Only_BBoxes"),
        ("Rotate_BBox", "Color")]
    assert level_to_arg("TranslateX_BBox", 4) == pytest.approx(100.0)  # 4/10 x 250 px
    assert level_to_arg("TranslateY_Only_BBoxes", 6) == pytest.approx(72.0)  # 6/10 x 120
    assert level_to_arg("Rotate_BBox", 10) == pytest.approx(30.0)
    assert level_to_arg("ShearY_BBox", 2) == pytest.approx(0.06)  # 2/10 x 0.3
    assert level_to_arg("Cutout", 8) == 80.0  # int(8/10 x 100)
    assert level_to_arg("Color", 6) == pytest.approx(1.18)  # 6/10 x 1.8 + 0.1
    with pytest.raises(ValueError, match="unknown operation"):
        level_to_arg("Solarize_BBox", 3)


def test_translate_moves_the_box_and_the_pixels() -> None:
    image = np.zeros((200, 300, 3), np.uint8)
    image[20:40, 10:30] = 255  # the object under box [10, 20, 30, 40]
    out, boxes = affine(image, np.array([[10.0, 20.0, 30.0, 40.0]], np.float32), tx=100)
    np.testing.assert_allclose(boxes, [[110.0, 20.0, 130.0, 40.0]])  # x + 100
    assert (out[20:40, 110:130] == 255).all() and (out[20:40, :100] == 128).all()  # grey fill
    _, moved = affine(image, np.array([[10.0, 20.0, 30.0, 40.0]], np.float32), ty=-30)
    np.testing.assert_allclose(moved, [[10.0, 0.0, 30.0, 10.0]])  # y - 30, clipped at 0
    _, gone = affine(image, np.array([[10.0, 20.0, 30.0, 40.0]], np.float32), tx=-100)
    assert (gone[0, 2] - gone[0, 0]) * (gone[0, 3] - gone[0, 1]) == 0  # out: zero-size


def test_rotate_gives_the_enclosing_box() -> None:
    # a 40 px square centred in a 200 x 200 image turned 30 degrees about the centre:
    # its enclosing box has side 40 (cos 30 + sin 30) = 54.641 -> 100 -+ 27.32
    _, boxes = affine(np.zeros((200, 200, 3), np.uint8),
                      np.array([[80.0, 80.0, 120.0, 120.0]], np.float32), rotate=30)
    np.testing.assert_allclose(boxes, [[72.68, 72.68, 127.32, 127.32]], atol=0.02)


def test_translate_only_bboxes_shifts_inside_the_box_only() -> None:
    image = np.arange(10 * 10, dtype=np.uint8).reshape(10, 10)[..., None].repeat(3, 2)
    boxes = np.array([[2.0, 2.0, 6.0, 8.0], [0.0, 0.0, 1.0, 1.0]], np.float32)
    out = translate_only_bboxes(image, boxes, 0, 2, np.array([True, False]))
    # rows 2..7 of columns 2..5 move down 2: rows 4..7 get old rows 2..5, rows 2..3 grey
    np.testing.assert_array_equal(out[4:8, 2:6], image[2:6, 2:6])
    assert (out[2:4, 2:6] == 128).all()
    mask = np.ones((10, 10), bool)
    mask[2:8, 2:6] = False
    np.testing.assert_array_equal(out[mask], image[mask])  # outside and the unchosen box


def test_cutout_color_sharpness_by_hand() -> None:
    image = np.full((8, 8, 3), 10, np.uint8)
    out = cutout(image, 1, 6, 2)  # rows -1..2 -> 0..2, columns 4..7
    assert (out[0:3, 4:8] == 128).all() and (out[3:, :] == 10).all() and (out[:, :4] == 10).all()
    rgb = np.zeros((1, 1, 3), np.uint8)
    rgb[..., 0] = 200  # luma 0.299 x 200 = 59.8 -> 60
    np.testing.assert_array_equal(color(rgb, 0.0)[0, 0], [60, 60, 60])
    np.testing.assert_array_equal(color(rgb, 1.0), rgb)
    # factor 1.5: 60 + 1.5 (200 - 60) = 270 -> 255 and 60 - 1.5 x 60 = -30 -> 0
    np.testing.assert_array_equal(color(rgb, 1.5)[0, 0], [255, 0, 0])
    spot = np.zeros((3, 3, 3), np.uint8)
    spot[1, 1] = 130  # smoothed centre 5 x 130 / 13 = 50; factor 0 gives it, factor 2: 210
    assert sharpness(spot, 0.0)[1, 1, 0] == 50 and sharpness(spot, 2.0)[1, 1, 0] == 210
    assert sharpness(spot, 0.0)[0, 0, 0] == 0  # border kept


def test_probability_zero_and_one() -> None:
    rng = np.random.default_rng(0)
    image = np.full((20, 20, 3), 7, np.uint8)
    boxes = np.array([[2.0, 2.0, 8.0, 8.0]], np.float32)
    same, b = apply_operation("Sharpness", 0.0, 8, image, boxes, rng)  # v0's p = 0.0
    assert same is image and b is boxes
    _, moved = apply_operation("TranslateX_BBox", 1.0, 0, image, boxes, rng)  # level 0
    np.testing.assert_allclose(moved, boxes)


@pytest.mark.filterwarnings("ignore::detkit.data.transforms.BoxesDroppedWarning")
def test_config_transform_keeps_boxes_valid() -> None:
    assert isinstance(build_albumentation({"type": "DetectionAutoAugment", "p": 1.0}),
                      DetectionAutoAugment)
    step = AlbumentationsStep([{"type": "DetectionAutoAugment"}], seed=0)
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(12):
        image = rng.integers(0, 255, (200, 300, 3), np.uint8)
        target = {"boxes": np.array([[10, 20, 60, 80], [100, 100, 150, 190]], np.float32),
                  "labels": np.array([1, 2])}
        out, t = step(image, target)
        assert out.shape == image.shape and out.dtype == np.uint8
        b = t["boxes"]
        assert len(b) == len(t["labels"]) <= 2
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert (b >= 0).all() and (b[:, [0, 2]] <= 300).all() and (b[:, [1, 3]] <= 200).all()
        changed += int(not np.array_equal(out, image))
    assert changed >= 6  # every sub-policy has an operation with p >= 0.6

