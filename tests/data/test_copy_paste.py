"""Tests for detkit.data.copy_paste (Kisantal et al. 2019 small-object copy-paste)."""

from __future__ import annotations

import numpy as np
import pytest

from detkit.data.copy_paste import (
    COPY_PASTE_SEED_OFFSET,
    ObjectPatch,
    SmallObjectBank,
    SmallObjectCopyPaste,
    blend_into,
    build_copy_paste,
    crop_object,
    edge_alpha,
    find_position,
    jitter_patch,
    paste_alpha,
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


# ---------------------------------------------------------------------------------------------
# Boundaries and formulas of the helpers, each against a hand-derived value (docs/testing.md,
# "Mutation score").


class Proposals:
    """A generator stand-in whose candidate positions are fixed: x from ``xs``, y from ``ys``."""

    def __init__(self, xs, ys):
        self.calls = [np.array(xs), np.array(ys)]

    def integers(self, low, high, size):
        return self.calls.pop(0)[:size]


def test_small_object_selection_away_from_the_origin():
    boxes = np.array(
        [
            [30, 10, 34, 16],  # 4 x 6 = 24 < 100: small (x1 != y1, so a swapped corner shows)
            [10, 20, 12, 40],  # 2 x 20 = 40: width exactly min_side 2 counts
            [10, 20, 40, 22],  # 30 x 2 = 60: height exactly min_side 2 counts
            [10, 20, 11.5, 30],  # width 1.5 < 2: too thin
            [50, 50, 60, 60],  # 10 x 10 = 100, not < 100
        ],
        np.float32,
    )
    assert small_object_indices(boxes, 100.0).tolist() == [0, 1, 2]
    # the default min_side is 2: a 2-px side counts, a 3-px threshold would drop rows 1 and 2
    assert small_object_indices(boxes, 100.0, 2.0).tolist() == [0, 1, 2]
    assert small_object_indices(boxes, 100.0, 3.0).tolist() == [0]


def test_crop_object_extent_and_empty_boxes():
    image = np.arange(4 * 10 * 3, dtype=np.uint8).reshape(4, 10, 3)  # 4 high, 10 wide
    # floor(0.5) = 0, floor(1.2) = 1, ceil(3.5) = 4, ceil(2.7) = 3 -> rows 1..2, cols 0..3
    patch = crop_object(image, np.array([0.5, 1.2, 3.5, 2.7]), 7)
    np.testing.assert_array_equal(patch.pixels, image[1:3, 0:4])
    assert patch.label == 7 and patch.mask is None
    # from the corner: x1 = y1 = 0 stay 0
    np.testing.assert_array_equal(crop_object(image, np.array([0, 0, 2, 3]), 1).pixels,
                                  image[0:3, 0:2])
    # a zero-width box, a zero-height box and a box below the 4-row image give no crop
    assert crop_object(image, np.array([3, 1, 3, 4]), 1) is None
    assert crop_object(image, np.array([1, 2, 4, 2]), 1) is None
    assert crop_object(image, np.array([1, 5, 4, 8]), 1) is None
    mask = np.zeros((4, 10), np.uint8)
    mask[1, 1] = 5
    with_mask = crop_object(image, np.array([0, 0, 3, 2]), 1, mask)
    assert with_mask.mask.dtype == np.uint8
    np.testing.assert_array_equal(with_mask.mask, [[0, 0, 0], [0, 1, 0]])


def test_edge_alpha_clips_at_one_and_is_float32():
    # 5 x 5, feather 1: ramp = min([1..5], [5..1]) / 2 = [.5, 1, 1.5, 1, .5] both ways; the
    # centre min(1.5, 1.5) = 1.5 is clipped to 1
    alpha = edge_alpha(5, 5, 1)
    assert alpha.dtype == np.float32
    expected = np.full((5, 5), 0.5, np.float32)
    expected[1:4, 1:4] = 1.0
    np.testing.assert_array_equal(alpha, expected)


def test_paste_alpha_cases():
    pixels = np.zeros((3, 4, 3), np.uint8)
    assert paste_alpha(ObjectPatch(pixels, 1), 0) is None
    mask = np.array([[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1]], np.uint8)
    hard = paste_alpha(ObjectPatch(pixels, 1, mask), 0)
    assert hard.dtype == np.float32
    np.testing.assert_array_equal(hard, mask.astype(np.float32))
    # feather 1 on 3 x 4: ramp_x = [.5, 1, 1, .5], ramp_y = [.5, 1, .5] -> 0.5 on the border,
    # 1 inside; times the mask
    soft = paste_alpha(ObjectPatch(pixels, 1, mask), 1)
    np.testing.assert_array_equal(
        soft, [[0.5, 0.5, 0.5, 0.5], [0.0, 1.0, 1.0, 0.5], [0.0, 0.0, 0.5, 0.5]]
    )


def test_blend_into_a_grayscale_image():
    image = np.full((4, 5), 40, np.uint8)
    patch = ObjectPatch(np.full((2, 3), 200, np.uint8), 1, np.array([[1, 0, 1], [1, 1, 1]],
                                                                    np.uint8))
    blend_into(image, patch, 1, 2, 0)
    expected = np.full((4, 5), 40, np.uint8)
    expected[2, 1], expected[2, 3], expected[3, 1:4] = 200, 200, 200
    np.testing.assert_array_equal(image, expected)


def test_jitter_patch_scale_boundaries_and_mask_resize():
    patch = ObjectPatch(np.full((4, 4, 3), 9, np.uint8), 3)
    assert jitter_patch(patch, 2.0, 0.0).pixels.shape == (8, 8, 3)
    # round(4 * 0.2) = 1 and round(4 * 0.1) = 0 -> at least 1 pixel
    assert jitter_patch(patch, 0.2, 0.0).pixels.shape == (1, 1, 3)
    assert jitter_patch(patch, 0.1, 0.0).pixels.shape == (1, 1, 3)
    # the mask is resized by nearest neighbour: 2 -> 5 pixels reads source floor(i * 2 / 5),
    # i = 0..4 -> [0, 0, 0, 1, 1]
    checker = np.array([[1, 0], [0, 1]], np.uint8)
    scaled = jitter_patch(ObjectPatch(np.zeros((2, 2, 3), np.uint8), 3, checker), 2.5, 0.0)
    near = np.array([0, 0, 0, 1, 1])
    np.testing.assert_array_equal(scaled.mask, checker[near][:, near])
    assert scaled.pixels.shape == (5, 5, 3) and scaled.label == 3


def test_jitter_patch_quarter_and_half_turns_move_pixels_exactly():
    pixels = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    # cv2's positive angle turns counter-clockwise, as np.rot90 does
    turned = jitter_patch(ObjectPatch(pixels, 4), 1.0, 90.0)
    np.testing.assert_array_equal(turned.pixels, np.rot90(pixels))
    assert turned.label == 4 and turned.mask.dtype == np.uint8 and turned.mask.all()
    # with an object mask (rows 2..3, cols 1..6 of the 6 x 8 crop) the turned patch is cut to
    # the turned mask: rot90 moves cols 1..6 to rows 8-1-6..8-1-1 = 1..6, rows 2..3 to cols 2..3
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 1:7] = 1
    cut = jitter_patch(ObjectPatch(pixels, 4, mask), 1.0, 90.0)
    np.testing.assert_array_equal(cut.pixels, np.rot90(pixels)[1:7, 2:4])
    np.testing.assert_array_equal(cut.mask, np.ones((6, 2), np.uint8))
    # a one-row patch turned by 180 degrees is the row reversed
    row = pixels[:1, :5]
    np.testing.assert_array_equal(jitter_patch(ObjectPatch(row, 4), 1.0, 180.0).pixels,
                                  row[:, ::-1])


