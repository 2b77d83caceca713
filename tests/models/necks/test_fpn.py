"""Tests for detkit.models.necks.fpn."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from detkit.models.necks import FPN, build_neck


def _feats(channels: tuple[int, ...], size: int = 40, batch: int = 1) -> OrderedDict:
    """Random C3.. maps, finest first, halving the size per level."""
    return OrderedDict(
        (f"c{3 + i}", torch.randn(batch, c, size >> i, size >> i)) for i, c in enumerate(channels)
    )


def test_shapes_names_strides_at_320() -> None:
    fpn = FPN([60, 120, 512], out_channels=64, num_outs=5)
    out = fpn(_feats((60, 120, 512), size=40))  # C3 of a 320x320 image: 40x40
    assert list(out) == ["p3", "p4", "p5", "p6", "p7"]
    # P6: (10 + 2 - 3) // 2 + 1 = 5, P7: (5 + 2 - 3) // 2 + 1 = 3
    assert [tuple(v.shape) for v in out.values()] == [
        (1, 64, 40, 40),
        (1, 64, 20, 20),
        (1, 64, 10, 10),
        (1, 64, 5, 5),
        (1, 64, 3, 3),
    ]
    assert fpn.out_channels == 64
    assert fpn.strides == [8, 16, 32, 64, 128]


def _set_hand_weights(fpn: FPN, out_scale: float) -> None:
    """1x1 laterals = 1, 3x3 output convs = centre tap ``out_scale``, extras = centre tap 1."""
    with torch.no_grad():
        for m in fpn.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
                m.weight[:, :, m.kernel_size[0] // 2, m.kernel_size[1] // 2] = 1.0
        for conv in fpn.output_convs:
            conv.weight.mul_(out_scale)


@pytest.mark.parametrize(
    ("source", "c5", "expected"),
    [
        # M5 = -3, M4 = 2 - 3 = -1, M3 = 1 - 1 = 0; P = 10 * M -> -30, -10, 0
        # input: P6 = C5 = -3, P7 = relu(-3) = 0; output: P6 = P5 = -30, P7 = 0
        ("input", -3.0, [0.0, -10.0, -30.0, -3.0, 0.0]),
        ("output", -3.0, [0.0, -10.0, -30.0, -30.0, 0.0]),
        # M5 = 3, M4 = 5, M3 = 6 -> 60, 50, 30; input: P6 = 3, P7 = 3; output: 30, 30
        ("input", 3.0, [60.0, 50.0, 30.0, 3.0, 3.0]),
        ("output", 3.0, [60.0, 50.0, 30.0, 30.0, 30.0]),
    ],
)
def test_hand_checked_top_down_and_extras(source: str, c5: float, expected: list[float]) -> None:
    fpn = FPN([1, 1, 1], out_channels=1, num_outs=5, extra_source=source)
    _set_hand_weights(fpn, out_scale=10.0)
    feats = OrderedDict(
        [
            ("c3", torch.full((1, 1, 8, 8), 1.0)),
            ("c4", torch.full((1, 1, 4, 4), 2.0)),
            ("c5", torch.full((1, 1, 2, 2), c5)),
        ]
    )
    out = fpn(feats)
    for got, want in zip(out.values(), expected, strict=True):
        assert torch.all(got == want), (got, want)


@pytest.mark.parametrize(("c5_channels", "source"), [(32, "input"), (16, "output")])
def test_matches_torchvision_fpn(c5_channels: int, source: str) -> None:
    torch.manual_seed(0)
    in_ch = [8, 16, c5_channels]
    ours = FPN(in_ch, out_channels=16, num_outs=5, extra_source=source)
    # torchvision's LastLevelP6P7 uses P5 exactly when its in_channels == out_channels
    ref = FeaturePyramidNetwork(in_ch, 16, extra_blocks=LastLevelP6P7(c5_channels, 16))
    with torch.no_grad():
        for i in range(3):
            ref.inner_blocks[i][0].weight.copy_(ours.lateral_convs[i].weight)
            ref.inner_blocks[i][0].bias.copy_(ours.lateral_convs[i].bias)
            ref.layer_blocks[i][0].weight.copy_(ours.output_convs[i].weight)
            ref.layer_blocks[i][0].bias.copy_(ours.output_convs[i].bias)
        for conv, tv in zip(
            ours.extra_convs, (ref.extra_blocks.p6, ref.extra_blocks.p7), strict=True
        ):
            tv.weight.copy_(conv.weight)
            tv.bias.copy_(conv.bias)
    feats = _feats(tuple(in_ch), size=16, batch=2)
    got, want = ours(feats), ref(feats)
    assert [tuple(v.shape) for v in got.values()] == [tuple(v.shape) for v in want.values()]
    for g, w in zip(got.values(), want.values(), strict=True):
        torch.testing.assert_close(g, w)


def test_odd_sizes_and_no_extras() -> None:
    fpn = FPN([4, 8], out_channels=8, num_outs=2, first_level=4)
    feats = OrderedDict([("c4", torch.randn(1, 4, 13, 11)), ("c5", torch.randn(1, 8, 7, 6))])
    out = fpn(feats)
    assert list(out) == ["p4", "p5"]
    assert out["p4"].shape == (1, 8, 13, 11)  # upsampling targets the lateral's own size
    assert fpn.strides == [16, 32]
    assert len(fpn.extra_convs) == 0


def test_errors_and_builder() -> None:
    with pytest.raises(ValueError, match="num_outs"):
        FPN([4, 8, 16], num_outs=2)
    with pytest.raises(ValueError, match="extra_source"):
        FPN([4, 8, 16], extra_source="c5")
    fpn = build_neck("fpn", in_channels=[4, 8, 16], out_channels=8, num_outs=3)
    with pytest.raises(ValueError, match="channels"):
        fpn(_feats((4, 8, 15), size=8))
    with pytest.raises(ValueError, match="input levels"):
        fpn(_feats((4, 8), size=8))
    with pytest.raises(ValueError, match="fpn_ssh"):
        build_neck("bifpn")


def test_mapping_in_channels_selects_levels() -> None:
    torch.manual_seed(0)
    feats = _feats((4, 8, 16), size=16)
    fpn = FPN({"c4": 8, "c5": 16}, out_channels=8, num_outs=3, first_level=4)
    assert fpn.in_channels == [8, 16] and fpn.in_names == ["c4", "c5"]
    out = fpn(feats)  # c3 is ignored
    assert list(out) == ["p4", "p5", "p6"]
    # the same FPN fed only C4/C5 by position gives the same maps
    plain = FPN([8, 16], out_channels=8, num_outs=3, first_level=4)
    plain.load_state_dict(fpn.state_dict())
    ref = plain(OrderedDict((k, feats[k]) for k in ("c4", "c5")))
    for k in out:
        assert torch.equal(out[k], ref[k])
    with pytest.raises(KeyError, match="c5"):
        fpn(OrderedDict([("c4", feats["c4"])]))
