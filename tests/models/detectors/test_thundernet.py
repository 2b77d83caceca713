"""Tests of the ThunderNet-lite detector: training, eval output, ablations, export."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from detkit.models.detectors.thundernet import C4Projection, ThunderNet, thundernet_lite
from detkit.models.necks.cem import CEM


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
    model = thundernet_lite(3, use_cem=use_cem, use_sam=use_sam, rcnn_batch_size_per_image=32)
    assert isinstance(model.neck, CEM if use_cem else C4Projection)
    assert (model.sam is None) != use_sam
    losses = model.train()(_images(size=64), _targets())
    sum(losses.values()).backward()
    with torch.no_grad():
        out = model.eval()(_images(size=64))
    assert len(out) == 2


def test_roi_class_logits_shape() -> None:
    model = thundernet_lite(5).eval()
    boxes = [
        torch.tensor([[0.0, 0.0, 50.0, 50.0]]),
        torch.tensor([[10.0, 10.0, 60.0, 60.0], [0.0, 0.0, 96.0, 96.0]]),
    ]
    with torch.no_grad():
        logits = model.roi_class_logits(_images(size=96), boxes)
    assert logits.shape == (3, 6)  # K + 1 columns


def test_invalid_targets_raise() -> None:
    model = thundernet_lite(3).train()
    bad_box = [{"boxes": torch.tensor([[10.0, 10.0, 10.0, 40.0]]), "labels": torch.tensor([1])}]
    with pytest.raises(ValueError, match="zero or negative width"):
        model(_images(size=64)[:1], bad_box)
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


def _onnx_bytes(module: nn.Module, image: Tensor) -> int:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (image,), buffer, dynamo=False, opset_version=17)
    return len(buffer.getvalue())


def test_onnx_export_through_rcnn_head() -> None:
    model = thundernet_lite(3, nms="nms").eval()
    image = torch.rand(3, 96, 96)
    with torch.no_grad():
        proposals, logits, deltas = _UpToRCNN(model)(image)
    assert logits.shape == (proposals.shape[0], 4) and deltas.shape == (proposals.shape[0], 4)
    # PSRoIAlign is exported through roi_align(aligned=True); parameters alone are > 1 MB
    assert _onnx_bytes(_UpToRCNN(model), image) > 1_000_000


def test_onnx_export_full_eval_forward() -> None:
    model = thundernet_lite(3, nms="nms").eval()
    assert _onnx_bytes(_Detections(model), torch.rand(3, 96, 96)) > 1_000_000


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
