"""SNet backbones of ThunderNet (Qin et al., "ThunderNet: Towards Real-time Generic Object
Detection on Mobile Devices", ICCV 2019, Table 1).

SNet is ShuffleNetV2 (Ma et al., ECCV 2018) with every 3x3 depthwise convolution replaced by a
5x5 depthwise convolution (padding 2). Layout for a 320x320 input:

    =========  ==========  =====  ======  =======  =======
    layer      output      SNet49 SNet146 SNet535  repeat
    =========  ==========  =====  ======  =======  =======
    Conv1      160x160     24     24      48       1 (3x3, stride 2)
    MaxPool    80x80       -      -       -        1 (3x3, stride 2)
    Stage2     40x40  (C3) 60     132     248      1 stride-2 unit + 3
    Stage3     20x20  (C4) 120    264     496      1 stride-2 unit + 7
    Stage4     10x10       240    528     992      1 stride-2 unit + 3
    Conv5      10x10       512    -       -        1 (1x1)
    =========  ==========  =====  ======  =======  =======

Returned features (``SNet.forward``): ``OrderedDict`` with keys

* ``"c3"``: Stage2 output, stride 8;
* ``"c4"``: Stage3 output, stride 16;
* ``"c5"``: Conv5 output for SNet49, Stage4 output for SNet146 / SNet535, stride 32.

Public interface used by necks and detectors::

    net = snet49(weights_path=None)       # or snet146(), snet535(), build_snet("snet49")
    net.out_channels  # dict[str, int], e.g. {"c3": 60, "c4": 120, "c5": 512} for SNet49
    net.strides       # dict[str, int], {"c3": 8, "c4": 16, "c5": 32}
    feats = net(images)  # images: Tensor[B, 3, H, W], mean/std normalised by the detector

Every convolution is followed by BatchNorm; ReLU follows every convolution except the
depthwise ones (as in ShuffleNetV2). Measured cost of SNet49 at 320x320 with
``torch.utils.flop_counter.FlopCounterMode``: about 103.5 M multiply-accumulates (FLOPs / 2),
matching the ThunderNet paper's 49 MFLOPs at 224x224 scaled by (320 / 224)^2.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "SNET_SPECS",
    "SNet",
    "SNetSpec",
    "ShuffleUnit",
    "build_snet",
    "channel_shuffle",
    "load_local_weights",
    "snet49",
    "snet146",
    "snet535",
]


@dataclass(frozen=True)
class SNetSpec:
    """Widths of one SNet variant (ThunderNet Table 1).

    ``stage_channels`` are the output widths of Stage2/3/4; ``conv5_channels`` is the width of
    the final 1x1 convolution, or ``None`` when the variant has no Conv5.
    """

    conv1_channels: int
    stage_channels: tuple[int, int, int]
    conv5_channels: int | None
    stage_repeats: tuple[int, int, int] = (4, 8, 4)


SNET_SPECS: dict[str, SNetSpec] = {
    "snet49": SNetSpec(24, (60, 120, 240), 512),
    "snet146": SNetSpec(24, (132, 264, 528), None),
    "snet535": SNetSpec(48, (248, 496, 992), None),
}


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Channel shuffle of ShuffleNet (Zhang et al., CVPR 2018).

    ``x``: ``Tensor[B, C, H, W]`` with ``C`` divisible by ``groups``. Channels are viewed as a
    ``(groups, C // groups)`` grid and read out column by column, so with ``groups=2`` and
    ``C=6`` the channel order ``[0, 1, 2, 3, 4, 5]`` becomes ``[0, 3, 1, 4, 2, 5]``.
    Returns a new tensor; the input is not modified.
    """
    b, c, h, w = x.shape
    if c % groups != 0:
        raise ValueError(f"channel_shuffle: {c} channels are not divisible by {groups} groups")
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _conv_bn(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True
) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ ReLU); 'same' padding for odd ``kernel``."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 building block with a ``kernel x kernel`` depthwise convolution.

    * ``stride == 1``: the input is split into two halves along channels; the second half goes
      through 1x1 conv -> depthwise conv -> 1x1 conv, the first half is passed unchanged; the
      halves are concatenated and channel-shuffled (2 groups). Needs ``in_channels ==
      out_channels``.
    * ``stride == 2``: both branches see the whole input. Left: depthwise (stride 2) -> 1x1;
      right: 1x1 -> depthwise (stride 2) -> 1x1. Each branch yields ``out_channels // 2``.

    Input ``Tensor[B, in_channels, H, W]``; output ``Tensor[B, out_channels, H / s, W / s]``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, kernel: int = 5) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ShuffleUnit stride must be 1 or 2, got {stride}")
        if out_channels % 2 != 0:
            raise ValueError(f"ShuffleUnit out_channels must be even, got {out_channels}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError(
                f"stride-1 ShuffleUnit needs in_channels == out_channels, "
                f"got {in_channels} and {out_channels}"
            )
        self.stride = stride
        branch = out_channels // 2
        right_in = in_channels if stride == 2 else branch
        self.right = nn.Sequential(
            _conv_bn(right_in, branch, 1),
            _conv_bn(branch, branch, kernel, stride, groups=branch, relu=False),
            _conv_bn(branch, branch, 1),
        )
        if stride == 2:
            self.left: nn.Module = nn.Sequential(
                _conv_bn(in_channels, in_channels, kernel, 2, groups=in_channels, relu=False),
                _conv_bn(in_channels, branch, 1),
            )
        else:
            self.left = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Apply the unit; see the class docstring for shapes."""
        if self.stride == 1:
            left, right = x.chunk(2, dim=1)
        else:
            left, right = x, x
        out = torch.cat([self.left(left), self.right(right)], dim=1)
        return channel_shuffle(out, 2)


def _make_stage(in_channels: int, out_channels: int, repeats: int, kernel: int) -> nn.Sequential:
    """One stride-2 unit followed by ``repeats - 1`` stride-1 units."""
    units = [ShuffleUnit(in_channels, out_channels, 2, kernel)]
    units += [ShuffleUnit(out_channels, out_channels, 1, kernel) for _ in range(repeats - 1)]
    return nn.Sequential(*units)


def load_local_weights(module: nn.Module, weights_path: str) -> None:
    """Load a local state-dict file into ``module`` (strict; nothing is downloaded).

    The file is read with ``torch.load(..., map_location="cpu", weights_only=True)``. A
    checkpoint dict holding the state dict under ``"state_dict"`` or ``"model"`` is unwrapped.
    Raises ``FileNotFoundError`` for a missing file and ``RuntimeError`` (from
    ``load_state_dict``) naming missing / unexpected keys.
    """
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"{weights_path!r} does not hold a state dict (got {type(state)})")
    for key in ("state_dict", "model"):
        if key in state and isinstance(state[key], dict):
            state = state[key]
            break
    module.load_state_dict(state, strict=True)


class SNet(nn.Module):
    """ThunderNet's SNet backbone returning C3/C4/C5 (see the module docstring).

    Args:
        spec: channel widths, one of ``SNET_SPECS`` or a custom ``SNetSpec``.
        kernel: depthwise kernel size (5 in SNet; 3 gives plain ShuffleNetV2 widths).
        weights_path: optional local state-dict file loaded after construction.

    Attributes:
        out_channels: ``{"c3": ..., "c4": ..., "c5": ...}`` channel counts.
        strides: ``{"c3": 8, "c4": 16, "c5": 32}``.
    """

    def __init__(self, spec: SNetSpec, kernel: int = 5, weights_path: str | None = None) -> None:
        super().__init__()
        c2, c3, c4 = spec.stage_channels
        r2, r3, r4 = spec.stage_repeats
        self.conv1 = _conv_bn(3, spec.conv1_channels, 3, stride=2)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.stage2 = _make_stage(spec.conv1_channels, c2, r2, kernel)
        self.stage3 = _make_stage(c2, c3, r3, kernel)
        self.stage4 = _make_stage(c3, c4, r4, kernel)
        if spec.conv5_channels is not None:
            self.conv5: nn.Module = _conv_bn(c4, spec.conv5_channels, 1)
            c5 = spec.conv5_channels
        else:
            self.conv5 = nn.Identity()
            c5 = c4
        self.out_channels: dict[str, int] = {"c3": c2, "c4": c3, "c5": c5}
        self.strides: dict[str, int] = {"c3": 8, "c4": 16, "c5": 32}
        self._init_weights()
        if weights_path is not None:
            load_local_weights(self, weights_path)

    def _init_weights(self) -> None:
        """Kaiming-normal convolutions (fan_out), BatchNorm weight 1 / bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """``x``: ``Tensor[B, 3, H, W]`` -> ``OrderedDict(c3, c4, c5)`` at strides 8/16/32."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"SNet expects a [B, 3, H, W] tensor, got shape {tuple(x.shape)}")
        x = self.maxpool(self.conv1(x))
        c3 = self.stage2(x)
        c4 = self.stage3(c3)
        c5 = self.conv5(self.stage4(c4))
        return OrderedDict([("c3", c3), ("c4", c4), ("c5", c5)])


def build_snet(name: str, weights_path: str | None = None) -> SNet:
    """Build an SNet variant by name: ``"snet49"``, ``"snet146"`` or ``"snet535"``."""
    key = name.lower()
    if key not in SNET_SPECS:
        raise ValueError(f"unknown SNet variant {name!r}; valid: {sorted(SNET_SPECS)}")
    return SNet(SNET_SPECS[key], weights_path=weights_path)


def snet49(weights_path: str | None = None) -> SNet:
    """SNet49: C3/C4/C5 channels 60/120/512 (Conv5 of 512)."""
    return build_snet("snet49", weights_path)


def snet146(weights_path: str | None = None) -> SNet:
    """SNet146: C3/C4/C5 channels 132/264/528 (no Conv5)."""
    return build_snet("snet146", weights_path)


def snet535(weights_path: str | None = None) -> SNet:
    """SNet535: C3/C4/C5 channels 248/496/992 (no Conv5, Conv1 of 48)."""
    return build_snet("snet535", weights_path)
