"""Optimizers (SGD, AdamW, AdaBound when installed), weight-decay groups and gradient clipping.

Weight decay is not applied to normalisation layers' affine parameters nor to biases
("Bag of Tricks", He et al. 2019, section 3.1 "no bias decay").
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


def _is_norm(module: nn.Module) -> bool:
    # torchvision's FrozenBatchNorm2d holds buffers only, so it never reaches here with params.
    return isinstance(module, NORM_TYPES)


def split_decay_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split trainable params into (decay, no_decay): norm params and biases go to no_decay.

    Shared parameters appear once; frozen (requires_grad=False) parameters are left out.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if _is_norm(module) or name == "bias" or name.endswith("_bias"):
                no_decay.append(param)
            else:
                decay.append(param)
    return decay, no_decay


def param_groups(model: nn.Module, weight_decay: float, exclude_norm_bias: bool = True
                 ) -> list[dict[str, Any]]:
    """Param groups for an optimizer: one with ``weight_decay``, one with 0 for norms/biases."""
    if not exclude_norm_bias:
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": weight_decay}]
    decay, no_decay = split_decay_params(model)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def adabound_available() -> bool:
    """True when the optional ``adabound`` package is installed."""
    return importlib.util.find_spec("adabound") is not None


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any], lr: float) -> torch.optim.Optimizer:
    """Build the optimizer named by ``cfg["type"]`` ("sgd" | "adamw" | "adabound") at ``lr``.

    ``cfg`` is the ``optim`` config section (momentum, nesterov, betas, final_lr,
    weight_decay, no_decay_norm_bias).
    """
    groups = param_groups(model, cfg["weight_decay"], cfg.get("no_decay_norm_bias", True))
    kind = cfg["type"]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.get("momentum", 0.9),
                               nesterov=cfg.get("nesterov", False))
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.get("betas", (0.9, 0.999))))
    if kind == "adabound":
        if not adabound_available():
            raise ValueError("optim.type=adabound needs the optional package 'adabound' "
                             "(pip install adabound); use sgd or adamw otherwise")
        module = importlib.import_module("adabound")
        # adabound 0.0.5 calls the deprecated add_(Number, Tensor) overload on every step
        warnings.filterwarnings("ignore", message=r"This overload of add", module="adabound")
        return module.AdaBound(groups, lr=lr, betas=tuple(cfg.get("betas", (0.9, 0.999))),
                               final_lr=cfg.get("final_lr", 0.1))
    raise ValueError(f"unknown optimizer {kind!r}; valid: sgd, adamw, adabound")


def clip_gradients(params: Iterable[nn.Parameter], max_norm: float) -> float:
    """Clip the global L2 norm of the gradients to ``max_norm``; return the norm before.

    ``max_norm <= 0`` disables clipping and only measures the norm.
    """
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(grads, max_norm))
    norms = torch.stack([p.grad.detach().norm(2) for p in grads])
    return float(norms.norm(2))
