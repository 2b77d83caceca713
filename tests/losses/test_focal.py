"""Sigmoid focal loss against torchvision and a hand-worked value."""

import math

import pytest
import torch
import torchvision

from detkit.losses import sigmoid_focal_loss


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (-1.0, 2.0), (0.5, 0.0)])
def test_equals_torchvision(reduction, alpha, gamma):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 5, generator=g)
    t = (torch.rand(32, 5, generator=g) > 0.8).float()
    ours = sigmoid_focal_loss(x, t, alpha, gamma, reduction)
    theirs = torchvision.ops.sigmoid_focal_loss(x, t, alpha, gamma, reduction)
    torch.testing.assert_close(ours, theirs)


def test_hand_worked():
    # logit 0 -> p = 0.5; target 1: CE = ln 2, (1 - p_t)^2 = 0.25, alpha_t = 0.25
    # loss = 0.25 * 0.25 * ln 2 = 0.0433217
    out = sigmoid_focal_loss(torch.zeros(1), torch.ones(1))
    assert out.item() == pytest.approx(0.0625 * math.log(2))
    # target 0: alpha_t = 0.75 -> 0.75 * 0.25 * ln 2
    out = sigmoid_focal_loss(torch.zeros(1), torch.zeros(1))
    assert out.item() == pytest.approx(0.1875 * math.log(2))


def test_half_upcast_and_errors():
    x = torch.randn(4, 3).half()
    assert sigmoid_focal_loss(x, torch.zeros(4, 3)).dtype == torch.float32
    with pytest.raises(ValueError, match="differ"):
        sigmoid_focal_loss(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="unknown reduction"):
        sigmoid_focal_loss(torch.zeros(2), torch.zeros(2), reduction="avg")
