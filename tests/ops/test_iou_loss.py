"""IoU-family losses: hand values, torchvision parity, edge cases, property tests."""

import math

import pytest
import torch
import torchvision
from hypothesis import example, given, settings
from hypothesis import strategies as st

from detkit.ops import IoULoss, box_loss_fn, ciou_loss, diou_loss, giou_loss, iou_loss

LOSSES = [iou_loss, giou_loss, diou_loss, ciou_loss]
TV = {
    giou_loss: torchvision.ops.generalized_box_iou_loss,
    diou_loss: torchvision.ops.distance_box_iou_loss,
    ciou_loss: torchvision.ops.complete_box_iou_loss,
}


def random_boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 50 + 1
    return torch.cat([xy, xy + wh], dim=1)


# pred (0, 0, 4, 2) and target (2, 0, 4, 4): IoU 1/3, enclosing area 16, union 12,
# rho^2 / c^2 = 2 / 32, v = 4/pi^2 atan(3/4)^2 (see tests/ops/test_boxes.py).
PRED = torch.tensor([[0.0, 0.0, 4.0, 2.0]])
TARGET = torch.tensor([[2.0, 0.0, 4.0, 4.0]])
V = 4 / math.pi**2 * math.atan(0.75) ** 2
HAND = {
    iou_loss: 1 - 1 / 3,
    giou_loss: 1 - 1 / 3 + 4 / 16,
    diou_loss: 1 - 1 / 3 + 2 / 32,
    ciou_loss: 1 - 1 / 3 + 2 / 32 + V / ((1 - 1 / 3) + V) * V,  # aspect term is not 0
}


@pytest.mark.parametrize("fn", LOSSES)
def test_hand_worked_values(fn):
    assert fn(PRED, TARGET).item() == pytest.approx(HAND[fn], rel=1e-6)


@pytest.mark.parametrize("fn", [giou_loss, diou_loss, ciou_loss])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_equals_torchvision_values_and_grads(fn, reduction):
    b1, b2 = random_boxes(64, 0), random_boxes(64, 1)
    p1 = b1.clone().requires_grad_(True)
    p2 = b1.clone().requires_grad_(True)
    ours = fn(p1, b2, reduction=reduction)
    theirs = TV[fn](p2, b2, reduction=reduction)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-4, atol=1e-6)


def test_iou_loss_equals_one_minus_torchvision_iou():
    b1, b2 = random_boxes(50, 2), random_boxes(50, 3)
    expected = 1 - torch.diagonal(torchvision.ops.box_iou(b1, b2))
    torch.testing.assert_close(iou_loss(b1, b2), expected, rtol=1e-5, atol=1e-6)


def test_ciou_alpha_has_no_gradient():
    # With alpha detached, d(alpha * v)/dx = alpha * dv/dx. Check against an explicit
    # formula where alpha is a constant computed beforehand.
    pred = PRED.clone().requires_grad_(True)
    ciou_loss(pred, TARGET).sum().backward()
    alpha = V / ((1 - 1 / 3) + V)
    pred2 = PRED.clone().requires_grad_(True)
    x1, y1, x2, y2 = pred2.unbind(-1)
    iw = torch.clamp(torch.minimum(x2, TARGET[:, 2]) - torch.maximum(x1, TARGET[:, 0]), min=0)
    ih = torch.clamp(torch.minimum(y2, TARGET[:, 3]) - torch.maximum(y1, TARGET[:, 1]), min=0)
    inter = iw * ih
    union = (x2 - x1) * (y2 - y1) + 8 - inter
    cw = torch.maximum(x2, TARGET[:, 2]) - torch.minimum(x1, TARGET[:, 0])
    ch = torch.maximum(y2, TARGET[:, 3]) - torch.minimum(y1, TARGET[:, 1])
    rho2 = ((x1 + x2 - 6) ** 2 + (y1 + y2 - 4) ** 2) / 4
    v = 4 / math.pi**2 * (math.atan(0.5) - torch.atan((x2 - x1) / (y2 - y1))) ** 2
    loss = 1 - inter / union + rho2 / (cw**2 + ch**2) + alpha * v
    loss.sum().backward()
    torch.testing.assert_close(pred.grad, pred2.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fn", LOSSES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_empty_input_gives_zero_with_grad(fn, reduction):
    pred = torch.zeros(0, 4, requires_grad=True)
    loss = fn(pred, torch.zeros(0, 4), reduction=reduction)
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad is not None and pred.grad.shape == (0, 4)


@pytest.mark.parametrize("fn", LOSSES)
def test_unknown_reduction_raises(fn):
    with pytest.raises(ValueError, match="unknown reduction"):
        fn(PRED, TARGET, reduction="avg")


@pytest.mark.parametrize("fn", LOSSES)
def test_half_is_upcast_and_inputs_untouched(fn):
    p, t = PRED.half(), TARGET.half()
    p0 = p.clone()
    out = fn(p, t)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(HAND[fn], rel=1e-3)
    assert torch.equal(p, p0)


def test_module_weights_and_loss_weight():
    b1, b2 = random_boxes(4, 5), random_boxes(4, 6)
    w = torch.tensor([1.0, 0.5, 0.0, 2.0])
    per_box = ciou_loss(b1, b2)
    # mean of weighted losses over N = 4, times loss_weight 2
    expected = 2.0 * (per_box * w).sum() / 4
    torch.testing.assert_close(IoULoss("ciou", loss_weight=2.0)(b1, b2, w), expected)
    with pytest.raises(ValueError, match="unknown IoU loss"):
        IoULoss("l1")
    with pytest.raises(ValueError, match="weight must have shape"):
        IoULoss("giou")(b1, b2, w[:2])


def test_box_loss_fn_dispatch():
    assert box_loss_fn("ciou") is ciou_loss
    d1, d2 = torch.tensor([[0.0, 0.0, 0.0, 0.0]]), torch.tensor([[0.05, 1.0, 0.0, 0.0]])
    # smooth-L1 with beta 1/9: |0.05| < 1/9 -> 0.5 * 0.05^2 / (1/9) = 0.01125;
    # |1.0| >= 1/9 -> 1.0 - 0.5/9 = 0.94444...; sum over coordinates
    assert box_loss_fn("smooth_l1")(d1, d2).item() == pytest.approx(0.01125 + 1 - 0.5 / 9)
    with pytest.raises(ValueError, match="valid: ciou, diou, giou, iou, smooth_l1"):
        box_loss_fn("l2")


coord = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)
side = st.sampled_from([0.0, 1e-3, 1.0, 7.5, 300.0, 1e4])


