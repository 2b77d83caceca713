"""BatchNorm folding: folded convolutions reproduce conv + BatchNorm in eval mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detkit.models.detectors.thundernet import thundernet_lite
from detkit.models.fuse import count_batchnorm, fold_batchnorm, fold_conv_bn
from detkit.models.heads.sam import SpatialAttentionModule


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.2)


def test_fold_conv_bn_hand_worked_values() -> None:
    # 1x1 conv, 1 -> 1 channel, weight 2, bias 1; BN mean 3, var 3 (eps 1), gamma 4, beta 5:
    # s = 4 / sqrt(3 + 1) = 2, W' = 2 * 2 = 4, b' = (1 - 3) * 2 + 5 = 1.
    conv = nn.Conv2d(1, 1, 1)
    bn = nn.BatchNorm2d(1, eps=1.0)
    with torch.no_grad():
        conv.weight.fill_(2.0)
        conv.bias.fill_(1.0)
        bn.running_mean.fill_(3.0)
        bn.running_var.fill_(3.0)
        bn.weight.fill_(4.0)
        bn.bias.fill_(5.0)
    fused = fold_conv_bn(conv, bn.eval())
    assert fused.weight.item() == pytest.approx(4.0)
    assert fused.bias.item() == pytest.approx(1.0)
    # x = 2: conv 5, BN (5 - 3) / 2 * 4 + 5 = 9; folded 4 * 2 + 1 = 9
    assert fused(torch.full((1, 1, 1, 1), 2.0)).item() == pytest.approx(9.0)
    assert conv.weight.item() == 2.0  # inputs untouched


@pytest.mark.parametrize("groups,bias", [(1, False), (4, True), (8, False)])
def test_fold_conv_bn_matches_within_1e_5(groups: int, bias: bool) -> None:
    conv = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=groups, bias=bias)
    seq = nn.Sequential(conv, nn.BatchNorm2d(8), nn.ReLU())
    _randomise_bn(seq, groups)
    seq.eval()
    x = torch.randn(2, 8, 17, 13, generator=torch.Generator().manual_seed(1))
    folded = fold_batchnorm(seq)
    assert count_batchnorm(folded) == 0 and count_batchnorm(seq) == 1
    torch.testing.assert_close(folded(x), seq(x), atol=1e-5, rtol=0)


def test_fold_rejects_mismatched_channels() -> None:
    with pytest.raises(ValueError, match="channels"):
        fold_conv_bn(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(5))
    with pytest.raises(ValueError, match="BatchNorm"):
        fold_conv_bn(nn.Conv2d(3, 4, 1), nn.Identity())


def test_spatial_attention_pair_is_folded() -> None:
    sam = SpatialAttentionModule(16, 10)
    _randomise_bn(sam, 3)
    sam.eval()
    g = torch.Generator().manual_seed(2)
    cem, rpn = torch.randn(1, 10, 6, 6, generator=g), torch.randn(1, 16, 6, 6, generator=g)
    folded = fold_batchnorm(sam)
    assert isinstance(folded.bn, nn.Identity)
    torch.testing.assert_close(folded(cem, rpn), sam(cem, rpn), atol=1e-5, rtol=0)


def test_thundernet_folded_equals_unfolded() -> None:
    torch.manual_seed(0)
    model = thundernet_lite(3)
    _randomise_bn(model, 5)
    model.eval()
    folded = fold_batchnorm(model)
    assert count_batchnorm(model) > 50
    assert count_batchnorm(folded) == 0
    image = torch.rand(3, 160, 160, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        batch = model.transform([image]).tensor
        torch.testing.assert_close(folded.feature_map(batch), model.feature_map(batch),
                                   atol=1e-5, rtol=1e-5)
        ref, got = model([image])[0], folded([image])[0]
    assert len(ref["boxes"]) == len(got["boxes"])
    torch.testing.assert_close(got["boxes"], ref["boxes"], atol=1e-3, rtol=0)
    assert torch.equal(got["labels"], ref["labels"])


def test_fold_conv_bn_without_affine_parameters() -> None:
    # BN without gamma and beta (affine=False), mean 3, var 4, eps 0: bn(y) = (y - 3) / 2;
    # conv y = 2 x + 1 folds to x - 1 (weight 1, bias -1)
    conv = nn.Conv2d(1, 1, 1)
    bn = nn.BatchNorm2d(1, eps=0.0, affine=False)
    with torch.no_grad():
        conv.weight.fill_(2.0)
        conv.bias.fill_(1.0)
        bn.running_mean.fill_(3.0)
        bn.running_var.fill_(4.0)
    fused = fold_conv_bn(conv, bn.eval())
    assert (fused.weight.item(), fused.bias.item()) == pytest.approx((1.0, -1.0))
