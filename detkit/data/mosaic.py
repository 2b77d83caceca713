"""Four-image patching for detection: RICAP (Takahashi et al. 2018, "RICAP: Random Image
Cropping and Patching") with boxes, also known as "mosaic".

A boundary point (bw, bh) = (W * u, H * v), u, v ~ Beta(beta, beta), splits the output
[H, W] into four patches: top-left [0, bw) x [0, bh), top-right [bw, W) x [0, bh),
bottom-left [0, bw) x [bh, H), bottom-right [bw, W) x [bh, H). Each source image is scaled
like the letterbox (s = min(H / h, W / w)) and a random crop of the patch size is copied into
its patch. Boxes are shifted and clipped to their patch; a box is dropped, and counted, when it
is outside the patch, when its visible fraction (clipped area / full area) is below
``min_visibility`` ("too_cut"), or when the clipped box has a side < ``min_side`` or an area
< ``min_area`` ("too_small"). Masks are not carried through the patching.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset

from detkit.data.random_state import RandomStateWrapper, WorkerRng
from detkit.data.validation import BoxesDroppedWarning

Rect = tuple[int, int, int, int]


def patch_rects(output_hw: tuple[int, int], boundary: tuple[int, int]) -> list[Rect]:
    """The four patches (x0, y0, x1, y1) in the order top-left, top-right, bottom-left,
    bottom-right for boundary (bw, bh)."""
    h, w = output_hw
    bw, bh = boundary
    if not (0 <= bw <= w and 0 <= bh <= h):
        raise ValueError(f"boundary {boundary} outside the output size {output_hw}")
    return [(0, 0, bw, bh), (bw, 0, w, bh), (0, bh, bw, h), (bw, bh, w, h)]


def scale_sample(image: np.ndarray, target: dict, output_hw: tuple[int, int]) -> tuple:
    """Scale image and boxes by s = min(H / h, W / w) (aspect kept). Returns (image, boxes,
    ignore_boxes); boxes float32 [N, 4] in the scaled pixels."""
    h, w = image.shape[:2]
    s = min(output_hw[0] / h, output_hw[1] / w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) != (h, w):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    boxes = np.asarray(target.get("boxes", np.zeros((0, 4))), np.float32).reshape(-1, 4)
    ignore = np.asarray(target.get("ignore_boxes", np.zeros((0, 4))), np.float32).reshape(-1, 4)
    return image, boxes * np.float32(s), ignore * np.float32(s)


def clip_to_rect(boxes: np.ndarray, rect: Rect) -> tuple[np.ndarray, np.ndarray]:
    """Clip xyxy boxes [N, 4] to rect; returns (clipped boxes, visible fraction [N])."""
    lo = np.array(rect[:2] * 2, dtype=np.float32)
    hi = np.array(rect[2:] * 2, dtype=np.float32)
    clipped = np.minimum(np.maximum(boxes, lo), hi)
    full = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    seen = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    return clipped, np.where(full > 0, seen / np.maximum(full, 1e-9), 0.0)


def mosaic_four(
    samples: Sequence[tuple[np.ndarray, dict]],
    output_hw: tuple[int, int],
    boundary: tuple[int, int],
    offsets: Sequence[tuple[int, int]],
    min_visibility: float = 0.25,
    min_side: float = 2.0,
    min_area: float = 4.0,
    pad_value: int = 0,
) -> tuple[np.ndarray, dict, dict[str, int]]:
    """Patch four (image, target) samples into one uint8 [H, W, 3] image.

    ``offsets[i]`` = (ox, oy) is the top-left of the crop taken from scaled sample i (clamped
    so the crop stays inside it); patch parts the scaled image does not cover keep
    ``pad_value``. Returns (image, target, drop counts {"outside", "too_cut", "too_small"}).
    The target is a new "original" (orig_size = output size, img_scale = 1.0, image_id of
    sample 0); area is the clipped box area; weights and labels follow their boxes.
    """
    if len(samples) != 4 or len(offsets) != 4:
        raise ValueError("mosaic needs exactly four samples and four offsets")
    h, w = output_hw
    canvas = np.full((h, w, 3), pad_value, dtype=np.uint8)
    drops = {"outside": 0, "too_cut": 0, "too_small": 0}
    parts: dict[str, list] = {"boxes": [], "labels": [], "weights": [], "ignore": []}
    for (image, target), rect, (ox, oy) in zip(
        samples, patch_rects(output_hw, boundary), offsets, strict=True
    ):
        scaled, boxes, ignore = scale_sample(image, target, output_hw)
        x0, y0, x1, y1 = rect
        ox = int(min(max(ox, 0), max(0, scaled.shape[1] - (x1 - x0))))
        oy = int(min(max(oy, 0), max(0, scaled.shape[0] - (y1 - y0))))
        crop = scaled[oy : oy + (y1 - y0), ox : ox + (x1 - x0)]
        canvas[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        shift = np.array([x0 - ox, y0 - oy] * 2, dtype=np.float32)
        # the patch shows only the crop: clip to the patch and to the scaled image's extent
        view = (x0, y0, min(x1, x0 + crop.shape[1]), min(y1, y0 + crop.shape[0]))
        clipped, visible = clip_to_rect(boxes + shift, view)
        bw, bh = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
        outside = visible <= 0
        too_cut = ~outside & (visible < min_visibility)
        too_small = ~outside & ~too_cut & ((np.minimum(bw, bh) < min_side) | (bw * bh < min_area))
        keep = ~(outside | too_cut | too_small)
        drops["outside"] += int(outside.sum())
        drops["too_cut"] += int(too_cut.sum())
        drops["too_small"] += int(too_small.sum())
        n = len(boxes)
        parts["boxes"].append(clipped[keep])
        parts["labels"].append(np.asarray(target.get("labels", np.zeros(n)), np.int64)[keep])
        parts["weights"].append(np.asarray(target.get("weights", np.ones(n)), np.float32)[keep])
        ign, ign_vis = clip_to_rect(ignore + shift, view)
        parts["ignore"].append(ign[ign_vis > 0])
    boxes = np.concatenate(parts["boxes"]).astype(np.float32).reshape(-1, 4)
    out = {
        "boxes": boxes,
        "labels": np.concatenate(parts["labels"]).astype(np.int64),
        "weights": np.concatenate(parts["weights"]).astype(np.float32),
        "ignore_boxes": np.concatenate(parts["ignore"]).astype(np.float32).reshape(-1, 4),
        "area": ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).astype(np.float32),
        "iscrowd": np.zeros(len(boxes), dtype=np.int64),
        "image_id": samples[0][1].get("image_id", -1),
        "orig_size": (h, w),
        "img_scale": 1.0,
    }
    return canvas, out, drops


class MosaicDataset(RandomStateWrapper, Dataset):
    """Dataset wrapper producing four-image patches (RICAP) with probability ``p``.

    Uses ``dataset.load_raw``; the output [size, size] image then goes through ``transforms``
    (default: the wrapped dataset's; the letterbox to the same size is then a no-op).
    Dropped boxes are counted in ``self.dropped`` (per DataLoader worker) and reported with
    :class:`BoxesDroppedWarning`.
    """

    def __init__(
        self,
        dataset: Any,
        output_size: int = 320,
        p: float = 1.0,
        beta: float = 0.3,
        min_visibility: float = 0.25,
        min_side: float = 2.0,
        min_area: float = 4.0,
        seed: int | None = None,
        transforms: Callable[[np.ndarray, dict], tuple[Any, dict]] | None = None,
    ) -> None:
        if beta <= 0 or not 0.0 <= p <= 1.0:
            raise ValueError(f"need beta > 0 and 0 <= p <= 1, got beta={beta}, p={p}")
        self.dataset = dataset
        self.output_hw = (output_size, output_size)
        self.p, self.beta = p, beta
        self.limits = {"min_visibility": min_visibility, "min_side": min_side, "min_area": min_area}
        self.transforms = transforms if transforms is not None else dataset.transforms
        self.rng = WorkerRng(seed)
        self.dropped = {"outside": 0, "too_cut": 0, "too_small": 0}

    def __len__(self) -> int:
        return len(self.dataset)

    def load_raw(self, index: int) -> tuple[np.ndarray, dict]:
        """Item ``index`` patched with three random others (or unchanged), untransformed."""
        rng = self.rng.get()
        if rng.random() >= self.p:
            return self.dataset.load_raw(index)
        others = rng.integers(0, len(self.dataset), size=3)
        samples = [self.dataset.load_raw(int(i)) for i in (index, *others)]
        h, w = self.output_hw
        boundary = (
            round(w * rng.beta(self.beta, self.beta)),
            round(h * rng.beta(self.beta, self.beta)),
        )
        offsets = []
        for (image, _), (x0, y0, x1, y1) in zip(
            samples, patch_rects(self.output_hw, boundary), strict=True
        ):
            s = min(h / image.shape[0], w / image.shape[1])
            free_x = max(0, round(image.shape[1] * s) - (x1 - x0))
            free_y = max(0, round(image.shape[0] * s) - (y1 - y0))
            offsets.append((int(rng.integers(0, free_x + 1)), int(rng.integers(0, free_y + 1))))
        image, target, drops = mosaic_four(
            samples, self.output_hw, boundary, offsets, **self.limits
        )
        dropped = drops["too_cut"] + drops["too_small"]
        for key, value in drops.items():
            self.dropped[key] += value
        if dropped:
            warnings.warn(
                "mosaic dropped cut or too small boxes; see MosaicDataset.dropped for counts",
                BoxesDroppedWarning,
                stacklevel=2,
            )
        return image, target

    def __getitem__(self, index: int) -> tuple[Any, dict]:
        image, target = self.load_raw(index)
        if self.transforms is None:
            from detkit.data.coco import to_tensor_target

            return to_tensor_target(image, target)
        return self.transforms(image, target)
