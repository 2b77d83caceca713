"""Tests of ThunderNet's compressed RPN: head shapes, anchors, proposals, losses."""

from __future__ import annotations

import math

import pytest
import torch

from detkit.models.box_coder import BoxCoder
from detkit.models.heads.rpn import (
    RegionProposalNetwork,
    RPNHead,
    flatten_rpn_outputs,
    thundernet_anchor_generator,
)


def test_head_output_shapes() -> None:
    head = RPNHead(245, 256, 25)
    features, objectness, deltas = head(torch.randn(2, 245, 20, 20))
    assert features.shape == (2, 256, 20, 20)
    assert objectness.shape == (2, 25, 20, 20)
    assert deltas.shape == (2, 100, 20, 20)
    # 5x5 depthwise: 245 * 25 weights; 1x1 to 256: 245 * 256
    assert head.conv[0].weight.shape == (245, 1, 5, 5)
    assert head.conv[2].weight.shape == (256, 245, 1, 1)


def test_anchor_table() -> None:
    gen = thundernet_anchor_generator()
    assert gen.num_anchors_per_location == [25]  # 5 sizes x 5 ratios
    anchors = gen.concat([(20, 20)])
    assert anchors.shape == (20 * 20 * 25, 4)
    # first anchor: size 32, ratio h/w = 1/2 -> w = 32 / sqrt(0.5) = 45.2548,
    # h = 32 * sqrt(0.5) = 22.6274, centred on (8, 8) (stride 16)
    w, h = 32 / math.sqrt(0.5), 32 * math.sqrt(0.5)
    expected = torch.tensor([8 - w / 2, 8 - h / 2, 8 + w / 2, 8 + h / 2])
    torch.testing.assert_close(anchors[0], expected)
    # anchor 12 of a cell: size index 2 (128), ratio index 2 (1:1) -> 128 x 128 square
    torch.testing.assert_close(anchors[12], torch.tensor([-56.0, -56.0, 72.0, 72.0]))
    # the same anchor one cell to the right is shifted by 16 px in x
    torch.testing.assert_close(anchors[25 + 12], torch.tensor([-40.0, -56.0, 88.0, 72.0]))


def test_flatten_order_matches_anchor_order() -> None:
    b, a, h, w = 1, 3, 2, 4
    objectness = torch.arange(b * a * h * w, dtype=torch.float32).reshape(b, a, h, w)
    deltas = torch.arange(b * 4 * a * h * w, dtype=torch.float32).reshape(b, 4 * a, h, w)
    obj, box = flatten_rpn_outputs(objectness, deltas)
    assert obj.shape == (1, 24) and box.shape == (1, 24, 4)
    # anchor a=2 at (y=1, x=3) sits at index (1 * 4 + 3) * 3 + 2 = 23
    assert obj[0, 23] == objectness[0, 2, 1, 3]
    # its delta k=1 is channel a * 4 + k = 9
    assert box[0, 23, 1] == deltas[0, 9, 1, 3]


def test_select_proposals_picks_best_anchor_and_clips() -> None:
    rpn = RegionProposalNetwork(pre_nms_top_n=(50, 50), post_nms_top_n=(7, 7)).eval()
    features = torch.zeros(1, 245, 4, 4)
    anchors = rpn.anchors_for(features)
    objectness = torch.zeros(1, anchors.shape[0])
    best = 5 * 25 + 12  # cell (y=1, x=1), 128 x 128 square centred on (24, 24)
    objectness[0, best] = 5.0
    deltas = torch.zeros(1, anchors.shape[0], 4)
    proposals = rpn.select_proposals(objectness, deltas, anchors, [(64, 64)])
    assert len(proposals) == 1 and proposals[0].shape[0] <= 7
    # [-40, -40, 88, 88] clipped to the 64 x 64 image
    torch.testing.assert_close(proposals[0][0], torch.tensor([0.0, 0.0, 64.0, 64.0]))
    assert bool((proposals[0] >= 0).all()) and bool((proposals[0] <= 64).all())


