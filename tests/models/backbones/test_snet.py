"""Tests for detkit.models.backbones.snet (ThunderNet SNet49/146/535)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from detkit.models.backbones import build_backbone
from detkit.models.backbones.snet import (
    SNET_SPECS,
    ShuffleUnit,
    build_snet,
    channel_shuffle,
    snet49,
)

# ThunderNet Table 1: (conv1, stage2, stage3, stage4, conv5)
TABLE1 = {
    "snet49": (24, 60, 120, 240, 512),
    "snet146": (24, 132, 264, 528, None),
    "snet535": (48, 248, 496, 992, None),
}


def _reference_counts(name: str, size: int = 320) -> tuple[int, int]:
    """Plain-Python (params, MACs) of an SNet from Table 1, 5x5 depthwise, BN = 2 params/ch.

    MACs count convolutions only (what FlopCounterMode counts); BN/ReLU/pool are free.
    """
    c1, s2, s3, s4, c5 = TABLE1[name]
    k2 = 25  # 5x5 depthwise taps
    params = 3 * 9 * c1 + 2 * c1
    hw = (size // 2) ** 2
    macs = hw * 3 * 9 * c1
    in_ch, side = c1, size // 4  # after conv1 (stride 2) and maxpool (stride 2)
    for out_ch, repeats in ((s2, 4), (s3, 8), (s4, 4)):
        b = out_ch // 2
        big, side = side * side, side // 2
        small = side * side
        # stride-2 unit: left = dw(in) + pw(in->b); right = pw(in->b) at the input size,
        # dw(b) + pw(b->b) at the output size
        params += (in_ch * k2 + 2 * in_ch) + (in_ch * b + 2 * b)
        params += (in_ch * b + 2 * b) + (b * k2 + 2 * b) + (b * b + 2 * b)
        macs += small * (in_ch * k2 + in_ch * b) + big * in_ch * b + small * (b * k2 + b * b)
        # stride-1 units: pw(b->b), dw(b), pw(b->b) on half of the channels
        params += (repeats - 1) * (2 * (b * b + 2 * b) + b * k2 + 2 * b)
        macs += (repeats - 1) * small * (2 * b * b + b * k2)
        in_ch = out_ch
    if c5 is not None:
        params += in_ch * c5 + 2 * c5
        macs += side * side * in_ch * c5
    return params, macs


@pytest.mark.parametrize("name", ["snet49", "snet146", "snet535"])
def test_shapes_channels_and_params(name: str) -> None:
    net = build_snet(name).eval()
    _, s2, s3, s4, c5 = TABLE1[name]
    expected_c5 = c5 if c5 is not None else s4
    with torch.no_grad():
        feats = net(torch.rand(1, 3, 320, 320))
    assert list(feats) == ["c3", "c4", "c5"]
    # 320 / 8 = 40, 320 / 16 = 20, 320 / 32 = 10
    assert feats["c3"].shape == (1, s2, 40, 40)
    assert feats["c4"].shape == (1, s3, 20, 20)
    assert feats["c5"].shape == (1, expected_c5, 10, 10)
    assert net.out_channels == {"c3": s2, "c4": s3, "c5": expected_c5}
    assert net.strides == {"c3": 8, "c4": 16, "c5": 32}
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == _reference_counts(name)[0]


def test_param_counts_sane() -> None:
    # ShuffleNetV2-scale networks without the classifier: well under 5 M parameters
    counts = [sum(p.numel() for p in build_snet(n).parameters()) for n in TABLE1]
    assert 0.3e6 < counts[0] < 0.45e6  # SNet49: 0.36 M
    assert 0.9e6 < counts[1] < 1.2e6  # SNet146: 1.04 M
    assert 3.0e6 < counts[2] < 4.0e6  # SNet535: 3.54 M


def test_snet49_macs_match_paper() -> None:
    net = snet49().eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, 3, 320, 320))
    macs = counter.get_total_flops() / 2
    assert macs == _reference_counts("snet49")[1]
    # ThunderNet: SNet49 backbone is about 103 M MACs at 320x320 (49 MFLOPs at 224x224)
    assert 100e6 < macs < 107e6


def test_depthwise_kernels_are_5x5() -> None:
    net = snet49()
    dws = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    # per stage: stride-2 unit has 2 depthwise convs, each stride-1 unit 1: 5 + 9 + 5 = 19
    assert len(dws) == 19
    assert all(m.kernel_size == (5, 5) and m.groups == m.in_channels for m in dws)


def test_channel_shuffle_by_hand() -> None:
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    # 2 groups: rows [0 1 2] / [3 4 5] read column-wise -> 0 3 1 4 2 5
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    # 3 groups: rows [0 1] / [2 3] / [4 5] read column-wise -> 0 2 4 1 3 5
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    assert x.flatten().tolist() == [0, 1, 2, 3, 4, 5]  # input untouched
    with pytest.raises(ValueError, match="divisible"):
        channel_shuffle(x, 4)


def test_stride1_unit_passes_first_half_through() -> None:
    unit = ShuffleUnit(8, 8, stride=1).eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        y = unit(x)
    # concat [x[:, :4], branch(x[:, 4:])] then shuffle(2): even outputs are the identity half
    assert torch.equal(y[:, 0::2], x[:, :4])
    assert y.shape == (2, 8, 6, 6)


def test_stride2_unit_shape_and_errors() -> None:
    unit = ShuffleUnit(24, 60, stride=2)
    assert unit(torch.randn(1, 24, 9, 9)).shape == (1, 60, 5, 5)  # (9 + 4 - 5) // 2 + 1
    with pytest.raises(ValueError):
        ShuffleUnit(8, 16, stride=1)
    with pytest.raises(ValueError):
        ShuffleUnit(8, 9, stride=2)


def test_weights_path_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    src = snet49().eval()
    path = tmp_path / "snet49.pth"
    torch.save({"state_dict": src.state_dict()}, path)
    torch.manual_seed(1)
    dst = snet49(weights_path=str(path)).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(src(x)["c5"], dst(x)["c5"])
    torch.save(build_snet("snet146").state_dict(), tmp_path / "other.pth")
    with pytest.raises(RuntimeError):
        snet49(weights_path=str(tmp_path / "other.pth"))


def test_builders_and_errors() -> None:
    assert set(SNET_SPECS) == set(TABLE1)
    assert build_backbone("snet146").out_channels == {"c3": 132, "c4": 264, "c5": 528}
    with pytest.raises(ValueError, match="snet49"):
        build_snet("snet50")
    with pytest.raises(ValueError, match="mobilenet_v3_large"):
        build_backbone("vgg16")
    with pytest.raises(ValueError, match="B, 3, H, W"):
        snet49()(torch.rand(1, 1, 32, 32))


def test_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    net = snet49().train()
    feats = net(torch.rand(2, 3, 32, 32))  # C5 is 1x1: batch 2 keeps BN defined
    sum(f.square().mean() for f in feats.values()).backward()
    # reachability only: the bias of a BN that feeds 1x1 conv + BN gets an exactly-zero
    # gradient in train mode (the next BN removes any per-channel shift), so no value check
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert missing == []