def test_jitter_patch_rotated_extent_and_empty_mask():
    # a 20 x 10 box turned by 30 degrees spans 20 cos30 + 10 sin30 = 22.3 by
    # 20 sin30 + 10 cos30 = 18.7 pixels; the tight crop of the nearest-neighbour mask may trim
    # a pixel at each side
    turned = jitter_patch(ObjectPatch(np.zeros((10, 20, 3), np.uint8), 1), 1.0, 30.0)
    h, w = turned.pixels.shape[:2]
    assert 17 <= h <= 19 and 21 <= w <= 23
    # an empty object mask leaves nothing after the turn: a 1 x 1 patch with a full mask
    pixels = np.full((6, 8, 3), 77, np.uint8)
    empty = jitter_patch(ObjectPatch(pixels, 5, np.zeros((6, 8), np.uint8)), 1.0, 30.0)
    assert empty.pixels.shape == (1, 1, 3) and empty.label == 5
    assert empty.mask.dtype == np.uint8
    np.testing.assert_array_equal(empty.mask, [[1]])


def test_find_position_boundaries():
    rng = np.random.default_rng(0)
    none = np.zeros((0, 4), np.float32)
    # a patch exactly the region's size fits only at (0, 0); no tries -> None; one try is enough
    assert find_position(rng, (8, 30), (8, 30), none, 0.0, 1) == (0, 0)
    assert find_position(rng, (4, 4), (8, 30), none, 0.0, 0) is None
    assert find_position(rng, (9, 4), (8, 30), none, 0.0, 5) is None
    assert find_position(rng, (4, 31), (8, 30), none, 0.0, 5) is None
    # a region one pixel larger than the patch: positions 0 or 1 only, over many seeds
    for seed in range(20):
        x, y = find_position(np.random.default_rng(seed), (4, 4), (5, 5), none, 0.0, 3)
        assert 0 <= x <= 1 and 0 <= y <= 1
    # no existing boxes: the first candidate wins
    assert find_position(Proposals([3, 7], [5, 9]), (2, 2), (20, 20), none, 0.0, 2) == (3, 5)


