"""Detectors: the dense (RetinaNet-style) detector and ThunderNet-lite.

``thundernet_lite`` and ``ThunderNetLite`` are imported from
:mod:`detkit.models.detectors.thundernet` on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from detkit.models.detectors.dense import DenseDetector, dense_detector

__all__ = ["DenseDetector", "dense_detector", "thundernet_lite"]


def __getattr__(name: str) -> Any:
    """Import the ThunderNet-lite names lazily."""
    if name in ("thundernet_lite", "ThunderNetLite"):
        return getattr(importlib.import_module("detkit.models.detectors.thundernet"), name)
    raise AttributeError(f"module 'detkit.models.detectors' has no attribute {name!r}")
