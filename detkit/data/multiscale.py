"""Multi-scale (random shape) training ("Bag of Freebies", Zhang et al. 2019; YOLOv3).

Implemented at the batch level, after collation, in the training loop's process: every batch
(or every ``every`` batches) one size is drawn from ``sizes`` with a ``torch.Generator`` and
the whole batch is resized to it. Doing it on the collated batch keeps the dataset, its
transforms and the DataLoader workers unchanged (they always produce the base size), and the
choice is deterministic given the generator, whatever the number of workers.

Images: list of float ``Tensor[3, H, W]``; each is resized so its longest side equals the
drawn size, keeping the aspect ratio (the letterboxed square batches of detkit stay square).
Boxes and ignore boxes are multiplied by (new_w / W, new_h / H), ``area`` by their product
and ``img_scale`` by the same factor, so original boxes = boxes / img_scale still holds.

SNIP (Singh & Davis, CVPR 2018; :mod:`detkit.models.snip`): given ``valid_ranges``, one
``(low, high)`` per size, the resizer also writes the drawn size's range into every target as
``valid_range``; the detectors then train only on the boxes whose ``sqrt(w * h)`` in the resized
image lies in ``[low, high)`` and ignore the anchors around the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from detkit.models.snip import ValidRange, valid_range_of


def _check_sizes(sizes: Sequence[int]) -> list[int]:
    out = [int(s) for s in sizes]
    if not out or min(out) <= 0:
        raise ValueError(f"sizes must be a non-empty list of positive ints, got {sizes!r}")
    return out


def choose_size(sizes: Sequence[int], generator: torch.Generator | None = None) -> int:
    """One size drawn uniformly from ``sizes`` with ``generator``."""
    sizes = _check_sizes(sizes)
    return sizes[int(torch.randint(len(sizes), (1,), generator=generator).item())]


def _scale_boxes(boxes: Any, sx: float, sy: float) -> Tensor:
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return boxes * boxes.new_tensor([sx, sy, sx, sy])


def resize_batch(
    images: Sequence[Tensor], targets: Sequence[dict], size: int
) -> tuple[list[Tensor], list[dict]]:
    """Resize every image so its longest side is ``size`` (bilinear, antialiased) and scale
    its target; returns new lists (inputs are not modified)."""
    if len(images) != len(targets):
        raise ValueError(f"{len(images)} images but {len(targets)} targets")
    out_images, out_targets = [], []
    for image, target in zip(images, targets, strict=True):
        h, w = image.shape[-2:]
        factor = size / max(h, w)
        nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
        sx, sy = nw / w, nh / h
        if (nh, nw) == (h, w):
            out_images.append(image)
        else:
            resized = F.interpolate(
                image[None].float(),
                size=(nh, nw),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )[0]
            out_images.append(resized.clamp_(0.0, 1.0) if image.is_floating_point() else resized)
        new = dict(target)
        for key in ("boxes", "ignore_boxes"):
            if key in target:
                new[key] = _scale_boxes(target[key], sx, sy)
        if "area" in target:
            new["area"] = torch.as_tensor(target["area"], dtype=torch.float32) * (sx * sy)
        if "masks" in target:
            masks = torch.as_tensor(target["masks"])
            if masks.numel() > 0:
                masks = F.interpolate(masks[None].float(), size=(nh, nw), mode="nearest")[0]
                masks = masks.to(torch.as_tensor(target["masks"]).dtype)
            new["masks"] = masks
        new["img_scale"] = float(target.get("img_scale", 1.0)) * factor
        if "content_size" in target:
            ch, cw = target["content_size"]
            new["content_size"] = (min(nh, round(int(ch) * sy)), min(nw, round(int(cw) * sx)))
        out_targets.append(new)
    return out_images, out_targets


def random_resize_batch(
    images: Sequence[Tensor],
    targets: Sequence[dict],
    sizes: Sequence[int],
    generator: torch.Generator | None = None,
) -> tuple[list[Tensor], list[dict]]:
    """Draw one size from ``sizes`` with ``generator`` and resize the batch to it."""
    return resize_batch(images, targets, choose_size(sizes, generator))


class MultiScaleResizer:
    """Stateful batch resizer for the training loop: a new size every ``every`` batches.

    ``resizer(images, targets) -> (images, targets)``; ``state_dict`` / ``load_state_dict``
    restore the generator and the batch counter, so a resumed run draws the same sizes.
    ``valid_ranges``: SNIP's ``[low, high)`` object sizes per entry of ``sizes`` (pixels of the
    resized image, see the module docstring); None trains on every box at every size.
    """

    def __init__(self, sizes: Sequence[int], seed: int = 0, every: int = 1,
                 valid_ranges: Sequence[Sequence[float]] | None = None) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.sizes = _check_sizes(sizes)
        self.every = every
        self.valid_ranges: dict[int, ValidRange] | None = None
        if valid_ranges is not None:
            if len(valid_ranges) != len(self.sizes) or len(set(self.sizes)) != len(self.sizes):
                raise ValueError(f"valid_ranges needs one [min, max] per size of distinct "
                                 f"sizes {self.sizes}, got {list(valid_ranges)!r}")
            self.valid_ranges = {size: valid_range_of(r)
                                 for size, r in zip(self.sizes, valid_ranges, strict=True)}
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        self.calls = 0
        self.size = self.sizes[-1]

    def __call__(
        self, images: Sequence[Tensor], targets: Sequence[dict]
    ) -> tuple[list[Tensor], list[dict]]:
        """Resize one collated batch (see :func:`resize_batch`)."""
        if self.calls % self.every == 0:
            self.size = choose_size(self.sizes, self.generator)
        self.calls += 1
        images, targets = resize_batch(images, targets, self.size)
        if self.valid_ranges is not None:
            valid_range = self.valid_ranges[self.size]
            targets = [{**t, "valid_range": valid_range} for t in targets]
        return images, targets

    def state_dict(self) -> dict[str, Any]:
        """Generator state, batch counter and current size."""
        return {"generator": self.generator.get_state(), "calls": self.calls, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.generator.set_state(state["generator"])
        self.calls = int(state["calls"])
        self.size = int(state["size"])
