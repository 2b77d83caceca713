"""detkit.evaluation.features and tools/visualize_features.py: hooked maps, channel ranking by
hand, the SAM attention against the model's parts, the pictures' sizes, the command."""

from __future__ import annotations

import importlib.util
import json
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from detkit.config import load_config
from detkit.engine.build import build_model_from_cfg
from detkit.engine.checkpoint import atomic_save
from detkit.evaluation.features import (
    attention_overlay,
    capture_features,
    default_layers,
    feature_grid,
    sam_attention,
    top_channels,
)
from detkit.models.detectors.thundernet import thundernet_lite

REPO = Path(__file__).resolve().parents[2]


class TwoMaps(nn.Module):
    """'Detector': ``stem`` doubles the image, ``pyramid`` returns it and a 2x2 average pool."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.stem.weight.copy_(2.0 * torch.eye(3).reshape(3, 3, 1, 1))
        self.pyramid = Pyramid()

    def forward(self, images: list[Tensor]) -> list[dict]:
        self.pyramid(self.stem(torch.stack(images)))
        return [{}]


class Pyramid(nn.Module):
    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict([("p1", x), ("p2", nn.functional.avg_pool2d(x, 2))])


def test_capture_features_of_tensor_and_mapping_outputs() -> None:
    image = torch.arange(48, dtype=torch.float32).reshape(3, 4, 4) / 48
    maps = capture_features(TwoMaps(), image, ["stem", "pyramid"])
    assert list(maps) == ["stem", "pyramid.p1", "pyramid.p2"]
    torch.testing.assert_close(maps["stem"], 2 * image)
    # top-left 2x2 block of channel 0: 2 * (0 + 1 + 4 + 5) / 48 / 4 = 20 / 192
    assert maps["pyramid.p2"].shape == (3, 2, 2)
    assert maps["pyramid.p2"][0, 0, 0].item() == pytest.approx(20 / 192)
    with pytest.raises(ValueError, match="unknown layer.*'head'.*stem"):
        capture_features(TwoMaps(), image, ["head"])


def test_top_channels_by_hand() -> None:
    fmap = torch.zeros(4, 2, 2)
    fmap[1] = -3.0  # mean |x| 3
    fmap[2, 0, 0] = 8.0  # mean |x| 2
    fmap[3] = 2.0  # mean |x| 2, tie with channel 2: lower index first
    assert top_channels(fmap, 3) == [1, 2, 3]
    assert top_channels(fmap, 10) == [1, 2, 3, 0]


def test_sam_attention_equals_the_modules_by_hand() -> None:
    torch.manual_seed(0)
    model = thundernet_lite(2).eval()
    assert default_layers(model) == ["backbone", "neck", "rpn.head"]
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    att = sam_attention(model, image)
    with torch.no_grad():
        feats = model.feature_map(model.transform([image]).tensor)
        rpn = model.rpn.head(feats)[0]
        ref = torch.sigmoid(model.sam.bn(model.sam.conv(rpn)))[0].mean(0)
    assert att.shape == (4, 4)  # 64 / 16
    torch.testing.assert_close(att, ref)
    with pytest.raises(ValueError, match="no Spatial Attention Module"):
        sam_attention(thundernet_lite(2, use_sam=False), image)


def test_pictures_have_the_grid_size(tmp_path: Path) -> None:
    maps = {"a": torch.rand(5, 8, 8), "b": torch.rand(3, 4, 4)}
    path = feature_grid(maps, tmp_path / "g.png", channels=3)
    # figsize (1.6 x 4 columns, 1.7 x 2 rows + 0.4) inches at 100 dpi
    assert cv2.imread(str(path)).shape == (380, 640, 3)
    image = np.zeros((48, 64, 3), np.uint8)
    over = attention_overlay(image, torch.rand(3, 4), tmp_path / "a.png")
    assert cv2.imread(str(over)).shape[:2] == (360, 900)  # (2 x 4 + 1) x 100, (3 + 0.6) x 100
    with pytest.raises(ValueError, match="no feature maps"):
        feature_grid({}, tmp_path / "e.png")


def test_the_command_draws_both_pictures(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps({"images": [], "annotations": [],
                               "categories": [{"id": 1, "name": "a"}]}))
    config = tmp_path / "tn.yaml"
    config.write_text(json.dumps({"device": "cpu", "data": {"val": {"ann_file": str(ann)},
                                                             "img_size": 64},
                                  "model": {"type": "thundernet_lite", "acnet": True}}))
    cfg = load_config(config)
    torch.manual_seed(0)
    ckpt = atomic_save({"model": build_model_from_cfg(cfg["model"], 1).state_dict(),
                        "config": cfg}, tmp_path / "best.pth")
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8))
    spec = importlib.util.spec_from_file_location("vis_tool", REPO / "tools" /
                                                  "visualize_features.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(ckpt), str(img), "--out", str(tmp_path / "vis")]) == 0
    out = capsys.readouterr().out
    assert "5 maps (backbone.c3, backbone.c4, backbone.c5, neck.p4, rpn.head)" in out
    assert "SAM attention (4, 4)" in out
    assert (tmp_path / "vis" / "features.png").is_file()
    assert (tmp_path / "vis" / "attention.png").is_file()
    assert tool.main([str(ckpt), str(img), "--out", str(tmp_path / "v2"),
                      "--layers", "nope"]) == 2
