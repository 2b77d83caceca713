"""Label-smoothed cross-entropy (Bag of Freebies form) against plain references."""

import math

import pytest
import torch
import torch.nn.functional as F

from detkit.losses import label_smoothing_cross_entropy


def test_hand_worked_three_classes():
    # logits 0 for all 3 classes -> log p_i = -ln 3 for each; q = (0.9, 0.05, 0.05)
    # loss = -(0.9 + 0.05 + 0.05) * (-ln 3) = ln 3 whatever epsilon is.
    out = label_smoothing_cross_entropy(torch.zeros(1, 3), torch.tensor([0]), epsilon=0.1)
    assert out.item() == pytest.approx(math.log(3))
    # logits (2, 0, 0): log-sum-exp = ln(e^2 + 2); log p = (2 - lse, -lse, -lse)
    # loss = -(0.9 * (2 - lse) + 0.1 * (-lse)) = lse - 1.8
    lse = math.log(math.exp(2) + 2)
    out = label_smoothing_cross_entropy(torch.tensor([[2.0, 0, 0]]), torch.tensor([0]), 0.1)
    assert out.item() == pytest.approx(lse - 1.8, rel=1e-6)


def test_plain_python_reference_and_weights():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 3, 1, 0])
    w = torch.tensor([1.0, 0.5, 0.0, 2.0, 1.0, 1.0])
    eps = 0.2
    total = 0.0
    for row, y, wi in zip(logits.tolist(), target.tolist(), w.tolist(), strict=True):
        lse = math.log(sum(math.exp(v) for v in row))
        q = [1 - eps if i == y else eps / 3 for i in range(4)]
        total += wi * -sum(qi * (v - lse) for qi, v in zip(q, row, strict=True))
    out = label_smoothing_cross_entropy(logits, target, eps, weight=w, reduction="mean")
    assert out.item() == pytest.approx(total / 6, rel=1e-5)


def test_epsilon_zero_is_cross_entropy():
    logits, target = torch.randn(5, 7), torch.randint(0, 7, (5,))
    torch.testing.assert_close(
        label_smoothing_cross_entropy(logits, target, 0.0), F.cross_entropy(logits, target)
    )


def test_errors():
    with pytest.raises(ValueError, match="epsilon"):
        label_smoothing_cross_entropy(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        label_smoothing_cross_entropy(torch.zeros(3), torch.zeros(3, dtype=torch.long))
