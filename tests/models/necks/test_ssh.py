"""Tests for detkit.models.necks.ssh."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from detkit.models.necks import FPNSSH, SSHModule, SSHNeck, build_neck


def _ones_weights(module: nn.Module) -> None:
    """All conv weights 1, biases 0 (only used with ``norm=False``)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0)
                m.bias.zero_()


def test_channel_split() -> None:
    ssh = SSHModule(32, 64)
    convs = {
        name: m[0].out_channels for name, m in ssh.named_children() if isinstance(m, nn.Sequential)
    }
    # X = 64: 3x3 branch X/2 = 32; reduction and both context branches X/4 = 16
    assert convs == {
        "conv3x3": 32,
        "context_reduce": 16,
        "context5x5": 16,
        "context7x7_a": 16,
        "context7x7_b": 16,
    }
    assert ssh(torch.randn(2, 32, 9, 7)).shape == (2, 64, 9, 7)


def test_receptive_fields_by_hand() -> None:
    ssh = SSHModule(1, 4, norm=False)
    _ones_weights(ssh)
    x = torch.zeros(1, 1, 11, 11)
    x[0, 0, 5, 5] = 1.0  # a single impulse in the centre
    y = ssh(x)[0]
    # channels 0-1: 3x3 conv of ones -> 1 on the 3x3 box around the impulse
    a = torch.zeros(11, 11)
    a[4:7, 4:7] = 1.0
    assert torch.equal(y[0], a) and torch.equal(y[1], a)
    # reduction r = 1 on the 3x3 box; channel 2 = 3x3 box sum of r:
    # value (3 - |dy|) * (3 - |dx|) for |dy|, |dx| <= 2 -> the 5x5 receptive field
    d = torch.arange(11) - 5
    tri3 = (3 - d.abs()).clamp(min=0).float()
    b = tri3[:, None] * tri3[None, :]
    assert torch.equal(y[2], b)
    # channel 3 = 3x3 box sum of b: support is the 7x7 box, centre (2 + 3 + 2)^2 = 49
    assert y[3, 5, 5] == 49.0
    assert torch.count_nonzero(y[3]) == 49  # 7 x 7 support
    assert y[3, 2, 2] == 1.0 and y[3, 1, 1] == 0.0  # corner of the 7x7 box and beyond it


def test_output_is_relu() -> None:
    torch.manual_seed(0)
    y = SSHModule(8, 16)(torch.randn(1, 8, 6, 6))
    assert (y >= 0).all() and (y > 0).any()


def test_neck_projection_keys_and_strides() -> None:
    neck = SSHNeck([60, 64, 512], out_channels=64)
    assert isinstance(neck.projections[1], nn.Identity)  # 64 == 64: no projection
    assert isinstance(neck.projections[0], nn.Sequential)
    assert neck.projections[2][0].kernel_size == (1, 1)
    feats = OrderedDict(
        [
            ("c3", torch.randn(1, 60, 40, 40)),
            ("c4", torch.randn(1, 64, 20, 20)),
            ("c5", torch.randn(1, 512, 10, 10)),
        ]
    )
    out = neck(feats)
    assert list(out) == ["c3", "c4", "c5"]
    assert [tuple(v.shape) for v in out.values()] == [
        (1, 64, 40, 40),
        (1, 64, 20, 20),
        (1, 64, 10, 10),
    ]
    assert neck.strides == [8, 16, 32] and neck.out_channels == 64
    with pytest.raises(ValueError, match="channels"):
        neck(OrderedDict((k, v[:, :10]) for k, v in feats.items()))


def test_fpn_ssh_and_builder() -> None:
    neck = build_neck("fpn_ssh", in_channels=[60, 120, 512], out_channels=32, num_outs=5)
    assert isinstance(neck, FPNSSH)
    feats = OrderedDict(
        [
            ("c3", torch.randn(1, 60, 40, 40)),
            ("c4", torch.randn(1, 120, 20, 20)),
            ("c5", torch.randn(1, 512, 10, 10)),
        ]
    )
    out = neck(feats)
    assert list(out) == ["p3", "p4", "p5", "p6", "p7"]
    # spatial sizes of P3..P7 for a 320x320 input: 40, 20, 10, 5, 3
    assert [v.shape[-1] for v in out.values()] == [40, 20, 10, 5, 3]
    assert all(v.shape[1] == 32 for v in out.values())
    assert neck.strides == [8, 16, 32, 64, 128]
    assert isinstance(build_neck("ssh", in_channels=[8], out_channels=8), SSHNeck)


def test_errors() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        SSHModule(8, 10)
    with pytest.raises(ValueError, match="strides"):
        SSHNeck([8, 8], 8, strides=[8])
    with pytest.raises(ValueError, match="levels"):
        SSHNeck([8, 8], 8)(OrderedDict([("p3", torch.randn(1, 8, 4, 4))]))


def test_neck_mapping_in_channels() -> None:
    neck = SSHNeck({"c4": 8, "c5": 16}, out_channels=8, strides=[16, 32])
    feats = {"c3": torch.randn(1, 4, 8, 8), "c4": torch.randn(1, 8, 4, 4)}
    feats["c5"] = torch.randn(1, 16, 2, 2)
    out = neck(feats)
    assert list(out) == ["c4", "c5"]  # c3 is not read
    assert [tuple(v.shape) for v in out.values()] == [(1, 8, 4, 4), (1, 8, 2, 2)]
