"""Asymmetric convolution blocks (ACNet; Ding et al., "ACNet: Strengthening the Kernel Skeletons
for Powerful CNN via Asymmetric Convolution Blocks", ICCV 2019).

In training a ``k x k`` convolution is replaced by three parallel branches on the same input,
each followed by its own BatchNorm, and their outputs are summed::

    y = BN_s(conv_kxk(x)) + BN_h(conv_1xk(x)) + BN_v(conv_kx1(x))

The ``1 x k`` branch is padded ``(0, k // 2)`` and the ``k x 1`` branch ``(k // 2, 0)``, so
all three sample windows centred on the same input pixel (any stride). After training, with
BatchNorm in eval mode (running statistics), every branch is a linear map and the block folds
into one ``k x k`` convolution: per branch ``W' = W * gamma / sqrt(var + eps)`` and
``b' = beta - mean * gamma / sqrt(var + eps)``; the ``1 x k`` kernel is added to the middle row
of the ``k x k`` kernel, the ``k x 1`` kernel to its middle column, the biases are summed.
Folding needs running statistics, so it refuses a block in training mode.

:func:`convert_to_acnet` turns a built network into its ACNet form in place: every square
odd ``k x k`` convolution (``k > 1``, dilation 1, 'same' padding; depthwise included) becomes an
:class:`ACBlock`. A convolution directly followed by a ``BatchNorm2d`` inside an
``nn.Sequential`` is absorbed with that BatchNorm (the block's square branch starts from both,
the BatchNorm's slot holds an ``nn.Identity``); any other convolution keeps its
slot alone and its bias becomes the square branch's BatchNorm shift. :func:`fold_acnet`
inverts it: a block that absorbed a BatchNorm becomes ``conv (no bias)`` + ``BatchNorm2d``
(an exact affine ``z + b`` with zero mean and unit variance) in the original two slots,
the others a ``conv`` with bias. The folded network therefore has the plain network's
modules, state-dict keys, parameter count and multiply-accumulates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["ACBlock", "acnet_parts", "convert_detector", "convert_to_acnet", "count_acblocks",
           "fold_acnet", "foldable_conv"]


def _fuse_bn(weight: Tensor, bn: _BatchNorm) -> tuple[Tensor, Tensor]:
    """``(W * gamma / std, beta - mean * gamma / std)`` from the running statistics."""
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    return weight * scale.reshape(-1, 1, 1, 1), beta - bn.running_mean * scale


class ACBlock(nn.Module):
    """``BN(conv kxk) + BN(conv 1xk) + BN(conv kx1)`` (see the module docstring).

    Args:
        in_channels / out_channels / kernel_size / stride / groups: as ``nn.Conv2d``
            (odd ``kernel_size >= 3``; padding is always ``kernel_size // 2``).
        absorbed_bn: True when the block replaces a ``conv + BatchNorm`` pair (it folds back
            to such a pair); False when it replaces a convolution alone (folds to a conv with
            bias).
        eps / momentum: of the three BatchNorms.

    ``forward(x [B, in, H, W]) -> [B, out, H', W']`` with ``nn.Conv2d``'s output size.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, absorbed_bn: bool = True, eps: float = 1e-5,
                 momentum: float = 0.1) -> None:
        super().__init__()
        if kernel_size < 3 or kernel_size % 2 != 1:
            raise ValueError(f"ACBlock needs an odd kernel_size >= 3, got {kernel_size}")
        k, p = int(kernel_size), int(kernel_size) // 2
        self.kernel_size = k
        self.absorbed_bn = bool(absorbed_bn)

        def conv(kh: int, kw: int, ph: int, pw: int) -> nn.Conv2d:
            return nn.Conv2d(in_channels, out_channels, (kh, kw), stride, (ph, pw),
                             groups=groups, bias=False)

        self.square = conv(k, k, p, p)
        self.hor = conv(1, k, 0, p)
        self.ver = conv(k, 1, p, 0)
        self.square_bn = nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum)
        self.hor_bn = nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum)
        self.ver_bn = nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, bn: _BatchNorm | None = None) -> ACBlock:
        """A block replacing ``conv`` (and ``bn`` after it, when given).

        The square branch starts from ``conv``'s weight and ``bn``'s affine parameters and
        statistics (or, without ``bn``, with ``conv``'s bias as its shift); the asymmetric
        branches take the default Conv2d start and a unit-gamma, zero-beta BatchNorm.
        """
        if not foldable_conv(conv):
            raise ValueError(f"cannot build an ACBlock from {conv}")
        eps = bn.eps if bn is not None else 1e-5
        momentum = bn.momentum if bn is not None and bn.momentum is not None else 0.1
        block = cls(conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0],
                    conv.groups, absorbed_bn=bn is not None, eps=eps, momentum=momentum)
        block = block.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            block.square.weight.copy_(conv.weight)
            if bn is not None:
                block.square_bn.load_state_dict(bn.state_dict())
            elif conv.bias is not None:
                block.square_bn.bias.copy_(conv.bias)
        return block

    def forward(self, x: Tensor) -> Tensor:
        """Sum of the three convolution + BatchNorm branches."""
        return (self.square_bn(self.square(x)) + self.hor_bn(self.hor(x))
                + self.ver_bn(self.ver(x)))

    def fused_kernel(self) -> tuple[Tensor, Tensor]:
        """The equivalent ``k x k`` kernel ``[out, in / groups, k, k]`` and bias ``[out]``.

        Raises RuntimeError in training mode: training-mode BatchNorm normalises with the
        batch's statistics, which no fixed kernel reproduces; call ``.eval()`` first.
        """
        if self.training:
            raise RuntimeError("ACBlock folding uses the BatchNorm running statistics; call "
                               "model.eval() before folding (training-mode BatchNorm uses "
                               "batch statistics and cannot be folded)")
        p = self.kernel_size // 2
        w_s, b_s = _fuse_bn(self.square.weight, self.square_bn)
        w_h, b_h = _fuse_bn(self.hor.weight, self.hor_bn)
        w_v, b_v = _fuse_bn(self.ver.weight, self.ver_bn)
        kernel = w_s + F.pad(w_h, (0, 0, p, p)) + F.pad(w_v, (p, p, 0, 0))
        return kernel, b_s + b_h + b_v

    @torch.no_grad()
    def fold(self) -> tuple[nn.Conv2d, nn.BatchNorm2d | None]:
        """The folded modules: ``(conv, BatchNorm)`` when the block absorbed a BatchNorm,
        else ``(conv with bias, None)``; both in eval mode, equal to the block's eval forward.
        """
        kernel, bias = self.fused_kernel()
        sq = self.square
        conv = nn.Conv2d(sq.in_channels, sq.out_channels, self.kernel_size, sq.stride,
                         self.kernel_size // 2, groups=sq.groups,
                         bias=not self.absorbed_bn).to(kernel.device, kernel.dtype)
        if not self.absorbed_bn:
            conv.weight.copy_(kernel)
            conv.bias.copy_(bias)
            return conv.eval(), None
        # BN(z) = (z - 0) / sqrt(1 + eps) * sqrt(1 + eps) + bias = z + bias
        bn = nn.BatchNorm2d(sq.out_channels, eps=self.square_bn.eps,
                            momentum=self.square_bn.momentum).to(kernel.device, kernel.dtype)
        conv.weight.copy_(kernel)
        bn.weight.fill_(math.sqrt(1.0 + bn.eps))
        bn.bias.copy_(bias)
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0)
        bn.num_batches_tracked.copy_(self.square_bn.num_batches_tracked)
        return conv.eval(), bn.eval()


