"""Logic of the performance benchmarks' helpers (no timings): curves, input size, plain loader."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

curves = importlib.import_module("latency_parts")


def test_growth_is_last_over_first_by_x() -> None:
    assert curves.growth({960: 9.0, 320: 1.5, 640: 4.0}) == pytest.approx(6.0)
    assert math.isnan(curves.growth({320: 2.0}))


def test_write_json_adds_load_average_and_stringifies_keys(tmp_path: Path) -> None:
    path = curves.write_json(tmp_path / "sub" / "r.json", {"ms": {"a": {320: 1.0}}})
    record = json.loads(path.read_text())
    assert record["ms"] == {"a": {"320": 1.0}}
    assert isinstance(record["load_avg"], float)


def test_plot_curves_writes_a_png(tmp_path: Path) -> None:
    path = curves.plot_curves({"x (peer)": {1: 1.0, 2: 4.0}, "y": {1: 0.5, 2: 1.0}, "z": {}},
                              tmp_path / "p.png", "n", "s", "t")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_set_input_size_resizes_torchvision_ssd_and_leaves_detkit_models() -> None:
    import torchvision

    size_module = importlib.import_module("bench_latency_size")
    ssd = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=4)
    size_module.set_input_size(ssd, 640)
    assert ssd.transform.fixed_size == (640, 640)
    assert ssd.transform.min_size == (640,) and ssd.transform.max_size == 640
    plain = torch.nn.Conv2d(3, 3, 1)
    assert size_module.set_input_size(plain, 640) is plain


def test_plain_detection_letterboxes_and_flips_boxes(tmp_path: Path) -> None:
    loader_module = importlib.import_module("bench_loader_workers")
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[:, :20] = 255  # a white band on the left
    cv2.imwrite(str(tmp_path / "a.png"), image)
    boxes = np.array([[0, 10, 20, 50]], dtype=np.float32)
    labels = np.array([2], dtype=np.int64)
    record = [(tmp_path / "a.png", boxes, labels)]

    tensor, target = loader_module.PlainDetection(record, 50, flip_p=0.0)[0]
    assert tensor.shape == (3, 50, 50) and tensor.dtype == torch.float32
    assert torch.allclose(target["boxes"], torch.tensor([[0.0, 2.5, 5.0, 12.5]]))
    assert target["labels"].tolist() == [2]
    assert float(tensor[:, 25:].abs().max()) == 0.0  # padding below the 50x25 content
    assert float(tensor[0, 10, 1]) == pytest.approx(1.0)

    tensor, target = loader_module.PlainDetection(record, 50, flip_p=1.0)[0]
    assert torch.allclose(target["boxes"], torch.tensor([[45.0, 2.5, 50.0, 12.5]]))
    assert float(tensor[0, 10, 48]) == pytest.approx(1.0)
    assert float(tensor[0, 10, 1]) == pytest.approx(0.0)