@pytest.mark.parametrize(
    "existing, first",
    [
        # 20 wide, 10 high at (10, 0); patch 10 x 10 at (10, 0): inter 100, union 200
        ([10.0, 0.0, 30.0, 10.0], (10, 0)),
        # 10 wide, 20 high at (0, 10); patch at (0, 10): inter 100, union 200
        ([0.0, 10.0, 10.0, 30.0], (0, 10)),
    ],
)
def test_find_position_accepts_the_overlap_limit_itself(existing, first):
    # IoU = 100 / 200 = 0.5 and covered fraction = 100 / 200 = 0.5: both equal the limit 0.5,
    # which is allowed; the second candidate (50, 50) is free
    ex = np.array([existing], np.float32)
    gen = Proposals([first[0], 50], [first[1], 50])
    assert find_position(gen, (10, 10), (100, 100), ex, 0.5, 2) == first
    # 0.49 < 0.5: the first candidate is refused
    gen = Proposals([first[0], 50], [first[1], 50])
    assert find_position(gen, (10, 10), (100, 100), ex, 0.49, 2) == (50, 50)


def test_find_position_zero_limit_refuses_a_one_pixel_overlap():
    # patch 10 x 10 at (9, 9) over (0, 0, 10, 10): a 1 x 1 intersection
    ex = np.array([[0.0, 0.0, 10.0, 10.0]], np.float32)
    assert find_position(Proposals([9, 50], [9, 50]), (10, 10), (100, 100), ex, 0.0, 2) == (
        50,
        50,
    )
    # with a 0.1 limit it is allowed: IoU 1 / 199, covered 1 / 100
    assert find_position(Proposals([9, 50], [9, 50]), (10, 10), (100, 100), ex, 0.1, 2) == (9, 9)


def test_constructor_defaults_and_validation():
    cp = SmallObjectCopyPaste()
    # the documented defaults
    assert (cp.max_area, cp.num_copies, cp.max_objects) == (1024.0, 3, None)
    assert (cp.scale_jitter, cp.rotation, cp.max_overlap) == (0.2, 0.0, 0.0)
    assert (cp.max_tries, cp.source, cp.feather, cp.p) == (20, "self", 0, 1.0)
    # the edges that are allowed
    SmallObjectCopyPaste(num_copies=0, max_overlap=1.0, scale_jitter=0.0)
    SmallObjectCopyPaste(source="bank", bank=SmallObjectBank([ObjectPatch(np.zeros((2, 2, 3),
                                                                                   np.uint8), 1)]))
    # each bad value alone is refused
    for bad in ({"scale_jitter": 1.0}, {"scale_jitter": 1.5}, {"scale_jitter": -0.1},
                {"num_copies": -1}, {"max_overlap": 1.5}, {"max_overlap": -0.1}):
        with pytest.raises(ValueError, match=r"^need 0 <= scale_jitter < 1, num_copies >= 0, "
                                             r"0 <= max_overlap <= 1$"):
            SmallObjectCopyPaste(**bad)
    with pytest.raises(ValueError, match="source must be 'self' or 'bank', got 'other'"):
        SmallObjectCopyPaste(source="other")
    with pytest.raises(ValueError, match="^source='bank' needs a non-empty SmallObjectBank$"):
        SmallObjectCopyPaste(source="bank", bank=SmallObjectBank([]))


