"""EMA update formula on hand-set weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from detkit.engine.ema import ModelEMA


def _linear(value: float) -> nn.Linear:
    layer = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(value)
    return layer


def test_constant_decay_hand_case() -> None:
    model = _linear(0.0)
    ema = ModelEMA(model, decay=0.9, tau=0.0)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(0.1)  # 0.9 * 0 + 0.1 * 1
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(0.29)  # 0.9 * 0.1 + 0.1 * 2


def test_ramped_decay_hand_case() -> None:
    model = _linear(0.0)
    ema = ModelEMA(model, decay=0.5, tau=1.0)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    d = 0.5 * (1 - math.exp(-1.0))  # updates=1, tau=1 -> d = 0.31606
    assert ema.module.weight.item() == pytest.approx((1 - d) * 1.0)


def test_integer_buffers_copied_and_state_roundtrip() -> None:
    model = nn.BatchNorm1d(2)
    ema = ModelEMA(model, decay=0.9, tau=0.0)
    model.train()
    model(torch.randn(4, 2))  # num_batches_tracked -> 1, running stats move
    ema.update(model)
    assert ema.module.num_batches_tracked.item() == 1
    # running_mean: 0.9 * 0 + 0.1 * model.running_mean
    torch.testing.assert_close(ema.module.running_mean, 0.1 * model.running_mean)
    other = ModelEMA(nn.BatchNorm1d(2), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1
    torch.testing.assert_close(other.module.running_mean, ema.module.running_mean)
    assert not any(p.requires_grad for p in ema.module.parameters())
