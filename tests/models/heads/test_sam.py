"""Tests of the ThunderNet Spatial Attention Module."""

from __future__ import annotations

import math

import pytest
import torch

from detkit.models.heads.sam import SpatialAttentionModule


def test_default_channels_and_shape() -> None:
    sam = SpatialAttentionModule()
    cem = torch.randn(2, 245, 20, 20)
    rpn = torch.randn(2, 256, 20, 20)
    out = sam(cem, rpn)
    assert sam.out_channels == 245  # 5 x 7 x 7, the PSRoIAlign layout
    assert out.shape == (2, 245, 20, 20)
    # the weights lie in (0, 1), so no value grows
    assert bool((out.abs() <= cem.abs()).all())


def test_formula_on_hand_set_case() -> None:
    # 1 RPN channel -> 2 output channels; conv weights +1 and -1; BN the identity.
    sam = SpatialAttentionModule(rpn_channels=1, out_channels=2).eval()
    with torch.no_grad():
        sam.conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
    sam.bn.eps = 0.0  # running mean 0, var 1, weight 1, bias 0: BN(x) = x
    rpn = torch.tensor([[[[math.log(3.0), 0.0]]]])  # [1, 1, 1, 2]
    cem = torch.tensor([[[[4.0, 4.0]], [[8.0, 8.0]]]])  # [1, 2, 1, 2]
    out = sam(cem, rpn)
    # position 0: sigmoid(ln 3) = 3/4 -> 4 * 3/4 = 3; sigmoid(-ln 3) = 1/4 -> 8 * 1/4 = 2
    # position 1: sigmoid(0) = 1/2 -> 4 * 1/2 = 2 and 8 * 1/2 = 4
    expected = torch.tensor([[[[3.0, 2.0]], [[2.0, 4.0]]]])
    torch.testing.assert_close(out, expected)


def test_gradient_reaches_both_inputs() -> None:
    sam = SpatialAttentionModule(4, 3)
    cem = torch.randn(1, 3, 5, 5, requires_grad=True)
    rpn = torch.randn(1, 4, 5, 5, requires_grad=True)
    sam(cem, rpn).sum().backward()
    assert cem.grad is not None and rpn.grad is not None
    assert float(rpn.grad.abs().sum()) > 0


@pytest.mark.parametrize(
    ("cem_shape", "rpn_shape"),
    [
        ((1, 244, 4, 4), (1, 256, 4, 4)),
        ((1, 245, 4, 4), (1, 255, 4, 4)),
        ((1, 245, 4, 4), (1, 256, 4, 5)),
    ],
)
def test_mismatched_inputs_raise(cem_shape: tuple, rpn_shape: tuple) -> None:
    with pytest.raises(ValueError):
        SpatialAttentionModule()(torch.zeros(cem_shape), torch.zeros(rpn_shape))