def test_no_copies_and_no_boxes_return_the_input():
    image, target = scene()
    out_img, out = SmallObjectCopyPaste(num_copies=0, seed=0)(image, target)
    assert out_img is image and out is target
    # a target without boxes (and without labels) has nothing to copy
    bare = {"image_id": 1}
    out_img, out = SmallObjectCopyPaste(seed=0)(image, bare)
    assert out_img is image and out is bare


def test_counters_accumulate_over_calls():
    image, target = scene()
    cp = SmallObjectCopyPaste(num_copies=2, scale_jitter=0.0, seed=0)
    cp(image, target)
    cp(image, target)
    # one small object, 2 copies per call, room for all: 2 + 2
    assert cp.pasted == 4 and cp.failed_placements == 0


def test_max_objects_picks_that_many_distinct_objects():
    image = np.zeros((64, 64, 3), np.uint8)
    target = {"boxes": np.array([[0, 0, 4, 4], [10, 0, 14, 4], [20, 0, 24, 4]], np.float32),
              "labels": np.array([1, 2, 3])}
    _, out = SmallObjectCopyPaste(num_copies=1, max_objects=2, scale_jitter=0.0, seed=0)(
        image, target)
    new = out["labels"][3:].tolist()
    assert len(new) == 2 and len(set(new)) == 2 and set(new) <= {1, 2, 3}
    # distinct on every seed (a draw with replacement repeats an object with probability 1/3)
    for seed in range(20):
        _, out = SmallObjectCopyPaste(num_copies=1, max_objects=2, scale_jitter=0.0,
                                      max_overlap=1.0, seed=seed)(image, target)
        assert len(set(out["labels"][3:].tolist())) == 2, seed
    # max_objects equal to the number of small objects takes them all, with the same draws as
    # no limit at all
    a = SmallObjectCopyPaste(num_copies=1, max_objects=3, seed=4)(image, target)
    b = SmallObjectCopyPaste(num_copies=1, max_objects=None, seed=4)(image, target)
    np.testing.assert_array_equal(a[1]["boxes"], b[1]["boxes"])
    np.testing.assert_array_equal(a[0], b[0])


def test_target_without_labels_pastes_label_zero_with_default_fields():
    image = np.zeros((32, 32, 3), np.uint8)
    target = {"boxes": np.array([[0, 0, 4, 4]], np.float32)}
    _, out = SmallObjectCopyPaste(num_copies=1, scale_jitter=0.0, seed=0)(image, target)
    assert out["labels"].tolist() == [0, 0] and out["labels"].dtype == np.int64
    assert out["boxes"].dtype == np.float32 and out["boxes"].shape == (2, 4)
    # weights default to 1 for the old boxes and are 1 for the pasted one, float32
    assert out["weights"].dtype == np.float32 and out["weights"].tolist() == [1.0, 1.0]
    assert "area" not in out and "iscrowd" not in out and "masks" not in out


def test_ignore_boxes_are_kept_free():
    # a 16 x 16 image; ignore boxes cover all but the 4 x 4 block at (12, 12); the source box
    # (0, 0, 4, 4) itself is occupied too, so the only free place is (12, 12)
    image = np.zeros((16, 16, 3), np.uint8)
    image[0:4, 0:4] = 90
    target = {
        "boxes": np.array([[0, 0, 4, 4]], np.float32),
        "labels": np.array([1]),
        "ignore_boxes": np.array([[4, 0, 16, 12], [0, 4, 4, 16], [4, 12, 12, 16]], np.float32),
    }
    cp = SmallObjectCopyPaste(num_copies=1, scale_jitter=0.0, max_tries=200, seed=0)
    out_img, out = cp(image, target)
    np.testing.assert_array_equal(out["boxes"][1], [12, 12, 16, 16])
    assert (out_img[12:16, 12:16] == 90).all()