@st.composite
def box(draw):
    x, y = draw(coord), draw(coord)
    return [x, y, x + draw(side), y + draw(side)]


@settings(max_examples=60, deadline=None)
@given(b1=box(), b2=box(), same=st.booleans())
def test_degenerate_boxes_give_finite_loss_and_grad(b1, b2, same):
    """Zero width/height, identical, far apart and huge coordinates: all finite."""
    t1 = torch.tensor([b1])
    t2 = torch.tensor([b1 if same else b2])
    for fn in LOSSES:
        p = t1.clone().requires_grad_(True)
        loss = fn(p, t2, reduction="sum")
        loss.backward()
        assert torch.isfinite(loss), (fn.__name__, b1, b2)
        assert torch.isfinite(p.grad).all(), (fn.__name__, b1, b2)


half_side = st.sampled_from([1.0, 7.5, 300.0, 1e4])
# fp16 spacing is 2 above 2048, so a 1-px box there collapses to zero area: keep
# the corners within +-1000 (spacing <= 0.5)
half_coord = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=16)


@settings(max_examples=40, deadline=None)
@given(
    x1=half_coord,
    y1=half_coord,
    x2=half_coord,
    y2=half_coord,
    s=st.lists(half_side, min_size=4, max_size=4),
)
def test_fp16_boxes_give_finite_loss_and_grad(x1, y1, x2, y2, s):
    """fp16 inputs (upcast inside) with far-apart, large and identical boxes stay finite.

    Boxes of zero area are left out here: near them the GIoU/DIoU denominators are
    ~eps, gradients exceed the fp16 range (65504) and AMP's GradScaler skips the step.
    """
    t1 = torch.tensor([[x1, y1, x1 + s[0], y1 + s[1]]]).half()
    for t2 in (torch.tensor([[x2, y2, x2 + s[2], y2 + s[3]]]).half(), t1.clone()):
        for fn in LOSSES:
            p = t1.clone().requires_grad_(True)
            loss = fn(p, t2, reduction="sum")
            loss.backward()
            assert torch.isfinite(loss) and torch.isfinite(p.grad).all(), fn.__name__


# ---- fault suite: hostile boxes (docs/reliability.md) -----------------------------------

inverted_side = st.sampled_from([-1e4, -3.0, -1.5e-7, -1e-7, -5e-8, 0.0, 1e-7, 2.0, 1e4])


@st.composite
def any_finite_box(draw):
    """Boxes with zero, tiny, negative (inverted) and h = -eps sides."""
    x, y = draw(coord), draw(coord)
    return [x, y, x + draw(inverted_side), y + draw(inverted_side)]


