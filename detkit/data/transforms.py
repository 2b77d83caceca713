"""Training / evaluation transform pipelines: albumentations from config plus a letterbox step.

The transforms callable contract used by every detkit dataset::

    transforms(image: np.ndarray uint8 [H, W, 3] RGB, target: dict) -> (image, target)

``target["boxes"]`` is float32 [N, 4] (x1, y1, x2, y2) in absolute pixels of the image it
travels with; ``labels`` int64 [N], ``weights`` float32 [N], ``ignore_boxes`` float32 [M, 4]
and the optional per-box ``area`` / ``iscrowd`` / ``masks`` (uint8 [N, H, W]) stay aligned with
the boxes. The detector input step resizes keeping the aspect ratio and pads right/bottom only
(top-left placement), so ``img_scale`` alone maps boxes back: original = boxes / img_scale.
"""

from __future__ import annotations

import logging
import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from detkit.config import close_names
from detkit.data.random_state import worker_seed
from detkit.data.validation import BoxesDroppedWarning

logger = logging.getLogger(__name__)

PER_BOX_KEYS = ("boxes", "labels", "weights", "area", "iscrowd")
Transform = Callable[[np.ndarray, dict], tuple[np.ndarray, dict]]


def valid_transform_names() -> list[str]:
    """Names of the albumentations 2D transforms accepted in a config list."""
    names = []
    for name in dir(A):
        obj = getattr(A, name)
        if isinstance(obj, type) and issubclass(obj, A.BasicTransform) and "3D" not in name:
            names.append(name)
    return sorted(names)


def build_albumentation(spec: Mapping[str, Any]) -> A.BasicTransform:
    """Instantiate one ``{"type": "HorizontalFlip", "p": 0.5, ...}`` entry.

    Raises ValueError for a missing/unknown type (listing close valid names) or invalid arguments.
    """
    if "type" not in spec:
        raise ValueError(f"transform entry {dict(spec)!r} has no 'type' key")
    name = str(spec["type"])
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items() if k != "type"}
    if name == "DetectionAutoAugment":  # detkit's own: the learned policy of Zoph et al.
        from detkit.data.autoaugment import DetectionAutoAugment

        return DetectionAutoAugment(**kwargs)
    valid = valid_transform_names()
    if name not in valid:
        close = close_names(name, valid, n=5)
        hint = f"did you mean one of {close}?" if close else f"valid types: {valid}"
        raise ValueError(f"unknown transform type {name!r}: {hint}")
    cls = getattr(A, name)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            transform = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid arguments for transform {name!r}: {err}") from err
    for item in caught:
        if "not valid" in str(item.message):
            raise ValueError(f"invalid arguments for transform {name!r}: {item.message}")
        warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    return transform