def test_extended_target_dtypes_with_float_inputs():
    image, target = scene()
    target = dict(target, weights=np.array([0.5, 1.0]), area=np.array([48.0, 1024.0]),
                  iscrowd=np.array([0.0, 0.0]))
    _, out = SmallObjectCopyPaste(num_copies=1, scale_jitter=0.0, seed=0)(image, target)
    assert out["weights"].dtype == np.float32 and out["area"].dtype == np.float32
    assert out["iscrowd"].dtype == np.int64 and out["iscrowd"].tolist() == [0, 0, 0]
    np.testing.assert_allclose(out["weights"], [0.5, 1.0, 1.0])


def test_region_from_orig_size_and_scale():
    cp = SmallObjectCopyPaste(seed=0)
    image = np.zeros((64, 64, 3), np.uint8)
    # 40 x 100 at scale 0.5 -> content 20 x 50 of the 64 x 64 canvas
    assert cp._region(image, {"orig_size": (40, 100), "img_scale": 0.5}) == (20, 50)
    # content larger than the canvas is clipped to it: 200 x 200 at 0.5 = 100 -> 64
    assert cp._region(image, {"orig_size": (200, 200), "img_scale": 0.5}) == (64, 64)
    # orig_size alone (no scale) says nothing about padding: the whole canvas
    assert cp._region(image, {"orig_size": (40, 100)}) == (64, 64)


def test_scale_jitter_spans_both_sides():
    # a 10 x 10 object, jitter 0.5: each copy is round(10 * U(0.5, 1.5)) in 5..15 pixels
    image = np.zeros((200, 200, 3), np.uint8)
    target = {"boxes": np.array([[0, 0, 10, 10]], np.float32), "labels": np.array([1])}
    cp = SmallObjectCopyPaste(max_area=101.0, num_copies=40, scale_jitter=0.5, max_overlap=1.0,
                              seed=0)
    _, out = cp(image, target)
    sides = out["boxes"][1:, 2] - out["boxes"][1:, 0]
    assert len(sides) == 40 and sides.min() < 10 < sides.max()
    assert sides.min() >= 5 and sides.max() <= 15


def test_rotation_turns_the_copies():
    # an 8 x 2 bar turned by U(-80, 80) degrees: a turn of more than 8 degrees makes the box
    # taller than 2 + 1 (8 sin(8 deg) = 1.1), and 40 draws hardly all stay within +-8 degrees
    image = np.zeros((200, 200, 3), np.uint8)
    target = {"boxes": np.array([[0, 0, 8, 2]], np.float32), "labels": np.array([1])}
    cp = SmallObjectCopyPaste(num_copies=40, scale_jitter=0.0, rotation=80.0, max_overlap=1.0,
                              seed=0)
    _, out = cp(image, target)
    heights = out["boxes"][1:, 3] - out["boxes"][1:, 1]
    assert len(heights) == 40 and heights.max() > 3
    # each copy draws its own angle: the heights are not all the same
    assert len(set(heights.tolist())) > 1


def test_masks_follow_a_partial_object_pasted_over_a_large_one():
    # a 16 x 16 image: a large object (mask everywhere, box not small) and a small object box
    # (0, 0, 4, 4) whose mask covers only its top 2 rows. max_overlap 1 lets the copy land
    # anywhere; the large object's mask is cleared under the copy's 8 object pixels only.
    image = np.zeros((16, 20, 3), np.uint8)
    masks = np.zeros((2, 16, 20), np.uint8)
    masks[0] = 1
    masks[1, 0:2, 0:4] = 1
    target = {
        "boxes": np.array([[0, 0, 20, 16], [0, 0, 4, 4]], np.float32),
        "labels": np.array([1, 2]),
        "masks": masks,
    }
    cp = SmallObjectCopyPaste(max_area=100.0, num_copies=1, scale_jitter=0.0, max_overlap=1.0,
                              seed=0)
    _, out = cp(image, target)
    assert out["masks"].shape == (3, 16, 20) and out["masks"].dtype == np.uint8
    x1, y1, x2, y2 = out["boxes"][2].astype(int)
    assert (x2 - x1, y2 - y1) == (4, 4)
    new = np.zeros((16, 20), np.uint8)
    new[y1 : y1 + 2, x1:x2] = 1
    np.testing.assert_array_equal(out["masks"][2], new)
    np.testing.assert_array_equal(out["masks"][0], 1 - new)


