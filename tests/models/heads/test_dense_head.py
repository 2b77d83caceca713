"""Dense head: output shapes and anchor order, prior-probability init, norms."""

import math

import pytest
import torch
from torch import nn

from detkit.models.heads.dense import DenseHead, _flatten_level, make_norm


def test_shapes_and_prior_probability():
    head = DenseHead(16, num_anchors=3, num_classes=5, num_convs=2, norm="gn", prior_prob=0.01)
    feats = [torch.randn(2, 16, 8, 6), torch.randn(2, 16, 4, 3)]
    cls, box = head(feats)
    # per level H * W * A rows: 8 * 6 * 3 = 144, 4 * 3 * 3 = 36
    assert [c.shape for c in cls] == [(2, 144, 5), (2, 36, 5)]
    assert [b.shape for b in box] == [(2, 144, 4), (2, 36, 4)]
    # bias = -log(0.99 / 0.01) so that sigmoid(bias) = 0.01
    assert head.cls_logits.bias[0].item() == pytest.approx(-math.log(99.0))
    assert torch.sigmoid(head.cls_logits.bias).tolist() == pytest.approx([0.01] * 15)
    assert head.bbox_pred.bias.abs().max().item() == 0.0


def test_flatten_order_is_y_x_anchor():
    # channel c = a * K + k of a [B, A*K, H, W] map, A = 2, K = 3, H = 2, W = 3
    raw = torch.arange(6 * 2 * 3, dtype=torch.float32).reshape(1, 6, 2, 3)  # [B, A*K, H, W]
    flat = _flatten_level(raw, num_anchors=2)
    # row (y * W + x) * A + a, column k <- raw[0, a * K + k, y, x]
    for y in range(2):
        for x in range(3):
            for a in range(2):
                for k in range(3):
                    assert flat[0, (y * 3 + x) * 2 + a, k] == raw[0, a * 3 + k, y, x]
    # zero tower convs: the prediction convs read the features directly
    assert len(DenseHead(4, num_anchors=2, num_classes=3, num_convs=0).cls_tower) == 0


def test_norm_choices():
    assert isinstance(make_norm("bn", 8), nn.BatchNorm2d)
    gn = make_norm("gn", 256)
    # 256 channels: min(32, 256 // 4) = 32 groups; 24 channels: min(32, 6) = 6 groups
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 32
    assert make_norm("gn", 24).num_groups == 6
    assert isinstance(make_norm("none", 8), nn.Identity)
    with pytest.raises(ValueError, match="unknown norm"):
        make_norm("ln", 8)
    head = DenseHead(8, 1, 1, num_convs=4, norm="bn")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in head.modules()) == 8


def test_gradients_flow_and_bad_args():
    head = DenseHead(8, 2, 2, num_convs=1)
    cls, box = head([torch.randn(1, 8, 4, 4)])
    (cls[0].sum() + box[0].sum()).backward()
    assert head.cls_tower[0].weight.grad is not None
    with pytest.raises(ValueError, match="prior_prob"):
        DenseHead(8, 1, 1, prior_prob=1.0)
    with pytest.raises(ValueError, match="num_classes"):
        DenseHead(8, 1, 0)
