"""Tests for detkit.models.backbones.torchvision_wrappers."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor

from detkit.models.backbones import build_backbone
from detkit.models.backbones.torchvision_wrappers import TorchvisionBackbone

# channels from torchvision's definitions: ResNet-18 basic blocks 64/128/256/512,
# ResNet-50 bottlenecks x4 expansion -> 512/1024/2048, MobileNetV3-Large 40 (features.6),
# 112 (features.12), 960 (features.16, the final 1x1 conv)
EXPECTED = {
    "resnet18": (128, 256, 512),
    "resnet50": (512, 1024, 2048),
    "mobilenet_v3_large": (40, 112, 960),
}
RETURN_NODES = {
    "resnet18": {"layer2": "c3", "layer3": "c4", "layer4": "c5"},
    "mobilenet_v3_large": {"features.6": "c3", "features.12": "c4", "features.16": "c5"},
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_shapes_and_channels_at_320(name: str) -> None:
    net = TorchvisionBackbone(name).eval()
    with torch.no_grad():
        feats = net(torch.rand(1, 3, 320, 320))
    c3, c4, c5 = EXPECTED[name]
    assert list(feats) == ["c3", "c4", "c5"]
    assert feats["c3"].shape == (1, c3, 40, 40)  # 320 / 8
    assert feats["c4"].shape == (1, c4, 20, 20)  # 320 / 16
    assert feats["c5"].shape == (1, c5, 10, 10)  # 320 / 32
    assert net.out_channels == {"c3": c3, "c4": c4, "c5": c5}
    assert net.strides == {"c3": 8, "c4": 16, "c5": 32}


@pytest.mark.parametrize("name", list(RETURN_NODES))
def test_matches_torchvision_feature_extractor(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(weights=None).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(ref.state_dict(), path)
    net = TorchvisionBackbone(name, weights_path=str(path)).eval()
    extractor = create_feature_extractor(ref, RETURN_NODES[name])
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        ours, theirs = net(x), extractor(x)
    for key in ("c3", "c4", "c5"):
        torch.testing.assert_close(ours[key], theirs[key])


def test_trainable_layers_freeze_top_down() -> None:
    net = TorchvisionBackbone("resnet18", trainable_layers=2)
    ref = torchvision.models.resnet18(weights=None)
    n_trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    # trainable: layer4 and layer3 only
    expected = sum(p.numel() for m in (ref.layer3, ref.layer4) for p in m.parameters())
    assert n_trainable == expected
    net.train()
    assert not net.stem[1].training  # bn1 is frozen: stays in eval mode
    assert net.layer_c4[0].bn1.training
    assert len(net.state_dict()) == len(ref.state_dict()) - 2  # classifier fc.weight/bias
    everything = TorchvisionBackbone("resnet18")  # default without weights: all trainable
    assert all(p.requires_grad for p in everything.parameters())


def test_errors_and_builder() -> None:
    with pytest.raises(ValueError, match="resnet50"):
        TorchvisionBackbone("resnet101")
    with pytest.raises(ValueError, match="0..5"):
        TorchvisionBackbone("resnet18", trainable_layers=6)
    net = build_backbone("mobilenet_v3_large", trainable_layers=0)
    assert isinstance(net, TorchvisionBackbone)
    assert not any(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="B, 3, H, W"):
        net(torch.rand(3, 32, 32))
