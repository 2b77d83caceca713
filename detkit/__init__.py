"""detkit: a compact PyTorch object-detection toolkit for small objects and CPU budgets.

``detkit.load("best.pth").predict("images/")`` runs a trained detector (:mod:`detkit.api`).
Subpackages are imported on demand (``detkit.ops``, ``detkit.losses``,
``detkit.data``, ``detkit.models``, ``detkit.engine``, ``detkit.evaluation``),
so importing one never pulls in the others; ``detkit.load`` / ``detkit.Detector`` import
the inference modules on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Detector", "Prediction", "__version__", "evaluate_detections", "load"]

_LAZY = {
    "Detector": "detkit.api",
    "Prediction": "detkit.api",
    "load": "detkit.api",
    "evaluate_detections": "detkit.evaluation",
}


def __getattr__(name: str) -> Any:
    """Import the public API lazily (``import detkit.ops`` stays free of torchvision etc.)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'detkit' has no attribute {name!r}")
