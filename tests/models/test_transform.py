"""Input step: normalisation values, padding sizes and errors."""

import pytest
import torch

from detkit.models.transform import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DetectionTransform,
    batch_images,
    padded_batch_size,
)


def test_padded_batch_size():
    # max h = 120 -> 128, max w = 130 -> 160
    assert padded_batch_size([(100, 130), (120, 90)], 32) == (128, 160)
    assert padded_batch_size([(64, 64)], 32) == (64, 64)


def test_transform_normalises_and_pads_right_bottom():
    a = torch.full((3, 100, 130), 0.5)
    b = torch.zeros(3, 120, 90)
    out = DetectionTransform()([a, b])
    assert out.tensor.shape == (2, 3, 128, 160)
    assert out.image_sizes == [(100, 130), (120, 90)]
    # image a, channel 0: (0.5 - 0.485) / 0.229
    assert out.tensor[0, 0, 0, 0].item() == pytest.approx(
        (0.5 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    )
    # image b, channel 2: (0 - 0.406) / 0.225
    assert out.tensor[1, 2, 119, 89].item() == pytest.approx(-IMAGENET_MEAN[2] / IMAGENET_STD[2])
    # padding (below row 100 / right of column 130 for a) is exactly 0
    assert out.tensor[0, :, 100:, :].abs().max().item() == 0.0
    assert out.tensor[0, :, :, 130:].abs().max().item() == 0.0
    assert out.tensor[1, :, :, 90:].abs().max().item() == 0.0
    # inputs untouched
    assert a.max().item() == 0.5 and b.max().item() == 0.0


def test_custom_mean_std_and_divisor():
    t = DetectionTransform(mean=(0.0, 0.0, 0.0), std=(0.5, 0.5, 0.5), size_divisible=16)
    out = t([torch.ones(3, 17, 5)])
    # 17 -> 32, 5 -> 16; value 1 / 0.5 = 2
    assert out.tensor.shape == (1, 3, 32, 16)
    assert out.tensor[0, 1, 16, 4].item() == 2.0


def test_batch_images_keeps_values():
    img = torch.arange(6.0).reshape(1, 2, 3)
    out = batch_images([img], size_divisible=4, pad_value=-1.0)
    assert out.tensor.tolist() == [
        [[[0, 1, 2, -1], [3, 4, 5, -1], [-1, -1, -1, -1], [-1, -1, -1, -1]]]
    ]


def test_bad_images():
    t = DetectionTransform()
    with pytest.raises(ValueError, match="at least one"):
        t([])
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        t([torch.zeros(1, 8, 8)])
    with pytest.raises(ValueError, match="uint8"):
        t([torch.zeros(3, 8, 8, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="std"):
        DetectionTransform(std=(1.0, 0.0, 1.0))
