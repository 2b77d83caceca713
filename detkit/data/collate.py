"""Batch collation for detection data loaders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["collate_detection"]


def collate_detection(
    batch: Sequence[tuple[torch.Tensor, dict[str, Any]]],
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Split ``[(image, target), ...]`` into ``(list of images, list of targets)``.

    Images keep their own sizes (``Tensor[3, H_i, W_i]``); the model batches them, as
    torchvision detection models do. Use as ``DataLoader(..., collate_fn=collate_detection)``.
    Raises ``ValueError`` on an item that is not an ``(image, target)`` pair.
    """
    images, targets = [], []
    for i, item in enumerate(batch):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"batch item {i} must be an (image, target) pair")
        images.append(item[0])
        targets.append(item[1])
    return images, targets
