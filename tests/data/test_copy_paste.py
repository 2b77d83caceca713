"""Tests for detkit.data.copy_paste (Kisantal et al. 2019 small-object copy-paste)."""

from __future__ import annotations

import numpy as np
import pytest

from detkit.data.copy_paste import (
    ObjectPatch,
    SmallObjectBank,
    SmallObjectCopyPaste,
    edge_alpha,
    find_position,
    jitter_patch,
    small_object_indices,
)
from detkit.data.transforms import letterbox


def pairwise_iou_loop(a, b):
    """Plain-Python IoU reference."""
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = iw * ih
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, j] = inter / union
    return out


def scene(seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    target = {
        # box 0: 8 x 6 = 48 px^2 (small); box 1: 32 x 32 = 1024, not < 1024 (not small)
        "boxes": np.array([[10, 10, 18, 16], [30, 30, 62, 62]], np.float32),
        "labels": np.array([2, 1], np.int64),
        "weights": np.array([0.5, 1.0], np.float32),
        "area": np.array([48.0, 1024.0], np.float32),
        "iscrowd": np.zeros(2, np.int64),
        "ignore_boxes": np.zeros((0, 4), np.float32),
        "image_id": 3,
    }
    return image, target


def test_small_object_selection():
    boxes = np.array([[0, 0, 31, 33], [0, 0, 32, 32], [0, 0, 1, 40], [5, 5, 5, 5]], np.float32)
    # areas 1023 (small), 1024 (not < 1024), side 1 < min_side 2, zero-area
    assert small_object_indices(boxes, 1024.0).tolist() == [0]


def test_paste_self_no_jitter_pixels_equal_source():
    image, target = scene()
    cp = SmallObjectCopyPaste(num_copies=3, scale_jitter=0.0, seed=0)
    out_img, out = cp(image, target)
    assert len(out["boxes"]) == 5 and cp.pasted == 3 and cp.failed_placements == 0
    source = image[10:16, 10:18]
    new = out["boxes"][2:]
    for x1, y1, x2, y2 in new.astype(int):
        assert (x2 - x1, y2 - y1) == (8, 6)
        assert 0 <= x1 and 0 <= y1 and x2 <= 64 and y2 <= 64
        np.testing.assert_array_equal(out_img[y1:y2, x1:x2], source)
    # no overlap with any other box (limit 0): every pairwise IoU is exactly 0
    iou = pairwise_iou_loop(out["boxes"], out["boxes"])
    assert (iou[~np.eye(5, dtype=bool)] == 0).all()
    assert out["labels"].tolist() == [2, 1, 2, 2, 2]
    np.testing.assert_allclose(out["weights"], [0.5, 1, 1, 1, 1])
    np.testing.assert_allclose(out["area"], [48, 1024, 48, 48, 48])
    assert out["iscrowd"].tolist() == [0] * 5
    # pixels outside pasted boxes are unchanged; the input image is not modified
    mask = np.ones((64, 64), bool)
    for x1, y1, x2, y2 in new.astype(int):
        mask[y1:y2, x1:x2] = False
    np.testing.assert_array_equal(out_img[mask], image[mask])
    np.testing.assert_array_equal(image, scene()[0])


def test_deterministic_with_seed():
    image, target = scene()
    a = SmallObjectCopyPaste(seed=5, rotation=20.0)(image, target)
    b = SmallObjectCopyPaste(seed=5, rotation=20.0)(image, target)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1]["boxes"], b[1]["boxes"])
    c = SmallObjectCopyPaste(seed=6, rotation=20.0)(image, target)
    assert not np.array_equal(a[1]["boxes"], c[1]["boxes"])


