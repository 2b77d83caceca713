"""Tests for detkit.data.mosaic (RICAP four-image patching with boxes)."""

from __future__ import annotations

import numpy as np
import pytest

from detkit.data.mosaic import MosaicDataset, mosaic_four, patch_rects


def solid(h, w, value, boxes=(), labels=()):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.full((h, w, 3), value, np.uint8), {
        "boxes": boxes,
        "labels": np.asarray(labels, np.int64),
        "weights": np.ones(len(boxes), np.float32),
        "ignore_boxes": np.zeros((0, 4), np.float32),
        "image_id": int(value),
    }


def test_patch_rects():
    # output 8 x 10 (h x w), boundary (bw, bh) = (3, 5)
    assert patch_rects((8, 10), (3, 5)) == [
        (0, 0, 3, 5),
        (3, 0, 10, 5),
        (0, 5, 3, 8),
        (3, 5, 10, 8),
    ]
    with pytest.raises(ValueError):
        patch_rects((8, 10), (11, 5))


def test_quadrant_pixels_and_clipped_box():
    samples = [
        # A: box [1, 1, 6, 4] crosses the boundary x = 3 -> clipped to [1, 1, 3, 4];
        # visible = (2 * 3) / (5 * 3) = 0.4 >= 0.25, kept
        solid(8, 8, 10, [[1, 1, 6, 4]], [1]),
        # B: crop offset (2, 0) -> box [3, 1, 7, 3] shifts by (3 - 2, 0) = [4, 1, 8, 3]
        solid(8, 8, 20, [[3, 1, 7, 3]], [2]),
        # C: box [0, 0, 3, 2] at offset (0, 0) lands at [0, 5, 3, 7]; box [0, 3, 4, 8] lands at
        # [0, 8, 4, 13] -> clipped to [0, 8, 3, 8]: zero area, outside, dropped
        solid(8, 8, 30, [[0, 0, 3, 2], [0, 3, 4, 8]], [3, 3]),
        # D: box [0, 0, 8, 8] seen through a 5 x 3 patch: visible 15/64 = 0.23 < 0.25, too cut
        solid(8, 8, 40, [[0, 0, 8, 8]], [4]),
    ]
    image, target, drops = mosaic_four(
        samples, (8, 8), boundary=(3, 5), offsets=[(0, 0), (2, 0), (0, 0), (1, 1)]
    )
    assert (image[:5, :3] == 10).all() and (image[:5, 3:] == 20).all()
    assert (image[5:, :3] == 30).all() and (image[5:, 3:] == 40).all()
    np.testing.assert_allclose(target["boxes"], [[1, 1, 3, 4], [4, 1, 8, 3], [0, 5, 3, 7]])
    assert target["labels"].tolist() == [1, 2, 3]
    # areas: 2 * 3 = 6, 4 * 2 = 8, 3 * 2 = 6
    np.testing.assert_allclose(target["area"], [6, 8, 6])
    assert drops == {"outside": 1, "too_cut": 1, "too_small": 0}
    assert target["orig_size"] == (8, 8) and target["img_scale"] == 1.0


def test_too_small_box_dropped_and_scaling():
    # 16 x 16 sources scaled by min(8/16, 8/16) = 0.5 into an 8 x 8 output
    samples = [
        solid(16, 16, 10, [[0, 0, 8, 4]], [1]),  # -> [0, 0, 4, 2]: min side 2, area 8, kept
        solid(16, 16, 20, [[0, 0, 2, 2]], [2]),  # -> [4, 0, 5, 1] in TR: side 1 < 2, too small
        solid(16, 16, 30),
        solid(16, 16, 40),
    ]
    image, target, drops = mosaic_four(samples, (8, 8), (4, 4), [(0, 0)] * 4)
    np.testing.assert_allclose(target["boxes"], [[0, 0, 4, 2]])
    assert drops == {"outside": 0, "too_cut": 0, "too_small": 1}
    assert (image[:4, 4:] == 20).all()


def test_small_source_leaves_padding():
    samples = [solid(4, 8, 10), solid(4, 8, 20), solid(4, 8, 30), solid(4, 8, 40)]
    # scale min(8/4, 8/8) = 1 -> 4 x 8 images; the bottom patches are 6 rows but images 4 rows
    image, _, _ = mosaic_four(samples, (8, 8), (4, 2), [(0, 0)] * 4, pad_value=7)
    assert (image[2:6, :4] == 30).all() and (image[6:, :4] == 7).all()


class FourImages:
    transforms = None

    def __init__(self):
        self.items = [solid(8, 8, 10 * (i + 1), [[2, 2, 6, 6]], [i + 1]) for i in range(4)]

    def __len__(self):
        return 4

    def load_raw(self, index):
        return self.items[index]


@pytest.mark.filterwarnings("ignore::detkit.data.transforms.BoxesDroppedWarning")
def test_dataset_is_seeded_and_counts():
    a = MosaicDataset(FourImages(), output_size=8, seed=3)
    b = MosaicDataset(FourImages(), output_size=8, seed=3)
    for i in range(4):
        img_a, tgt_a = a.load_raw(i)
        img_b, tgt_b = b.load_raw(i)
        np.testing.assert_array_equal(img_a, img_b)
        np.testing.assert_array_equal(tgt_a["boxes"], tgt_b["boxes"])
        assert img_a.shape == (8, 8, 3)
        assert ((tgt_a["boxes"] >= 0) & (tgt_a["boxes"] <= 8)).all()
    for seed in range(5):
        fresh = MosaicDataset(FourImages(), output_size=8, seed=seed)
        _, target = fresh.load_raw(0)
        # four sources with one box each: every box is either kept or counted as dropped
        assert len(target["boxes"]) + sum(fresh.dropped.values()) == 4
    image, target = a[0]
    assert tuple(image.shape) == (3, 8, 8)
