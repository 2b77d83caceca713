"""Where a run's config comes from: a YAML path, a preset name, or a checkpoint.

* :func:`resolve_config_path` turns ``dense_ssh_bccd`` (a preset: ``configs/<name>.yaml`` or
  ``configs/bench/<name>.yaml`` of this checkout) or a YAML path into a file path;
* :func:`config_from_checkpoint` reads the resolved config that ``tools/train.py`` stores in
  every checkpoint (``ckpt["config"]``), validated and with defaults filled in;
* :func:`config_for_checkpoint` is what the tools use: an explicit CONFIG (path or preset)
  wins, else the checkpoint's own config; dotted overrides apply on top either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from detkit.config import ConfigError, apply_overrides, defaults, load_config, merge

__all__ = [
    "CONFIG_DIR",
    "config_for_checkpoint",
    "config_from_checkpoint",
    "list_presets",
        "resolve_config_path",
    "split_cli_inputs",
    "tool_config",
]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
_BASES = ("bccd_base", "coco_base", "base")


def list_presets(config_dir: Path = CONFIG_DIR) -> list[str]:
    """Preset names (YAML stems of ``configs/`` and ``configs/bench/``), base files excluded."""
    names = {p.stem for p in config_dir.glob("*.yaml")} | {
        p.stem for p in (config_dir / "bench").glob("*.yaml")
    }
    return sorted(n for n in names if n not in _BASES)


def resolve_config_path(name: str | Path, config_dir: Path = CONFIG_DIR) -> Path:
    """An existing YAML file ``name``, else the preset of that name (``.yaml`` optional).

    Raises ConfigError listing the presets when neither exists.
    """
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if path.parent == Path("."):
        for folder in (config_dir, config_dir / "bench"):
            candidate = folder / f"{stem}.yaml"
            if candidate.is_file():
                return candidate
    raise ConfigError(f"config file not found: {name} (and no preset of that name; presets: "
                      f"{', '.join(list_presets(config_dir))})")


def config_from_checkpoint(ckpt: Mapping[str, Any], overrides: Iterable[str] = ()
                           ) -> dict[str, Any]:
    """The config stored in a checkpoint dict, checked like a YAML file, plus ``overrides``.

    Keys added to the schema since the checkpoint was written take their defaults; an unknown
    key raises ConfigError. Raises ConfigError when the checkpoint holds no config.
    """
    stored = ckpt.get("config")
    if not isinstance(stored, Mapping) or not stored:
        raise ConfigError("the checkpoint stores no config (written by an older detkit?); "
                          "pass CONFIG explicitly")
    from detkit.config_schema import SCHEMA, validate_mapping

    own = validate_mapping(dict(stored), SCHEMA, "in the checkpoint's config")
    cfg = apply_overrides(merge(defaults(), own), overrides)
    if not isinstance(cfg["model"].get("type"), str):
        raise ConfigError("the checkpoint's config has no model.type")
    return cfg


def config_for_checkpoint(checkpoint: str | Path | Mapping[str, Any],
                          config: str | Path | None = None,
                          overrides: Iterable[str] = ()) -> dict[str, Any]:
    """CONFIG (path or preset) when given, else the checkpoint's stored config; + overrides.

    ``checkpoint`` is a path or an already loaded checkpoint dict.
    """
    if config is not None:
        return load_config(resolve_config_path(config), overrides)
    from detkit.engine.checkpoint import as_checkpoint

    return config_from_checkpoint(as_checkpoint(checkpoint), overrides)


def split_cli_inputs(items: Iterable[str], n_paths: int
                     ) -> tuple[str | None, list[str], list[str]]:
    """Split a tool's positionals ``[CONFIG] PATH... [key=value ...]``.

    Items with ``=`` that are not existing files are overrides; of the rest, the last
    ``n_paths`` are the required paths (checkpoint, image folder, ...) and one more before them
    is CONFIG. Raises ConfigError naming what is missing or extra.
    """
    items = list(items)
    overrides = [s for s in items if "=" in s and not Path(s).exists()]
    plain = [s for s in items if s not in overrides]
    if len(plain) not in (n_paths, n_paths + 1):
        raise ConfigError(f"expected [CONFIG] and {n_paths} path(s) besides key=value "
                          f"overrides, got {len(plain)}: {' '.join(plain) or '(none)'}")
    config = plain[0] if len(plain) == n_paths + 1 else None
    return config, plain[-n_paths:], overrides


def tool_config(items: Iterable[str], n_paths: int
                ) -> tuple[dict[str, Any], list[str]] | None:
    """``[CONFIG] PATH... [key=value ...]`` of a checkpoint tool -> (config, paths).

    The first path is the checkpoint; without CONFIG its stored config is used
    (:func:`config_for_checkpoint`). On an error, prints ``config error: ...`` to stderr and
    returns None (the tool then exits with code 2).
    """
    import sys

    try:
        config, paths, overrides = split_cli_inputs(items, n_paths)
        return config_for_checkpoint(paths[0], config, overrides), paths
    except (ConfigError, FileNotFoundError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    """``detkit presets``: print the preset names, one per line, with their files."""
    import argparse

    argparse.ArgumentParser(prog="detkit presets", description=main.__doc__).parse_args(argv)
    for name in list_presets():
        print(f"{name:<28} {resolve_config_path(name).relative_to(CONFIG_DIR.parent)}")
    return 0
