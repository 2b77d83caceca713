"""What the benchmark suite keeps of a fold, and the check that a kept fold still belongs to
its row.

A fold's result JSON stores the resolved config it was trained (or tested) with, and its work
folder the resolved ``config.yaml`` of the run. The suite skips a finished fold and resumes a
half-trained one; both are only right while the row still asks for the same run.
:func:`check_kept_fold` takes every key that the row's YAML (with its base) and the fold's
overrides set (:func:`detkit.config.explicit_config`) and refuses a kept fold whose config
holds another value for one of them, naming the keys, so editing a row's YAML can never mix
old and new folds in one figure. Keys left at the schema's defaults are not compared: a
default changes with the code, like any other code change.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class StaleFoldError(RuntimeError):
    """A kept fold (result or half-trained run) was made with another config than its row's."""


def write_dets(path: Path, dets: Any) -> None:
    """Write held-out detections as compact gzipped JSON (``.dets.json.gz``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        json.dump(dets, handle, separators=(",", ":"))


def compact(dets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """COCO results rounded for storage: box to 0.01 px, score to 1e-5."""
    return [{"image_id": d["image_id"], "category_id": d["category_id"],
             "bbox": [round(float(v), 2) for v in d["bbox"]], "score": round(d["score"], 5)}
            for d in dets]


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as the string "inf", "-inf" or "nan", so that
    strict JSON can hold a config with an open range (e.g. SNIP's ``[24, .inf]``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _plain(config: Mapping[str, Any]) -> Any:
    """The config as strict JSON would give it back (tuples as lists, non-finite floats as
    strings, :func:`json_safe`), for a like-for-like diff."""
    return json.loads(json.dumps(json_safe(config), default=str))


def _leaves(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def stale_keys(kept: Mapping[str, Any], asked: Mapping[str, Any]) -> list[str]:
    """Dotted keys that ``asked`` (the keys a row sets) gives another value than the resolved
    ``kept`` config, or that ``kept`` lacks; sorted."""
    kept_leaves = _leaves(_plain(kept))
    missing = object()
    return sorted(key for key, value in _leaves(_plain(asked)).items()
                  if kept_leaves.get(key, missing) != value)


def check_kept_fold(result: Path, work: Path, asked: Mapping[str, Any]) -> None:
    """Raise :class:`StaleFoldError` if the finished ``result`` JSON or the half-trained run
    in ``work`` (its ``config.yaml``) was made with other values for the keys in ``asked``."""
    if result.is_file():
        kept = json.loads(result.read_text()).get("config") or {}
        where, remedy = result, f"delete {result} (and {work})"
    elif (work / "config.yaml").is_file() and (work / "last.pth").is_file():
        kept = yaml.safe_load((work / "config.yaml").read_text()) or {}
        where, remedy = work, f"delete {work}"
    else:
        return
    keys = stale_keys(kept, asked)
    if keys:
        raise StaleFoldError(
            f"{where} was made with another config than the row's now ({', '.join(keys)} "
            f"differ); {remedy} to run the fold again with the new config, or restore the "
            "row's YAML")
