"""Tests of the ThunderNet-lite detector: training, eval output, ablations, export."""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from detkit.models.detectors.thundernet import C4Projection, ThunderNet, thundernet_lite
from detkit.models.necks.cem import CEM
from detkit.models.postprocess import PostprocessConfig


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: with other jobs on the 2 shared cores, OpenMP spin-waits made
    2-thread training steps 20-50x slower than 1-thread ones (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images(seed: int = 0, size: int = 160) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=g) for _ in range(2)]


def _targets() -> list[dict[str, Tensor]]:
    return [
        {
            "boxes": torch.tensor([[16.0, 24.0, 64.0, 80.0], [72.0, 72.0, 120.0, 112.0]]),
            "labels": torch.tensor([1, 2]),
        },
        {"boxes": torch.tensor([[8.0, 8.0, 48.0, 48.0]]), "labels": torch.tensor([3])},
    ]


def test_training_drives_the_loss_down() -> None:
    torch.manual_seed(0)
    model = thundernet_lite(
        3, rpn_pre_nms_top_n=(600, 300), rpn_post_nms_top_n=(300, 100), rcnn_batch_size_per_image=64
    )
    model.train()
    images, targets = _images(), _targets()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    totals = []
    for _ in range(30):
        losses = model(images, targets)
        assert set(losses) == {"rpn_objectness", "rpn_box", "rcnn_cls", "rcnn_box"}
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(float(total.detach()))
    assert all(torch.isfinite(torch.tensor(totals)))
    assert totals[-1] < 0.7 * totals[0], totals


def test_eval_detections_typed_sorted_clipped() -> None:
    torch.manual_seed(1)
    model = thundernet_lite(4, score_threshold=0.0, max_detections=30).eval()
    images = [torch.rand(3, 96, 128), torch.rand(3, 128, 64)]  # padded to 128 x 128
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for det, img in zip(detections, images, strict=True):
        h, w = img.shape[-2:]
        assert set(det) == {"boxes", "scores", "labels"}
        d = det["boxes"].shape[0]
        assert 0 < d <= 30
        assert det["boxes"].shape == (d, 4) and det["boxes"].dtype == torch.float32
        assert det["scores"].shape == (d,) and det["labels"].dtype == torch.int64
        assert bool((det["scores"][:-1] >= det["scores"][1:]).all())
        assert bool((det["labels"] >= 1).all()) and bool((det["labels"] <= 4).all())
        boxes = det["boxes"]
        assert bool((boxes[:, 0::2] >= 0).all()) and bool((boxes[:, 0::2] <= w).all())
        assert bool((boxes[:, 1::2] >= 0).all()) and bool((boxes[:, 1::2] <= h).all())


def test_empty_target_image_trains() -> None:
    torch.manual_seed(2)
    model = thundernet_lite(3, rcnn_batch_size_per_image=32).train()
    targets = [
        {
            "boxes": torch.zeros((0, 4)),
            "labels": torch.zeros(0, dtype=torch.int64),
            "weights": torch.zeros(0),
            "ignore_boxes": torch.tensor([[0.0, 0.0, 40.0, 40.0]]),
        },
        {**_targets()[1], "weights": torch.tensor([0.6]), "ignore_boxes": torch.zeros((0, 4))},
    ]
    losses = model(_images(size=96), targets)
    total = sum(losses.values())
    assert bool(torch.isfinite(total))
    total.backward()
    assert model.rcnn.head.cls_score.weight.grad is not None


@pytest.mark.parametrize(("use_cem", "use_sam"), [(False, True), (True, False), (False, False)])
def test_ablation_switches(use_cem: bool, use_sam: bool) -> None:
    torch.manual_seed(0)
    model = thundernet_lite(3, use_cem=use_cem, use_sam=use_sam, rcnn_batch_size_per_image=32)
    assert isinstance(model.neck, CEM if use_cem else C4Projection)
    assert (model.sam is None) != use_sam
    losses = model.train()(_images(size=64), _targets())
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        features = model.feature_map(model.transform(_images(size=64)).tensor)
        rpn_features = model.rpn.head(features)[0]
        pooled_from = model.roi_features(features, rpn_features)
        # the R-CNN pools the SAM output F * sigmoid(BN(1x1(F_rpn))), or F itself without SAM
        if use_sam:
            attention = torch.sigmoid(model.sam.bn(model.sam.conv(rpn_features)))
            torch.testing.assert_close(pooled_from, features * attention)
        else:
            assert pooled_from is features
        out = model(_images(size=64))
    assert len(out) == 2


