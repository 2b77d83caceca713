"""Necks: feature fusion between a backbone's ``OrderedDict`` and the detection heads.

All necks take a mapping of feature maps and return an ``OrderedDict``; they expose
``out_channels: int`` and ``strides: list[int]``.

* ``"fpn"`` -> :class:`FPN` ``(in_channels, out_channels=256, num_outs=5, first_level=3,
  extra_source="input")``, outputs ``p3 .. p7``;
* ``"ssh"`` -> :class:`SSHNeck` ``(in_channels, out_channels=256, strides=None, norm=True)``,
  keeps the input keys;
* ``"fpn_ssh"`` -> :class:`FPNSSH` (FPN arguments plus ``norm``), outputs ``p3 .. p7``;
* ``"cem"`` -> :class:`CEM` ``(c4_channels, c5_channels, out_channels=245, upsample="nearest")``,
  output ``p4`` (stride 16).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from detkit.models.build import build_named, name_table
from detkit.models.necks.cem import CEM
from detkit.models.necks.fpn import FPN
from detkit.models.necks.ssh import FPNSSH, SSHModule, SSHNeck

__all__ = ["CEM", "FPN", "FPNSSH", "NECKS", "SSHModule", "SSHNeck", "build_neck"]


NECKS: dict[str, Callable[..., nn.Module]] = name_table(
    "neck", (("fpn", FPN), ("ssh", SSHNeck), ("fpn_ssh", FPNSSH), ("cem", CEM)))


def build_neck(name: str, **kw: object) -> nn.Module:
    """Build the neck called ``name`` with keyword arguments ``kw``.

    Raises ``ValueError`` naming the valid choices for an unknown ``name``.
    """
    return build_named("neck", NECKS, name, **kw)
