"""torchvision classification networks as C3/C4/C5 detection backbones.

``TorchvisionBackbone(name, weights_path=None, trainable_layers=None)`` with ``name`` in
``TORCHVISION_BACKBONES`` = ``("resnet18", "resnet50", "mobilenet_v3_large")``.

The network is built with ``torchvision.models.<name>(weights=None)`` (nothing is ever
downloaded). ``weights_path`` optionally names a local file holding the *torchvision
classification* state dict (the keys of ``torchvision.models.<name>()``); it is loaded strictly
into the full classifier with ``weights_only=True`` before the classifier head is dropped.

Returned features (``forward``): ``OrderedDict`` with keys ``"c3"`` (stride 8), ``"c4"``
(stride 16), ``"c5"`` (stride 32):

    ==================  =============================  =============================
    name                taken from                     out_channels (c3, c4, c5)
    ==================  =============================  =============================
    resnet18            layer2 / layer3 / layer4       128, 256, 512
    resnet50            layer2 / layer3 / layer4       512, 1024, 2048
    mobilenet_v3_large  features[4:7] / [7:13] / [13:]  40, 112, 960
    ==================  =============================  =============================

Attributes: ``out_channels: dict[str, int]`` and ``strides: dict[str, int]`` (same keys).
Inputs are ``Tensor[B, 3, H, W]`` already mean/std normalised (the detector does it).

``trainable_layers`` (0..5) counts trainable layer groups from the top, as in torchvision's
detection builders: ResNet groups are ``layer4, layer3, layer2, layer1, conv1+bn1``;
MobileNetV3 groups are ``features[13:], [7:13], [4:7], [1:4], [0]``. Frozen groups get
``requires_grad=False`` and their BatchNorm layers stay in eval mode during training. Default
``None`` means 5 (everything trainable) without weights and 3 with a weights file.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torchvision
from torch import Tensor, nn

from detkit.models.backbones.snet import load_local_weights

__all__ = ["TORCHVISION_BACKBONES", "TorchvisionBackbone"]

TORCHVISION_BACKBONES: tuple[str, ...] = ("resnet18", "resnet50", "mobilenet_v3_large")

_STRIDES: dict[str, int] = {"c3": 8, "c4": 16, "c5": 32}


def _resnet_parts(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """Split a torchvision ResNet into (stem, c3, c4, c5) and its layer groups, top first."""
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1)
    parts = [stem, model.layer2, model.layer3, model.layer4]
    groups = [
        model.layer4,
        model.layer3,
        model.layer2,
        model.layer1,
        nn.ModuleList([model.conv1, model.bn1]),
    ]
    return parts, groups


def _mobilenet_parts(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """Split torchvision MobileNetV3-Large features into (stem, c3, c4, c5) and groups."""
    f = model.features
    parts = [f[0:4], f[4:7], f[7:13], f[13:]]
    groups = [f[13:], f[7:13], f[4:7], f[1:4], f[0:1]]
    return parts, groups


_BUILDERS: dict[str, tuple[Callable[..., nn.Module], Callable[..., tuple], dict[str, int]]] = {
    "resnet18": (
        torchvision.models.resnet18,
        _resnet_parts,
        {"c3": 128, "c4": 256, "c5": 512},
    ),
    "resnet50": (
        torchvision.models.resnet50,
        _resnet_parts,
        {"c3": 512, "c4": 1024, "c5": 2048},
    ),
    "mobilenet_v3_large": (
        torchvision.models.mobilenet_v3_large,
        _mobilenet_parts,
        {"c3": 40, "c4": 112, "c5": 960},
    ),
}


class TorchvisionBackbone(nn.Module):
    """A torchvision classifier cut into C3/C4/C5 feature stages (see the module docstring).

    Args:
        name: one of ``TORCHVISION_BACKBONES``.
        weights_path: optional local torchvision state-dict file (loaded, never downloaded).
        trainable_layers: number of trainable layer groups from the top, 0..5; ``None`` picks
            5 without weights, 3 with weights.
    """

    def __init__(
        self, name: str, weights_path: str | None = None, trainable_layers: int | None = None
    ) -> None:
        super().__init__()
        if name not in _BUILDERS:
            raise ValueError(
                f"unknown torchvision backbone {name!r}; valid: {list(TORCHVISION_BACKBONES)}"
            )
        if trainable_layers is None:
            trainable_layers = 5 if weights_path is None else 3
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
        constructor, split, channels = _BUILDERS[name]
        model = constructor(weights=None)
        if weights_path is not None:
            load_local_weights(model, weights_path)
        parts, groups = split(model)
        self.name = name
        self.stem, self.layer_c3, self.layer_c4, self.layer_c5 = parts
        self.out_channels: dict[str, int] = dict(channels)
        self.strides: dict[str, int] = dict(_STRIDES)
        self.trainable_layers = trainable_layers
        # a plain list, so the frozen modules are not registered (and saved) a second time
        self._frozen: list[nn.Module] = list(groups[trainable_layers:])
        for group in self._frozen:
            for p in group.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> TorchvisionBackbone:
        """Set train/eval mode; BatchNorm layers of frozen groups always stay in eval mode."""
        super().train(mode)
        for group in self._frozen:
            for m in group.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """``x``: ``Tensor[B, 3, H, W]`` -> ``OrderedDict(c3, c4, c5)`` at strides 8/16/32."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a [B, 3, H, W] tensor, got shape {tuple(x.shape)}")
        c3 = self.layer_c3(self.stem(x))
        c4 = self.layer_c4(c3)
        c5 = self.layer_c5(c4)
        return OrderedDict([("c3", c3), ("c4", c4), ("c5", c5)])
