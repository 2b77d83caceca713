"""Fold BatchNorm into the preceding convolution, for evaluation and export.

In eval mode a BatchNorm layer is a per-channel affine map of its input,
``y = gamma * (x - mean) / sqrt(var + eps) + beta``. When it directly follows a
convolution ``x = W * z + b`` the two collapse into one convolution with

    s  = gamma / sqrt(var + eps)          (per output channel)
    W' = W * s[:, None, None, None]
    b' = (b - mean) * s + beta            (b = 0 for a bias-free convolution)

which gives the same output up to float rounding and removes one pass over every
activation map. The folding is exact only with the running statistics, so it
applies to a model in eval mode; the training graph keeps its BatchNorm layers.

Two patterns are folded:

* inside an ``nn.Sequential``, a ``Conv2d`` immediately followed by a BatchNorm
  (``nn.BatchNorm2d`` or torchvision's ``FrozenBatchNorm2d``): detkit's SNet,
  RPN head, SSH neck and dense head towers, torchvision's ``Conv2dNormActivation``;
* a module whose attributes ``conv`` and ``bn`` are a ``Conv2d`` and a BatchNorm
  applied as ``bn(conv(x))`` (detkit's :class:`SpatialAttentionModule`); the
  module types are listed in :data:`ATTRIBUTE_PAIRS`.

Folded BatchNorm layers are replaced by ``nn.Identity`` so module paths stay valid.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["ATTRIBUTE_PAIRS", "count_batchnorm", "fold_batchnorm", "fold_conv_bn", "is_batchnorm"]


def _attribute_pair_types() -> tuple[type, ...]:
    from detkit.models.heads.sam import SpatialAttentionModule

    return (SpatialAttentionModule,)


ATTRIBUTE_PAIRS: tuple[tuple[str, str], ...] = (("conv", "bn"),)
"""(conv, BatchNorm) attribute names folded in the modules of :func:`_attribute_pair_types`."""


def is_batchnorm(module: nn.Module) -> bool:
    """A 2-d BatchNorm with running statistics (``nn.BatchNorm2d`` or ``FrozenBatchNorm2d``)."""
    if isinstance(module, nn.BatchNorm2d):
        return module.track_running_stats and module.running_mean is not None
    return type(module).__name__ == "FrozenBatchNorm2d" and hasattr(module, "running_var")


def _bn_affine(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """(scale [C], shift [C]) in float64 with ``bn(x) = x * scale + shift`` (eval mode)."""
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    weight = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    bias = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    scale = weight / torch.sqrt(var + float(bn.eps))
    return scale, bias - mean * scale


def fold_conv_bn(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """A new ``Conv2d`` equal to ``bn(conv(x))`` with ``bn`` in eval mode (module docstring).

    ``conv`` and ``bn`` are not modified; the result has a bias and the conv's dtype/device.
    Raises ValueError when the channel counts differ or ``bn`` is not a BatchNorm.
    """
    if not is_batchnorm(bn):
        raise ValueError(f"expected a BatchNorm with running statistics, got {type(bn).__name__}")
    if conv.out_channels != bn.running_mean.numel():
        raise ValueError(f"conv has {conv.out_channels} output channels, BatchNorm "
                         f"{bn.running_mean.numel()}")
    scale, shift = _bn_affine(bn)
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(scale)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, True, conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(weight * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_(bias * scale + shift)
    return fused


def _fold_sequential(seq: nn.Sequential) -> int:
    """Fold adjacent (Conv2d, BatchNorm) children of ``seq`` in place; returns the count."""
    names = list(seq._modules)
    folded = 0
    for first, second in zip(names, names[1:], strict=False):
        conv, bn = seq._modules[first], seq._modules[second]
        if isinstance(conv, nn.Conv2d) and bn is not None and is_batchnorm(bn):
            seq._modules[first] = fold_conv_bn(conv, bn)
            seq._modules[second] = nn.Identity()
            folded += 1
    return folded


def _fold_attributes(module: nn.Module) -> int:
    """Fold the :data:`ATTRIBUTE_PAIRS` of a listed module type in place; returns the count."""
    folded = 0
    for conv_name, bn_name in ATTRIBUTE_PAIRS:
        conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
        if isinstance(conv, nn.Conv2d) and bn is not None and is_batchnorm(bn):
            setattr(module, conv_name, fold_conv_bn(conv, bn))
            setattr(module, bn_name, nn.Identity())
            folded += 1
    return folded


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` (a copy unless ``inplace``) in eval mode with BatchNorm folded into convs.

    Outputs equal the unfolded model's in eval mode up to float rounding (about 1e-6
    relative). BatchNorm layers that follow no convolution are left as they are
    (:func:`count_batchnorm` tells how many remain).
    """
    out = model if inplace else copy.deepcopy(model)
    out.eval()
    pair_types = _attribute_pair_types()
    for module in list(out.modules()):
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
        elif isinstance(module, pair_types):
            _fold_attributes(module)
    return out


def count_batchnorm(model: nn.Module) -> int:
    """Number of BatchNorm layers (``nn.BatchNorm2d`` / ``FrozenBatchNorm2d``) in ``model``."""
    return sum(1 for m in model.modules() if is_batchnorm(m))
