"""Weight-decay groups, optimizer choice (AdaBound worked by hand and trained with), clipping."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from detkit.engine import optim
from detkit.engine.logging import read_jsonl
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


def test_adabound_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optim, "adabound_available", lambda: False)
    with pytest.raises(ValueError, match="pip install adabound"):
        build_optimizer(Net(), {"type": "adabound", "weight_decay": 0.0}, lr=0.1)


@pytest.mark.skipif(not adabound_available(), reason="adabound not installed (pip install "
                    "adabound, or the dev extra)")
@pytest.mark.parametrize(("lr", "expected"), [
    # step 1, g = 2: m = 0.1 * 2 = 0.2, v = 0.001 * 4 = 0.004, sqrt(v) = 0.0632456;
    # step size lr * sqrt(1 - 0.999) / (1 - 0.9) / sqrt(v) = lr * 0.0316228 / 0.1 / 0.0632456
    # = 5 lr, clamped to [0.1 (1 - 1 / (1e-3 + 1)), 0.1 (1 + 1 / 1e-3)] = [9.99e-5, 100.1],
    # times m = 0.2
    (1e-3, 1.0 - 5e-3 * 0.2),  # 5e-3 inside the bounds: Adam's first step, lr * sign(g)
    (1e-5, 1.0 - 9.99e-5 * 0.2),  # 5e-5 under the lower bound: clamped to 9.99e-5
])
def test_adabound_first_step_by_hand(lr: float, expected: float) -> None:
    layer = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    opt = build_optimizer(layer, {"type": "adabound", "weight_decay": 0.0, "final_lr": 0.1},
                          lr=lr)
    assert type(opt).__name__ == "AdaBound"
    (2.0 * layer.weight.sum()).backward()
    opt.step()
    assert layer.weight.item() == pytest.approx(expected, abs=1e-7)  # float32


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


@pytest.mark.skipif(not adabound_available(), reason="adabound not installed (pip install "
                    "adabound, or the dev extra)")
def test_short_training_run_with_adabound(tmp_path: Path) -> None:
    """tools/train.py on the synthetic demo config with optim.type=adabound: 20 steps."""
    repo = Path(__file__).resolve().parents[2]
    args = [sys.executable, str(repo / "tools" / "train.py"),
            str(repo / "configs" / "demo_synthetic.yaml"), "--work-dir", str(tmp_path / "w"),
            "--no-progress", f"data.synthetic.out_dir={tmp_path / 'syn'}",
            "data.synthetic.num_images=20", "data.synthetic.image_size=64", "data.img_size=64",
            "data.batch_size=4", "schedule.max_iters=20", "schedule.warmup_iters=1",
            "train.log_interval=1", "eval.interval=0", "train.ema.enabled=false",
            "optim.type=adabound"]
    res = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    records = read_jsonl(tmp_path / "w" / "log.jsonl")
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 20
    # measured: 1.76 at step 1, about 0.85 by step 20 (focal + GIoU of the dense detector)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    ckpt = torch.load(tmp_path / "w" / "last.pth", map_location="cpu", weights_only=True)
    assert ckpt["config"]["optim"]["type"] == "adabound"
    assert {"final_lr", "gamma"} <= set(ckpt["optimizer"]["param_groups"][0])  # AdaBound's
