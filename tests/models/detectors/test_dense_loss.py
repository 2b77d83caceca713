"""DenseLoss with OHEM on a background-only image still trains its hardest negatives."""

from __future__ import annotations

import math

import pytest
import torch

from detkit.losses import sigmoid_focal_loss
from detkit.models.box_coder import BoxCoder
from detkit.models.detectors.dense_loss import DenseLoss
from detkit.models.matching import Matcher


def test_ohem_keeps_hardest_negatives_of_an_empty_image():
    anchors = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20],
                            [10, 10, 20, 20], [20, 20, 30, 30]])
    logits = torch.tensor([[[0.5], [-2.0], [1.5], [0.0], [-1.0]]])  # [B=1, A=5, K=1]
    deltas = torch.zeros(1, 5, 4)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    loss = DenseLoss(1, Matcher(0.5, 0.4), BoxCoder((1.0, 1.0, 1.0, 1.0)), sampling="ohem",
                     neg_pos_ratio=3.0)
    out = loss(logits, deltas, anchors, [empty])
    # no positives -> 3 (= neg_pos_ratio x 1) hardest negatives: logits 1.5, 0.5, 0.0;
    # normalised by max(1, #positives) = 1
    per = sigmoid_focal_loss(logits[0, :, 0], torch.zeros(5))
    expected = per[2] + per[0] + per[3]
    torch.testing.assert_close(out["loss_cls"], expected)
    assert out["loss_cls"].item() > 0 and out["loss_box"].item() == 0.0


def _focal(x: float, t: int, alpha: float = 0.25, gamma: float = 2.0) -> float:
    """Plain-Python sigmoid focal loss of one logit: -alpha_t (1 - p_t)^gamma log p_t."""
    p = 1.0 / (1.0 + math.exp(-x))
    p_t = p if t else 1.0 - p
    alpha_t = alpha if t else 1.0 - alpha
    return -alpha_t * (1.0 - p_t) ** gamma * math.log(p_t)


def test_exact_losses_with_positives_negatives_and_ignored_anchors():
    # gt of image 0: (0, 0, 10, 10) label 2; of image 1: (50, 50, 60, 60) label 1.
    # IoU with gt 0: a0 = 1 (positive), a1 = 50 / 100 = 0.5 = high (positive),
    # a2 = 40 / 100 = 0.4 = low (ignored: [0.4, 0.5)), a3 = 0 (negative).
    # Image 1: a3 has IoU 1 (positive), a0-a2 IoU 0 (negative). 3 positives in the batch.
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 4], [50, 50, 60, 60]])
    targets = [
        {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([2])},
        {"boxes": torch.tensor([[50.0, 50, 60, 60]]), "labels": torch.tensor([1])},
    ]
    logits = torch.tensor([[[0.3, 1.2], [-0.5, 0.8], [2.0, 2.0], [1.0, -1.0]],
                           [[0.4, -0.2], [-1.5, 0.6], [0.1, 0.9], [0.7, -0.3]]])
    deltas = torch.zeros(2, 4, 4)
    deltas[0, 0, 0] = 0.5  # a0 sits on its box: target deltas 0, so |dx| = 0.5
    loss = DenseLoss(2, Matcher(0.5, 0.4, allow_low_quality_matches=False),
                     BoxCoder((1.0, 1.0, 1.0, 1.0)), box_loss="smooth_l1", box_loss_weight=2.0,
                     focal_alpha=0.25, focal_gamma=2.0, sampling="none")
    out = loss(logits, deltas, anchors, targets)
    # classification: per anchor the focal loss summed over the 2 classes, over every
    # non-ignored anchor (a2 of image 0 left out), divided by the 3 positives
    onehot = {(0, 0): 2, (0, 1): 2, (1, 3): 1}  # (image, anchor) -> label
    total = 0.0
    for b in range(2):
        for a in range(4):
            if (b, a) == (0, 2):
                continue
            label = onehot.get((b, a), 0)
            total += sum(_focal(float(logits[b, a, k]), int(label == k + 1)) for k in range(2))
    assert float(out["loss_cls"]) == pytest.approx(total / 3, rel=1e-5)
    # box (smooth-L1, beta 1/9: |d| - 1/18 for |d| >= 1/9, summed over the 4 deltas):
    # a0: dx 0.5 -> 0.5 - 1/18; a1 (0, 0, 10, 5) -> gt: dy = (5 - 2.5) / 5 = 0.5,
    # dh = ln 2, zero prediction -> (0.5 - 1/18) + (ln 2 - 1/18); image 1's a3: 0.
    # Sum 1.52648, times box_loss_weight 2, divided by the 3 positives = 1.01765
    box = (0.5 - 1 / 18) + (0.5 - 1 / 18) + (math.log(2) - 1 / 18)
    assert float(out["loss_box"]) == pytest.approx(2.0 * box / 3, rel=1e-5)


def test_snip_out_of_range_box_makes_its_anchors_ignored():
    # one image, K = 1: G (0, 0, 10, 10) has size 10, V (100, 100, 140, 140) size 40; with
    # valid_range [0, 32) validate_targets keeps G and moves V to invalid_boxes.
    # Matcher(0.5, 0.4): a0 = G positive; IoU with V: a1 = 1, a2 (100, 100, 140, 116)
    # 640 / 1600 = 0.4 -> both ignored; a3 (100, 100, 140, 115) 600 / 1600 = 0.375 and a4
    # (far) negative. Counted: a0 (positive), a3, a4 (negatives): 1 positive, 2 negatives,
    # 2 ignored; loss_cls = (FL(0.3, 1) + FL(1.0, 0) + FL(-1.2, 0)) / 1; a0 sits on G: box 0
    anchors = torch.tensor([[0.0, 0, 10, 10], [100, 100, 140, 140], [100, 100, 140, 116],
                            [100, 100, 140, 115], [50, 50, 60, 60]])
    boxes = torch.tensor([[0.0, 0, 10, 10], [100, 100, 140, 140]])
    logits = torch.tensor([[[0.3], [2.0], [-0.5], [1.0], [-1.2]]])
    deltas = torch.zeros(1, 5, 4)
    loss = DenseLoss(1, Matcher(0.5, 0.4, allow_low_quality_matches=False),
                     BoxCoder((1.0, 1.0, 1.0, 1.0)), box_loss="smooth_l1")
    snip = loss(logits, deltas, anchors, [{"boxes": boxes, "labels": torch.tensor([1, 1]),
                                           "valid_range": (0.0, 32.0)}])
    expected = _focal(0.3, 1) + _focal(1.0, 0) + _focal(-1.2, 0)
    assert float(snip["loss_cls"]) == pytest.approx(expected, rel=1e-5)
    assert float(snip["loss_box"]) == 0.0
    # off (both boxes ground truth): a1 is V's positive, a2 (IoU 0.4) ignored as before;
    # 2 positives: (FL(0.3, 1) + FL(2.0, 1) + FL(1.0, 0) + FL(-1.2, 0)) / 2
    off = loss(logits, deltas, anchors, [{"boxes": boxes, "labels": torch.tensor([1, 1])}])
    expected = (_focal(0.3, 1) + _focal(2.0, 1) + _focal(1.0, 0) + _focal(-1.2, 0)) / 2
    assert float(off["loss_cls"]) == pytest.approx(expected, rel=1e-5)
