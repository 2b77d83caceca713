"""detkit.models.backbones.plain: feature shapes, strides, channel counts, bad widths."""

from __future__ import annotations

import pytest
import torch

from detkit.models.backbones import build_backbone


def test_features_at_strides_8_16_32() -> None:
    net = build_backbone("plain_cnn", widths=(8, 12, 16, 24, 32)).eval()
    feats = net(torch.zeros(2, 3, 96, 128))
    # 96 x 128 input: stride 8 -> 12 x 16, 16 -> 6 x 8, 32 -> 3 x 4
    assert [tuple(f.shape) for f in feats.values()] == [(2, 16, 12, 16), (2, 24, 6, 8),
                                                        (2, 32, 3, 4)]
    assert net.out_channels == {"c3": 16, "c4": 24, "c5": 32}
    assert net.strides == {"c3": 8, "c4": 16, "c5": 32}
    # 3x3 convs, no bias: stem 3*8*9 + 8*12*9, then per stage in*out*9 + out*out*9, plus BN
    convs = 3 * 8 * 9 + 8 * 12 * 9 + (12 * 16 + 16 * 16 + 16 * 24 + 24 * 24 + 24 * 32
                                      + 32 * 32) * 9
    bn = 2 * (8 + 12 + 2 * 16 + 2 * 24 + 2 * 32)
    assert sum(p.numel() for p in net.parameters()) == convs + bn


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="five positive"):
        build_backbone("plain_cnn", widths=(8, 16))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        build_backbone("plain_cnn")(torch.zeros(1, 1, 32, 32))