def test_roi_class_logits_rows_follow_images_then_boxes() -> None:
    torch.manual_seed(5)
    model = thundernet_lite(5).eval()
    images = _images(size=96)
    boxes = [
        torch.tensor([[0.0, 0.0, 50.0, 50.0]]),
        torch.tensor([[10.0, 10.0, 60.0, 60.0], [0.0, 0.0, 96.0, 96.0]]),
    ]
    with torch.no_grad():
        logits = model.roi_class_logits(images, boxes)
        # reference: each image on its own through the same layers (both are 96 x 96, so
        # the batch adds no padding); rows are image 0's box, then image 1's two boxes
        rows = []
        for image, b in zip(images, boxes, strict=True):
            f = model.feature_map(model.transform([image]).tensor)
            pooled = model.rcnn.head.pool(model.sam(f, model.rpn.head(f)[0]), [b])
            rows.append(model.rcnn.head.cls_score(torch.relu(model.rcnn.head.fc(pooled))))
    assert logits.shape == (3, 6)  # K + 1 columns
    torch.testing.assert_close(logits, torch.cat(rows), rtol=1e-4, atol=1e-5)


def test_invalid_targets_raise() -> None:
    model = thundernet_lite(3).train()
    inverted = [{"boxes": torch.tensor([[10.0, 10.0, 5.0, 40.0]]), "labels": torch.tensor([1])}]
    with pytest.raises(ValueError, match="x2 >= x1"):
        model(_images(size=64)[:1], inverted)
    bad_label = [{"boxes": torch.tensor([[1.0, 1.0, 10.0, 40.0]]), "labels": torch.tensor([4])}]
    with pytest.raises(ValueError, match="labels must be in 1..3"):
        model(_images(size=64)[:1], bad_label)
    with pytest.raises(ValueError, match="targets"):
        model(_images(size=64))


class _UpToRCNN(nn.Module):
    """The eval forward through proposals, SAM, PSRoIAlign and the R-CNN head."""

    def __init__(self, model: ThunderNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch = self.model.transform([image])
        features = self.model.feature_map(batch.tensor)
        rpn = self.model.rpn(features, batch.image_sizes)
        pooled_from = self.model.roi_features(features, rpn.features)
        logits, deltas = self.model.rcnn.head(pooled_from, rpn.proposals)
        return rpn.proposals[0], logits, deltas


class _Detections(nn.Module):
    """The full eval forward, returning tensors."""

    def __init__(self, model: ThunderNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        det = self.model([image])[0]
        return det["boxes"], det["scores"], det["labels"]


def _onnx_run(module: nn.Module, image: Tensor) -> list:
    """Export ``module`` on ``image`` (opset 17) and run the graph in onnxruntime."""
    ort = pytest.importorskip("onnxruntime", reason="the ONNX checks need onnxruntime")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (image,), buffer, dynamo=False, opset_version=17)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: image.numpy()})


def test_onnx_export_through_rcnn_head_matches_pytorch() -> None:
    torch.manual_seed(0)
    model = thundernet_lite(3, nms="nms").eval()
    image = torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        proposals, logits, deltas = _UpToRCNN(model)(image)
        outputs = _onnx_run(_UpToRCNN(model), image)
    assert proposals.shape[0] > 0
    assert logits.shape == (proposals.shape[0], 4) and deltas.shape == (proposals.shape[0], 4)
    # PSRoIAlign is exported through roi_align(aligned=True): same proposals, same logits
    for got, expected in zip(outputs, (proposals, logits, deltas), strict=True):
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-4)


