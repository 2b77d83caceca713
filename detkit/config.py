"""YAML configuration: one base level, a typed schema and dotted command-line overrides.

A config file is a YAML mapping. It may name one base file with ``base: other.yaml`` (a path
relative to the file); the base itself may not name another base, so every value is at most
one file away. Keys are checked against the schema (:mod:`detkit.config_schema`): unknown
keys and values of the wrong type raise :class:`ConfigError` naming the key and the nearest
valid one, before any work starts. The ``model`` section is an open mapping handed to
``detkit.models.build.build_model``, which validates its own keys.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from detkit.config_schema import (  # noqa: F401  (re-exported: detkit.config is the entry)
    SCHEMA,
    VALID_KEYS,
    ConfigError,
    Field,
    check_value,
    close_names,
    defaults,
    nearest_key,
    unknown_key,
    validate_mapping,
)


def validate_section(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``cfg[name]`` checked by the schema (keys, types, choices, value ranges) with its
    defaults filled in: for code handed a config that may not come from :func:`load_config`.
    Raises ConfigError naming the key."""
    from detkit.config_ranges import check_ranges

    section = merge(defaults()[name], validate_mapping(cfg.get(name) or {}, SCHEMA[name],
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
    own = validate_mapping(data, SCHEMA, f"in {path.name}")
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
    base = validate_mapping(base_data, SCHEMA, f"in {base_path.name}")
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
                raise unknown_key(key, f"override '{text}'")
            node = node[part]
            if depth == len(parts) - 1:
                if isinstance(node, Mapping):
                    raise ConfigError(f"override '{text}': '{key}' is a section; set one of "
                                      f"its keys ({', '.join(node)})")
                target[part] = check_value(key, node, value)
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
