"""Spatial Attention Module (SAM) of ThunderNet.

Qin et al., "ThunderNet: Towards Real-time Generic Object Detection on Mobile Devices",
ICCV 2019, section 3.3. The RPN's intermediate feature map (trained to tell objects from
background) re-weights the Context Enhancement Module's output position by position::

    F_SAM = F_CEM * sigmoid(theta(F_RPN))

where ``theta`` is a 1x1 convolution followed by batch normalisation that maps the RPN's
channels (256) to the CEM's (245 = 5 x 7 x 7, the PSRoIAlign layout). The attention map
has the same shape as ``F_CEM``, so every channel of every position gets its own weight.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SpatialAttentionModule"]


class SpatialAttentionModule(nn.Module):
    """``F_CEM * sigmoid(BN(conv1x1(F_RPN)))`` (ThunderNet, ICCV 2019, eq. 2).

    Args:
        rpn_channels: channels of the RPN feature map (256 in ThunderNet).
        out_channels: channels of the CEM feature map and of the output (245 in ThunderNet).
    """

    def __init__(self, rpn_channels: int = 256, out_channels: int = 245) -> None:
        super().__init__()
        if rpn_channels <= 0 or out_channels <= 0:
            raise ValueError(
                f"channel counts must be positive, got rpn_channels={rpn_channels}, "
                f"out_channels={out_channels}"
            )
        self.rpn_channels = rpn_channels
        self.out_channels = out_channels
        self.conv = nn.Conv2d(rpn_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def attention(self, rpn_features: Tensor) -> Tensor:
        """Attention weights in (0, 1).

        Args:
            rpn_features: ``Tensor[B, rpn_channels, H, W]``.

        Returns:
            ``Tensor[B, out_channels, H, W]``, ``sigmoid(BN(conv1x1(rpn_features)))``.
        """
        return torch.sigmoid(self.bn(self.conv(rpn_features)))

    def forward(self, cem_features: Tensor, rpn_features: Tensor) -> Tensor:
        """Re-weight the CEM features with the RPN-derived attention.

        Args:
            cem_features: ``Tensor[B, out_channels, H, W]`` (CEM output, stride 16).
            rpn_features: ``Tensor[B, rpn_channels, H, W]`` (RPN 5x5 dw + 1x1 output).

        Returns:
            ``Tensor[B, out_channels, H, W]``.
        """
        if cem_features.shape[1] != self.out_channels:
            raise ValueError(
                f"cem_features has {cem_features.shape[1]} channels, expected {self.out_channels}"
            )
        if rpn_features.shape[1] != self.rpn_channels:
            raise ValueError(
                f"rpn_features has {rpn_features.shape[1]} channels, expected {self.rpn_channels}"
            )
        if cem_features.shape[0] != rpn_features.shape[0] or (
            cem_features.shape[-2:] != rpn_features.shape[-2:]
        ):
            raise ValueError(
                "cem_features and rpn_features must share batch and spatial size, got "
                f"{tuple(cem_features.shape)} and {tuple(rpn_features.shape)}"
            )
        return cem_features * self.attention(rpn_features)