def test_onnx_export_full_eval_forward_matches_pytorch() -> None:
    torch.manual_seed(0)
    model = thundernet_lite(3, nms="nms", score_threshold=0.05).eval()
    with torch.no_grad():  # spread the class scores so that some pass the threshold
        model.rcnn.head.cls_score.weight.normal_(0.0, 3.0)
    image = torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        boxes, scores, labels = _Detections(model)(image)
        got_boxes, got_scores, got_labels = _onnx_run(_Detections(model), image)
    assert boxes.shape[0] > 0  # an input with detections
    np.testing.assert_allclose(got_scores, scores.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_boxes, boxes.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(got_labels, labels.numpy())


def test_anchor_sizes_reach_the_rpn() -> None:
    model = thundernet_lite(3, anchor_sizes=[16, 32, 64, 128, 256])
    gen = model.rpn.anchor_generator
    assert gen.sizes == [[16.0, 32.0, 64.0, 128.0, 256.0]] and gen.strides == [16]
    assert gen.num_anchors_per_location == [25]  # 5 sizes x 5 ratios, as the head predicts
    # first anchor of cell (0, 0): size 16, ratio h/w 0.5 -> w = 16 / sqrt(0.5) = 22.627,
    # h = 16 * sqrt(0.5) = 11.314, centred on the cell centre (8, 8)
    w, h = 16 / 0.5**0.5, 16 * 0.5**0.5
    expected = torch.tensor([8 - w / 2, 8 - h / 2, 8 + w / 2, 8 + h / 2])
    torch.testing.assert_close(gen.cells[0][0], expected)
    # the default keeps the paper's sizes
    assert thundernet_lite(3).rpn.anchor_generator.sizes == [[32.0, 64.0, 128.0, 256.0, 512.0]]
    with pytest.raises(ValueError, match="anchor_sizes must be positive"):
        thundernet_lite(3, anchor_sizes=[0, 32])


def test_anchor_densities_tile_the_small_anchor() -> None:
    model = thundernet_lite(3, anchor_sizes=[16, 32], anchor_densities=[2, 1])
    gen = model.rpn.anchor_generator
    # size 16: 5 ratios x 2 x 2 tiles = 20, size 32: 5 -> 25 per cell, and the head predicts 25
    assert gen.num_anchors_per_location == [25]
    assert model.rpn.head.objectness.out_channels == 25
    # tiles of the 16-px square anchor (ratio 1, the 3rd ratio: rows 8..11) sit at
    # (k + 0.5) / 2 * 16 = 4 and 12 px: x centres 4, 12, 4, 12
    square = gen.cells[0][8:12]
    torch.testing.assert_close((square[:, 0] + square[:, 2]) / 2,
                               torch.tensor([4.0, 12.0, 4.0, 12.0]))
    with pytest.raises(ValueError, match="anchor_densities for 2"):
        thundernet_lite(3, anchor_sizes=[16, 32], anchor_densities=[2])


# Two same-class RoIs that overlap with IoU 7/13 = 0.538 but whose DIoU criterion is
# 0.538 - 36 / 692 = 0.486 (arithmetic in tests/models/test_postprocess.py), so greedy NMS
# drops the second and DIoU-NMS keeps it. Logits [0, 4, 0, 0] and [0, 3, 0, 0] give class-1
# scores e^4 / (e^4 + 3) and e^3 / (e^3 + 3); the other classes (< 0.05) are thresholded.
_OVERLAPPING_ROIS = torch.tensor([[0.0, 0.0, 20.0, 4.0], [6.0, 0.0, 26.0, 4.0]])
_SCORE_A = math.exp(4) / (math.exp(4) + 3)
_SCORE_B = math.exp(3) / (math.exp(3) + 3)


@pytest.mark.parametrize(
    ("nms", "expected"),
    [
        ("nms", [_SCORE_A]),
        ("diou_nms", [_SCORE_A, _SCORE_B]),
        ("soft_nms", [_SCORE_A, _SCORE_B * math.exp(-98.0 / 169.0)]),  # exp(-IoU^2 / 0.5)
        ("cluster_nms", [_SCORE_A]),
    ],
)
def test_nms_switch_reaches_the_detections(nms: str, expected: list[float]) -> None:
    model = thundernet_lite(3, nms=nms, nms_threshold=0.5, score_threshold=0.05).eval()
    logits = torch.tensor([[0.0, 4.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]])
    (det,) = model.rcnn.detect(logits, torch.zeros(2, 4), [_OVERLAPPING_ROIS], [(10, 30)])
    torch.testing.assert_close(det["scores"], torch.tensor(expected))
    torch.testing.assert_close(det["boxes"], _OVERLAPPING_ROIS[: len(expected)])


def _neutral_sam(model: ThunderNet, bias: float) -> None:
    """SAM with a zero 1x1 convolution and an identity eval BN plus ``bias``: its attention
    is the constant sigmoid(bias / sqrt(1 + eps)) = sigmoid(bias), whatever the RPN map."""
    assert model.sam is not None
    with torch.no_grad():
        model.sam.conv.weight.zero_()
        model.sam.bn.weight.fill_(1.0)
        model.sam.bn.bias.fill_(bias)
    model.sam.bn.running_mean.zero_()
    model.sam.bn.running_var.fill_(1.0)


def test_sam_reweights_the_pooled_map() -> None:
    torch.manual_seed(3)
    model = thundernet_lite(3, use_sam=True).eval()
    _neutral_sam(model, 0.0)  # attention sigmoid(0) = 0.5 everywhere
    images = _images(size=96)
    boxes = [torch.tensor([[8.0, 8.0, 72.0, 64.0]]), torch.tensor([[0.0, 16.0, 96.0, 80.0]])]
    with torch.no_grad():
        features = model.feature_map(model.transform(images).tensor)
        logits = model.roi_class_logits(images, boxes)
        halved, _ = model.rcnn.head(0.5 * features, boxes)
        plain, _ = model.rcnn.head(features, boxes)
        torch.testing.assert_close(logits, halved)
        # the fc layer is affine, so pooling the unweighted map gives other logits
        assert float((logits - plain).abs().max()) > 1e-4
        # attention ~0 (sigmoid(-30) = 9e-14): the pooled vector is 0, so every RoI's
        # logits are cls_score(relu(fc.bias)), whatever the image
        _neutral_sam(model, -30.0)
        blind = model.roi_class_logits(images, boxes)
        head = model.rcnn.head
        expected = head.cls_score(torch.relu(head.fc.bias)).expand(2, 4)
        torch.testing.assert_close(blind, expected)
        model.sam = None  # use_sam=False pools the CEM map itself
        torch.testing.assert_close(model.roi_class_logits(images, boxes), plain)


def test_cem_switch_changes_the_feature_map() -> None:
    torch.manual_seed(4)
    images = _images(size=64)
    with_cem = thundernet_lite(3, use_cem=True).eval()
    without = thundernet_lite(3, use_cem=False).eval()
    with torch.no_grad():
        batch = with_cem.transform(images).tensor
        feats = with_cem.backbone(batch)
        c4, c5 = feats["c4"], feats["c5"]
        neck = with_cem.neck
        # CEM: 1x1(C4) + nearest-upsampled 1x1(C5) + 1x1(global mean of C5), broadcast
        lat5 = torch.nn.functional.conv2d(c5, neck.conv_c5.weight, neck.conv_c5.bias)
        glb = torch.nn.functional.conv2d(c5.mean(dim=(2, 3), keepdim=True),
                                         neck.conv_glb.weight, neck.conv_glb.bias)
        expected = (torch.nn.functional.conv2d(c4, neck.conv_c4.weight, neck.conv_c4.bias)
                    + lat5.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3) + glb)
        torch.testing.assert_close(with_cem.feature_map(batch), expected, rtol=1e-4, atol=1e-4)
        # no CEM: the 1x1 projection of C4 alone (C5 and the global context are unused)
        feats = without.backbone(batch)
        proj = without.neck.conv
        expected = torch.nn.functional.conv2d(feats["c4"], proj.weight, proj.bias)
        torch.testing.assert_close(without.feature_map(batch), expected, rtol=1e-4, atol=1e-4)


