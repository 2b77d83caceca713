"""Tests of ThunderNet's R-CNN stage: PSRoIAlign head, RoI sampling, losses, detections."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import ps_roi_align

from detkit.models.heads.rcnn import (
    RCNNHead,
    RCNNStage,
    SampledRoIs,
    ps_roi_align_by_roi_align,
    sample_rois,
)
from detkit.models.matching import Matcher
from detkit.models.postprocess import PostprocessConfig


def test_head_output_shapes() -> None:
    head = RCNNHead(num_classes=80)
    features = torch.randn(2, 245, 20, 20)
    boxes = [
        torch.tensor([[0.0, 0.0, 64.0, 64.0], [10.0, 20.0, 200.0, 300.0], [5, 5, 6, 6]]),
        torch.tensor([[100.0, 100.0, 319.0, 319.0], [0.0, 0.0, 320.0, 320.0]]),
    ]
    logits, deltas = head(features, boxes)
    assert logits.shape == (5, 81)
    assert deltas.shape == (5, 4)  # class-agnostic by default
    specific = RCNNHead(num_classes=80, class_agnostic=False)
    assert specific(features, boxes)[1].shape == (5, 320)
    assert head.fc.in_features == 245 and head.fc.out_features == 1024


def test_ps_roi_align_layout_on_hand_set_map() -> None:
    # channel c is the constant c: PSRoIAlign output channel o at bin (i, j) reads input
    # channel (o * 7 + i) * 7 + j, so the flattened 245-vector is 0, 1, ..., 244
    head = RCNNHead(num_classes=3)
    features = torch.arange(245, dtype=torch.float32).reshape(1, 245, 1, 1).expand(1, 245, 8, 8)
    pooled = head.pool(features.contiguous(), [torch.tensor([[16.0, 16.0, 96.0, 80.0]])])
    assert pooled.shape == (1, 245)
    torch.testing.assert_close(pooled[0], torch.arange(245, dtype=torch.float32))


def test_export_pooling_equals_ps_roi_align() -> None:
    torch.manual_seed(0)
    features = torch.randn(2, 245, 12, 12)
    boxes = [
        torch.tensor([[3.0, 7.0, 150.0, 101.0], [-4.0, -4.0, 40.0, 60.0]]),
        torch.tensor([[50.0, 60.0, 51.0, 62.0]]),
    ]
    expected = ps_roi_align(features, boxes, 7, 1.0 / 16, 2)
    assert expected.shape == (3, 5, 7, 7)
    torch.testing.assert_close(ps_roi_align_by_roi_align(features, boxes, 7, 1.0 / 16, 2), expected)


def test_sample_rois_hand_case() -> None:
    proposals = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 4.0]])
    target = {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
        "labels": torch.tensor([2]),
        "weights": torch.tensor([0.5]),
    }
    matcher = Matcher(0.5, 0.5, allow_low_quality_matches=False)
    s = sample_rois(proposals, target, matcher, batch_size_per_image=8, positive_fraction=0.5)
    # RoIs: the 2 proposals + the gt box. IoU with gt: 1.0, 40/100 = 0.4, 1.0
    # -> foreground: proposal 0 and the gt copy (label 2, weight 0.5); background: proposal 1
    assert s.rois.shape == (3, 4)
    assert s.labels.tolist() == [2, 2, 0]
    assert s.weights.tolist() == [0.5, 0.5, 1.0]
    torch.testing.assert_close(s.rois[2], proposals[1])
    torch.testing.assert_close(s.target_boxes[:2], target["boxes"].expand(2, 4))


def test_sample_rois_leaves_out_rois_of_an_invalid_box() -> None:
    # gt G (0, 0, 10, 10) label 2; SNIP invalid V (100, 100, 140, 140) (area 1600). Matcher
    # 0.5 / 0.5. IoU: p0 (0, 0, 10, 8) with G 0.8 -> fg; with V: p1 (100, 100, 140, 130)
    # 1200 / 1600 = 0.75 and p2 (100, 100, 140, 120) 800 / 1600 = 0.5 -> neither fg (V is not
    # ground truth) nor bg (they overlap V at the fg threshold or more): left out;
    # p3 (100, 100, 140, 119) 760 / 1600 = 0.475 and p4 (far) -> bg. The appended G copy is
    # fg. Sample of 16 with <= 25 % fg (4): fg p0, G; bg p3, p4
    proposals = torch.tensor([[0.0, 0, 10, 8], [100, 100, 140, 130], [100, 100, 140, 120],
                              [100, 100, 140, 119], [300, 300, 310, 310]])
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([2]),
              "invalid_boxes": torch.tensor([[100.0, 100, 140, 140]])}
    matcher = Matcher(0.5, 0.5, allow_low_quality_matches=False)
    s = sample_rois(proposals, target, matcher, batch_size_per_image=16, positive_fraction=0.25)
    expected_rois = torch.tensor([[0.0, 0, 10, 8], [0, 0, 10, 10], [100, 100, 140, 119],
                                  [300, 300, 310, 310]])
    torch.testing.assert_close(s.rois, expected_rois)
    assert s.labels.tolist() == [2, 2, 0, 0]
    torch.testing.assert_close(s.target_boxes[:2], target["boxes"].expand(2, 4))
    # without the invalid box p1, p2 are background too: 4 bg RoIs
    plain = sample_rois(proposals, {"boxes": target["boxes"], "labels": target["labels"]},
                        matcher, batch_size_per_image=16, positive_fraction=0.25)
    assert plain.labels.tolist() == [2, 2, 0, 0, 0, 0]


def _stage(box_loss: str = "ciou", **kw: object) -> RCNNStage:
    return RCNNStage(RCNNHead(num_classes=3), box_loss=box_loss, **kw)


@pytest.mark.parametrize("box_loss", ["smooth_l1", "iou", "giou", "diou", "ciou"])
@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_losses_on_exact_boxes_with_label_smoothing(box_loss: str, epsilon: float) -> None:
    stage = _stage(box_loss, label_smoothing=epsilon)
    gt = torch.tensor([[4.0, 6.0, 30.0, 20.0]])
    samples = [
        sample_rois(gt.clone(), {"boxes": gt, "labels": torch.tensor([1])}, stage.matcher, 16, 0.25)
    ]
    n = samples[0].labels.numel()  # 2 foreground RoIs of label 1 (the proposal, the gt copy)
    logits = torch.tensor([[0.0, 2.0, 0.0, 0.0]]).repeat(n, 1).requires_grad_(True)
    deltas = torch.zeros(n, 4, requires_grad=True)
    losses = stage.compute_losses(logits, deltas, samples)
    # log Z = ln(e^2 + 3) = 2.34078; q = 1 - e on label 1, e / 3 on the 3 other columns:
    # loss = -(1 - e)(2 - log Z) + e log Z = log Z - 2 (1 - e): 0.34078 (e = 0), 0.54078 (0.1)
    expected = math.log(math.exp(2) + 3) - 2 * (1 - epsilon)
    assert float(losses["rcnn_cls"].detach()) == pytest.approx(expected, rel=1e-6)
    # RoIs equal to their targets and zero deltas: every box loss is 0 (non-square box)
    assert abs(float(losses["rcnn_box"].detach())) < 1e-6
    sum(losses.values()).backward()
    assert logits.grad is not None and deltas.grad is not None


def test_mixup_weights_scale_the_losses() -> None:
    stage = _stage("giou")
    gt = torch.tensor([[4.0, 6.0, 30.0, 20.0]])
    proposals = torch.tensor([[6.0, 6.0, 30.0, 22.0]])  # IoU 0.79 with gt: foreground
    weighted = {"boxes": gt, "labels": torch.tensor([2]), "weights": torch.tensor([0.0])}
    samples = [sample_rois(proposals, weighted, stage.matcher, 16, 0.25)]
    logits, deltas = torch.randn(2, 4), torch.randn(2, 4)
    losses = stage.compute_losses(logits, deltas, samples)
    # both RoIs are foreground with weight 0: every per-box term is multiplied by 0
    assert float(losses["rcnn_box"]) == 0.0
    assert float(losses["rcnn_cls"]) == 0.0


def test_detect_sorted_clipped_and_labelled() -> None:
    config = PostprocessConfig(score_threshold=0.05, nms="nms", nms_threshold=0.5)
    stage = _stage(postprocess=config).eval()
    rois = [torch.tensor([[0.0, 0.0, 40.0, 40.0], [50.0, 50.0, 90.0, 120.0]])]
    # RoI 0: class 2 with logit 3; RoI 1: class 3 with logit 5 (others 0)
    logits = torch.tensor([[0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 5.0]])
    deltas = torch.zeros(2, 4)
    (det,) = stage.detect(logits, deltas, rois, [(100, 80)])
    # softmax: e^5 / (e^5 + 3) = 0.98019, e^3 / (e^3 + 3) = 0.87005; the rest below 0.05
    expected = [math.exp(5) / (math.exp(5) + 3), math.exp(3) / (math.exp(3) + 3)]
    torch.testing.assert_close(det["scores"], torch.tensor(expected))
    assert det["labels"].tolist() == [3, 2] and det["labels"].dtype == torch.int64
    # RoI 1 clipped to the 80 x 100 (w x h) image
    torch.testing.assert_close(
        det["boxes"], torch.tensor([[50.0, 50.0, 80.0, 100.0], [0.0, 0.0, 40.0, 40.0]])
    )


def test_class_specific_regression_uses_the_label_group() -> None:
    stage = RCNNStage(RCNNHead(num_classes=3, class_agnostic=False), box_loss="smooth_l1")
    gt = torch.tensor([[4.0, 6.0, 30.0, 20.0]])
    samples = [
        sample_rois(gt.clone(), {"boxes": gt, "labels": torch.tensor([2])}, stage.matcher, 16, 0.25)
    ]
    n = samples[0].labels.numel()  # 2 foreground RoIs (the proposal and the gt copy)
    deltas = torch.full((n, 12), 5.0)
    deltas[:, 4:8] = 0.0  # group 1 = label 2: exact boxes; groups of labels 1 and 3 far off
    losses = stage.compute_losses(torch.zeros(n, 4), deltas, samples)
    assert float(losses["rcnn_box"]) == 0.0
    deltas[:, 4:8] = 5.0
    assert float(stage.compute_losses(torch.zeros(n, 4), deltas, samples)["rcnn_box"]) > 0


@pytest.mark.parametrize("kind", ["nms", "diou_nms", "soft_nms", "cluster_nms"])
def test_every_nms_kind_keeps_disjoint_boxes(kind: str) -> None:
    config = PostprocessConfig(score_threshold=0.05, nms=kind, nms_threshold=0.5)
    stage = _stage(postprocess=config).eval()
    rois = [torch.tensor([[0.0, 0.0, 40.0, 40.0], [50.0, 50.0, 90.0, 90.0]])]
    logits = torch.tensor([[0.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0]])
    (det,) = stage.detect(logits, torch.zeros(2, 4), rois, [(100, 100)])
    # other classes: 1 / (e^4 + 3) = 0.017 and 1 / (e^3 + 3) = 0.043, below 0.05.
    # disjoint boxes: IoU 0, so no kind suppresses or decays (Soft-NMS: exp(0) = 1)
    expected = [math.exp(4) / (math.exp(4) + 3), math.exp(3) / (math.exp(3) + 3)]
    torch.testing.assert_close(det["scores"], torch.tensor(expected))
    assert det["labels"].tolist() == [1, 3]


@pytest.mark.parametrize(("box_loss", "weight", "expected"), [
    # IoU of [0, 0, 10, 10] with [0, 0, 10, 20] = 100 / 200 = 0.5, so the IoU loss is 0.5;
    # 1 foreground of 4 sampled RoIs: 12 * 0.5 / 4 = 1.5 (DIoU authors' weight 12)
    ("iou", None, 1.5),
    ("iou", 2.0, 0.25),  # 2 * 0.5 / 4
])
def test_iou_box_loss_weight_and_sampled_normaliser(box_loss: str, weight: float | None,
                                                    expected: float) -> None:
    from detkit.models.heads.rcnn import SampledRoIs

    stage = _stage(box_loss, box_loss_weight=weight)
    rois = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [70, 70, 80, 80], [5, 50, 9, 60]])
    targets = torch.zeros(4, 4)
    targets[0] = torch.tensor([0.0, 0, 10, 20])
    samples = [SampledRoIs(rois, torch.tensor([2, 0, 0, 0]), targets, torch.ones(4))]
    losses = stage.compute_losses(torch.zeros(4, 4), torch.zeros(4, 4), samples)
    torch.testing.assert_close(losses["rcnn_box"], torch.tensor(expected))


def test_exact_losses_with_a_foreground_and_a_background_roi() -> None:
    # RoI 0: foreground, label 2, on its box; RoI 1: background. Logits [0, 0, 2, 0] and
    # [1, 0, 0, 0]: cross-entropy ln(e^2 + 3) - 2 and ln(e + 3) - 1, mean over the 2 RoIs.
    # Box: smooth-L1 (beta 1/9) on the foreground deltas, predicted dx = 1 against 0:
    # 1 - 1/18, divided by the 2 sampled RoIs
    stage = RCNNStage(RCNNHead(num_classes=3), box_loss="smooth_l1", label_smoothing=0.0)
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    samples = [SampledRoIs(torch.cat([box, box + 20]), torch.tensor([2, 0]),
                           torch.cat([box, torch.zeros(1, 4)]), torch.ones(2))]
    logits = torch.tensor([[0.0, 0.0, 2.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    deltas = torch.tensor([[1.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]])  # bg deltas unused
    losses = stage.compute_losses(logits, deltas, samples)
    cls = (math.log(math.exp(2) + 3) - 2 + math.log(math.e + 3) - 1) / 2
    assert float(losses["rcnn_cls"]) == pytest.approx(cls, rel=1e-6)
    assert float(losses["rcnn_box"]) == pytest.approx((1 - 1 / 18) / 2, rel=1e-6)


def test_class_specific_detect_takes_the_box_of_the_winning_class() -> None:
    config = PostprocessConfig(score_threshold=0.05, nms="nms", nms_threshold=0.5)
    stage = RCNNStage(RCNNHead(num_classes=3, class_agnostic=False), postprocess=config).eval()
    rois = [torch.tensor([[0.0, 0.0, 40.0, 40.0], [50.0, 50.0, 90.0, 90.0]])]
    # RoI 0 scores class 1, RoI 1 class 3 (softmax as in the test above: the other classes
    # stay below 0.05); each RoI's deltas are zero in its winning class's group of 4 and 1.0
    # (a shifted, rescaled box) in the other groups, so only the right group gives the RoI back
    logits = torch.tensor([[0.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0]])
    deltas = torch.ones(2, 12)
    deltas[0, 0:4] = 0.0
    deltas[1, 8:12] = 0.0
    (det,) = stage.detect(logits, deltas, rois, [(100, 100)])
    assert det["labels"].tolist() == [1, 3]
    torch.testing.assert_close(det["boxes"], rois[0])
    expected = [math.exp(4) / (math.exp(4) + 3), math.exp(3) / (math.exp(3) + 3)]
    torch.testing.assert_close(det["scores"], torch.tensor(expected))


def test_instance_balanced_positive_sampling_keeps_the_small_box() -> None:
    # 40 proposals exactly on a large box (label 1) and none near the small box (label 2):
    # the small box's only foreground RoI is its own ground-truth copy
    large = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    small = torch.tensor([[200.0, 200.0, 210.0, 210.0]])
    target = {"boxes": torch.cat([large, small]), "labels": torch.tensor([1, 2])}
    proposals = large.expand(40, 4).clone()
    matcher = Matcher(0.5, 0.5, allow_low_quality_matches=False)
    stage = RCNNStage(RCNNHead(2, 245), batch_size_per_image=16, positive_fraction=0.25,
                      positive_sampling="instance_balanced").train()
    assert stage.positive_sampling == "instance_balanced"
    torch.manual_seed(0)
    # 42 RoIs, 41 on the large box and 1 on the small one; quota int(16 * 0.25) = 4: the small
    # box takes min(1, 4 // 2) = 1, the large min(41, 3 // 1) = 3
    s = sample_rois(proposals, target, matcher, 16, 0.25, stage.positive_sampling)
    assert sorted(s.labels.tolist()) == [1, 1, 1, 2]
    # the random sampler keeps the small box's copy with probability 4 / 42 per image
    kept = sum(2 in sample_rois(proposals, target, matcher, 16, 0.25).labels.tolist()
               for _ in range(100))
    assert kept < 25  # binomial(100, 0.095): mean 9.5, sd 2.9
    with pytest.raises(ValueError, match="positive_sampling"):
        RCNNStage(RCNNHead(2, 245), positive_sampling="balanced")