@pytest.mark.faults
@settings(max_examples=120, deadline=None)
@given(b1=any_finite_box(), b2=box())
@example(b1=[0.0, 0.0, -5e-08, 2.0], b2=[0.0, 0.0, 0.0, 0.0])  # union + eps was exactly 0
@example(b1=[0.0, 0.0, 2.0, -1e-07], b2=[0.0, 0.0, 2.0, 1.0])  # h + eps was exactly 0
def test_inverted_and_minus_eps_boxes_give_finite_loss_and_grad(b1, b2):
    """Predictions may leave the valid box set during training; every loss and its
    gradient stay finite there (issue 13: ciou_loss gave NaN gradients at h = -eps)."""
    t2 = torch.tensor([b2])
    for fn in LOSSES:
        p = torch.tensor([b1], requires_grad=True)
        loss = fn(p, t2, reduction="sum")
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(p.grad).all(), (fn.__name__, b1, b2)


@pytest.mark.faults
@settings(max_examples=60, deadline=None)
@given(b1=box(), b2=box(), bad=st.sampled_from([float("nan"), float("inf"), -float("inf")]),
       corner=st.integers(0, 3))
def test_a_non_finite_row_stays_in_its_row(b1, b2, bad, corner):
    """A NaN / inf prediction stays in its own row: the other rows' losses and
    gradients are exactly those computed without it."""
    broken = list(b1)
    broken[corner] = bad
    target = torch.tensor([b2, b2])
    for fn in LOSSES:
        p = torch.tensor([b1, broken], requires_grad=True)
        loss = fn(p, target)
        loss[0].backward()
        alone = torch.tensor([b1], requires_grad=True)
        ref = fn(alone, target[:1])
        ref.sum().backward()
        assert torch.equal(loss[0:1].detach(), ref.detach()), fn.__name__
        assert torch.equal(p.grad[0], alone.grad[0]), fn.__name__


@pytest.mark.faults
def test_ciou_gradient_at_minus_eps_height_by_hand():
    """Issue 13 reproduction: h = -eps used to divide by exactly zero (NaN gradient).

    pred (0, 0, 2, -1e-7), target (0, 0, 2, 1): IoU 0, union 2, c^2 = 2^2 + 1^2 = 5,
    rho^2 = ((0 + 2 - 0 - 2)^2 + (-1e-7 - 1)^2) / 4 ~ 0.25, so DIoU loss ~ 1 + 0.05;
    the pred's aspect term is atan(2 / eps) ~ pi/2 against atan(2), so
    v = 4/pi^2 (atan 2 - pi/2)^2 ~ 0.0872 and alpha = v / (1 + v).
    """
    p = torch.tensor([[0.0, 0.0, 2.0, -1e-7]], requires_grad=True)
    loss = ciou_loss(p, torch.tensor([[0.0, 0.0, 2.0, 1.0]]), reduction="sum")
    loss.backward()
    v = 4 / math.pi**2 * (math.atan(2.0) - math.pi / 2) ** 2
    assert loss.item() == pytest.approx(1 + 0.25 / 5 + v * v / (1 + v), rel=1e-5)
    assert torch.isfinite(p.grad).all()


def test_module_defaults_eps_and_one_box_mean():
    pred = torch.tensor([[0.0, 0.0, 4.0, 2.0], [1.0, 1.0, 3.0, 5.0]])
    target = torch.tensor([[1.0, 0.0, 5.0, 3.0], [0.0, 2.0, 3.0, 4.0]])
    # defaults: CIoU, mean, weight 1
    torch.testing.assert_close(IoULoss()(pred, target), ciou_loss(pred, target).mean())
    for kind, fn in (("iou", iou_loss), ("giou", giou_loss), ("diou", diou_loss)):
        torch.testing.assert_close(IoULoss(kind)(pred, target), fn(pred, target).mean())
    # eps reaches the loss: IoU = inter / (union + eps); a large eps changes it
    big = IoULoss("iou", eps=10.0)(pred[:1], target[:1])
    # box 0: inter (1..4) x (0..2) = 6, union 8 + 12 - 6 = 14: 1 - 6 / 24
    torch.testing.assert_close(big, torch.tensor(1 - 6 / 24))
    # "mean" of one box is that box's loss, not zero
    one = iou_loss(pred[:1], target[:1], reduction="mean")
    torch.testing.assert_close(one, torch.tensor(1 - 6 / 14))


def test_smooth_l1_is_per_box():
    fn = box_loss_fn("smooth_l1")
    a = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    b = torch.zeros(2, 4)
    # beta 1/9: |d| = 1 >= 1/9 -> 1 - 1/18 for box 1, 0 for box 0
    loss = fn(a, b)
    assert loss.shape == (2,)
    torch.testing.assert_close(loss, torch.tensor([0.0, 1 - 1 / 18]))
