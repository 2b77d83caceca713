"""SSH detection/context module (Najibi et al., "SSH: Single Stage Headless Face Detector",
ICCV 2017, Figs. 3-4) and necks that apply it per pyramid level.

``SSHModule(in_channels, out_channels)`` with ``X = out_channels`` (a multiple of 4):

    branch A  = conv3x3(in -> X/2)                                   (3x3 receptive field)
    reduced   = ReLU(conv3x3(in -> X/4))                             (shared reduction)
    branch B  = conv3x3(reduced -> X/4)                              (5x5 receptive field)
    branch C  = conv3x3(ReLU(conv3x3(reduced -> X/4)) -> X/4)        (7x7 receptive field)
    output    = ReLU(concat[A, B, C])                                -> X channels

This is the split of the authors' released model (for X = 512: a 256-channel 3x3 conv, a
128-channel dimension reduction and 128 + 128 context channels), where the context module's
5x5 and 7x7 filters are replaced by one and two stacked 3x3 convolutions. Every convolution is
followed by BatchNorm (``norm=True``, the default) as in later SSH-based detectors such as
RetinaFace; ``norm=False`` gives plain convolutions with bias, as in the paper's VGG model.

``SSHNeck(in_channels=[...], out_channels=X, strides=None)`` applies one ``SSHModule`` per level
of an ``OrderedDict`` (FPN outputs or raw backbone features) and keeps the input keys.
``in_channels`` may be a ``{name: channels}`` mapping (e.g. ``backbone.out_channels``), which
also fixes the keys read. When a level's channels differ from ``X``, a 1x1 conv + BN + ReLU
projects it to ``X`` first, so the 3x3 convolutions never run on wide backbone maps (e.g.
2048-channel ResNet-50 C5).

``FPNSSH(in_channels, out_channels=256, num_outs=5, first_level=3, extra_source="input")`` is
``FPN`` followed by ``SSHNeck`` on all its outputs (keys ``p3 .. p7``).

Necks expose ``out_channels: int`` and ``strides: list[int]``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.models.necks.fpn import FPN, select_levels, split_channels

__all__ = ["FPNSSH", "SSHModule", "SSHNeck"]


def _conv(in_ch: int, out_ch: int, kernel: int, norm: bool) -> nn.Sequential:
    """Conv with 'same' padding, followed by BatchNorm when ``norm`` (no activation)."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(out_ch))
    return nn.Sequential(*layers)


class SSHModule(nn.Module):
    """SSH detection module: 3x3 branch (X/2) + context branches (X/4, X/4), then ReLU.

    Input ``Tensor[B, in_channels, H, W]``; output ``Tensor[B, out_channels, H, W]``.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: bool = True) -> None:
        super().__init__()
        if out_channels % 4 != 0:
            raise ValueError(f"SSHModule out_channels must be a multiple of 4, got {out_channels}")
        half, quarter = out_channels // 2, out_channels // 4
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv3x3 = _conv(in_channels, half, 3, norm)
        self.context_reduce = _conv(in_channels, quarter, 3, norm)
        self.context5x5 = _conv(quarter, quarter, 3, norm)
        self.context7x7_a = _conv(quarter, quarter, 3, norm)
        self.context7x7_b = _conv(quarter, quarter, 3, norm)

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the three branches along channels and apply ReLU."""
        a = self.conv3x3(x)
        reduced = F.relu(self.context_reduce(x))
        b = self.context5x5(reduced)
        c = self.context7x7_b(F.relu(self.context7x7_a(reduced)))
        return F.relu(torch.cat([a, b, c], dim=1))


class SSHNeck(nn.Module):
    """One :class:`SSHModule` per input level; output keys equal the input keys.

    Args:
        in_channels: channels of each input level, in the input mapping's order; a
            ``{name: channels}`` mapping also fixes which keys ``forward`` reads.
        out_channels: X, channels of every output level (multiple of 4).
        strides: stride of each level (reported as ``self.strides``); default
            ``8, 16, 32, ...``.
        norm: BatchNorm after each convolution.
    """

    def __init__(
        self,
        in_channels: Mapping[str, int] | Sequence[int],
        out_channels: int = 256,
        strides: Sequence[int] | None = None,
        norm: bool = True,
    ) -> None:
        super().__init__()
        in_channels, self.in_names = split_channels(in_channels)
        if not in_channels:
            raise ValueError("SSHNeck needs at least one input level")
        if strides is None:
            strides = [2 ** (3 + i) for i in range(len(in_channels))]
        if len(strides) != len(in_channels):
            raise ValueError(f"got {len(strides)} strides for {len(in_channels)} levels")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.strides: list[int] = list(strides)
        self.projections = nn.ModuleList(
            nn.Identity()
            if c == out_channels
            else nn.Sequential(
                nn.Conv2d(c, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            )
            for c in in_channels
        )
        self.modules_per_level = nn.ModuleList(
            SSHModule(out_channels, out_channels, norm) for _ in in_channels
        )

    def forward(self, features: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
        """``features``: mapping of ``len(in_channels)`` maps -> same keys, X channels each."""
        selected = select_levels(features, self.in_names, len(self.in_channels), "SSHNeck")
        out: OrderedDict[str, Tensor] = OrderedDict()
        for i, (name, x) in enumerate(selected.items()):
            if x.shape[1] != self.in_channels[i]:
                raise ValueError(
                    f"SSHNeck level {name!r} has {x.shape[1]} channels, "
                    f"expected {self.in_channels[i]}"
                )
            out[name] = self.modules_per_level[i](self.projections[i](x))
        return out


class FPNSSH(nn.Module):
    """:class:`~detkit.models.necks.fpn.FPN` followed by :class:`SSHNeck` on every output.

    Arguments are those of ``FPN``; ``out_channels`` must be a multiple of 4. Output keys,
    ``out_channels`` and ``strides`` are the FPN's.
    """

    def __init__(
        self,
        in_channels: Mapping[str, int] | Sequence[int],
        out_channels: int = 256,
        num_outs: int = 5,
        first_level: int = 3,
        extra_source: str = "input",
        norm: bool = True,
    ) -> None:
        super().__init__()
        self.fpn = FPN(in_channels, out_channels, num_outs, first_level, extra_source)
        self.ssh = SSHNeck([out_channels] * num_outs, out_channels, self.fpn.strides, norm)
        self.in_names = self.fpn.in_names
        self.out_channels = out_channels
        self.strides: list[int] = list(self.fpn.strides)

    def forward(self, features: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
        """Backbone features (finest first) -> ``OrderedDict(p3, ..., p7)`` after SSH."""
        return self.ssh(self.fpn(features))
