"""YAML configuration: one base level, a typed schema and dotted command-line overrides.

A config file is a YAML mapping. It may name one base file with ``base: other.yaml`` (a path
relative to the file); the base itself may not name another base, so every value is at most
one file away. Keys are checked against :data:`SCHEMA` (nested dict of :class:`Field`):
unknown keys and values of the wrong type raise :class:`ConfigError` naming the key and the
nearest valid one, before any work starts. The ``model`` section is an open mapping handed to
``detkit.models.build.build_model``, which validates its own keys.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """Raised for an invalid config file, key, value or override."""


@dataclass(frozen=True)
class Field:
    """One typed config leaf.

    ``kind`` is one of "int", "float", "bool", "str", "list[int]", "list[float]", "list[str]",
    "list[dict]", "dict" (an open mapping). ``optional`` allows ``None``;
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
        "multiscale": {"enabled": _f("bool", False), "sizes": _f("list[int]", []),
                       "every": _f("int", 1)},
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
        "nms": _f("str", None, True, choices=("nms", "diou_nms", "soft_nms", "cluster_nms")),
        "iou_threshold": _f("float", None, True),
        "score_threshold": _f("float", None, True),
        "max_detections": _f("int", None, True),
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


def _unknown(key: str, where: str) -> ConfigError:
    near = nearest_key(key)
    hint = f"; did you mean '{near}'?" if near else ""
    return ConfigError(f"unknown config key '{key}' ({where}){hint}")


def defaults() -> dict[str, Any]:
    """Return a fresh nested dict of every default value in :data:`SCHEMA`."""

    def walk(node: Mapping[str, Any]) -> dict[str, Any]:
        return {k: walk(v) if isinstance(v, Mapping) else copy.deepcopy(v.default)
                for k, v in node.items()}

    return walk(SCHEMA)


def _check_value(key: str, field: Field, value: Any) -> Any:
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
        return [_check_value(f"{key}[{i}]", item, v) for i, v in enumerate(value)]
    raise ConfigError(f"schema error: unknown field kind {kind!r} for '{key}'")


def _validate(data: Mapping[str, Any], schema: Mapping[str, Any], where: str,
              prefix: str = "") -> dict[str, Any]:
    """Check every key of ``data`` against ``schema``; return the typed copy (no defaults)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a "
                          f"mapping ({where}), got {type(data).__name__}")
    out: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in schema:
            raise _unknown(key, where)
        node = schema[name]
        if isinstance(node, Mapping):
            out[name] = _validate(value, node, where, key + ".")
        else:
            out[name] = _check_value(key, node, value)
    return out


def validate_section(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``cfg[name]`` checked by the schema (keys, types, choices, value ranges) with its
    defaults filled in: for code handed a config that may not come from :func:`load_config`.
    Raises ConfigError naming the key."""
    from detkit.config_ranges import check_ranges

    section = merge(defaults()[name], _validate(cfg.get(name) or {}, SCHEMA[name],
                                                f"section '{name}'", f"{name}."))
    problems = check_ranges({name: section})
    if problems:
        raise ConfigError("; ".join(problems))
    return section