@pytest.mark.parametrize("limit", [0.0, 0.2])
def test_overlap_limit_and_inside_with_jitter_rotation(limit):
    image, target = scene(2)
    cp = SmallObjectCopyPaste(
        num_copies=4, scale_jitter=0.2, rotation=45.0, max_overlap=limit, seed=3
    )
    for _ in range(5):
        _, out = cp(image, target)
        boxes = out["boxes"]
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all()
        iou = pairwise_iou_loop(boxes, boxes)
        assert iou[~np.eye(len(boxes), dtype=bool)].max(initial=0.0) <= limit + 1e-6
    assert cp.pasted > 0


def test_paste_stays_in_unpadded_region():
    image, target = scene()
    target = dict(target, orig_size=(40, 128), img_scale=0.5)  # content 20 x 64, rest padding
    target["boxes"] = np.array([[10, 10, 18, 16]], np.float32)
    for key in ("labels", "weights", "area", "iscrowd"):
        target[key] = target[key][:1]
    _, out = SmallObjectCopyPaste(num_copies=3, seed=1)(image, target)
    assert len(out["boxes"]) > 1 and (out["boxes"][:, 3] <= 20).all()


def test_mask_source_pastes_only_mask_pixels():
    image, target = scene()
    masks = np.zeros((2, 64, 64), np.uint8)
    masks[0, 12:14, 10:18] = 1  # the small object covers rows 12..13 of its 6-row box
    masks[1, 30:62, 30:62] = 1
    target = dict(target, masks=masks)
    _, base = scene()
    out_img, out = SmallObjectCopyPaste(num_copies=2, scale_jitter=0.0, seed=4)(image, target)
    assert out["masks"].shape == (4, 64, 64)
    for k in (2, 3):
        x1, y1, x2, y2 = out["boxes"][k].astype(int)
        # object rows (2..3 of the crop) come from the source, the other rows stay as before
        np.testing.assert_array_equal(out_img[y1 + 2 : y1 + 4, x1:x2], image[12:14, 10:18])
        np.testing.assert_array_equal(out_img[y1 : y1 + 2, x1:x2], image[y1 : y1 + 2, x1:x2])
        assert out["masks"][k].sum() == 16 and out["masks"][k, y1 + 2 : y1 + 4, x1:x2].all()
    np.testing.assert_allclose(out["area"][2:], [16.0, 16.0])


def test_edge_alpha_hand_values():
    # ramp_x = min([1..5], [5..1]) / 2 = [.5, 1, 1.5, 1, .5]; ramp_y = [.5, 1, .5]; clip to 1
    expected = np.array([[0.5] * 5, [0.5, 1, 1, 1, 0.5], [0.5] * 5], np.float32)
    np.testing.assert_allclose(edge_alpha(3, 5, 1), expected)


def test_jitter_patch_scale_and_rotation():
    patch = ObjectPatch(np.full((10, 20, 3), 50, np.uint8), 1)
    scaled = jitter_patch(patch, 1.5, 0.0)
    assert scaled.pixels.shape == (15, 30, 3) and scaled.mask is None
    rotated = jitter_patch(patch, 1.0, 90.0)
    # a 20 x 10 rectangle turned by 90 degrees is 10 wide and 20 high
    assert rotated.pixels.shape[:2] == (20, 10) and rotated.mask.all()


def test_find_position_gives_up_and_counts():
    rng = np.random.default_rng(0)
    assert find_position(rng, (10, 10), (8, 30), np.zeros((0, 4)), 0.0, 5) is None
    full = np.array([[0, 0, 30, 30]], np.float32)
    assert find_position(rng, (4, 4), (30, 30), full, 0.0, 20) is None
    image, target = scene()
    target["boxes"] = np.array([[10, 10, 18, 16], [0, 0, 64, 64]], np.float32)
    cp = SmallObjectCopyPaste(num_copies=3, max_tries=5, seed=0)
    _, out = cp(image, target)
    assert cp.failed_placements == 3 and len(out["boxes"]) == 2


class TinyDataset:
    def __init__(self):
        self.items = [scene(0), scene(1)]

    def __len__(self):
        return len(self.items)

    def load_raw(self, index):
        return self.items[index]


