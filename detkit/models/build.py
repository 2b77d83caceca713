"""``build_model(cfg)``: a model from a plain mapping (the ``model:`` section of a config).

``cfg["type"]`` names the preset builder ("dense_detector", "thundernet_lite" or
"torchvision"); every other key is passed to it as a keyword argument. Keys the builder does not
take raise ``ValueError`` naming the valid keys and the closest match, e.g.
``unknown key 'box_los' for dense_detector (did you mean 'box_loss'?)``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from detkit.config import close_names

__all__ = ["MODEL_TYPES", "TORCHVISION_DETECTORS", "build_model", "build_named", "builder_keys",
           "model_builder", "name_table", "torchvision_detector", "unknown_model_key"]

# type -> "module" (builder named like the type) or "module:function".
MODEL_TYPES: dict[str, str] = {
    "dense_detector": "detkit.models.detectors.dense",
    "thundernet_lite": "detkit.models.detectors.thundernet",
    "torchvision": "detkit.models.build:torchvision_detector",
}

# Peer detectors of torchvision.models.detection that the "torchvision" type builds.
TORCHVISION_DETECTORS: tuple[str, ...] = (
    "ssdlite320_mobilenet_v3_large",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
)


def torchvision_detector(num_classes: int, name: str,
                         options: Mapping[str, Any] | None = None) -> nn.Module:
    """A torchvision detection model trained from scratch (``weights=None``, no download).

    ``num_classes`` is K, detkit's count without background; torchvision counts the
    background, so the model is built with ``num_classes=K + 1`` and predicts labels 1..K,
    the contract's labels. It follows the same ``model(images, targets)`` convention as
    detkit's detectors (normalisation and resizing happen inside it). ``options`` are
    extra keyword arguments of the torchvision builder (e.g. ``box_score_thresh``).
    """
    if name not in TORCHVISION_DETECTORS:
        hint = _nearest(str(name), list(TORCHVISION_DETECTORS))
        raise ValueError(f"unknown torchvision detector {name!r}{hint}; "
                         f"valid names: {', '.join(TORCHVISION_DETECTORS)}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    from torchvision.models import detection

    builder = getattr(detection, name)
    return builder(weights=None, weights_backbone=None, num_classes=int(num_classes) + 1,
                   **dict(options or {}))


def _nearest(name: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = close_names(name, choices)
    return f" (did you mean {close[0]!r}?)" if close else ""


def name_table(kind: str, entries: Iterable[tuple[str, Callable[..., nn.Module]]]
               ) -> dict[str, Callable[..., nn.Module]]:
    """Name -> constructor table of one ``kind`` of part; RuntimeError on a duplicate name."""
    table: dict[str, Callable[..., nn.Module]] = {}
    for name, fn in entries:
        if name in table:
            raise RuntimeError(f"duplicate {kind} name {name!r}")
        table[name] = fn
    return table


def build_named(kind: str, table: Mapping[str, Callable[..., nn.Module]], name: str,
                **kw: object) -> nn.Module:
    """``table[name](**kw)``; ValueError naming the valid choices for an unknown ``name``."""
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid: {sorted(table)}")
    return table[name](**kw)


def model_builder(model_type: str) -> Callable[..., nn.Module]:
    """The preset builder function called ``model_type``."""
    if model_type not in MODEL_TYPES:
        valid = sorted(MODEL_TYPES)
        raise ValueError(
            f"unknown model type {model_type!r}{_nearest(str(model_type), valid)}; "
            f"valid types: {', '.join(valid)}"
        )
    module, _, function = MODEL_TYPES[model_type].partition(":")
    return getattr(importlib.import_module(module), function or model_type)


def builder_keys(model_type: str) -> list[str]:
    """The keyword arguments the preset builder of ``model_type`` takes (the valid keys)."""
    params = inspect.signature(model_builder(model_type)).parameters
    return [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def unknown_model_key(cfg: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """(first key of ``cfg`` its builder does not take, the closest valid key or None), or
    None when every key is valid. ``cfg["type"]`` must name a model type."""
    valid = builder_keys(cfg["type"])
    for key in cfg:
        if key != "type" and key not in valid:
            near = close_names(str(key), valid)
            return str(key), near[0] if near else None
    return None


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    """Build the model described by ``cfg`` (``type`` plus the builder's keyword arguments)."""
    if not isinstance(cfg, Mapping):
        raise ValueError(f"the model config must be a mapping, got {type(cfg).__name__}")
    if "type" not in cfg:
        raise ValueError(f"the model config needs a 'type' key, one of {sorted(MODEL_TYPES)}")
    builder = model_builder(cfg["type"])
    params = inspect.signature(builder).parameters
    valid = builder_keys(cfg["type"])
    kwargs = {k: v for k, v in cfg.items() if k != "type"}
    unknown = unknown_model_key(cfg)
    if unknown:
        key, near = unknown
        hint = f" (did you mean {near!r}?)" if near else ""
        raise ValueError(f"unknown key {key!r} for {cfg['type']}{hint}; "
                         f"valid keys: {', '.join(valid)}")
    missing = [n for n in valid if params[n].default is inspect.Parameter.empty and n not in kwargs]
    if missing:
        raise ValueError(f"{cfg['type']} needs the key(s) {', '.join(missing)}")
    return builder(**kwargs)