def merge(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``child`` over ``base`` into a new dict (inputs untouched).

    The ``model`` mapping is replaced whole when the child names a different ``type``, so
    keys of one model type never leak into another.
    """
    out = copy.deepcopy(dict(base))
    for name, value in child.items():
        old = out.get(name)
        replace_model = (name == "model" and isinstance(old, Mapping) and isinstance(value, Mapping)
                         and "type" in value and value.get("type") != old.get("type"))
        if isinstance(old, Mapping) and isinstance(value, Mapping) and not replace_model:
            out[name] = merge(old, value)
        else:
            out[name] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML syntax error in {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _load_file(path: Path) -> dict[str, Any]:
    """Load ``path`` with at most one ``base`` level; return the merged, validated mapping."""
    data = _read_yaml(path)
    base_name = data.pop("base", None)
    own = _validate(data, SCHEMA, f"in {path.name}")
    if base_name is None:
        return own
    if not isinstance(base_name, str):
        raise ConfigError(f"{path}: 'base' must be a file name, got {base_name!r}")
    base_path = (path.parent / base_name).resolve()
    if not base_path.is_file():
        raise ConfigError(f"base config '{base_name}' named in {path} not found "
                          f"(looked for {base_path})")
    base_data = _read_yaml(base_path)
    if "base" in base_data:
        raise ConfigError(
            f"{path.name} -> {base_path.name} -> {base_data['base']}: base configs may be one "
            f"level deep only; copy the values of '{base_data['base']}' into {base_path.name}")
    base = _validate(base_data, SCHEMA, f"in {base_path.name}")
    return merge(base, own)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into (["a", "b"], yaml.safe_load(value))."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc})") from None
    return key.split("."), value


def apply_overrides(cfg: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``cfg`` with dotted ``key=value`` overrides applied and type-checked."""
    out = copy.deepcopy(dict(cfg))
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = SCHEMA
        target = out
        for depth, part in enumerate(parts):
            key = ".".join(parts[: depth + 1])
            if isinstance(node, Field) and node.kind == "dict":
                # Open mapping (e.g. model): any sub-key; its consumer validates it.
                for sub in parts[depth:-1]:
                    target = target.setdefault(sub, {})
                    if not isinstance(target, dict):
                        raise ConfigError(f"override '{text}': '{sub}' is not a mapping")
                target[parts[-1]] = value
                break
            if not isinstance(node, Mapping) or part not in node:
                raise _unknown(key, f"override '{text}'")
            node = node[part]
            if depth == len(parts) - 1:
                if isinstance(node, Mapping):
                    raise ConfigError(f"override '{text}': '{key}' is a section; set one of "
                                      f"its keys ({', '.join(node)})")
                target[part] = _check_value(key, node, value)
            else:
                target = target.setdefault(part, {})
    return out


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Load a YAML config, fill defaults, apply ``key=value`` overrides and validate.

    Returns a plain nested dict (YAML/JSON-serialisable) with every schema key present.
    Raises ConfigError for an unknown key, a wrong type, a value out of its range
    (:mod:`detkit.config_ranges`), a missing base file or a base chain deeper than one level.
    """
    loaded = _load_file(Path(path).resolve())
    cfg = merge(defaults(), loaded)
    cfg = apply_overrides(cfg, overrides)
    if not isinstance(cfg["model"].get("type"), str):
        raise ConfigError("config key 'model.type' is required (e.g. dense_detector)")
    from detkit.config_ranges import check_ranges

    problems = check_ranges(cfg)
    if problems:
        raise ConfigError("; ".join(problems))
    return cfg


def explicit_config(path: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Only the keys that a config file (with its base) and ``overrides`` set, validated but
    without the schema's defaults: what a user wrote, as opposed to :func:`load_config`."""
    return apply_overrides(_load_file(Path(path).resolve()), overrides)


def dump_config(cfg: Mapping[str, Any], path: str | Path) -> None:
    """Write the resolved config ``cfg`` as YAML to ``path``."""
    Path(path).write_text(yaml.safe_dump(dict(cfg), sort_keys=False))


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (sorted; sections recursed)."""
    keys: list[str] = []
    for name in sorted(set(a) | set(b)):
        key = f"{prefix}{name}"
        va, vb = a.get(name), b.get(name)
        if isinstance(va, Mapping) and isinstance(vb, Mapping) and name != "model":
            keys.extend(config_diff(va, vb, key + "."))
        elif va != vb:
            keys.append(key)
    return keys


def load_cli_config(path: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any] | None:
    """:func:`load_config` for the command-line tools, ``path`` a YAML file or a preset name
    (:func:`detkit.presets.resolve_config_path`): on a :class:`ConfigError`, print
    ``config error: ...`` to stderr and return None (the tool then exits with code 2)."""
    import sys

    from detkit.presets import resolve_config_path

    try:
        return load_config(resolve_config_path(path), overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return None