def test_bank_patches_without_masks_paste_full_rectangles_into_mask_targets():
    bank = SmallObjectBank([ObjectPatch(np.full((3, 5, 3), 60, np.uint8), 4)])
    image = np.zeros((16, 20, 3), np.uint8)
    target = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
              "masks": np.zeros((0, 16, 20), np.uint8)}
    cp = SmallObjectCopyPaste(source="bank", bank=bank, num_copies=2, scale_jitter=0.0, seed=0)
    out_img, out = cp(image, target)
    # max_objects None with a bank: one patch, num_copies times
    assert out["labels"].tolist() == [4, 4] and out["masks"].shape == (2, 16, 20)
    for k in range(2):
        x1, y1, x2, y2 = out["boxes"][k].astype(int)
        expected = np.zeros((16, 20), np.uint8)
        expected[y1:y2, x1:x2] = 1
        np.testing.assert_array_equal(out["masks"][k], expected)
        assert (out_img[y1:y2, x1:x2] == 60).all()


def test_bank_paste_into_a_target_without_boxes():
    bank = SmallObjectBank([ObjectPatch(np.full((3, 5, 3), 60, np.uint8), 4)])
    cp = SmallObjectCopyPaste(source="bank", bank=bank, num_copies=1, scale_jitter=0.0, seed=0)
    _, out = cp(np.zeros((16, 20, 3), np.uint8), {"image_id": 2})
    assert out["boxes"].shape == (1, 4) and out["labels"].tolist() == [4]
    x1, y1, x2, y2 = out["boxes"][0]
    assert (x2 - x1, y2 - y1) == (5, 3)


def test_bank_draws_every_patch():
    patches = [ObjectPatch(np.full((2, 2, 3), v, np.uint8), label)
               for v, label in ((10, 1), (20, 2))]
    cp = SmallObjectCopyPaste(source="bank", bank=SmallObjectBank(patches), max_objects=20,
                              num_copies=1, scale_jitter=0.0, max_overlap=1.0, seed=0)
    _, out = cp(np.zeros((32, 32, 3), np.uint8), {"boxes": np.zeros((0, 4), np.float32)})
    # 20 draws from two patches: both appear (each has probability 2^-20 of never appearing)
    assert sorted(set(out["labels"].tolist())) == [1, 2]


class LabelledDataset:
    """Images with one small object each (label = index + 1), optionally with masks."""

    def __init__(self, n, masks=False, objects=1):
        self.n, self.masks, self.objects = n, masks, objects

    def __len__(self):
        return self.n

    def load_raw(self, index):
        image = np.full((64, 64, 3), index, np.uint8)
        boxes = np.array([[2, 2, 10, 6]] * self.objects, np.float32)  # 8 x 4
        target = {"boxes": boxes, "labels": np.full(self.objects, index + 1)}
        if self.masks:
            m = np.zeros((self.objects, 64, 64), np.uint8)
            m[:, 2:4, 2:10] = 1  # top 2 rows of the box
            target["masks"] = m
        return image, target


