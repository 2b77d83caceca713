"""Weight-decay groups, optimizer choice and gradient clipping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detkit.engine.optim import (
    adabound_available,
    build_optimizer,
    clip_gradients,
    param_groups,
    split_decay_params,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.tied = self.fc  # a shared module must appear once


def _ids(params: list[nn.Parameter]) -> set[int]:
    return {id(p) for p in params}


def test_norms_and_biases_get_no_decay() -> None:
    net = Net()
    decay, no_decay = split_decay_params(net)
    assert _ids(decay) == _ids([net.conv.weight, net.fc.weight])
    assert _ids(no_decay) == _ids([net.conv.bias, net.bn.weight, net.bn.bias, net.gn.weight,
                                   net.gn.bias, net.ln.weight, net.ln.bias, net.fc.bias])
    assert len(decay) + len(no_decay) == 10  # frozen excluded, tied fc counted once


def test_param_groups_weight_decay_values() -> None:
    net = Net()
    groups = param_groups(net, 5e-4)
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    single = param_groups(net, 5e-4, exclude_norm_bias=False)
    assert len(single) == 1 and len(single[0]["params"]) == 10


def test_build_optimizer_types() -> None:
    net = Net()
    cfg = {"type": "sgd", "momentum": 0.8, "nesterov": True, "weight_decay": 1e-4,
           "no_decay_norm_bias": True, "betas": [0.9, 0.99]}
    sgd = build_optimizer(net, cfg, lr=0.1)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.8 and sgd.param_groups[1]["weight_decay"] == 0
    adamw = build_optimizer(net, {**cfg, "type": "adamw"}, lr=1e-3)
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["betas"] == (0.9, 0.99)
    with pytest.raises(ValueError, match="sgd, adamw, adabound"):
        build_optimizer(net, {**cfg, "type": "lamb"}, lr=0.1)


@pytest.mark.skipif(adabound_available(), reason="adabound is installed")
def test_adabound_missing_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="pip install adabound"):
        build_optimizer(Net(), {"type": "adabound", "weight_decay": 0.0}, lr=0.1)


def test_clip_gradients_hand_case() -> None:
    a = nn.Parameter(torch.zeros(2))
    b = nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([3.0, 0.0])
    b.grad = torch.tensor([0.0, 4.0])
    # global norm sqrt(3^2 + 4^2) = 5; clipped to 1 -> grads scaled by 1/5
    assert clip_gradients([a, b], 1.0) == pytest.approx(5.0)
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(b.grad, torch.tensor([0.0, 0.8]), atol=1e-5, rtol=0)
    # max_norm <= 0 only measures: norm of [0.6, 0, 0, 0.8] = 1
    assert clip_gradients([a, b], 0.0) == pytest.approx(1.0, abs=1e-5)
