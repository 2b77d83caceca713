"""Detection backbones returning ``OrderedDict(c3, c4, c5)`` feature maps (strides 8/16/32).

Every backbone exposes ``out_channels: dict[str, int]`` and ``strides: dict[str, int]`` keyed
``"c3"``, ``"c4"``, ``"c5"``. ``build_backbone(name, **kw)`` maps a config name to a constructor:

* ``"snet49"``, ``"snet146"``, ``"snet535"`` -> :class:`SNet` (kw: ``weights_path``);
* ``"plain_cnn"`` -> :class:`PlainCNN` (kw: ``widths``, ``weights_path``), for demos;
* ``"resnet18"``, ``"resnet50"``, ``"mobilenet_v3_large"`` -> :class:`TorchvisionBackbone`
  (kw: ``weights_path``, ``trainable_layers``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from detkit.models.backbones.plain import PlainCNN, plain_cnn
from detkit.models.backbones.snet import SNet, build_snet, snet49, snet146, snet535
from detkit.models.backbones.torchvision_wrappers import (
    TORCHVISION_BACKBONES,
    TorchvisionBackbone,
)
from detkit.models.build import build_named, name_table

__all__ = [
    "BACKBONES",
    "PlainCNN",
    "SNet",
    "TorchvisionBackbone",
    "build_backbone",
    "build_snet",
    "plain_cnn",
    "snet49",
    "snet146",
    "snet535",
]


_ENTRIES: list[tuple[str, Callable[..., nn.Module]]] = [
    ("snet49", snet49),
    ("snet146", snet146),
    ("snet535", snet535),
    ("plain_cnn", plain_cnn),
    *((n, partial(TorchvisionBackbone, n)) for n in TORCHVISION_BACKBONES),
]
BACKBONES: dict[str, Callable[..., nn.Module]] = name_table("backbone", _ENTRIES)


def build_backbone(name: str, **kw: object) -> nn.Module:
    """Build the backbone called ``name`` with keyword arguments ``kw``.

    Raises ``ValueError`` naming the valid choices for an unknown ``name``.
    """
    return build_named("backbone", BACKBONES, name, **kw)
