"""Small-object copy-paste augmentation (Kisantal et al. 2019, "Augmentation for small object
detection"), box-level, at training time.

Small objects (box area below ``max_area`` pixels^2 at the training resolution; default the
COCO "small" bucket 32^2) are cut out as box crops (or through their binary mask when the target
has ``masks`` uint8 [N, H, W]) and pasted ``num_copies`` times each, with scale jitter and
optional rotation, at random positions whose IoU with every existing box stays <= max_overlap.
Sources: the same image ("self") or a :class:`SmallObjectBank` of crops from the training set.
Everything is numpy slicing plus cv2 resize/warp on the small crops, so the cost per image is
a fraction of a JPEG decode. The crop, jitter, placement and blending of one patch are in
:mod:`detkit.data.object_patches`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from detkit.data.object_patches import (  # noqa: F401  (re-exported: the step's parts)
    ObjectPatch,
    SmallObjectBank,
    blend_into,
    crop_object,
    edge_alpha,
    find_position,
    jitter_patch,
    paste_alpha,
    pixel_box,
    small_object_indices,
)
from detkit.data.random_state import WorkerRng
from detkit.ops.boxes import COCO_SMALL_AREA


class SmallObjectCopyPaste:
    """Paste copies of small objects into an image; a transforms-contract callable.

    Args:
        max_area: an object is small when its box area (pixels^2, at this image's resolution)
            is below this (default 32^2, the COCO small bucket).
        num_copies: copies pasted per chosen object (Kisantal et al. paste several).
        max_objects: distinct small objects chosen per image; None -> every small object of
            the image for source "self", one bank patch for source "bank".
        scale_jitter: each copy is resized by U(1 - j, 1 + j) (default +-20%).
        rotation: each copy is rotated by U(-rotation, rotation) degrees (0 disables).
        max_overlap: largest IoU allowed with any existing (or already pasted / ignore) box;
            0 forbids any intersection.
        max_tries: random positions tried per copy; copies that do not fit are counted
            in ``failed_placements``.
        source: "self" or "bank" (then ``bank`` is required).
        feather: width in pixels of a soft alpha edge (0 = hard copy).
        p: probability of applying to an image.
        seed: seed of the (per worker) random stream.
    """

    def __init__(
        self,
        max_area: float = COCO_SMALL_AREA,
        num_copies: int = 3,
        max_objects: int | None = None,
        scale_jitter: float = 0.2,
        rotation: float = 0.0,
        max_overlap: float = 0.0,
        max_tries: int = 20,
        source: str = "self",
        bank: SmallObjectBank | None = None,
        feather: int = 0,
        p: float = 1.0,
        seed: int | None = None,
    ) -> None:
        if source not in ("self", "bank"):
            raise ValueError(f"source must be 'self' or 'bank', got {source!r}")
        if source == "bank" and (bank is None or len(bank) == 0):
            raise ValueError("source='bank' needs a non-empty SmallObjectBank")
        if not 0.0 <= scale_jitter < 1.0 or num_copies < 0 or not 0.0 <= max_overlap <= 1.0:
            raise ValueError("need 0 <= scale_jitter < 1, num_copies >= 0, 0 <= max_overlap <= 1")
        self.max_area, self.num_copies, self.max_objects = max_area, num_copies, max_objects
        self.scale_jitter, self.rotation, self.max_overlap = scale_jitter, rotation, max_overlap
        self.max_tries, self.source, self.bank = max_tries, source, bank
        self.feather, self.p = feather, p
        self.rng = WorkerRng(seed)
        self.pasted = 0
        self.failed_placements = 0

    def state_dict(self) -> dict[str, Any]:
        """Random state of the paste generator (exact resume with ``num_workers=0``)."""
        return {"rng": self.rng.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.rng.load_state_dict(state["rng"])

    def _choose_patches(
        self, rng: np.random.Generator, image: np.ndarray, target: dict
    ) -> list[ObjectPatch]:
        if self.source == "bank":
            assert self.bank is not None
            count = 1 if self.max_objects is None else self.max_objects
            picks = rng.integers(0, len(self.bank), size=count)
            return [self.bank.patches[int(i)] for i in picks]
        boxes = np.asarray(target.get("boxes", np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)
        small = small_object_indices(boxes, self.max_area)
        if self.max_objects is not None and len(small) > self.max_objects:
            small = rng.choice(small, size=self.max_objects, replace=False)
        masks = target.get("masks")
        labels = np.asarray(target.get("labels", np.zeros(len(boxes))), dtype=np.int64)
        out = []
        for j in small:
            mask = None if masks is None else np.asarray(masks[j])
            patch = crop_object(image, boxes[j], int(labels[j]), mask)
            if patch is not None:
                out.append(patch)
        return out

    def _region(self, image: np.ndarray, target: dict) -> tuple[int, int]:
        """Height and width of the non-padded image content (letterbox pads right/bottom)."""
        h, w = image.shape[:2]
        if "content_size" in target:  # written by the letterbox, right after any crop
            ch, cw = target["content_size"]
            return min(h, int(ch)), min(w, int(cw))
        if "orig_size" in target and "img_scale" in target:
            oh, ow = target["orig_size"]
            s = float(target["img_scale"])
            return min(h, round(int(oh) * s)), min(w, round(int(ow) * s))
        return h, w

    def __call__(self, image: np.ndarray, target: dict) -> tuple[np.ndarray, dict]:
        """Paste small objects into uint8 HWC ``image``; returns a new image and target."""
        rng = self.rng.get()
        if self.num_copies == 0 or rng.random() >= self.p:
            return image, target
        patches = self._choose_patches(rng, image, target)
        if not patches:
            return image, target
        boxes = np.asarray(target.get("boxes", np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)
        ignore = np.asarray(target.get("ignore_boxes", np.zeros((0, 4))), dtype=np.float32)
        occupied = np.concatenate([boxes, ignore.reshape(-1, 4)])
        region = self._region(image, target)
        out_image = image.copy()
        new_boxes, new_labels, placed_items = [], [], []
        for patch in patches:
            for _ in range(self.num_copies):
                placed = self._paste_one(rng, out_image, patch, region, occupied)
                if placed is None:
                    self.failed_placements += 1
                    continue
                box, item = placed
                occupied = np.concatenate([occupied, box[None]])
                new_boxes.append(box)
                new_labels.append(patch.label)
                placed_items.append(item)
        self.pasted += len(new_boxes)
        if not new_boxes:
            return out_image, target
        return out_image, _extend_target(target, new_boxes, new_labels, placed_items, image.shape)

    def _paste_one(
        self,
        rng: np.random.Generator,
        image: np.ndarray,
        patch: ObjectPatch,
        region: tuple[int, int],
        occupied: np.ndarray,
    ) -> tuple[np.ndarray, tuple[int, int, ObjectPatch]] | None:
        scale = 1.0
        if self.scale_jitter > 0:
            scale = float(rng.uniform(1.0 - self.scale_jitter, 1.0 + self.scale_jitter))
        angle = float(rng.uniform(-self.rotation, self.rotation)) if self.rotation > 0 else 0.0
        moved = jitter_patch(patch, scale, angle)
        ph, pw = moved.pixels.shape[:2]
        pos = find_position(rng, (ph, pw), region, occupied, self.max_overlap, self.max_tries)
        if pos is None:
            return None
        x, y = pos
        blend_into(image, moved, x, y, self.feather)
        box = np.array([x, y, x + pw, y + ph], dtype=np.float32)
        return box, (x, y, moved)


def _extend_target(
    target: dict,
    new_boxes: list[np.ndarray],
    new_labels: list[int],
    placed: list[tuple[int, int, ObjectPatch]],
    shape: tuple[int, ...],
) -> dict:
    """Target with the pasted boxes appended (label kept, weight 1, iscrowd 0, area, masks)."""
    out = dict(target)
    k = len(new_boxes)
    boxes = np.asarray(target.get("boxes", np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)
    out["boxes"] = np.concatenate([boxes, np.stack(new_boxes)]).astype(np.float32)
    labels = np.asarray(target.get("labels", np.zeros(len(boxes))), dtype=np.int64)
    out["labels"] = np.concatenate([labels, np.asarray(new_labels, dtype=np.int64)])
    weights = np.asarray(target.get("weights", np.ones(len(boxes))), dtype=np.float32)
    out["weights"] = np.concatenate([weights, np.ones(k, dtype=np.float32)])
    areas = [
        float(p.mask.sum()) if p.mask is not None else float(p.pixels.shape[0] * p.pixels.shape[1])
        for _, _, p in placed
    ]
    if "area" in target:
        out["area"] = np.concatenate([np.asarray(target["area"], np.float32), areas]).astype(
            np.float32
        )
    if "iscrowd" in target:
        out["iscrowd"] = np.concatenate([np.asarray(target["iscrowd"], np.int64), np.zeros(k)])
        out["iscrowd"] = out["iscrowd"].astype(np.int64)
    if "masks" in target:
        old = np.asarray(target["masks"]).copy()
        extra = np.zeros((k, shape[0], shape[1]), dtype=old.dtype)
        for i, (x, y, p) in enumerate(placed):
            h, w = p.pixels.shape[:2]
            m = np.ones((h, w), old.dtype) if p.mask is None else (p.mask > 0).astype(old.dtype)
            extra[i, y : y + h, x : x + w] = m
            covered = old[:, y : y + h, x : x + w]
            old[:, y : y + h, x : x + w] = np.where(m[None] > 0, 0, covered)
        out["masks"] = np.concatenate([old, extra])
    return out


# offset of copy-paste's stream from the config seed: the albumentations step is seeded with
# the seed itself, and the same seed would make both draw the same numbers
COPY_PASTE_SEED_OFFSET = 2


def build_copy_paste(options: Mapping[str, Any], seed: int | None, dataset: Any = None,
                     input_size: int | None = None) -> SmallObjectCopyPaste:
    """The copy-paste step of a config's ``data.copy_paste.options``.

    ``options`` are :class:`SmallObjectCopyPaste` arguments plus ``bank_items`` (most crops in
    a bank, 1000). The stream is seeded with ``options["seed"]`` when given, else with the
    config ``seed`` + :data:`COPY_PASTE_SEED_OFFSET` (None stays unseeded). ``source: bank``
    without a ``bank`` collects one from ``dataset`` (anything with ``load_raw(i)`` and
    ``len``, e.g. the training ``CocoDetection``) at ``input_size``, with the same seed.
    Raises ValueError for unknown options or a bank source without a dataset.
    """
    kwargs = dict(options)
    bank_items = int(kwargs.pop("bank_items", 1000))
    if "seed" not in kwargs:
        kwargs["seed"] = None if seed is None else int(seed) + COPY_PASTE_SEED_OFFSET
    if kwargs.get("source") == "bank" and kwargs.get("bank") is None:
        if dataset is None:
            raise ValueError("copy-paste with source 'bank' needs the training set to collect "
                             "its bank from")
        kwargs["bank"] = SmallObjectBank.from_dataset(
            dataset, max_area=float(kwargs.get("max_area", COCO_SMALL_AREA)),
            max_items=bank_items, seed=kwargs["seed"] or 0, input_size=input_size)
    try:
        return SmallObjectCopyPaste(**kwargs)
    except TypeError as err:
        raise ValueError(f"invalid arguments for transform 'SmallObjectCopyPaste': {err}") from err
