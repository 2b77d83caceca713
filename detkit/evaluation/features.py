"""Feature-map and attention pictures of a detector for one image.

:func:`capture_features` runs one eval-mode forward pass with forward hooks on named
submodules and returns their outputs; a module returning a mapping (SNet's ``c3/c4/c5``, an
FPN's ``p3..p7``, CEM's ``p4``) gives one entry per key (``"backbone.c4"``), a tuple its first
tensor (the RPN head's 256-channel map). :func:`feature_grid` draws them as a grid PNG: one row
per map, the channel mean first, then the ``channels`` channels of largest mean absolute
activation, each min-max scaled on its own (the colour shows where a map fires, not how strongly
against another). :func:`sam_attention` gives ThunderNet's Spatial Attention Module weights
``sigmoid(BN(conv1x1(F_RPN)))`` (Qin et al., ICCV 2019, eq. 2) averaged over the 245 channels,
and :func:`attention_overlay` lays them over the image as a heat map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

__all__ = ["attention_overlay", "capture_features", "default_layers", "feature_grid",
           "sam_attention", "top_channels"]


def default_layers(model: nn.Module) -> list[str]:
    """The maps worth drawing for a detkit detector: backbone stages, the neck's levels (FPN /
    SSH / CEM output) and, for ThunderNet, the RPN head's map (input of the SAM)."""
    names = dict(model.named_modules())
    return [n for n in ("backbone", "neck", "rpn.head") if n in names]


def _flatten(name: str, out: object) -> dict[str, Tensor]:
    if isinstance(out, Tensor):
        return {name: out.detach()}
    if isinstance(out, Mapping):
        return {f"{name}.{k}": v.detach() for k, v in out.items() if isinstance(v, Tensor)}
    if isinstance(out, tuple | list) and out and isinstance(out[0], Tensor):
        return {name: out[0].detach()}
    return {}


@torch.no_grad()
def capture_features(model: nn.Module, image: Tensor, layers: Sequence[str]
                     ) -> dict[str, Tensor]:
    """Outputs ``{name: Tensor[C, H, W]}`` of the named submodules for one image.

    ``image``: ``Tensor[3, H, W]`` in [0, 1] (the detector normalises it). Raises ValueError
    naming the valid module names for an unknown layer. The model runs in eval mode.
    """
    modules = dict(model.named_modules())
    unknown = [n for n in layers if n not in modules]
    if unknown:
        top = sorted(n for n in modules if n and n.count(".") < 2)
        raise ValueError(f"unknown layer(s) {unknown}; modules include: {', '.join(top)}")
    captured: dict[str, Tensor] = {}
    hooks = [modules[n].register_forward_hook(
        lambda _m, _i, out, n=n: captured.update(_flatten(n, out))) for n in layers]
    try:
        model.eval()([image])
    finally:
        for h in hooks:
            h.remove()
    return {k: v[0].float() for k, v in captured.items() if v.dim() == 4}


def top_channels(features: Tensor, k: int) -> list[int]:
    """Indices of the ``k`` channels of ``features [C, H, W]`` with the largest mean absolute
    value, largest first (ties: lower index first)."""
    energy = features.abs().mean(dim=(1, 2))
    order = sorted(range(len(energy)), key=lambda c: (-float(energy[c]), c))
    return order[:k]


def _scaled(x: Tensor) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return ((x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)).cpu().numpy()


def feature_grid(features: Mapping[str, Tensor], path: str | Path, channels: int = 7,
                 title: str = "") -> Path:
    """Write a grid PNG: a row per map (``[C, H, W]``), its channel mean then its top
    ``channels`` channels (:func:`top_channels`), each scaled to [0, 1] (viridis)."""
    if not features:
        raise ValueError("no feature maps to draw")
    cols = channels + 1
    fig = Figure(figsize=(1.6 * cols, 1.7 * len(features) + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    for r, (name, fmap) in enumerate(features.items()):
        tiles = [("mean", fmap.mean(0))]
        tiles += [(f"ch {c}", fmap[c]) for c in top_channels(fmap, channels)]
        for c, (label, tile) in enumerate(tiles):
            ax = fig.add_subplot(len(features), cols, r * cols + c + 1)
            ax.imshow(_scaled(tile), cmap="viridis", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label, fontsize=7)
            if c == 0:
                h, w = fmap.shape[-2:]
                ax.set_ylabel(f"{name}\n{fmap.shape[0]}x{h}x{w}", fontsize=7)
    return _save(fig, path, title)


def _save(fig: Figure, path: str | Path, title: str) -> Path:
    """Title (when given), tight layout, and write ``fig`` to ``path`` (folders made)."""
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


@torch.no_grad()
def sam_attention(model: nn.Module, image: Tensor) -> Tensor:
    """ThunderNet's SAM weights for one image, averaged over channels: ``Tensor[H/16, W/16]``
    in (0, 1). Raises ValueError for a model without a SAM (``use_sam=False``, dense)."""
    sam = getattr(model, "sam", None)
    if sam is None or not hasattr(model, "rpn"):
        raise ValueError("the model has no Spatial Attention Module (ThunderNet with "
                         "use_sam=True has one)")
    rpn_map = capture_features(model, image, ["rpn.head"])["rpn.head"]
    return sam.attention(rpn_map[None])[0].mean(0)


def attention_overlay(image: np.ndarray, attention: Tensor, path: str | Path,
                      alpha: float = 0.5, title: str = "") -> Path:
    """Write the image (``uint8 [H, W, 3]`` RGB) with ``attention [h, w]`` upsampled
    (bilinear) over it as a jet heat map, side by side with the plain image, and a colour
    bar of the attention values."""
    h, w = image.shape[:2]
    att = F.interpolate(attention[None, None].float(), size=(h, w), mode="bilinear",
                        align_corners=False)[0, 0].cpu().numpy()
    fig = Figure(figsize=(2 * 4.0 * w / max(h, w) + 1.0, 4.0 * h / max(h, w) + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    ax0, ax1 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax0.imshow(image)
    ax1.imshow(image)
    shown = ax1.imshow(att, cmap=colormaps["jet"], alpha=alpha, vmin=float(att.min()),
                       vmax=float(att.max()))
    for ax, label in ((ax0, "image"), (ax1, "SAM attention (channel mean)")):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label, fontsize=8)
    fig.colorbar(shown, ax=ax1, fraction=0.046, pad=0.04)
    return _save(fig, path, title)
