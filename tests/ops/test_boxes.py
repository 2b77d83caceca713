"""Box formats, area, clipping and the IoU family against hand values and torchvision."""

import math

import pytest
import torch
import torchvision

from detkit.ops import (
    aligned_box_iou,
    aligned_complete_box_iou,
    aligned_distance_box_iou,
    aligned_generalized_box_iou,
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    complete_box_iou,
    distance_box_iou,
    generalized_box_iou,
    remove_small_boxes,
)


def random_boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 50 + 1
    return torch.cat([xy, xy + wh], dim=1)


# A = (0, 0, 4, 2): w 4, h 2, area 8.  B = (2, 0, 4, 4): w 2, h 4, area 8.
# intersection x [2, 4] x y [0, 2] = 4; union = 8 + 8 - 4 = 12; IoU = 1/3.
# enclosing box (0, 0, 4, 4): area 16, diagonal^2 = 32.
# centres (2, 1) and (3, 2): rho^2 = 1 + 1 = 2.
A = torch.tensor([[0.0, 0.0, 4.0, 2.0]])
B = torch.tensor([[2.0, 0.0, 4.0, 4.0]])
IOU = 1 / 3
GIOU = 1 / 3 - (16 - 12) / 16  # = 1/12
DIOU = 1 / 3 - 2 / 32  # = 13/48
# v = 4/pi^2 (atan(w_B/h_B) - atan(w_A/h_A))^2 = 4/pi^2 (atan(1/2) - atan(2))^2, and
# atan(2) - atan(1/2) = atan(3/4) (tangent subtraction: (2 - 1/2) / (1 + 1) = 3/4).
V = 4 / math.pi**2 * math.atan(0.75) ** 2
ALPHA = V / ((1 - IOU) + V)
CIOU = DIOU - ALPHA * V


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (box_iou, IOU),
        (generalized_box_iou, GIOU),
        (distance_box_iou, DIOU),
        (complete_box_iou, CIOU),
    ],
)
def test_hand_worked_pair(fn, expected):
    assert fn(A, B).item() == pytest.approx(expected, rel=1e-6)
    assert fn(B, A).shape == (1, 1)


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (aligned_box_iou, IOU),
        (aligned_generalized_box_iou, GIOU),
        (aligned_distance_box_iou, DIOU),
        (aligned_complete_box_iou, CIOU),
    ],
)
def test_hand_worked_aligned(fn, expected):
    out = fn(torch.cat([A, A]), torch.cat([B, A]))
    assert out.shape == (2,)
    assert out[0].item() == pytest.approx(expected, rel=1e-6)
    assert out[1].item() == pytest.approx(1.0, rel=1e-6)  # a box with itself


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (box_iou, torchvision.ops.box_iou),
        (generalized_box_iou, torchvision.ops.generalized_box_iou),
        (distance_box_iou, torchvision.ops.distance_box_iou),
        (complete_box_iou, torchvision.ops.complete_box_iou),
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairwise_equals_torchvision(ours, theirs, seed):
    b1, b2 = random_boxes(40, seed), random_boxes(30, seed + 100)
    torch.testing.assert_close(ours(b1, b2), theirs(b1, b2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("aligned", "pairwise"),
    [
        (aligned_box_iou, box_iou),
        (aligned_generalized_box_iou, generalized_box_iou),
        (aligned_distance_box_iou, distance_box_iou),
        (aligned_complete_box_iou, complete_box_iou),
    ],
)
def test_aligned_is_pairwise_diagonal(aligned, pairwise):
    b1, b2 = random_boxes(25, 3), random_boxes(25, 4)
    torch.testing.assert_close(aligned(b1, b2), torch.diagonal(pairwise(b1, b2)))


def test_aligned_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        aligned_box_iou(random_boxes(3, 0), random_boxes(4, 0))


def test_box_convert_round_trips_and_values():
    xyxy = torch.tensor([[10.0, 20.0, 40.0, 80.0]])
    # xywh: (10, 20, 30, 60); cxcywh: ((10+40)/2, (20+80)/2, 30, 60) = (25, 50, 30, 60)
    assert box_convert(xyxy, "xyxy", "xywh").tolist() == [[10.0, 20.0, 30.0, 60.0]]
    assert box_convert(xyxy, "xyxy", "cxcywh").tolist() == [[25.0, 50.0, 30.0, 60.0]]
    b = random_boxes(20, 5)
    for fmt in ("xywh", "cxcywh"):
        torch.testing.assert_close(box_convert(box_convert(b, "xyxy", fmt), fmt, "xyxy"), b)
        torch.testing.assert_close(
            box_convert(b, "xyxy", fmt), torchvision.ops.box_convert(b, "xyxy", fmt)
        )
    with pytest.raises(ValueError, match="unknown box format"):
        box_convert(b, "xyxy", "yxyx")


def test_area_clip_remove_small_do_not_modify_input():
    b = torch.tensor([[-5.0, 2.0, 30.0, 12.0], [5.0, 5.0, 6.0, 50.0]])
    before = b.clone()
    # areas: 35 * 10 = 350 and 1 * 45 = 45
    assert box_area(b).tolist() == [350.0, 45.0]
    # clip to h=20, w=25: (0, 2, 25, 12) and (5, 5, 6, 20)
    assert clip_boxes_to_image(b, (20, 25)).tolist() == [[0, 2, 25, 12], [5, 5, 6, 20]]
    # the second box is 1 px wide
    assert remove_small_boxes(b, 2.0).tolist() == [0]
    assert torch.equal(b, before)


def test_half_precision_is_upcast():
    b1, b2 = random_boxes(5, 7), random_boxes(5, 8)
    out = complete_box_iou(b1.half(), b2.half())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, complete_box_iou(b1.half().float(), b2.half().float()))


def test_batched_shapes_sub_pixel_areas_and_small_box_bounds():
    # [2, 3, 4] boxes: formats, area and clipping work on the last axis whatever the batch
    xyxy = torch.tensor([[[1.0, 2, 4, 8], [0, 0, 1, 1], [5, 5, 9, 6]],
                         [[2.0, 1, 3, 5], [-2, -3, 30, 40], [7, 7, 7, 7]]])
    xywh = box_convert(xyxy, "xyxy", "xywh")
    assert xywh[0, 0].tolist() == [1.0, 2.0, 3.0, 6.0]  # (x1, y1, w = 4 - 1, h = 8 - 2)
    cxcywh = box_convert(xywh, "xywh", "cxcywh")
    assert cxcywh[1, 0].tolist() == [2.5, 3.0, 1.0, 4.0]
    torch.testing.assert_close(box_convert(cxcywh, "cxcywh", "xyxy"), xyxy)
    clipped = clip_boxes_to_image(xyxy, (20, 10))  # (height, width)
    assert clipped[1, 1].tolist() == [0.0, 0.0, 10.0, 20.0] and clipped.shape == (2, 3, 4)
    # sides below one pixel: 0.5 x 0.25 = 0.125
    assert box_area(torch.tensor([[0.0, 0.0, 0.5, 0.25]])).tolist() == [0.125]
    # non-square boxes away from the origin; sides equal to min_size are kept
    b = torch.tensor([[10.0, 2, 12, 30], [3, 20, 40, 21.5], [5, 5, 7, 7], [0, 10, 5, 15]])
    # widths 2, 37, 2, 5; heights 28, 1.5, 2, 5
    assert remove_small_boxes(b, 2.0).tolist() == [0, 2, 3]
    assert remove_small_boxes(b, 1.5).tolist() == [0, 1, 2, 3]
