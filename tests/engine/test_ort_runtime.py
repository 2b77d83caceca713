"""detkit.engine.ort_runtime: the folded and onnxruntime runtimes give PyTorch's boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detkit.engine.export import match_detections
from detkit.engine.inference import Predictor
from detkit.engine.ort_runtime import RUNTIMES, prepare_runtime
from detkit.models.build import build_model
from detkit.models.fuse import count_batchnorm

SIZE = 64


def _thundernet(nms: str = "nms") -> torch.nn.Module:
    """A small-input ThunderNet with spread scores and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = build_model({"type": "thundernet_lite", "num_classes": 3, "score_threshold": 0.05,
                         "max_detections": 300, "nms": nms})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.rcnn.head.cls_score.weight.normal_(0.0, 3.0)
        model.rcnn.head.bbox_pred.weight.normal_(0.0, 0.3)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return model.eval()


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2)]


def test_unknown_runtime_names_the_choices() -> None:
    with pytest.raises(ValueError, match="torch, folded, onnxruntime"):
        prepare_runtime(_thundernet(), "tensorrt", SIZE)
    assert RUNTIMES == ("torch", "folded", "onnxruntime")


def test_torch_runtime_is_the_model_and_folded_drops_batchnorm() -> None:
    model = _thundernet()
    assert prepare_runtime(model, "torch", SIZE) is model
    folded = prepare_runtime(model, "folded", SIZE)
    assert count_batchnorm(folded) == 0 and count_batchnorm(model) > 0
    ref = Predictor(model, [SIZE]).predict(_images())
    got = Predictor(folded, [SIZE]).predict(_images())
    for a, b in zip(ref, got, strict=True):
        same, worst = match_detections({k: v.numpy() for k, v in b.items()},
                                       {k: v.numpy() for k, v in a.items()}, atol=1e-2)
        assert same and worst <= 1e-2


def test_onnxruntime_runtime_matches_pytorch_within_one_pixel(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the onnxruntime runtime needs onnxruntime")
    pytest.importorskip("onnx", reason="ONNX export needs the onnx package")
    model = _thundernet("nms")  # ONNX has plain NMS only: compare like with like
    ort_model = prepare_runtime(model, "onnxruntime", SIZE, tmp_path / "m.onnx", threads=1)
    assert (tmp_path / "m.onnx").is_file()
    ref = Predictor(model, [SIZE]).predict(_images())
    got = Predictor(ort_model, [SIZE]).predict(_images())
    assert sum(len(r["boxes"]) for r in ref) > 0  # the comparison is not vacuous
    for a, b in zip(ref, got, strict=True):
        assert b["labels"].dtype == torch.int64
        same, worst = match_detections({k: v.numpy() for k, v in b.items()},
                                       {k: v.numpy() for k, v in a.items()}, atol=1.0)
        assert same and worst <= 1.0
    with pytest.raises(ValueError, match="ONNX graph takes"):
        ort_model([torch.zeros(3, SIZE + 32, SIZE + 32)])
