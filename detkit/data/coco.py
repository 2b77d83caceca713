"""COCO-format detection dataset (pycocotools index, build-time validation).

Item format (the team contract): ``(image, target)`` with ``image`` a float32
``Tensor[3, H, W]`` in ``[0, 1]``, RGB, not mean/std normalised, and ``target`` a dict
with ``boxes`` float32 ``[N, 4]`` (x1, y1, x2, y2) in the image's pixels, ``labels``
int64 ``[N]`` in ``1..K``, ``image_id`` int, ``area`` float32 ``[N]``, ``iscrowd``
int64 ``[N]`` (zeros: crowd boxes are moved to ``ignore_boxes``), ``ignore_boxes``
float32 ``[M, 4]``, ``weights`` float32 ``[N]``, ``orig_size`` (h, w) and ``img_scale``.

COCO category ids (any integers, e.g. 3, 7, 42) are mapped to contiguous labels
``1..K`` in increasing id order; ``label_to_cat_id`` maps back when results are written.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from detkit.data.image_io import UnreadableImageWarning, read_image_rgb
from detkit.data.validation import ValidationReport, validate_coco
from detkit.data.validation import logger as validation_logger

__all__ = ["CocoDetection", "build_label_maps", "to_tensor_target"]

Transforms = Callable[[np.ndarray, dict[str, Any]], tuple[Any, dict[str, Any]]]

_FLOAT_KEYS = ("boxes", "area", "ignore_boxes", "weights")
_INT_KEYS = ("labels", "iscrowd")


def build_label_maps(categories: Sequence[Mapping[str, Any]]) -> tuple[dict, dict, list[str]]:
    """Map COCO category ids to contiguous labels ``1..K`` (sorted by id) and back.

    Returns ``(cat_id_to_label, label_to_cat_id, class_names)``; ``class_names[k - 1]``
    is the name of label ``k``.
    """
    cats = sorted(categories, key=lambda c: c["id"])
    cat_id_to_label = {c["id"]: k for k, c in enumerate(cats, start=1)}
    label_to_cat_id = {k: cid for cid, k in cat_id_to_label.items()}
    names = [str(c.get("name", c["id"])) for c in cats]
    return cat_id_to_label, label_to_cat_id, names


def to_tensor_target(image: Any, target: Mapping[str, Any]) -> tuple[torch.Tensor, dict]:
    """Convert a raw sample to the contract's tensors (returns new objects).

    ``image``: uint8 ``[H, W, 3]`` RGB numpy array (or an already-made CHW tensor, which
    is only cast to float32). Output image: float32 ``Tensor[3, H, W]`` in ``[0, 1]``.
    ``boxes``/``area``/``ignore_boxes``/``weights`` become float32 tensors,
    ``labels``/``iscrowd`` int64 tensors; other keys are copied unchanged.
    """
    if isinstance(image, torch.Tensor):
        out_image = image.float() if image.dtype != torch.uint8 else image.float() / 255.0
    else:
        array = np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))
        out_image = torch.from_numpy(array).float().div_(255.0)
    out = dict(target)
    for key in _FLOAT_KEYS:
        if key in out:
            out[key] = torch.as_tensor(np.asarray(out[key], dtype=np.float32))
    for key in _INT_KEYS:
        if key in out:
            out[key] = torch.as_tensor(np.asarray(out[key], dtype=np.int64))
    for key in ("boxes", "ignore_boxes"):
        if key in out:
            out[key] = out[key].reshape(-1, 4)
    return out_image, out


class CocoDetection(Dataset):
    """Detection dataset over a COCO JSON file, validated when built.

    Args:
        ann_file: COCO JSON path.
        img_dir: folder the images' ``file_name`` is relative to (default: the JSON's
            folder; absolute file names work too).
        transforms: ``transforms(image, target) -> (image, target)`` called on the raw
            sample of :meth:`load_raw` (uint8 HWC RGB numpy image, numpy target). It must
            return the contract's tensors (use :func:`to_tensor_target` as its last step).
            ``None``: the sample is only converted by :func:`to_tensor_target`.
        keep_empty: keep images without annotations as negatives.
        full_decode: decode every image during validation (slower, stricter; it finds
            files with an intact end but a corrupt body, which the fast check cannot).
        skip_unreadable: for training: an image that cannot be decoded when read is
            replaced by the next readable one, with an :class:`UnreadableImageWarning`
            naming the file and the count so far (``self.unreadable``), instead of
            ending the run mid-epoch. Off (raise ``OSError``) for evaluation, where a
            substitute would be scored as the wrong image.
        require_annotations: fail when no annotation is usable (set ``False`` for
            image-only test sets).
        log: logger for the validation summary (``None``: silent; the counts stay in
            ``self.report``).

    Attributes: ``coco`` (pycocotools index of the validated data, for evaluation),
    ``ids`` (COCO image id of each item), ``report`` (:class:`ValidationReport`),
    ``cat_id_to_label``, ``label_to_cat_id``, ``class_names``.
    """

    def __init__(
        self,
        ann_file: str | Path,
        img_dir: str | Path | None = None,
        transforms: Transforms | None = None,
        keep_empty: bool = True,
        full_decode: bool = False,
        require_annotations: bool = True,
        log: logging.Logger | None = validation_logger,
        skip_unreadable: bool = False,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.skip_unreadable = skip_unreadable
        self.unreadable: dict[str, str] = {}
        self.img_dir = Path(img_dir) if img_dir is not None else self.ann_file.parent
        self.transforms = transforms
        self.report: ValidationReport
        clean, self.report = validate_coco(
            self.ann_file,
            self.img_dir,
            keep_empty=keep_empty,
            full_decode=full_decode,
            require_annotations=require_annotations,
            log=log,
        )
        self.coco = COCO()
        self.coco.dataset = clean
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
            self.coco.createIndex()
        self.ids: list[int] = [img["id"] for img in clean["images"]]
        maps = build_label_maps(clean["categories"])
        self.cat_id_to_label, self.label_to_cat_id, self.class_names = maps

    @property
    def num_classes(self) -> int:
        """K, the number of object classes (labels are ``1..K``)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def image_info(self, index: int) -> dict[str, Any]:
        """The (validated) COCO image record of item ``index``."""
        return self.coco.imgs[self.ids[index]]

    def raw_target(self, index: int) -> dict[str, Any]:
        """The numpy target of item ``index`` in the image's own pixels (no image read)."""
        info = self.image_info(index)
        anns = self.coco.imgToAnns.get(info["id"], [])
        objs = [a for a in anns if not a["iscrowd"]]
        crowd = [a for a in anns if a["iscrowd"]]
        return {
            "boxes": _xywh_to_xyxy([a["bbox"] for a in objs]),
            "labels": np.array([self.cat_id_to_label[a["category_id"]] for a in objs], np.int64),
            "image_id": int(info["id"]),
            "area": np.array([a["area"] for a in objs], dtype=np.float32),
            "iscrowd": np.zeros(len(objs), dtype=np.int64),
            "ignore_boxes": _xywh_to_xyxy([a["bbox"] for a in crowd]),
            "weights": np.ones(len(objs), dtype=np.float32),
            "orig_size": (int(info["height"]), int(info["width"])),
            "img_scale": 1.0,
        }

    def load_raw(self, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Item ``index`` before transforms: uint8 ``[H, W, 3]`` RGB numpy image and
        numpy target (boxes float32 xyxy ``[N, 4]``, labels int64 ``1..K``, ...)."""
        for step in range(len(self) if self.skip_unreadable else 1):
            item = (index + step) % len(self)
            path = self.img_dir / self.image_info(item)["file_name"]
            try:
                image = read_image_rgb(path)
            except OSError as err:
                if not self.skip_unreadable:
                    raise
                self._note_unreadable(path, err)
                continue
            return image, self.raw_target(item)
        raise OSError(f"{self.ann_file}: none of its {len(self)} images can be decoded")

    def _note_unreadable(self, path: Path, err: OSError) -> None:
        """Count an unreadable image and warn once per file, naming it."""
        if str(path) in self.unreadable:
            return
        self.unreadable[str(path)] = str(err)
        warnings.warn(
            f"{path}: cannot decode image; skipped, the next image is used in its place "
            f"({len(self.unreadable)} unreadable image(s) so far). Validate with "
            f"data.full_decode=true to find such files before training",
            UnreadableImageWarning,
            stacklevel=2,
        )

    def state_dict(self) -> dict[str, Any]:
        """Random state of the transforms, when they keep one (exact resume, no workers)."""
        has = hasattr(self.transforms, "state_dict")
        return {"transforms": self.transforms.state_dict() if has else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        if state.get("transforms") is not None and hasattr(self.transforms, "load_state_dict"):
            self.transforms.load_state_dict(state["transforms"])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, target = self.load_raw(index)
        if self.transforms is None:
            return to_tensor_target(image, target)
        return self.transforms(image, target)


def _xywh_to_xyxy(boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """COCO ``[x, y, w, h]`` list -> float32 ``[N, 4]`` (x1, y1, x2, y2) array."""
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    out[:, 2:] += out[:, :2]
    return out
