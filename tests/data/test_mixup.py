"""Tests for detkit.data.mixup (visually coherent mixup, Zhang et al. 2019)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detkit.data.mixup import MixupDataset, mixup_pair


def sample(h, w, value, boxes, labels, weights, image_id):
    image = np.full((h, w, 3), value, np.uint8)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return image, {
        "boxes": boxes,
        "labels": np.asarray(labels, np.int64),
        "weights": np.asarray(weights, np.float32),
        "area": ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).astype(np.float32),
        "iscrowd": np.zeros(len(boxes), np.int64),
        "ignore_boxes": np.zeros((0, 4), np.float32),
        "image_id": image_id,
        "orig_size": (h, w),
        "img_scale": 1.0,
    }


def test_pixels_and_weights_exact():
    img_a, tgt_a = sample(2, 3, 100, [[0, 0, 1, 1], [1, 0, 3, 2]], [1, 2], [1.0, 0.5], 1)
    img_b, tgt_b = sample(3, 2, 200, [[0, 1, 2, 3]], [3], [1.0], 2)
    image, target = mixup_pair(img_a, tgt_a, img_b, tgt_b, 0.25)
    # canvas = (max(2, 3), max(3, 2)) = 3 x 3
    assert image.shape == (3, 3, 3)
    # both cover (0..1, 0..1): 0.25 * 100 + 0.75 * 200 = 25 + 150 = 175
    # only A covers column 2 of rows 0..1: 0.25 * 100 = 25
    # only B covers row 2, columns 0..1: 0.75 * 200 = 150; (2, 2): neither -> 0
    expected = np.array([[175, 175, 25], [175, 175, 25], [150, 150, 0]], np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], expected)
    # weights: A's [1, 0.5] * 0.25 = [0.25, 0.125]; B's [1] * 0.75 = [0.75]
    np.testing.assert_allclose(target["weights"], [0.25, 0.125, 0.75])
    np.testing.assert_allclose(target["boxes"], [[0, 0, 1, 1], [1, 0, 3, 2], [0, 1, 2, 3]])
    assert target["labels"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(target["area"], [1, 4, 4])
    assert target["orig_size"] == (3, 3) and target["img_scale"] == 1.0
    assert target["image_id"] == 1
    assert (img_a == 100).all() and tgt_a["weights"].tolist() == [1.0, 0.5]  # inputs untouched


def test_rounding_of_blend():
    img_a, tgt_a = sample(1, 1, 3, [], [], [], 1)
    img_b, tgt_b = sample(1, 1, 4, [], [], [], 2)
    image, target = mixup_pair(img_a, tgt_a, img_b, tgt_b, 0.3)
    # 0.3 * 3 + 0.7 * 4 = 0.9 + 2.8 = 3.7 -> rounds to 4
    assert image[0, 0, 0] == 4 and target["boxes"].shape == (0, 4)


def test_bad_ratio_raises():
    img_a, tgt_a = sample(1, 1, 3, [], [], [], 1)
    with pytest.raises(ValueError):
        mixup_pair(img_a, tgt_a, img_a, tgt_a, 1.5)


class TwoImages:
    transforms = None

    def __init__(self):
        self.items = [
            sample(4, 4, 10, [[0, 0, 2, 2]], [1], [1.0], 1),
            sample(4, 6, 250, [[1, 1, 4, 3]], [2], [1.0], 2),
        ]

    def __len__(self):
        return 2

    def load_raw(self, index):
        return self.items[index]


def test_dataset_wrapper_mixes_and_is_seeded():
    ds = MixupDataset(TwoImages(), p=1.0, alpha=1.5, seed=0)
    image, target = ds.load_raw(0)
    lam = target["weights"][0]
    # the partner is the other image; weights of A and B sum to 1 (unit weights before)
    assert target["labels"].tolist() == [1, 2] and target["weights"].sum() == pytest.approx(1.0)
    # pixel (0, 0): lam * 10 + (1 - lam) * 250; column 5 only B: (1 - lam) * 250
    assert image[0, 0, 0] == np.rint(lam * 10 + (1 - lam) * 250)
    assert image[0, 5, 0] == np.rint((1 - lam) * 250)
    again = MixupDataset(TwoImages(), p=1.0, alpha=1.5, seed=0).load_raw(0)
    np.testing.assert_array_equal(again[0], image)
    item_img, item_tgt = ds[1]
    assert isinstance(item_img, torch.Tensor) and item_img.shape == (3, 4, 6)
    assert isinstance(item_tgt["weights"], torch.Tensor)


def test_dataset_wrapper_p0_passes_through():
    ds = MixupDataset(TwoImages(), p=0.0, seed=0)
    image, target = ds.load_raw(1)
    assert image.shape == (4, 6, 3) and target["weights"].tolist() == [1.0]