def test_bank_from_dataset_and_paste():
    bank = SmallObjectBank.from_dataset(TinyDataset(), max_area=1024.0, max_items=10, seed=0)
    # one small object per image -> 2 crops of 6 x 8
    assert len(bank) == 2 and all(p.pixels.shape == (6, 8, 3) for p in bank.patches)
    # at input_size 32 (scale 0.5), the 32 x 32 box is 16 x 16 = 256 < 1024: small too
    scaled = SmallObjectBank.from_dataset(TinyDataset(), 1024.0, 10, 0, input_size=32)
    assert sorted(p.pixels.shape[:2] for p in scaled.patches) == [
        (3, 4),
        (3, 4),
        (16, 16),
        (16, 16),
    ]
    image, target = scene()
    cp = SmallObjectCopyPaste(source="bank", bank=bank, max_objects=2, num_copies=1, seed=0)
    _, out = cp(image, target)
    assert len(out["boxes"]) == 4 and out["labels"][2:].tolist() == [2, 2]
    with pytest.raises(ValueError, match="bank"):
        SmallObjectCopyPaste(source="bank")


def test_position_never_hides_a_small_box_behind_a_large_patch():
    # existing box (20, 20, 30, 30), area 100; a 20x20 patch at (15, 15) covers it fully:
    # IoU = 100 / 400 = 0.25 <= 0.3, but the covered fraction is 100 / 100 = 1 > 0.3
    existing = np.array([[20.0, 20.0, 30.0, 30.0]], dtype=np.float32)

    class Fixed:
        """A generator stand-in that proposes (15, 15) and then (60, 60)."""

        def integers(self, low, high, size):
            return np.array([15, 60][:size])

    pos = find_position(Fixed(), (20, 20), (100, 100), existing, max_overlap=0.3, tries=2)
    assert pos == (60, 60)


def test_paste_region_follows_the_letterbox_content_after_a_crop():
    # a 100x40 crop of a 100x100 image, letterboxed to 50: scale 0.5, content 20 x 50
    image = np.zeros((100, 100, 3), np.uint8)
    target = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
              "orig_size": (100, 100), "img_scale": 1.0}
    cropped = image[:40]
    canvas, out = letterbox(cropped, target, 50)
    assert out["content_size"] == (20, 50) and out["img_scale"] == 0.5
    paste = SmallObjectCopyPaste(max_area=1024.0, num_copies=1, seed=0)
    # orig_size x img_scale would claim 50 x 50; the real content is 20 x 50
    assert paste._region(canvas, out) == (20, 50)


@pytest.mark.parametrize("feather", [0, 1])
def test_feather_blends_the_pasted_border(feather):
    # background 40, one 6 x 4 object of value 200 at (4, 4, 10, 8); one copy, no jitter.
    # feather 1: edge_alpha ramps min(i + 1, n - i) / 2 -> 0.5 on the border ring, 1 inside,
    # so border pixels become rint(0.5 * 40 + 0.5 * 200) = 120 and the inside stays 200.
    # feather 0: a plain copy, all 200.
    image = np.full((32, 32, 3), 40, np.uint8)
    image[4:8, 4:10] = 200
    target = {"boxes": np.array([[4, 4, 10, 8]], np.float32), "labels": np.array([1])}
    cp = SmallObjectCopyPaste(num_copies=1, scale_jitter=0.0, feather=feather, seed=0)
    out_img, out = cp(image, target)
    assert len(out["boxes"]) == 2
    x1, y1, x2, y2 = out["boxes"][1].astype(int)
    assert (x2 - x1, y2 - y1) == (6, 4)
    expected = np.full((4, 6, 3), 200 if feather == 0 else 120, np.uint8)
    expected[1:3, 1:5] = 200
    np.testing.assert_array_equal(out_img[y1:y2, x1:x2], expected)
