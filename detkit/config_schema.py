"""The config schema: every key of a detkit config, its type, default and choices.

:data:`SCHEMA` is a nested dict of :class:`Field` leaves (the ``model`` section is an open
mapping that ``detkit.models.build`` validates itself). :func:`validate_mapping` checks a
mapping's keys and value types against it, raising :class:`ConfigError` that names the key
and the nearest valid one; :func:`defaults` is the tree of default values. Numeric value
ranges live in :mod:`detkit.config_ranges`; reading files, bases and overrides in
:mod:`detkit.config`.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SCHEMA", "VALID_KEYS", "ConfigError", "Field", "check_value", "close_names",
           "defaults", "nearest_key", "unknown_key", "validate_mapping"]


class ConfigError(ValueError):
    """Raised for an invalid config file, key, value or override."""


@dataclass(frozen=True)
class Field:
    """One typed config leaf.

    ``kind`` is one of "int", "float", "bool", "str", "list[int]", "list[float]", "list[str]",
    "list[dict]", "list[list[float]]", "dict" (an open mapping). ``optional`` allows ``None``;
    ``choices`` restricts strings.
    """

    kind: str
    default: Any
    optional: bool = False
    choices: tuple[str, ...] | None = None


def _f(kind: str, default: Any, optional: bool = False, choices: Iterable[str] | None = None
       ) -> Field:
    return Field(kind, default, optional, tuple(choices) if choices is not None else None)


_SPLIT = {"ann_file": _f("str", None, True), "img_dir": _f("str", None, True)}

SCHEMA: dict[str, Any] = {
    "seed": _f("int", 0),
    "deterministic": _f("bool", False),
    # torch intra-op threads while training; null keeps torch's default (one per core)
    "threads": _f("int", None, True),
    "device": _f("str", "auto", choices=("auto", "cpu", "cuda")),
    "data": {
        "train": dict(_SPLIT),
        "val": dict(_SPLIT),
        "synthetic": {
            "enabled": _f("bool", False),
            "out_dir": _f("str", "data/synthetic"),
            "num_images": _f("int", 100),
            "image_size": _f("int", 128),
            # detkit.data.synthetic.SyntheticStyle; [] / defaults = the COCO-like set
            "classes": _f("list[str]", []),
            "max_objects": _f("int", 10),
            "side_range": _f("list[float]", []),
            "clutter": _f("bool", True),
            "textures": _f("bool", True),
            "max_visible_loss": _f("float", 0.5),
        },
        "img_size": _f("int", 512),
        # decode every image fully while validating (slower; finds corrupt bodies)
        "full_decode": _f("bool", False),
        "batch_size": _f("int", 8),
        "num_workers": _f("int", 2),
        # albumentations entries {type: Name, ...}, plus detkit's DetectionAutoAugment (the
        # learned policy v0 of Zoph et al., detkit.data.autoaugment)
        "transforms": _f("list[dict]", []),
        # valid_ranges: SNIP's [min, max) object sizes per size (detkit.models.snip); [] = off
        "multiscale": {"enabled": _f("bool", False), "sizes": _f("list[int]", []),
                       "every": _f("int", 1), "valid_ranges": _f("list[list[float]]", [])},
        "mixup": {"enabled": _f("bool", False), "prob": _f("float", 0.5),
                  "alpha": _f("float", 1.5)},
        "mosaic": {"enabled": _f("bool", False), "prob": _f("float", 0.5),
                   "beta": _f("float", 0.3)},
        "copy_paste": {"enabled": _f("bool", False), "options": _f("dict", {})},
        "oversample": {"enabled": _f("bool", False), "repeat": _f("int", 2),
                       "max_area": _f("float", 1024.0)},
    },
    "model": _f("dict", {"type": "dense_detector"}),
    "optim": {
        "type": _f("str", "sgd", choices=("sgd", "adamw", "adabound")),
        "base_lr": _f("float", 0.01),
        "base_batch_size": _f("int", 16),
        "scale_lr": _f("bool", True),
        "momentum": _f("float", 0.9),
        "nesterov": _f("bool", False),
        "betas": _f("list[float]", [0.9, 0.999]),
        "final_lr": _f("float", 0.1),
        "weight_decay": _f("float", 1e-4),
        "no_decay_norm_bias": _f("bool", True),
        "clip_grad_norm": _f("float", 0.0),
    },
    "schedule": {
        "epochs": _f("int", 12),
        "max_iters": _f("int", 0),
        "warmup": _f("str", "linear", choices=("linear", "constant", "none")),
        "warmup_iters": _f("int", 500),
        # warmup in epochs (may be fractional); when set it replaces warmup_iters
        "warmup_epochs": _f("float", None, True),
        # warmup as a fraction of the run; when set it replaces both of the above
        "warmup_fraction": _f("float", None, True),
        "warmup_factor": _f("float", 0.001),
        "decay": _f("str", "cosine", choices=("cosine", "step", "none")),
        "milestones": _f("list[int]", []),
        "gamma": _f("float", 0.1),
        "min_lr_ratio": _f("float", 0.0),
        # training budget in minutes: stop there, the LR schedule stretched over it
        "time_budget": _f("float", None, True),
    },
    "train": {
        "amp": _f("bool", True),
        "label_smoothing": _f("float", 0.0),
        "ema": {"enabled": _f("bool", False), "decay": _f("float", 0.9998),
                "tau": _f("float", 2000.0)},
        "sync_bn": _f("bool", False),
        "find_unused_parameters": _f("bool", False),
        "max_nonfinite": _f("int", 5),
        "log_interval": _f("int", 10),
        "checkpoint_interval": _f("int", 0),
        # stop after `patience` evaluations without a better val `metric` (0: never stop);
        # best.pth keeps the weights of the best `metric` (AP, AP50, APs, ... of the evaluator)
        "early_stop": {"patience": _f("int", 0), "metric": _f("str", "AP")},
        "distill": {
            "enabled": _f("bool", False),
            "teacher_config": _f("str", None, True),
            "teacher_checkpoint": _f("str", None, True),
            "weight": _f("float", 1.0),
            "temperature": _f("float", 4.0),
        },
    },
    "eval": {
        "interval": _f("int", 1),
        "batch_size": _f("int", 8),
    },
    # test-time options (tools/test.py, tools/infer.py); None means "as trained"
    "test": {
        "ann_file": _f("str", None, True),
        "img_dir": _f("str", None, True),
        "img_size": _f("int", None, True),
        "scales": _f("list[int]", []),
        # SNIP: [min, max) detection sizes kept per entry of scales before the merge; [] = all
        "valid_ranges": _f("list[list[float]]", []),
        "nms": _f("str", None, True, choices=("nms", "diou_nms", "soft_nms", "cluster_nms")),
        "iou_threshold": _f("float", None, True),
        "score_threshold": _f("float", None, True),
        "max_detections": _f("int", None, True),
        "class_agnostic_nms": _f("bool", None, True),
        "tile": _f("int", None, True),
        "tile_overlap": _f("float", 0.25),
        "extra_area_ranges": _f("dict", {}),
        "max_dets": _f("list[int]", [1, 10, 100]),
    },
}


def _dotted_keys(schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, node in schema.items():
        path = f"{prefix}{name}"
        keys.append(path)
        if isinstance(node, Mapping):
            keys.extend(_dotted_keys(node, path + "."))
    return keys


VALID_KEYS: tuple[str, ...] = tuple(_dotted_keys(SCHEMA))


def close_names(name: str, choices: Iterable[str], n: int = 1, cutoff: float = 0.5) -> list[str]:
    """The ``n`` names of ``choices`` closest to ``name`` (difflib ratio >= ``cutoff``), best
    first: the "did you mean" of every unknown-name error in detkit."""
    return difflib.get_close_matches(str(name), list(choices), n=n, cutoff=cutoff)


def nearest_key(key: str) -> str | None:
    """Return the valid dotted key closest to ``key``, or None."""
    matches = close_names(key, VALID_KEYS)
    return matches[0] if matches else None


def unknown_key(key: str, where: str) -> ConfigError:
    """The error for an unknown dotted ``key`` found in ``where``, with the nearest valid key."""
    near = nearest_key(key)
    hint = f"; did you mean '{near}'?" if near else ""
    return ConfigError(f"unknown config key '{key}' ({where}){hint}")


def defaults() -> dict[str, Any]:
    """Return a fresh nested dict of every default value in :data:`SCHEMA`."""

    def walk(node: Mapping[str, Any]) -> dict[str, Any]:
        return {k: walk(v) if isinstance(v, Mapping) else copy.deepcopy(v.default)
                for k, v in node.items()}

    return walk(SCHEMA)


def check_value(key: str, field: Field, value: Any) -> Any:
    """Return ``value`` converted to ``field``'s type, or raise ConfigError naming ``key``."""
    if value is None:
        if field.optional:
            return None
        raise ConfigError(f"config key '{key}' expects {field.kind}, got null")

    def bad() -> ConfigError:
        return ConfigError(
            f"config key '{key}' expects {field.kind}, got {type(value).__name__} {value!r}")

    kind = field.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad()
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if kind == "float":
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept it as the float it spells.
            try:
                return float(value)
            except ValueError:
                raise bad() from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise bad()
        if field.choices is not None and value not in field.choices:
            raise ConfigError(f"config key '{key}' must be one of {list(field.choices)}, "
                              f"got {value!r}")
        return value
    if kind == "dict":
        if not isinstance(value, Mapping):
            raise bad()
        return copy.deepcopy(dict(value))
    if kind.startswith("list["):
        if not isinstance(value, list | tuple):
            raise bad()
        item = Field(kind[5:-1], None)
        return [check_value(f"{key}[{i}]", item, v) for i, v in enumerate(value)]
    raise ConfigError(f"schema error: unknown field kind {kind!r} for '{key}'")


def validate_mapping(data: Mapping[str, Any], schema: Mapping[str, Any], where: str,
              prefix: str = "") -> dict[str, Any]:
    """Check every key of ``data`` against ``schema``; return the typed copy (no defaults)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a "
                          f"mapping ({where}), got {type(data).__name__}")
    out: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in schema:
            raise unknown_key(key, where)
        node = schema[name]
        if isinstance(node, Mapping):
            out[name] = validate_mapping(value, node, where, key + ".")
        else:
            out[name] = check_value(key, node, value)
    return out