def test_zero_area_box_is_dropped_with_a_warning() -> None:
    from detkit.models.targets import DegenerateBoxWarning

    torch.manual_seed(0)
    model = thundernet_lite(3).train()
    boxes = torch.tensor([[10.0, 10.0, 10.0, 40.0], [4.0, 4.0, 30.0, 36.0]])
    target = [{"boxes": boxes, "labels": torch.tensor([1, 2])}]
    with pytest.warns(DegenerateBoxWarning, match="1 zero-area"):
        losses = model(_images(size=64)[:1], target)
    assert all(torch.isfinite(v) for v in losses.values())


def test_postprocess_settings_follow_the_builder_arguments() -> None:
    model = thundernet_lite(3, score_threshold=0.2, nms_threshold=0.6, max_detections=7,
                            class_agnostic_nms=True)
    assert model.postprocess_settings() == PostprocessConfig(0.2, 1000, "diou_nms", 0.6, 7, {},
                                                             True)
    assert thundernet_lite(3).postprocess_settings().class_agnostic_nms is False


def test_the_detectors_package_imports_thundernet_lazily() -> None:
    import detkit.models.detectors as detectors

    assert detectors.ThunderNetLite is ThunderNet
    assert detectors.thundernet_lite is thundernet_lite
    with pytest.raises(AttributeError, match="has no attribute 'ThunderNetLight'"):
        detectors.ThunderNetLight  # noqa: B018


def test_feature_channels_reach_the_rcnn_head() -> None:
    # 98 = 2 x 7 x 7 channels: PSRoIAlign keeps 98 values per RoI for the fc layer
    torch.manual_seed(0)
    model = thundernet_lite(3, feature_channels=98, max_detections=5).eval()
    assert model.rcnn.head.fc.in_features == 98
    with torch.no_grad():
        (det,) = model(_images(size=64)[:1])
    assert det["boxes"].shape[1] == 4 and len(det["scores"]) <= 5


def test_cem_context_init_from_the_config_reaches_the_neck() -> None:
    from detkit.engine.build import build_model_from_cfg

    for init, gated in (("scale", True), ("zero", False), ("default", False)):
        model = build_model_from_cfg({"type": "thundernet_lite", "cem_context_init": init}, 3)
        assert model.neck.context_init == init
        assert (model.neck.c5_scale is not None) == gated


def test_rcnn_positive_sampling_from_the_config_reaches_the_stage() -> None:
    from detkit.engine.build import build_model_from_cfg

    for kind in ("instance_balanced", "random"):
        model = build_model_from_cfg({"type": "thundernet_lite",
                                      "rcnn_positive_sampling": kind}, 3)
        assert model.rcnn.positive_sampling == kind