def test_bank_visit_order_limits_masks_and_scale():
    bank = SmallObjectBank.from_dataset(LabelledDataset(6), max_area=1024.0)
    # the default seed 0 visits images in np.random.default_rng(0).permutation(6)
    order = np.random.default_rng(0).permutation(6) + 1
    assert [p.label for p in bank.patches] == order.tolist()
    # max_items stops at exactly that many
    assert len(SmallObjectBank.from_dataset(LabelledDataset(6), 1024.0, max_items=2)) == 2
    # the default max_items is 1000: one image with 1001 small objects gives 1000
    assert len(SmallObjectBank.from_dataset(LabelledDataset(1, objects=1001), 1024.0)) == 1000
    # masks travel with the crops
    masked = SmallObjectBank.from_dataset(LabelledDataset(1, masks=True), 1024.0)
    np.testing.assert_array_equal(masked.patches[0].mask, [[1] * 8] * 2 + [[0] * 8] * 2)
    # input_size 128 on a 64-pixel image doubles the crops: 8 x 4 -> 16 x 8
    doubled = SmallObjectBank.from_dataset(LabelledDataset(1), 1024.0, input_size=128)
    assert doubled.patches[0].pixels.shape == (8, 16, 3)


def test_build_copy_paste_seeds_options_and_errors():
    image, target = scene()
    built = build_copy_paste({"num_copies": 2, "rotation": 10.0}, seed=5)
    # the config seed plus the offset 2: the same stream as seed 7
    assert COPY_PASTE_SEED_OFFSET == 2
    ref = SmallObjectCopyPaste(num_copies=2, rotation=10.0, seed=7)
    np.testing.assert_array_equal(built(image, target)[1]["boxes"], ref(image, target)[1]["boxes"])
    # an explicit seed option wins over the config seed
    own = build_copy_paste({"num_copies": 2, "seed": 3}, seed=5)
    assert own.rng.seed == 3 and build_copy_paste({}, seed=None).rng.seed is None
    assert build_copy_paste({}, seed=0).rng.seed == 2
    with pytest.raises(ValueError, match="needs the training set to collect its bank from"):
        build_copy_paste({"source": "bank"}, seed=0)
    with pytest.raises(ValueError, match="invalid arguments for transform 'SmallObjectCopyPaste'"):
        build_copy_paste({"no_such_option": 1}, seed=0)


def test_build_copy_paste_collects_a_bank():
    # bank_items caps the bank; max_area and input_size reach the collection
    cp = build_copy_paste({"source": "bank", "bank_items": 3}, seed=0,
                          dataset=LabelledDataset(6))
    assert len(cp.bank) == 3 and "bank_items" not in vars(cp)
    # the bank is visited with the copy-paste seed 0 + 2
    order = (np.random.default_rng(2).permutation(6) + 1)[:3].tolist()
    assert [p.label for p in cp.bank.patches] == order
    # no config seed: the bank is still visited in the seed-0 order
    unseeded = build_copy_paste({"source": "bank"}, seed=None, dataset=LabelledDataset(6))
    assert [p.label for p in unseeded.bank.patches] == (
        np.random.default_rng(0).permutation(6) + 1).tolist()
    # default bank_items 1000
    many = build_copy_paste({"source": "bank"}, seed=0, dataset=LabelledDataset(1, objects=1001))
    assert len(many.bank) == 1000
    # an 8 x 4 box at input_size 128 is 16 x 8 = 128 px^2: max_area 100 leaves it out,
    # max_area 200 keeps it (doubled)
    with pytest.raises(ValueError, match="non-empty SmallObjectBank"):
        build_copy_paste({"source": "bank", "max_area": 100.0}, seed=0,
                         dataset=LabelledDataset(1), input_size=128)
    big = build_copy_paste({"source": "bank", "max_area": 200.0}, seed=0,
                           dataset=LabelledDataset(1), input_size=128)
    assert big.bank.patches[0].pixels.shape == (8, 16, 3)
    # a bank given in the options is used as it is
    given = SmallObjectBank([ObjectPatch(np.zeros((2, 2, 3), np.uint8), 9)])
    assert build_copy_paste({"source": "bank", "bank": given}, seed=0).bank is given


def test_state_dict_resumes_the_stream():
    image, target = scene()
    cp = SmallObjectCopyPaste(num_copies=2, seed=1)
    cp(image, target)
    state = cp.state_dict()
    assert set(state) == {"rng"}
    first = cp(image, target)[1]["boxes"]
    other = SmallObjectCopyPaste(num_copies=2, seed=99)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other(image, target)[1]["boxes"], first)