def test_objectness_loss_is_log2_for_zero_logits() -> None:
    rpn = RegionProposalNetwork()
    features = torch.zeros(1, 245, 4, 4)
    anchors = rpn.anchors_for(features)
    n = anchors.shape[0]
    objectness = torch.zeros(1, n, requires_grad=True)
    deltas = torch.zeros(1, n, 4, requires_grad=True)
    target = {"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])}
    losses = rpn.compute_losses(objectness, deltas, anchors, [target])
    # BCE(logit 0, label 0 or 1) = ln 2 for every sampled anchor, so the mean is ln 2
    torch.testing.assert_close(losses["rpn_objectness"], torch.tensor(math.log(2.0)))
    assert float(losses["rpn_box"].detach()) > 0  # zero deltas miss the off-centre positives
    sum(losses.values()).backward()
    assert deltas.grad is not None and float(deltas.grad.abs().sum()) > 0


def test_empty_target_gives_zero_box_loss_with_grad() -> None:
    rpn = RegionProposalNetwork(batch_size_per_image=64)
    features = torch.zeros(1, 245, 3, 3)
    anchors = rpn.anchors_for(features)
    objectness = torch.zeros(1, anchors.shape[0], requires_grad=True)
    deltas = torch.randn(1, anchors.shape[0], 4, requires_grad=True)
    target = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = rpn.compute_losses(objectness, deltas, anchors, [target])
    assert float(losses["rpn_box"].detach()) == 0.0
    torch.testing.assert_close(losses["rpn_objectness"], torch.tensor(math.log(2.0)))
    sum(losses.values()).backward()
    # 64 negatives sampled, each with gradient sigmoid(0) / 64 = 1 / 128
    assert int((objectness.grad != 0).sum()) == 64
    torch.testing.assert_close(objectness.grad.max(), torch.tensor(1.0 / 128))


def test_exact_losses_with_anchors_at_both_thresholds() -> None:
    # gt (0, 0, 10, 10). IoU: a0 = 1 (positive), a1 (0, 0, 10, 7) = 70 / 100 = 0.7 = fg
    # threshold (positive), a2 (0, 0, 10, 3) = 0.3 = bg threshold (in [0.3, 0.7): ignored),
    # a3 far away = 0 (negative). 256 per image with <= 50 % positives takes all 3.
    rpn = RegionProposalNetwork(fg_iou_thresh=0.7, bg_iou_thresh=0.3, box_loss="smooth_l1",
                                box_coder=BoxCoder((1.0, 1.0, 1.0, 1.0)))
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 7], [0, 0, 10, 3], [40, 40, 50, 50]])
    objectness = torch.tensor([[1.0, -0.5, 2.0, 0.3]])
    deltas = torch.zeros(1, 4, 4)
    target = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1])}
    losses = rpn.compute_losses(objectness, deltas, anchors, [target])
    # BCE: label 1 -> ln(1 + e^-x), label 0 -> ln(1 + e^x); mean over the 3 sampled
    bce = math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(0.5)) + math.log(1 + math.exp(0.3))
    assert float(losses["rpn_objectness"]) == pytest.approx(bce / 3, rel=1e-6)
    # smooth-L1 (beta 1/9) on a1's target deltas: dy = (5 - 3.5) / 7, dh = ln(10 / 7);
    # a0 sits on the box (0). Summed, divided by the 3 sampled anchors
    box = (1.5 / 7 - 1 / 18) + (math.log(10 / 7) - 1 / 18)
    assert float(losses["rpn_box"]) == pytest.approx(box / 3, rel=1e-5)


