"""Box coder: hand-computed deltas, clamping, round trips and the regression loss."""

import math

import pytest
import torch

from detkit.models.box_coder import (
    BBOX_XFORM_CLIP,
    BoxCoder,
    box_regression_loss,
    default_box_loss_weight,
    normalise_box_loss,
)

ANCHOR = torch.tensor([[0.0, 0.0, 10.0, 10.0]])  # centre (5, 5), w = h = 10
BOX = torch.tensor([[2.0, 4.0, 22.0, 14.0]])  # centre (12, 9), w = 20, h = 10


def test_hand_computed_delta():
    # dx = (12 - 5) / 10 = 0.7, dy = (9 - 5) / 10 = 0.4, dw = log(20 / 10), dh = log(1) = 0
    deltas = BoxCoder().encode(BOX, ANCHOR)
    assert deltas[0].tolist() == pytest.approx([0.7, 0.4, math.log(2.0), 0.0])
    # weights (10, 10, 5, 5) scale each term: 7, 4, 5 log 2, 0
    weighted = BoxCoder((10, 10, 5, 5)).encode(BOX, ANCHOR)
    assert weighted[0].tolist() == pytest.approx([7.0, 4.0, 5 * math.log(2.0), 0.0])


def test_decode_of_hand_delta():
    out = BoxCoder().decode(torch.tensor([[0.7, 0.4, math.log(2.0), 0.0]]), ANCHOR)
    assert out[0].tolist() == pytest.approx(BOX[0].tolist())


def test_round_trip_random_boxes():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 100
    anchors = torch.cat([xy, xy + 5 + torch.rand(50, 2, generator=g) * 60], dim=1)
    xy2 = torch.rand(50, 2, generator=g) * 100
    boxes = torch.cat([xy2, xy2 + 5 + torch.rand(50, 2, generator=g) * 60], dim=1)
    for weights in [(1, 1, 1, 1), (10, 10, 5, 5)]:
        coder = BoxCoder(weights)
        assert torch.allclose(coder.decode(coder.encode(boxes, anchors), anchors), boxes, atol=1e-4)


def test_clamp_on_dw_dh():
    # dw = dh = 10 is clamped to log(1000 / 16): w = h = 10 * 62.5 = 625 around centre 5
    out = BoxCoder().decode(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), ANCHOR)
    assert BBOX_XFORM_CLIP == pytest.approx(math.log(62.5))
    assert out[0].tolist() == pytest.approx([-307.5, -307.5, 317.5, 317.5])


def test_class_specific_decode():
    deltas = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.7, 0.4, math.log(2.0), 0.0]])
    out = BoxCoder().decode(deltas, ANCHOR)
    assert out.shape == (1, 8)
    assert out[0].tolist() == pytest.approx([0, 0, 10, 10] + BOX[0].tolist())


def test_smooth_l1_loss_on_deltas():
    # target deltas (0.7, 0.4, log 2, 0), prediction 0, beta = 1/9:
    # |x| >= beta -> |x| - beta / 2; 0 -> 0
    beta = 1.0 / 9
    expected = sum(abs(v) - beta / 2 for v in (0.7, 0.4, math.log(2.0)))
    loss = box_regression_loss("smooth_l1", torch.zeros(1, 4), ANCHOR, BOX, BoxCoder())
    assert loss.tolist() == pytest.approx([expected], rel=1e-5)


def test_giou_loss_on_decoded_boxes_with_weights():
    # zero deltas decode to the anchor (0, 0, 10, 10). Against (2, 4, 22, 14):
    # inter 8 * 6 = 48, union 100 + 200 - 48 = 252, IoU = 48 / 252,
    # enclosing (0, 0, 22, 14) = 308, GIoU = IoU - (308 - 252) / 308, loss = 1 - GIoU
    giou = 48 / 252 - 56 / 308
    loss = box_regression_loss(
        "giou", torch.zeros(1, 4), ANCHOR, BOX, BoxCoder(), weights=torch.tensor([0.5])
    )
    assert loss.tolist() == pytest.approx([0.5 * (1 - giou)], rel=1e-5)


def test_callable_loss_and_gradient():
    deltas = torch.zeros(1, 4, requires_grad=True)

    def l1(pred, target):
        return (pred - target).abs().sum(dim=1)

    loss = box_regression_loss(l1, deltas, ANCHOR, BOX, BoxCoder())
    # |0-2| + |0-4| + |10-22| + |10-14| = 22
    assert loss.tolist() == pytest.approx([22.0])
    loss.sum().backward()
    assert deltas.grad is not None and torch.isfinite(deltas.grad).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown box loss"):
        box_regression_loss("l2", torch.zeros(1, 4), ANCHOR, BOX, BoxCoder())
    with pytest.raises(ValueError, match="weights"):
        BoxCoder((1, 1, 0, 1))
    with pytest.raises(ValueError, match="differ"):
        BoxCoder().encode(BOX, torch.zeros(2, 4))


def test_normalise_box_loss_weights_and_divides_by_the_sampled_count() -> None:
    per_box = torch.tensor([0.5, 0.3])
    # smooth-L1: weight 1, (0.5 + 0.3) / 8 sampled = 0.1
    torch.testing.assert_close(normalise_box_loss(per_box, "smooth_l1", 8), torch.tensor(0.1))
    # IoU family: weight 12, 12 * 0.8 / 8 = 1.2
    torch.testing.assert_close(normalise_box_loss(per_box, "ciou", 8), torch.tensor(1.2))
    # an explicit weight wins: 2 * 0.8 / 8 = 0.2
    torch.testing.assert_close(normalise_box_loss(per_box, "ciou", 8, 2.0), torch.tensor(0.2))
    assert default_box_loss_weight("giou") == 12.0
    assert default_box_loss_weight("smooth_l1") == 1.0
    empty = torch.zeros(0, requires_grad=True)
    assert float(normalise_box_loss(empty, "ciou", 8)) == 0.0
