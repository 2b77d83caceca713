"""Detection data: COCO datasets, validation, VOC conversion, synthetic data, collation.

Names are imported lazily, so ``import detkit.data`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CocoDetection": "detkit.data.coco",
    "build_label_maps": "detkit.data.coco",
    "to_tensor_target": "detkit.data.coco",
    "collate_detection": "detkit.data.collate",
    "check_image_file": "detkit.data.image_io",
    "read_image_rgb": "detkit.data.image_io",
    "UnreadableImageWarning": "detkit.data.image_io",
    "AnnotationFormatError": "detkit.data.validation",
    "ValidationReport": "detkit.data.validation",
    "load_coco_json": "detkit.data.validation",
    "validate_coco": "detkit.data.validation",
    "convert_voc_to_coco": "detkit.data.voc",
    "parse_voc_xml": "detkit.data.voc",
    "generate_synthetic_coco": "detkit.data.synthetic",
    "compute_dataset_stats": "detkit.data.stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'detkit.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
