"""RetinaNet-style dense head (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

Two towers of ``num_convs`` 3x3 convolutions (each followed by GroupNorm or
BatchNorm when asked, then ReLU), shared by every pyramid level, end in a
classification conv (``A * K`` sigmoid logits per cell) and a box conv
(``A * 4`` deltas per cell). The classification bias starts at
``-log((1 - p) / p)`` with prior ``p = 0.01`` so that early training is not
swamped by the easy negatives; all other conv weights start from N(0, 0.01^2).

Outputs are per level and reshaped so that the anchor index runs (y, x, anchor),
the order of :class:`detkit.models.anchors.AnchorGenerator`:
``[B, A*K, H, W] -> [B, H, W, A, K] -> [B, H*W*A, K]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["NORMS", "DenseHead", "make_norm"]

NORMS = ("gn", "bn", "none")


def _group_count(channels: int, max_groups: int = 32) -> int:
    """The largest group count <= min(max_groups, channels // 4) that divides ``channels``.

    At least 4 channels per group keep GroupNorm defined on 1x1 maps (P7 of a small input).
    """
    groups = max(1, min(max_groups, channels // 4))
    while channels % groups != 0:
        groups -= 1
    return groups


def make_norm(kind: str | None, channels: int) -> nn.Module:
    """A normalisation layer: "gn" (GroupNorm, <= 32 groups of >= 4 channels), "bn" or "none"."""
    if kind == "gn":
        return nn.GroupNorm(_group_count(channels), channels)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind is None or kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; valid: {', '.join(NORMS)}")


def _tower(in_channels: int, channels: int, num_convs: int, norm: str | None) -> nn.Sequential:
    """``num_convs`` x (conv3x3 -> norm -> ReLU)."""
    layers: list[nn.Module] = []
    for i in range(num_convs):
        conv = nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1)
        layers += [conv, make_norm(norm, channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _flatten_level(x: Tensor, num_anchors: int) -> Tensor:
    """``[B, A*C, H, W] -> [B, H*W*A, C]``."""
    b, ac, h, w = x.shape
    c = ac // num_anchors
    return x.view(b, num_anchors, c, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, c)


class DenseHead(nn.Module):
    """Shared classification and box towers over all pyramid levels.

    Args:
        in_channels: channels of every input level (the neck's ``out_channels``).
        num_anchors: anchors per cell ``A`` (the same on every level).
        num_classes: foreground classes ``K`` (sigmoid outputs, no background column).
        num_convs: convolutions per tower (4 in RetinaNet; 1-2 for speed; 0 allowed).
        feat_channels: tower width (defaults to ``in_channels``).
        norm: "gn", "bn" or "none".
        prior_prob: initial foreground probability of every classification output.

    ``forward(features)`` takes a list of ``Tensor[B, in_channels, H_l, W_l]`` and returns
    ``(cls_logits, box_deltas)``: lists of ``Tensor[B, H_l*W_l*A, K]`` and ``[B, H_l*W_l*A, 4]``.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        num_convs: int = 4,
        feat_channels: int | None = None,
        norm: str | None = "gn",
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        if num_classes < 1 or num_anchors < 1 or num_convs < 0:
            raise ValueError(
                f"need num_classes >= 1, num_anchors >= 1, num_convs >= 0; got "
                f"{num_classes}, {num_anchors}, {num_convs}"
            )
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
        channels = feat_channels or in_channels
        self.num_anchors = int(num_anchors)
        self.num_classes = int(num_classes)
        self.cls_tower = _tower(in_channels, channels, num_convs, norm)
        self.box_tower = _tower(in_channels, channels, num_convs, norm)
        last = channels if num_convs > 0 else in_channels
        self.cls_logits = nn.Conv2d(last, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(last, num_anchors * 4, 3, padding=1)
        self._init_weights(prior_prob)

    def _init_weights(self, prior_prob: float) -> None:
        """N(0, 0.01^2) conv weights, zero biases, prior-probability classification bias."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1.0 - prior_prob) / prior_prob))

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per-level classification logits and box deltas (see the class docstring)."""
        cls_out, box_out = [], []
        for x in features:
            cls_out.append(_flatten_level(self.cls_logits(self.cls_tower(x)), self.num_anchors))
            box_out.append(_flatten_level(self.bbox_pred(self.box_tower(x)), self.num_anchors))
        return cls_out, box_out
