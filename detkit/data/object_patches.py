"""Small-object crops for copy-paste: cut, jitter, place and blend one object patch.

The pieces :class:`~detkit.data.copy_paste.SmallObjectCopyPaste` is made of (Kisantal et
al. 2019, "Augmentation for small object detection"): :func:`crop_object` cuts an object as
its box crop (or through its binary mask), :func:`jitter_patch` rescales and rotates it,
:func:`find_position` draws a spot whose IoU with every existing xyxy box stays below a
limit, and :func:`blend_into` pastes it with a feathered border (:func:`edge_alpha`).
:class:`SmallObjectBank` holds crops collected from a training set. numpy slicing plus cv2
resize/warp on the small crops only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from detkit.ops.boxes import COCO_SMALL_AREA

__all__ = ["ObjectPatch", "SmallObjectBank", "blend_into", "crop_object", "edge_alpha",
           "find_position", "jitter_patch", "paste_alpha", "pixel_box", "small_object_indices"]


@dataclass(frozen=True)
class ObjectPatch:
    """One object crop: pixels uint8 [h, w, C], its label, and an optional binary mask [h, w]."""

    pixels: np.ndarray
    label: int
    mask: np.ndarray | None = None


def small_object_indices(boxes: np.ndarray, max_area: float, min_side: float = 2.0) -> np.ndarray:
    """Indices of xyxy boxes [N, 4] with area < max_area and both sides >= min_side."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return np.nonzero((w * h < max_area) & (w >= min_side) & (h >= min_side))[0]


