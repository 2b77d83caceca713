"""Distillation loss: KL of temperature-softened distributions times T^2."""

import math

import pytest
import torch
import torch.nn.functional as F

from detkit.losses import distillation_loss


def test_hand_worked_two_classes():
    # T = 2: teacher (2, 0)/2 = (1, 0) -> p = (e/(e+1), 1/(e+1)) = (0.731059, 0.268941);
    # student (0, 0) -> q = (0.5, 0.5); KL(p||q) = sum p ln(p/q); times T^2 = 4.
    p = [math.e / (math.e + 1), 1 / (math.e + 1)]
    kl = sum(pi * math.log(pi / 0.5) for pi in p)
    out = distillation_loss(torch.zeros(1, 2), torch.tensor([[2.0, 0.0]]), temperature=2.0)
    assert out.item() == pytest.approx(4 * kl, rel=1e-6)


def test_equals_torch_kl_div_batchmean_and_teacher_detached():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 5, 4, generator=g, requires_grad=True)
    t = torch.randn(3, 5, 4, generator=g, requires_grad=True)
    out = distillation_loss(s, t, temperature=3.0)
    ref = (
        F.kl_div(
            F.log_softmax(s.reshape(-1, 4) / 3, 1),
            F.softmax(t.reshape(-1, 4) / 3, 1),
            reduction="batchmean",
        )
        * 9
    )
    torch.testing.assert_close(out, ref)
    out.backward()
    assert s.grad is not None and t.grad is None


def test_identical_logits_give_zero_and_errors():
    x = torch.randn(4, 6)
    assert distillation_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    empty = torch.zeros(0, 3, requires_grad=True)
    loss = distillation_loss(empty, torch.zeros(0, 3))
    loss.backward()
    assert loss.item() == 0.0
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(x, x, temperature=0.0)
    with pytest.raises(ValueError, match="differ"):
        distillation_loss(x, x[:2])
