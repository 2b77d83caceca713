"""Tests for detkit.models.necks.cem (ThunderNet Context Enhancement Module)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from detkit.models.backbones import snet49
from detkit.models.necks import CEM, build_neck


def _set(conv: torch.nn.Conv2d, weight: float, bias: float) -> None:
    with torch.no_grad():
        conv.weight.fill_(weight)
        conv.bias.fill_(bias)


def test_channels_and_size_on_snet49() -> None:
    net = snet49().eval()
    cem = CEM(net.out_channels["c4"], net.out_channels["c5"]).eval()
    with torch.no_grad():
        out = cem(net(torch.rand(1, 3, 320, 320)))
    assert list(out) == ["p4"]
    assert out["p4"].shape == (1, 245, 20, 20)  # 245 channels at C4's 320 / 16 = 20
    assert cem.out_channels == 245 and cem.strides == [16]


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_odd_sizes_follow_c4(mode: str) -> None:
    cem = CEM(8, 16, out_channels=12, upsample=mode)
    feats = {"c4": torch.randn(2, 8, 21, 19), "c5": torch.randn(2, 16, 11, 10)}
    assert cem(feats)["p4"].shape == (2, 12, 21, 19)


def test_gap_branch_adds_a_constant_per_channel() -> None:
    cem = CEM(1, 2, out_channels=3)
    _set(cem.conv_c4, 0.0, 0.0)
    _set(cem.conv_c5, 0.0, 0.0)
    _set(cem.conv_glb, 1.0, 0.5)
    c5 = torch.stack([torch.arange(4.0).reshape(2, 2), torch.full((2, 2), 2.0)])[None]
    feats = {"c4": torch.randn(1, 1, 4, 4), "c5": c5}
    # GAP: channel 0 mean(0, 1, 2, 3) = 1.5, channel 1 = 2; conv of ones: 1.5 + 2 + 0.5 = 4
    out = cem(feats)["p4"]
    assert torch.all(out == 4.0)


def test_three_branches_summed_nearest() -> None:
    cem = CEM(1, 1, out_channels=1)
    _set(cem.conv_c4, 2.0, 0.0)
    _set(cem.conv_c5, 1.0, 0.0)
    _set(cem.conv_glb, 1.0, 0.0)
    c4 = torch.ones(1, 1, 4, 4)
    c5 = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    out = cem({"c4": c4, "c5": c5})["p4"][0, 0]
    # 2 * 1 (C4) + nearest 2x copy of C5 + mean(C5) = 2.5
    expected = (
        torch.tensor(
            [[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0], [3.0, 3.0, 4.0, 4.0], [3.0, 3.0, 4.0, 4.0]]
        )
        + 2.0
        + 2.5
    )
    assert torch.equal(out, expected)


def test_bilinear_by_hand() -> None:
    cem = CEM(1, 1, out_channels=1, upsample="bilinear")
    _set(cem.conv_c4, 0.0, 0.0)
    _set(cem.conv_c5, 1.0, 0.0)
    _set(cem.conv_glb, 0.0, 0.0)
    c5 = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    out = cem({"c4": torch.zeros(1, 1, 4, 4), "c5": c5})["p4"][0, 0]
    # half-pixel mapping: output 0 -> source -0.25 (clamped to 0), output 1 -> source 0.25
    assert out[0, 0] == 1.0
    # (1,1): 0.75*0.75*1 + 0.75*0.25*2 + 0.25*0.75*3 + 0.25*0.25*4 = 1.75
    torch.testing.assert_close(out[1, 1], torch.tensor(1.75))


def test_errors_and_builder() -> None:
    with pytest.raises(ValueError, match="upsample"):
        CEM(8, 8, upsample="bicubic")
    cem = build_neck("cem", c4_channels=8, c5_channels=16)
    assert isinstance(cem, CEM) and cem.out_channels == 245
    with pytest.raises(KeyError, match="c5"):
        cem(OrderedDict([("c4", torch.randn(1, 8, 4, 4))]))
    with pytest.raises(ValueError, match="channels"):
        cem({"c4": torch.randn(1, 8, 4, 4), "c5": torch.randn(1, 8, 2, 2)})


def test_zero_context_start_gives_the_c4_branch_and_still_learns() -> None:
    torch.manual_seed(0)
    cem = CEM(8, 16, out_channels=10)  # context_init="zero" is the default
    feats = {"c4": torch.randn(2, 8, 6, 6), "c5": torch.randn(2, 16, 3, 3)}
    out = cem(feats)["p4"]
    # C5 and global weights start at 0 and every bias at 0: F_CEM = conv1x1(C4) exactly
    torch.testing.assert_close(out, cem.conv_c4(feats["c4"]), rtol=0, atol=0)
    assert float(cem.conv_c5.weight.detach().abs().sum()) == 0.0
    assert float(cem.conv_glb.weight.detach().abs().sum()) == 0.0
    out.pow(2).sum().backward()
    # the zero branches still get a gradient (their input C5 is not zero), so they learn
    assert float(cem.conv_c5.weight.grad.abs().sum()) > 0.0
    assert float(cem.conv_glb.weight.grad.abs().sum()) > 0.0


def test_default_context_start_is_kaiming_on_every_branch() -> None:
    torch.manual_seed(0)
    cem = CEM(8, 48, out_channels=10, context_init="default")
    # kaiming_uniform with a = 1: bound sqrt(6 / ((1 + a^2) fan_in)) = sqrt(3 / 48) = 0.25
    for conv in (cem.conv_c5, cem.conv_glb):
        top = float(conv.weight.detach().abs().max())
        assert 0.9 * 0.25 < top <= 0.25
    with pytest.raises(ValueError, match="context_init"):
        CEM(8, 16, context_init="ones")


def test_no_cem_projection_starts_like_the_cem_c4_branch() -> None:
    from detkit.models.detectors.thundernet import C4Projection

    torch.manual_seed(0)
    proj = C4Projection(48, 10)
    # CEM's C4 start: kaiming_uniform(a=1), bound sqrt(3 / 48) = 0.25, zero bias; PyTorch's
    # default Conv2d start has bound 1 / sqrt(48) = 0.144 and a random bias
    top = float(proj.conv.weight.detach().abs().max())
    assert 0.9 * 0.25 < top <= 0.25
    assert float(proj.conv.bias.detach().abs().sum()) == 0.0
    torch.manual_seed(1)
    x = {"c4": torch.randn(2, 48, 20, 20), "c5": torch.randn(2, 16, 10, 10)}
    # weight variance bound^2 / 3 = (3 / 48) / 3 = 1 / 48, so a unit-variance input gives an
    # output variance 48 x 1 / 48 = 1 for both necks at step 0 (the old default start gave
    # 1 / 3, std 0.58, against CEM's 1.07: the no-CEM row was confounded by its start)
    for neck in (CEM(48, 16, out_channels=245), C4Projection(48, 245)):
        std = float(neck(x)["p4"].detach().std())
        assert abs(std - 1.0) < 0.08, (type(neck).__name__, std)


def test_scale_context_start_gates_kaiming_branches_at_zero() -> None:
    torch.manual_seed(0)
    cem = CEM(8, 48, out_channels=10, context_init="scale")
    feats = {"c4": torch.randn(2, 8, 6, 6), "c5": torch.randn(2, 48, 3, 3)}
    out = cem(feats)["p4"]
    # the gates start at 0, so F_CEM = conv1x1(C4) exactly, while the branch weights keep the
    # Kaiming start, bound sqrt(3 / 48) = 0.25
    torch.testing.assert_close(out, cem.conv_c4(feats["c4"]), rtol=0, atol=0)
    assert cem.c5_scale is not None and cem.glb_scale is not None
    assert cem.c5_scale.shape == (10,) and float(cem.c5_scale.detach().abs().sum()) == 0.0
    for conv in (cem.conv_c5, cem.conv_glb):
        assert 0.9 * 0.25 < float(conv.weight.detach().abs().max()) <= 0.25
    # L = sum(out): dL/d c5_scale[c] = sum over batch and pixels of lat5[:, c] (the upsampled
    # C5 branch), and dL/d glb_scale[c] = 36 pixels x sum over batch of glb[:, c]
    out.sum().backward()
    with torch.no_grad():
        lat5 = torch.nn.functional.interpolate(cem.conv_c5(feats["c5"]), size=(6, 6))
        glb = cem.conv_glb(feats["c5"].mean(dim=(2, 3), keepdim=True))
    torch.testing.assert_close(cem.c5_scale.grad, lat5.sum(dim=(0, 2, 3)))
    torch.testing.assert_close(cem.glb_scale.grad, 36 * glb.sum(dim=(0, 2, 3)))
    # behind a zero gate the branch weights get no gradient at step 0
    assert float(cem.conv_c5.weight.grad.abs().sum()) == 0.0
    # once a gate is open the branch adds in: gate 0.5 on C5 alone gives C4 + 0.5 x C5_lat
    with torch.no_grad():
        cem.c5_scale.fill_(0.5)
        want = cem.conv_c4(feats["c4"]) + 0.5 * lat5
        torch.testing.assert_close(cem(feats)["p4"], want)


def test_other_starts_have_no_gates() -> None:
    for init in ("zero", "default"):
        cem = CEM(8, 16, out_channels=10, context_init=init)
        assert cem.c5_scale is None and cem.glb_scale is None
        assert not any("scale" in n for n, _ in cem.named_parameters())
