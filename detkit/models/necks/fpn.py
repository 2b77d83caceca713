"""Feature Pyramid Network (Lin et al., "Feature Pyramid Networks for Object Detection",
CVPR 2017) with RetinaNet's extra P6/P7 levels (Lin et al., "Focal Loss for Dense Object
Detection", ICCV 2017).

Constructor::

    FPN(in_channels=[c3, c4, c5], out_channels=256, num_outs=5, first_level=3,
        extra_source="input")

* ``in_channels``: channel counts of the input levels, finest first. Either a mapping
  ``{name: channels}`` (e.g. ``backbone.out_channels``; ``{"c4": 120, "c5": 512}`` with
  ``first_level=4`` uses only C4-C5): ``forward`` then reads those keys from its input and
  ignores any other; or a plain sequence: ``forward`` then takes all values of its input in
  order (backbones here return c3, c4, c5, finest first).
* Top-down path: ``lateral_i = conv1x1(C_i)``; ``M_top = lateral_top``;
  ``M_i = lateral_i + nearest_upsample(M_{i+1}, size of lateral_i)``; ``P_i = conv3x3(M_i)``.
* Extra levels when ``num_outs > len(in_channels)``: the first extra level is a 3x3 stride-2
  conv on the coarsest *input* (C5, ``extra_source="input"``, the RetinaNet paper's choice and
  the default) or on the coarsest *output* (P5, ``extra_source="output"``); every further one
  is ReLU followed by a 3x3 stride-2 conv on the previous extra level (P7 = conv(ReLU(P6))).
* Convolutions have bias, no normalisation; weights Kaiming-uniform (a=1), bias 0.

Output: ``OrderedDict`` ``"p{first_level}" ... "p{first_level + num_outs - 1}"`` (``p3 .. p7``
by default), each ``Tensor[B, out_channels, H_i, W_i]``.
Attributes: ``out_channels: int``, ``strides: list[int]`` (``2 ** level``; 8..128 by default),
``out_names: list[str]``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FPN", "select_levels", "split_channels"]

_EXTRA_SOURCES = ("input", "output")


def split_channels(
    in_channels: Mapping[str, int] | Sequence[int],
) -> tuple[list[int], list[str] | None]:
    """``{name: channels}`` -> (channels, names); a plain sequence -> (channels, None)."""
    if isinstance(in_channels, Mapping):
        return [int(c) for c in in_channels.values()], [str(k) for k in in_channels]
    return [int(c) for c in in_channels], None


def select_levels(
    features: Mapping[str, Tensor], names: Sequence[str] | None, expected: int, owner: str
) -> OrderedDict[str, Tensor]:
    """Pick ``names`` from ``features`` (all of them, in order, when ``names`` is None).

    Raises ``KeyError`` for a missing name and ``ValueError`` when the count is not
    ``expected``; ``owner`` names the calling module in the message.
    """
    if names is not None:
        missing = [n for n in names if n not in features]
        if missing:
            raise KeyError(f"{owner} needs input keys {list(names)}; missing {missing}")
        return OrderedDict((n, features[n]) for n in names)
    if len(features) != expected:
        raise ValueError(
            f"{owner} built for {expected} input levels, got {len(features)} "
            f"({list(features.keys())})"
        )
    return OrderedDict(features.items())


class FPN(nn.Module):
    """Top-down feature pyramid with optional strided extra levels (see the module docstring).

    Args:
        in_channels: channels of each input level, finest first; a ``{name: channels}``
            mapping also fixes which keys ``forward`` reads.
        out_channels: channels of every output level.
        num_outs: number of output levels (>= ``len(in_channels)``).
        first_level: pyramid level of the finest input (3 for C3, stride 8); names and strides
            of the outputs follow from it.
        extra_source: ``"input"`` (P6 from C5) or ``"output"`` (P6 from P5).
    """

    def __init__(
        self,
        in_channels: Mapping[str, int] | Sequence[int],
        out_channels: int = 256,
        num_outs: int = 5,
        first_level: int = 3,
        extra_source: str = "input",
    ) -> None:
        super().__init__()
        in_channels, self.in_names = split_channels(in_channels)
        if not in_channels:
            raise ValueError("FPN needs at least one input level")
        if num_outs < len(in_channels):
            raise ValueError(
                f"num_outs ({num_outs}) must be >= the number of input levels ({len(in_channels)})"
            )
        if extra_source not in _EXTRA_SOURCES:
            raise ValueError(f"extra_source must be one of {_EXTRA_SOURCES}, got {extra_source!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.extra_source = extra_source
        levels = range(first_level, first_level + num_outs)
        self.out_names: list[str] = [f"p{lvl}" for lvl in levels]
        self.strides: list[int] = [2**lvl for lvl in levels]
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels
        )
        n_extra = num_outs - len(in_channels)
        first_extra_in = in_channels[-1] if extra_source == "input" else out_channels
        self.extra_convs = nn.ModuleList(
            nn.Conv2d(first_extra_in if i == 0 else out_channels, out_channels, 3, 2, 1)
            for i in range(n_extra)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, features: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
        """``features``: mapping of input maps, finest first -> ``OrderedDict`` of P levels."""
        inputs = list(select_levels(features, self.in_names, len(self.in_channels), "FPN").values())
        for i, (x, c) in enumerate(zip(inputs, self.in_channels, strict=True)):
            if x.shape[1] != c:
                raise ValueError(f"FPN input level {i} has {x.shape[1]} channels, expected {c}")
        merged = self.lateral_convs[-1](inputs[-1])
        outs = [self.output_convs[-1](merged)]
        for i in range(len(inputs) - 2, -1, -1):
            lateral = self.lateral_convs[i](inputs[i])
            top_down = F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            merged = lateral + top_down
            outs.insert(0, self.output_convs[i](merged))
        if self.extra_convs:
            x = inputs[-1] if self.extra_source == "input" else outs[-1]
            for j, conv in enumerate(self.extra_convs):
                x = conv(x if j == 0 else F.relu(x))
                outs.append(x)
        return OrderedDict(zip(self.out_names, outs, strict=True))
