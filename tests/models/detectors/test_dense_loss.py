"""DenseLoss with OHEM on a background-only image still trains its hardest negatives."""

from __future__ import annotations

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
