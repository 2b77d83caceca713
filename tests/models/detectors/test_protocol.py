"""Detector protocol: named post-processing and distillation methods; torchvision adapter."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from detkit.engine.inference import postprocess_config, with_postprocess
from detkit.models.build import build_model
from detkit.models.detectors.protocol import DetkitDetector, TorchvisionAdapter, as_detector
from detkit.models.postprocess import PostprocessConfig

TINY_DENSE = {"type": "dense_detector", "backbone": "plain_cnn", "neck_channels": 16,
              "head_convs": 1, "num_classes": 3}


def test_detkit_detectors_follow_the_protocol() -> None:
    dense = build_model(TINY_DENSE)
    thunder = build_model({"type": "thundernet_lite", "num_classes": 3})
    assert isinstance(dense, DetkitDetector) and isinstance(thunder, DetkitDetector)
    assert (dense.distillation_kind, thunder.distillation_kind) == ("dense", "roi")
    new = PostprocessConfig(score_threshold=0.3, nms="soft_nms", max_detections=9)
    for model in (dense, thunder):
        model.set_postprocess_settings(new)
        assert model.postprocess_settings() is new


def test_distillation_logits_are_the_families_logits() -> None:
    torch.manual_seed(0)
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 4, 30, 40]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[1.0, 2, 20, 20], [30, 30, 60, 50]]),
                "labels": torch.tensor([2, 3])}]
    dense = build_model(TINY_DENSE).eval()
    torch.testing.assert_close(dense.distillation_logits(images, targets),
                               dense.head_logits(images))
    thunder = build_model({"type": "thundernet_lite", "num_classes": 3}).eval()
    logits = thunder.distillation_logits(images, targets)
    # one row per ground-truth box (1 + 2), K + 1 = 4 columns
    assert logits.shape == (3, 4)
    expected = thunder.roi_class_logits(images, [t["boxes"] for t in targets])
    torch.testing.assert_close(logits, expected)


def test_torchvision_models_are_seen_through_the_adapter() -> None:
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                  num_classes=4)
    view = as_detector(model)
    assert isinstance(view, TorchvisionAdapter)
    # torchvision's defaults: box_score_thresh 0.05, box_nms_thresh 0.5, 100 detections
    assert postprocess_config(model) == PostprocessConfig(0.05, 1000, "nms", 0.5, 100)
    changed = with_postprocess(model, score_threshold=0.2, max_detections=7)
    assert (changed.roi_heads.score_thresh, changed.roi_heads.detections_per_img) == (0.2, 7)
    assert model.roi_heads.score_thresh == 0.05  # the original is not modified
    with pytest.raises(ValueError, match="plain NMS"):
        with_postprocess(model, nms="diou_nms")
    # the message names the wrapped model's class
    with pytest.raises(ValueError, match=r"^FasterRCNN \(torchvision\) has no distillation "):
        view.distillation_logits([], [])


def test_other_modules_are_refused() -> None:
    with pytest.raises(ValueError, match="PostprocessConfig"):
        as_detector(torch.nn.Linear(2, 2))
    assert dataclasses.is_dataclass(PostprocessConfig)