def test_forward_train_and_eval() -> None:
    torch.manual_seed(0)
    rpn = RegionProposalNetwork()
    features = torch.randn(2, 245, 5, 5)
    targets = [
        {"boxes": torch.tensor([[4.0, 4.0, 60.0, 50.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    out = rpn(features, [(80, 80), (72, 64)], targets)
    assert set(out.losses) == {"rpn_objectness", "rpn_box"}
    # the forward's losses are compute_losses on the head's own (flattened) outputs
    _, objectness, deltas = rpn.head(features)
    flat_obj, flat_deltas = flatten_rpn_outputs(objectness, deltas)
    torch.manual_seed(1)
    out = rpn(features, [(80, 80), (72, 64)], targets)
    torch.manual_seed(1)
    direct = rpn.compute_losses(flat_obj, flat_deltas, rpn.anchors_for(features), targets)
    for key in ("rpn_objectness", "rpn_box"):
        torch.testing.assert_close(out.losses[key], direct[key])
    assert float(out.losses["rpn_box"].detach()) > 0  # the box of image 0 has positive anchors
    rpn.eval()
    out = rpn(features, [(80, 80), (72, 64)])
    assert out.losses == {}
    torch.testing.assert_close(out.features, rpn.head(features)[0])
    assert all(0 < p.shape[0] <= 200 for p in out.proposals)
    # proposals are clipped to each image (x to w, y to h)
    assert float(out.proposals[1][:, 2].max()) <= 64 and float(out.proposals[1][:, 3].max()) <= 72
    assert float(out.proposals[0].min()) >= 0


def test_mixup_weights_scale_the_matched_anchors() -> None:
    rpn = RegionProposalNetwork()
    features = torch.zeros(1, 245, 4, 4)
    anchors = rpn.anchors_for(features)
    n = anchors.shape[0]
    objectness, deltas = torch.zeros(1, n), torch.zeros(1, n, 4)
    box = torch.tensor([[8.0, 8.0, 40.0, 40.0]])
    losses = []
    for w in (1.0, 0.5):
        torch.manual_seed(0)  # the same anchors are sampled in both calls
        target = {"boxes": box, "labels": torch.tensor([1]), "weights": torch.tensor([w])}
        losses.append(rpn.compute_losses(objectness, deltas, anchors, [target]))
    # every positive anchor matches the one box: its box terms are halved exactly
    torch.testing.assert_close(losses[1]["rpn_box"], 0.5 * losses[0]["rpn_box"])
    # BCE is ln 2 per sampled anchor; positives now count 0.5: mean drops below ln 2
    assert float(losses[1]["rpn_objectness"]) < math.log(2.0) - 1e-6


def test_snip_invalid_box_anchors_are_neither_positive_nor_negative() -> None:
    # gt G (0, 0, 10, 10), invalid V (100, 100, 140, 140) (area 1600). RPN thresholds 0.7 /
    # 0.3: a0 = G positive; IoU with V: a1 = 1 and a2 (100, 100, 140, 112) 480 / 1600 = 0.3
    # (= bg threshold, not below it) -> ignored; a3 (100, 100, 140, 111) 440 / 1600 = 0.275
    # and a4 (far) -> negatives. Sampled: a0, a3, a4 (3 of 256); a0 exact -> box loss 0
    rpn = RegionProposalNetwork(fg_iou_thresh=0.7, bg_iou_thresh=0.3, box_loss="smooth_l1")
    anchors = torch.tensor([[0.0, 0, 10, 10], [100, 100, 140, 140], [100, 100, 140, 112],
                            [100, 100, 140, 111], [300, 300, 310, 310]])
    objectness = torch.tensor([[1.0, 2.0, -1.0, 0.5, -0.3]])
    deltas = torch.zeros(1, 5, 4)
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1]),
              "invalid_boxes": torch.tensor([[100.0, 100, 140, 140]])}
    losses = rpn.compute_losses(objectness, deltas, anchors, [target])
    # BCE: positive ln(1 + e^-x), negative ln(1 + e^x); mean over the 3 sampled anchors
    bce = math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(0.5)) + math.log(1 + math.exp(-0.3))
    assert float(losses["rpn_objectness"]) == pytest.approx(bce / 3, rel=1e-6)
    assert float(losses["rpn_box"]) == 0.0
    # without the invalid box a1 and a2 are negatives too: 5 sampled
    plain = rpn.compute_losses(objectness, deltas, anchors,
                               [{k: v for k, v in target.items() if k != "invalid_boxes"}])
    bce += math.log(1 + math.exp(2.0)) + math.log(1 + math.exp(-1.0))
    assert float(plain["rpn_objectness"]) == pytest.approx(bce / 5, rel=1e-6)