def pixel_box(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """Integer pixel extent (floor x1/y1, ceil x2/y2) of an xyxy box, clipped to the image."""
    x1, y1 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x2, y2 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    return x1, y1, x2, y2


def crop_object(
    image: np.ndarray, box: np.ndarray, label: int, mask: np.ndarray | None = None
) -> ObjectPatch | None:
    """Crop the pixels (and mask) inside ``box`` (xyxy, pixels); None when the crop is empty."""
    x1, y1, x2, y2 = pixel_box(box, image.shape[0], image.shape[1])
    if x2 <= x1 or y2 <= y1:
        return None
    crop_mask = None if mask is None else (mask[y1:y2, x1:x2] > 0).astype(np.uint8)
    return ObjectPatch(image[y1:y2, x1:x2].copy(), int(label), crop_mask)


def jitter_patch(patch: ObjectPatch, scale: float, angle: float) -> ObjectPatch:
    """Resize ``patch`` by ``scale`` and rotate it by ``angle`` degrees (cv2, bilinear).

    After a rotation the patch carries a mask (the rotated object mask, or the rotated box
    when there was none), cropped to its tight extent, so corners are not pasted.
    """
    pixels, mask = patch.pixels, patch.mask
    h, w = pixels.shape[:2]
    if scale != 1.0:
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        pixels = cv2.resize(pixels, (nw, nh), interpolation=cv2.INTER_LINEAR)
        if mask is not None:
            mask = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_NEAREST)
        h, w = nh, nw
    if angle != 0.0:
        rad = math.radians(angle)
        cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
        ow = max(1, math.ceil(w * cos + h * sin - 1e-6))
        oh = max(1, math.ceil(w * sin + h * cos - 1e-6))
        # rotate about the pixel-centre middle, moved to the middle of the larger canvas
        rot = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
        rot[0, 2] += (ow - w) / 2.0
        rot[1, 2] += (oh - h) / 2.0
        base = np.ones((h, w), np.uint8) if mask is None else mask
        pixels = cv2.warpAffine(pixels, rot, (ow, oh), flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(base, rot, (ow, oh), flags=cv2.INTER_NEAREST)
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        if len(rows) == 0:
            return ObjectPatch(pixels[:1, :1], patch.label, np.ones((1, 1), np.uint8))
        sl = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        pixels, mask = pixels[sl], mask[sl]
    return ObjectPatch(np.ascontiguousarray(pixels), patch.label, mask)


def find_position(
    rng: np.random.Generator,
    patch_hw: tuple[int, int],
    region_hw: tuple[int, int],
    existing: np.ndarray,
    max_overlap: float,
    tries: int,
) -> tuple[int, int] | None:
    """Top-left (x, y) for a patch inside the region that overlaps ``existing`` boxes little.

    A position is valid when, for every existing box, IoU <= ``max_overlap`` and the covered
    fraction of that box <= ``max_overlap``; ``max_overlap == 0`` means no intersection at
    all. All ``tries`` candidates are drawn at once and the first valid one wins; None when
    no candidate fits.
    """
    ph, pw = patch_hw
    rh, rw = region_hw
    if ph > rh or pw > rw or tries <= 0:
        return None
    xs = rng.integers(0, rw - pw + 1, size=tries)
    ys = rng.integers(0, rh - ph + 1, size=tries)
    if len(existing) == 0:
        return int(xs[0]), int(ys[0])
    ex = np.asarray(existing, dtype=np.float32)
    x1, y1 = xs[:, None].astype(np.float32), ys[:, None].astype(np.float32)
    iw = np.minimum(x1 + pw, ex[:, 2]) - np.maximum(x1, ex[:, 0])
    ih = np.minimum(y1 + ph, ex[:, 3]) - np.maximum(y1, ex[:, 1])
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    if max_overlap > 0:
        areas = (ex[:, 2] - ex[:, 0]) * (ex[:, 3] - ex[:, 1])
        # IoU <= max_overlap, and no existing box more than max_overlap covered (a large
        # patch over a small object can have a low IoU yet hide the object)
        ok = (
            (inter <= max_overlap * (pw * ph + areas - inter))
            & (inter <= max_overlap * areas)
        ).all(axis=1)
    else:
        ok = ~(inter > 0).any(axis=1)
    hits = np.flatnonzero(ok)
    return None if len(hits) == 0 else (int(xs[hits[0]]), int(ys[hits[0]]))


def edge_alpha(height: int, width: int, feather: int) -> np.ndarray:
    """Alpha [h, w] float32 rising linearly from the border over ``feather`` pixels (1 inside)."""
    ramp_x = np.minimum(np.arange(width) + 1, width - np.arange(width)) / (feather + 1)
    ramp_y = np.minimum(np.arange(height) + 1, height - np.arange(height)) / (feather + 1)
    return np.clip(np.minimum(ramp_y[:, None], ramp_x[None, :]), 0, 1).astype(np.float32)


def paste_alpha(patch: ObjectPatch, feather: int) -> np.ndarray | None:
    """Blending alpha [h, w] for a patch; None means a plain copy of the whole crop."""
    h, w = patch.pixels.shape[:2]
    if patch.mask is None:
        return None if feather <= 0 else edge_alpha(h, w, feather)
    alpha = (patch.mask > 0).astype(np.float32)
    if feather > 0:
        alpha = alpha * edge_alpha(h, w, feather)
    return alpha


def blend_into(image: np.ndarray, patch: ObjectPatch, x: int, y: int, feather: int) -> None:
    """Write ``patch`` into ``image`` (a private copy) at top-left (x, y)."""
    h, w = patch.pixels.shape[:2]
    alpha = paste_alpha(patch, feather)
    region = image[y : y + h, x : x + w]
    if alpha is None:
        region[...] = patch.pixels
        return
    a = alpha[..., None] if patch.pixels.ndim == 3 else alpha
    mixed = region.astype(np.float32) * (1.0 - a) + patch.pixels.astype(np.float32) * a
    region[...] = np.clip(np.rint(mixed), 0, 255).astype(image.dtype)


class SmallObjectBank:
    """A bank of small-object crops (ObjectPatch) collected from a training set."""

    def __init__(self, patches: Sequence[ObjectPatch]) -> None:
        self.patches = list(patches)

    def __len__(self) -> int:
        return len(self.patches)

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        max_area: float = COCO_SMALL_AREA,
        max_items: int = 1000,
        seed: int = 0,
        input_size: int | None = None,
    ) -> SmallObjectBank:
        """Collect up to ``max_items`` small-object crops via ``dataset.load_raw(i)``.

        Images are visited in a seeded random order. With ``input_size`` set, each image is
        scaled like the letterbox (s = input_size / max(h, w)): areas are compared and crops
        stored at that training resolution; otherwise at the raw resolution.
        """
        rng = np.random.default_rng(seed)
        patches: list[ObjectPatch] = []
        for idx in rng.permutation(len(dataset)):
            image, target = dataset.load_raw(int(idx))
            s = 1.0 if input_size is None else input_size / max(image.shape[:2])
            boxes = np.asarray(target["boxes"], dtype=np.float32).reshape(-1, 4)
            masks = target.get("masks")
            for j in small_object_indices(boxes * s, max_area):
                mask = None if masks is None else np.asarray(masks[j])
                patch = crop_object(image, boxes[j], int(target["labels"][j]), mask)
                if patch is not None:
                    patches.append(jitter_patch(patch, s, 0.0) if s != 1.0 else patch)
                if len(patches) >= max_items:
                    return cls(patches)
        return cls(patches)