def _as_size(size: int | Sequence[int]) -> tuple[int, int]:
    """Normalise an input size to (height, width)."""
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ValueError(f"input_size must be an int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def select_boxes(target: Mapping[str, Any], keep: np.ndarray) -> dict:
    """Copy of ``target`` with every per-box entry (boxes, labels, masks, ...) taken at ``keep``."""
    out = dict(target)
    for key in (*PER_BOX_KEYS, "masks"):
        if key in target:
            out[key] = np.asarray(target[key])[keep]
    return out


def letterbox(
    image: np.ndarray, target: Mapping[str, Any], size: int | Sequence[int], pad_value: int = 0
) -> tuple[np.ndarray, dict]:
    """Resize keeping the aspect ratio so the image fits ``size``, then pad right/bottom.

    scale = min(H_out / h, W_out / w); boxes, ignore_boxes *= scale, area *= scale^2 and
    ``img_scale`` is multiplied by scale, so original boxes = boxes / img_scale;
    ``content_size`` = (new_h, new_w) is the non-padded region at the top-left.
    image: uint8 [h, w, C] -> uint8 [H_out, W_out, C]; masks [N, h, w] -> [N, H_out, W_out].
    The image equals albumentations' ``LongestMaxSize`` + ``PadIfNeeded(position="top_left")``
    pixel for pixel; the boxes keep the one exact scale that ``img_scale`` maps back with
    (measured against albumentations in tests/data/test_transforms.py).
    """
    out_h, out_w = _as_size(size)
    h, w = image.shape[:2]
    scale = min(out_h / h, out_w / w)
    new_h, new_w = max(1, min(out_h, round(h * scale))), max(1, min(out_w, round(w * scale)))
    resized = image
    if (new_h, new_w) != (h, w):
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((out_h, out_w, *image.shape[2:]), pad_value, dtype=image.dtype)
    canvas[:new_h, :new_w] = resized.reshape(new_h, new_w, *image.shape[2:])

    out = dict(target)
    limits = np.array([new_w, new_h, new_w, new_h], dtype=np.float32)
    for key in ("boxes", "ignore_boxes"):
        if key in target:
            boxes = np.asarray(target[key], dtype=np.float32).reshape(-1, 4) * np.float32(scale)
            out[key] = np.minimum(boxes, limits).astype(np.float32)
    if "area" in target:
        out["area"] = (np.asarray(target["area"], dtype=np.float32) * scale**2).astype(np.float32)
    if "masks" in target:
        out["masks"] = _resize_masks(np.asarray(target["masks"]), (new_h, new_w), (out_h, out_w))
    out["img_scale"] = float(target.get("img_scale", 1.0)) * scale
    out["content_size"] = (int(new_h), int(new_w))  # the non-padded region, top-left
    return canvas, out


def _resize_masks(
    masks: np.ndarray, new_hw: tuple[int, int], out_hw: tuple[int, int]
) -> np.ndarray:
    """Nearest-neighbour resize of [N, h, w] masks to new_hw, zero-padded to out_hw."""
    out = np.zeros((masks.shape[0], *out_hw), dtype=masks.dtype)
    for i in range(masks.shape[0]):
        out[i, : new_hw[0], : new_hw[1]] = cv2.resize(
            masks[i], (new_hw[1], new_hw[0]), interpolation=cv2.INTER_NEAREST
        )
    return out


class Letterbox:
    """Callable form of :func:`letterbox` (the detector input step)."""

    def __init__(self, size: int | Sequence[int], pad_value: int = 0) -> None:
        self.size = _as_size(size)
        self.pad_value = pad_value

    def __call__(self, image: np.ndarray, target: dict) -> tuple[np.ndarray, dict]:
        """Letterbox ``image`` and its ``target`` (see :func:`letterbox`)."""
        return letterbox(image, target, self.size, self.pad_value)


class AlbumentationsStep:
    """Albumentations ``Compose`` with box bookkeeping and a counter of dropped boxes.

    Boxes and ignore boxes travel together as pascal_voc boxes with label fields
    ``labels``, ``weights``, ``box_index`` and ``is_ignore``; after the transform every per-box
    entry is re-indexed by the surviving ``box_index``. Boxes removed by ``min_visibility`` /
    ``min_area``, or invalid (zero width or height), are added to ``boxes_dropped`` and reported
    with :class:`BoxesDroppedWarning`.
    Counters live in each process (each DataLoader worker keeps its own copy).
    """

    def __init__(
        self,
        specs: Sequence[Mapping[str, Any]],
        min_visibility: float = 0.3,
        min_area: float = 4.0,
        seed: int | None = None,
    ) -> None:
        self.compose = A.Compose(
            [build_albumentation(s) for s in specs],
            bbox_params=A.BboxParams(
                format="pascal_voc",
                label_fields=["labels", "weights", "box_index", "is_ignore"],
                min_visibility=min_visibility,
                min_area=min_area,
                clip=True,
                filter_invalid_bboxes=True,
            ),
            seed=seed,
        )
        self.seed = seed
        self._share_generators(seed)
        self.boxes_seen = 0
        self.boxes_dropped = 0
        self.ignore_boxes_dropped = 0
        self._seeded_for: int | None = None

    def _share_generators(self, seed: int | None) -> None:
        """Give the Compose and all its children ONE numpy and ONE python generator.

        ``A.Compose(seed=...)`` seeds every child with its own copy of the same seed, so
        the children draw correlated streams and the random state is spread over many
        objects; one shared pair is both better mixed and a single state to checkpoint.
        """
        self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def _reseed_in_worker(self) -> None:
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        key = None if info is None else int(info.seed)
        if key is not None and key != self._seeded_for:
            self._share_generators(worker_seed(self.seed))
            self._seeded_for = key

    def state_dict(self) -> dict[str, Any]:
        """Random state of the albumentations generators (shared by every child transform)."""
        version, internal, gauss = self.compose.py_random.getstate()
        return {
            "numpy": self.compose.random_generator.bit_generator.state,
            "python": [version, list(internal), gauss],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` in place, so the child transforms see it too."""
        self.compose.random_generator.bit_generator.state = dict(state["numpy"])
        version, internal, gauss = state["python"]
        self.compose.py_random.setstate((version, tuple(internal), gauss))

    def __call__(self, image: np.ndarray, target: dict) -> tuple[np.ndarray, dict]:
        """Apply the augmentations to image [H, W, 3] uint8 and its target."""
        self._reseed_in_worker()
        boxes = np.asarray(target.get("boxes", np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)
        ignore = np.asarray(target.get("ignore_boxes", np.zeros((0, 4))), dtype=np.float32)
        ignore = ignore.reshape(-1, 4)
        n, m = len(boxes), len(ignore)
        labels = np.asarray(target.get("labels", np.zeros(n)), dtype=np.int64)
        weights = np.asarray(target.get("weights", np.ones(n)), dtype=np.float32)
        data = {
            "image": image,
            "bboxes": np.concatenate([boxes, ignore]),
            "labels": np.concatenate([labels, np.zeros(m, dtype=np.int64)]),
            "weights": np.concatenate([weights, np.ones(m, dtype=np.float32)]),
            "box_index": np.concatenate([np.arange(n), np.arange(m)]).astype(np.int64),
            "is_ignore": np.concatenate([np.zeros(n), np.ones(m)]).astype(np.int64),
        }
        if "masks" in target and n > 0:
            data["masks"] = np.asarray(target["masks"])
        res = self.compose(**data)
        out_boxes = np.asarray(res["bboxes"], dtype=np.float32).reshape(-1, 4)
        is_ignore = np.asarray(res["is_ignore"], dtype=np.int64).astype(bool)
        index = np.asarray(res["box_index"], dtype=np.int64)
        keep = index[~is_ignore]
        out = select_boxes({k: v for k, v in target.items() if k != "masks"}, keep)
        out["boxes"] = out_boxes[~is_ignore]
        out["ignore_boxes"] = out_boxes[is_ignore]
        if "masks" in data:
            out["masks"] = np.asarray(res["masks"])[keep]
        elif "masks" in target:
            out["masks"] = np.zeros((0, *res["image"].shape[:2]), np.uint8)
        self._count(n, n - len(keep), m - int(is_ignore.sum()))
        return res["image"], out

    def _count(self, seen: int, dropped: int, ignore_dropped: int = 0) -> None:
        self.boxes_seen += seen
        self.ignore_boxes_dropped += ignore_dropped
        if dropped or ignore_dropped:
            self.boxes_dropped += dropped
            logger.debug("augmentation dropped %d boxes and %d ignore regions (totals %d, %d)",
                         dropped, ignore_dropped, self.boxes_dropped, self.ignore_boxes_dropped)
            warnings.warn(
                "albumentations dropped boxes or ignore regions (min_visibility / min_area / "
                "zero size); see AlbumentationsStep.boxes_dropped and .ignore_boxes_dropped",
                BoxesDroppedWarning,
                stacklevel=3,
            )


class DetectionPipeline:
    """``(image, target) -> (image, target)``: augmentations, letterbox, then detkit steps.

    ``steps_after`` hold detkit transforms that work at the training resolution (for example
    :class:`detkit.data.copy_paste.SmallObjectCopyPaste`), applied after the letterbox.
    """

    def __init__(
        self,
        augment: AlbumentationsStep | None,
        letterbox_step: Letterbox,
        steps_after: Sequence[Transform] = (),
        to_tensor: bool = True,
    ) -> None:
        self.augment = augment
        self.letterbox = letterbox_step
        self.steps_after = list(steps_after)
        self.to_tensor = to_tensor

    @property
    def boxes_dropped(self) -> int:
        """Boxes removed by the augmentation step so far in this process."""
        return 0 if self.augment is None else self.augment.boxes_dropped

    def state_dict(self) -> dict[str, Any]:
        """Random state of every stateful step (exact resume with ``num_workers=0``)."""
        return {
            "augment": None if self.augment is None else self.augment.state_dict(),
            "steps": [
                step.state_dict() if hasattr(step, "state_dict") else None
                for step in self.steps_after
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        if self.augment is not None and state.get("augment") is not None:
            self.augment.load_state_dict(state["augment"])
        for step, saved in zip(self.steps_after, state.get("steps", []), strict=False):
            if saved is not None and hasattr(step, "load_state_dict"):
                step.load_state_dict(saved)

    def __call__(self, image: np.ndarray, target: dict) -> tuple[Any, dict]:
        """Run the pipeline on uint8 HWC RGB ``image`` and its numpy target dict.

        Returns the contract's tensors (float32 [3, H, W] in [0, 1], tensor target) when
        ``to_tensor`` is set, else the numpy image and target.
        """
        if self.augment is not None:
            image, target = self.augment(image, target)
        image, target = self.letterbox(image, target)
        for step in self.steps_after:
            image, target = step(image, target)
        if self.to_tensor:
            from detkit.data.coco import to_tensor_target

            return to_tensor_target(image, target)
        return image, target


def _detkit_step(spec: Mapping[str, Any], bank: Any = None) -> Transform:
    """Build a detkit-native step named in a config list (runs after the letterbox)."""
    from detkit.data.copy_paste import build_copy_paste

    options = {k: v for k, v in spec.items() if k != "type"}
    if options.get("source") == "bank" and "bank" not in options:
        options["bank"] = bank
    return build_copy_paste(options, seed=None)  # a list entry gives its own "seed"


DETKIT_STEPS = ("SmallObjectCopyPaste",)


def build_transforms(
    cfg_list: Sequence[Mapping[str, Any]] | None,
    input_size: int | Sequence[int],
    train: bool,
    min_visibility: float = 0.3,
    min_area: float = 4.0,
    pad_value: int = 0,
    seed: int | None = None,
    to_tensor: bool = True,
    bank: Any = None,
    after: Sequence[Transform] = (),
) -> DetectionPipeline:
    """Build the dataset transforms from a config list.

    cfg_list: ``[{"type": "HorizontalFlip", "p": 0.5}, {"type": "CoarseDropout", ...}, ...]``;
    albumentations types run before the letterbox, ``SmallObjectCopyPaste`` entries after it
    (at the training resolution; ``"source": "bank"`` entries use the ``bank`` argument, a
    :class:`detkit.data.copy_paste.SmallObjectBank`). ``after``: steps already built (the
    config's ``data.copy_paste``, :func:`detkit.data.copy_paste.build_copy_paste`), run after
    those of the list.
    Cutout / random erasing: ``{"type": "CoarseDropout", "num_holes_range": [1, 4],
    "hole_height_range": [0.05, 0.15], "hole_width_range": [0.05, 0.15], "p": 0.5}`` or
    ``{"type": "Erasing", "scale": [0.02, 0.1], "p": 0.5}``.
    With ``train=False`` only the letterbox to ``input_size`` is applied. The last step is
    :func:`detkit.data.coco.to_tensor_target` unless ``to_tensor=False`` (numpy out).
    ``img_scale`` accounts for the letterbox; augmentations that rescale the image (crops,
    affine) are not folded into it, so use only flips / photometric / dropout ones when
    boxes must map back to the original image (evaluation has no augmentation).
    """
    cfg_list = list(cfg_list or [])
    if not train:
        return DetectionPipeline(None, Letterbox(input_size, pad_value), (), to_tensor)
    album = [s for s in cfg_list if s.get("type") not in DETKIT_STEPS]
    after = [*(_detkit_step(s, bank) for s in cfg_list if s.get("type") in DETKIT_STEPS),
             *after]
    augment = AlbumentationsStep(album, min_visibility, min_area, seed) if album else None
    return DetectionPipeline(augment, Letterbox(input_size, pad_value), after, to_tensor)
