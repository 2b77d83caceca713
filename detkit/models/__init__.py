"""Detection models: anchors, matching, box coding, heads, detectors and their builders.

``dense_detector`` (RetinaNet-style, :mod:`detkit.models.detectors.dense`),
``thundernet_lite`` (:mod:`detkit.models.detectors.thundernet`) and
``build_model`` (:mod:`detkit.models.build`) are imported on first use, so
``import detkit.models.anchors`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["build_model", "dense_detector", "thundernet_lite"]

_LAZY = {
    "build_model": "detkit.models.build",
    "dense_detector": "detkit.models.detectors.dense",
    "thundernet_lite": "detkit.models.detectors.thundernet",
}


def __getattr__(name: str) -> Any:
    """Import ``build_model``, ``dense_detector`` or ``thundernet_lite`` on first access."""
    if name not in _LAZY:
        raise AttributeError(f"module 'detkit.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