def foldable_conv(module: nn.Module) -> bool:
    """True for an ``nn.Conv2d`` with a square odd kernel >= 3, dilation 1, zero 'same'
    padding (``k // 2``): the convolutions :func:`convert_to_acnet` replaces."""
    if type(module) is not nn.Conv2d:
        return False
    kh, kw = module.kernel_size
    return (kh == kw and kh >= 3 and kh % 2 == 1 and module.dilation == (1, 1)
            and module.padding == (kh // 2, kh // 2) and module.padding_mode == "zeros")


def convert_to_acnet(module: nn.Module) -> int:
    """Replace every foldable convolution under ``module`` with an :class:`ACBlock`, in place.

    Returns the number of blocks made. A convolution followed by a ``BatchNorm2d`` of its
    width in the same ``nn.Sequential`` absorbs it (module docstring). ``module`` itself must
    not be a convolution.
    """
    made = 0
    names = list(module._modules)
    for i, name in enumerate(names):
        child = module._modules[name]
        if child is None or isinstance(child, ACBlock):
            continue
        if not foldable_conv(child):
            made += convert_to_acnet(child)
            continue
        nxt = module._modules[names[i + 1]] if i + 1 < len(names) else None
        absorbs = (isinstance(module, nn.Sequential) and type(nxt) is nn.BatchNorm2d
                   and nxt.num_features == child.out_channels and nxt.track_running_stats)
        module._modules[name] = ACBlock.from_conv(child, nxt if absorbs else None)
        if absorbs:
            module._modules[names[i + 1]] = nn.Identity()
        made += 1
    return made


def fold_acnet(module: nn.Module) -> int:
    """Fold every :class:`ACBlock` under ``module`` back into plain layers, in place.

    Returns the number folded (0 for a network without blocks: a no-op). The blocks must be in
    eval mode (RuntimeError otherwise; see :meth:`ACBlock.fused_kernel`).
    """
    if isinstance(module, ACBlock):
        raise ValueError("fold_acnet needs the block's parent module; call it on the network")
    folded = 0
    names = list(module._modules)
    for i, name in enumerate(names):
        child = module._modules[name]
        if not isinstance(child, ACBlock):
            if child is not None:
                folded += fold_acnet(child)
            continue
        conv, bn = child.fold()
        module._modules[name] = conv
        if bn is not None:
            slot = names[i + 1] if i + 1 < len(names) else None
            if slot is None or type(module._modules[slot]) is not nn.Identity:
                raise RuntimeError(f"ACBlock {name!r} absorbed a BatchNorm but the next slot "
                                   "of its parent is not the nn.Identity left in its place")
            module._modules[slot] = bn
        folded += 1
    return folded


def count_acblocks(module: nn.Module) -> int:
    """Number of :class:`ACBlock` modules under ``module``."""
    return sum(isinstance(m, ACBlock) for m in module.modules())


def acnet_parts(model: nn.Module) -> list[nn.Module]:
    """The parts of a detkit detector that ``model.acnet`` converts: an SNet backbone, the
    RPN head (ThunderNet) and the dense head's two towers (its final predictors are left
    plain, so their small-weight, prior-probability start is kept)."""
    from detkit.models.backbones.snet import SNet

    parts: list[nn.Module] = []
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, SNet):
        parts.append(backbone)
    rpn = getattr(model, "rpn", None)
    if rpn is not None and hasattr(rpn, "head"):
        parts.append(rpn.head)
    head = getattr(model, "head", None)
    for tower in ("cls_tower", "box_tower"):
        if head is not None and hasattr(head, tower):
            parts.append(getattr(head, tower))
    return parts


def convert_detector(model: nn.Module) -> int:
    """:func:`convert_to_acnet` on each of :func:`acnet_parts`; returns the blocks made."""
    return sum(convert_to_acnet(part) for part in acnet_parts(model))
