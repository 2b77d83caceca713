"""The detectors' input step: mean/std normalisation and padding into one batch.

Images arrive as the contract's ``list[Tensor[3, H, W]]`` float in [0, 1] (RGB,
not normalised). :class:`DetectionTransform` normalises each image with a
per-channel mean and std and pads the list, right and bottom only, into one
``Tensor[B, 3, H', W']`` whose sides are the largest height and width rounded
up to a multiple of ``size_divisible`` (32 by default, the largest stride of a
P5 feature map). The padding value is 0 *after* normalisation, i.e. the mean
colour. Padding right/bottom keeps box coordinates unchanged, so boxes in the
input tensor's pixels stay valid in the padded batch.

No resizing is done: detkit's data pipeline letterboxes images beforehand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BatchedImages",
    "DetectionTransform",
    "normalize_image",
    "padded_batch_size",
    "batch_images",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class BatchedImages(NamedTuple):
    """A padded batch: ``tensor`` [B, 3, H', W'] and each image's (h, w) before padding."""

    tensor: Tensor
    image_sizes: list[tuple[int, int]]


def _check_image(image: Tensor, index: int) -> None:
    """Raise ``ValueError`` unless ``image`` is a float ``Tensor[3, H, W]``."""
    if not isinstance(image, Tensor):
        raise ValueError(f"image {index} is a {type(image).__name__}, expected a Tensor[3, H, W]")
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image {index} has shape {tuple(image.shape)}, expected [3, H, W]")
    if not image.is_floating_point():
        raise ValueError(
            f"image {index} has dtype {image.dtype}; expected float in [0, 1] (convert uint8 "
            "images with image.float() / 255)"
        )


def normalize_image(image: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Return ``(image - mean) / std`` for ``Tensor[3, H, W]``; ``mean``/``std`` are ``[3]``."""
    return (image - mean[:, None, None]) / std[:, None, None]


def padded_batch_size(
    image_sizes: Sequence[tuple[int, int]], size_divisible: int = 32
) -> tuple[int, int]:
    """Return (H', W'): the largest height and width rounded up to ``size_divisible``.

    Example: sizes (100, 130) and (120, 90), divisor 32 -> (128, 160).
    """
    if len(image_sizes) == 0:
        raise ValueError("cannot size an empty batch")
    max_h = max(int(h) for h, _ in image_sizes)
    max_w = max(int(w) for _, w in image_sizes)
    div = int(size_divisible)
    return int(math.ceil(max_h / div) * div), int(math.ceil(max_w / div) * div)


def batch_images(
    images: Sequence[Tensor], size_divisible: int = 32, pad_value: float = 0.0
) -> BatchedImages:
    """Pad ``Tensor[C, H_i, W_i]`` images (right/bottom) into one ``[B, C, H', W']`` tensor.

    ``H'`` and ``W'`` come from :func:`padded_batch_size`. The inputs are not modified.
    """
    sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
    out_h, out_w = padded_batch_size(sizes, size_divisible)
    padded = [
        nn.functional.pad(img, (0, out_w - w, 0, out_h - h), value=pad_value)
        for img, (h, w) in zip(images, sizes, strict=True)
    ]
    return BatchedImages(torch.stack(padded, dim=0), sizes)


class DetectionTransform(nn.Module):
    """Normalise a list of [0, 1] RGB images and pad them into one batch.

    Args:
        mean: per-channel mean subtracted from each image (ImageNet's by default).
        std: per-channel std dividing each image.
        size_divisible: the padded height and width are multiples of this (32).

    ``forward(images: list[Tensor[3, H, W]]) -> BatchedImages`` with
    ``tensor`` [B, 3, H', W'] and ``image_sizes`` the unpadded (h, w) of each image.
    """

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        size_divisible: int = 32,
    ) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        if size_divisible < 1:
            raise ValueError(f"size_divisible must be >= 1, got {size_divisible}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)
        self.size_divisible = int(size_divisible)

    def forward(self, images: Sequence[Tensor]) -> BatchedImages:
        """Normalise and pad ``images``; see the class docstring."""
        if len(images) == 0:
            raise ValueError("the model needs at least one image")
        for i, img in enumerate(images):
            _check_image(img, i)
        mean = self.mean.to(images[0])
        std = self.std.to(images[0])
        normalised = [normalize_image(img, mean, std) for img in images]
        return batch_images(normalised, self.size_divisible, pad_value=0.0)

    def extra_repr(self) -> str:
        """Show the normalisation constants and the divisor."""
        return (
            f"mean={tuple(round(v, 4) for v in self.mean.tolist())}, "
            f"std={tuple(round(v, 4) for v in self.std.tolist())}, "
            f"size_divisible={self.size_divisible}"
        )
