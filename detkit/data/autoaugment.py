"""The learned detection augmentation policy of Zoph et al., "Learning Data Augmentation
Strategies for Object Detection" (ECCV 2020, arXiv 1906.11172), policy v0.

Each call picks one of five sub-policies uniformly; each of its two operations then runs with
its probability, at its magnitude level L (0..10) mapped as in the paper's published policy:

=========================  ====================================================  ===========
operation                  effect at level L                                      boxes
=========================  ====================================================  ===========
TranslateX/Y_BBox          shift the image by +-L/10 * 250 px (fill 128)          moved
ShearX/Y_BBox              shear by the factor +-L/10 * 0.3 about the centre      enclosing box
Rotate_BBox                rotate by +-L/10 * 30 degrees about the centre         enclosing box
TranslateY_Only_BBoxes     shift the pixels inside each box by +-L/10 * 120 px,   kept
                           each box with probability p / 3
Equalize                   per-channel histogram equalisation                     kept
Cutout                     a grey (128) square of side 2 * (L/10 * 100) px        kept
Color / Sharpness          blend with the grey / smoothed image, factor           kept
                           L/10 * 1.8 + 0.1 (PIL ImageEnhance semantics)
=========================  ====================================================  ===========

Policy v0 as (operation, probability, level)::

    [TranslateX_BBox 0.6 4, Equalize 0.8 10]   [TranslateY_Only_BBoxes 0.2 2, Cutout 0.8 8]
    [Sharpness 0.0 8, ShearX_BBox 0.4 0]       [ShearY_BBox 1.0 2, TranslateY_Only_BBoxes 0.6 6]
    [Rotate_BBox 0.6 10, Color 1.0 6]

The sign of every signed magnitude is drawn with probability 1/2. Geometric operations use
``albumentations.Affine`` (boxes: the enclosing box of the moved corners), Equalize
``albumentations.Equalize``; the others are written here. Boxes are pascal_voc (x1, y1, x2,
y2) pixels in the functions below. In a config: ``data.transforms: [{type:
DetectionAutoAugment, p: 1.0}]`` (:class:`DetectionAutoAugment`, an albumentations
transform, so it composes with the others and its boxes go through the same filters).
"""

from __future__ import annotations

import math
from typing import Any

import albumentations as A
import cv2
import numpy as np

__all__ = ["POLICY_V0", "DetectionAutoAugment", "affine", "apply_operation", "color",
           "cutout", "equalize", "level_to_arg", "sharpness", "translate_only_bboxes"]

FILL = 128
POLICY_V0: tuple[tuple[tuple[str, float, int], ...], ...] = (
    (("TranslateX_BBox", 0.6, 4), ("Equalize", 0.8, 10)),
    (("TranslateY_Only_BBoxes", 0.2, 2), ("Cutout", 0.8, 8)),
    (("Sharpness", 0.0, 8), ("ShearX_BBox", 0.4, 0)),
    (("ShearY_BBox", 1.0, 2), ("TranslateY_Only_BBoxes", 0.6, 6)),
    (("Rotate_BBox", 0.6, 10), ("Color", 1.0, 6)),
)
_SIGNED = {"TranslateX_BBox", "TranslateY_BBox", "ShearX_BBox", "ShearY_BBox", "Rotate_BBox",
           "TranslateX_Only_BBoxes", "TranslateY_Only_BBoxes"}


def level_to_arg(name: str, level: int) -> float:
    """The unsigned magnitude of ``name`` at ``level`` (0..10), in the table's units."""
    frac = level / 10.0
    table = {"TranslateX_BBox": 250.0, "TranslateY_BBox": 250.0, "ShearX_BBox": 0.3,
             "ShearY_BBox": 0.3, "Rotate_BBox": 30.0, "TranslateX_Only_BBoxes": 120.0,
             "TranslateY_Only_BBoxes": 120.0}
    if name in table:
        return frac * table[name]
    if name == "Cutout":
        return float(int(frac * 100))
    if name in ("Color", "Sharpness"):
        return frac * 1.8 + 0.1
    if name == "Equalize":
        return 0.0
    raise ValueError(f"unknown operation {name!r}")


def affine(image: np.ndarray, boxes: np.ndarray, tx: float = 0.0, ty: float = 0.0,
           shear_x: float = 0.0, shear_y: float = 0.0, rotate: float = 0.0
           ) -> tuple[np.ndarray, np.ndarray]:
    """Translate by (tx, ty) px, shear by factors, rotate by degrees (about the centre) with
    ``albumentations.Affine``, grey (128) fill. ``boxes [N, 4]`` -> ``[N, 4]``: the enclosing
    box of each moved box, clipped; a box moved out of the image becomes zero-size."""
    sx, sy = math.degrees(math.atan(shear_x)), math.degrees(math.atan(shear_y))
    op = A.Affine(translate_px={"x": (int(round(tx)),) * 2, "y": (int(round(ty)),) * 2},
                  shear={"x": (sx, sx), "y": (sy, sy)}, rotate=(rotate, rotate), fill=FILL,
                  border_mode=cv2.BORDER_CONSTANT, p=1.0)
    compose = A.Compose([op], bbox_params=A.BboxParams(
        format="pascal_voc", label_fields=["index"], clip=True, min_area=0.0,
        min_visibility=0.0, filter_invalid_bboxes=True))
    res = compose(image=image, bboxes=boxes.reshape(-1, 4), index=np.arange(len(boxes)))
    out = np.zeros((len(boxes), 4), np.float32)  # zero-size: dropped by the outer filter
    kept = np.asarray(res["index"], dtype=np.int64)
    out[kept] = np.asarray(res["bboxes"], np.float32).reshape(-1, 4)
    return res["image"], out


def _shift(patch: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``patch`` moved by (dx, dy) px, the uncovered part filled with 128."""
    out = np.full_like(patch, FILL)
    h, w = patch.shape[:2]
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        patch[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def translate_only_bboxes(image: np.ndarray, boxes: np.ndarray, dx: int, dy: int,
                          chosen: np.ndarray) -> np.ndarray:
    """Shift the pixels inside each chosen box by (dx, dy), filling with 128; the boxes and
    the pixels outside them are unchanged. Boxes are rounded to whole pixels."""
    out = image.copy()
    h, w = image.shape[:2]
    for box in boxes[chosen]:
        x1, y1 = max(0, int(math.floor(box[0]))), max(0, int(math.floor(box[1])))
        x2, y2 = min(w, int(math.ceil(box[2]))), min(h, int(math.ceil(box[3])))
        if x2 > x1 and y2 > y1:
            out[y1:y2, x1:x2] = _shift(out[y1:y2, x1:x2], dx, dy)
    return out


def cutout(image: np.ndarray, cy: int, cx: int, pad: int) -> np.ndarray:
    """Fill ``[cy - pad, cy + pad) x [cx - pad, cx + pad)`` (clipped) with 128."""
    out = image.copy()
    out[max(0, cy - pad):cy + pad, max(0, cx - pad):cx + pad] = FILL
    return out


def _blend(degenerate: np.ndarray, image: np.ndarray, factor: float) -> np.ndarray:
    mixed = degenerate.astype(np.float32) + factor * (image.astype(np.float32)
                                                      - degenerate.astype(np.float32))
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def color(image: np.ndarray, factor: float) -> np.ndarray:
    """PIL ``ImageEnhance.Color``: blend with the grey image (ITU-R 601 luma); 0 grey, 1 same."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return _blend(np.repeat(grey[..., None], 3, axis=2), image, factor)


def sharpness(image: np.ndarray, factor: float) -> np.ndarray:
    """PIL ``ImageEnhance.Sharpness``: blend with the image smoothed by [[1,1,1],[1,5,1],
    [1,1,1]] / 13 (border pixels kept); 0 smoothed, 1 same, above 1 sharper."""
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0
    smooth = image.copy()
    inner = cv2.filter2D(image.astype(np.float32), -1, kernel)
    smooth[1:-1, 1:-1] = np.clip(np.round(inner[1:-1, 1:-1]), 0, 255).astype(np.uint8)
    return _blend(smooth, image, factor)


def equalize(image: np.ndarray) -> np.ndarray:
    """Per-channel histogram equalisation (``albumentations.Equalize``, PIL mode)."""
    return A.Equalize(mode="pil", by_channels=True, p=1.0)(image=image)["image"]


def apply_operation(name: str, prob: float, level: int, image: np.ndarray, boxes: np.ndarray,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Run one operation of a sub-policy with probability ``prob`` (draws from ``rng``)."""
    if rng.random() >= prob:
        return image, boxes
    mag = level_to_arg(name, level)
    if name in _SIGNED and rng.random() < 0.5:
        mag = -mag
    if name.endswith("_Only_BBoxes"):
        chosen = rng.random(len(boxes)) < prob / 3.0
        shift = int(round(mag))
        dx, dy = (shift, 0) if name.startswith("TranslateX") else (0, shift)
        return translate_only_bboxes(image, boxes, dx, dy, chosen), boxes
    geometric = {"TranslateX_BBox": "tx", "TranslateY_BBox": "ty", "ShearX_BBox": "shear_x",
                 "ShearY_BBox": "shear_y", "Rotate_BBox": "rotate"}
    if name in geometric:
        return affine(image, boxes, **{geometric[name]: mag})
    if name == "Cutout":
        h, w = image.shape[:2]
        return cutout(image, int(rng.integers(0, h)), int(rng.integers(0, w)), int(mag)), boxes
    if name == "Equalize":
        return equalize(image), boxes
    return (color if name == "Color" else sharpness)(image, mag), boxes


class DetectionAutoAugment(A.DualTransform):
    """Policy v0 of Zoph et al. as an albumentations transform (module docstring).

    Args:
        p: probability of applying a sub-policy at all (1.0 in the paper).

    Works on an RGB ``uint8 [H, W, 3]`` image and its boxes; masks are not supported.
    """

    def __init__(self, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.policy = POLICY_V0

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]
                                     ) -> dict[str, Any]:
        """Run the drawn sub-policy on the image and its (pixel) boxes."""
        if "mask" in data or "masks" in data:
            raise ValueError("DetectionAutoAugment does not transform masks")
        image = data["image"]
        h, w = image.shape[:2]
        raw = np.asarray(data.get("bboxes", np.zeros((0, 4))), np.float32)
        norm = raw.reshape(len(raw), -1)[:, :4] if raw.size else np.zeros((0, 4), np.float32)
        scale = np.array([w, h, w, h], np.float32)
        boxes = norm * scale
        rng = np.random.default_rng(int(self.random_generator.integers(0, 2**63 - 1)))
        for name, prob, level in self.policy[int(rng.integers(len(self.policy)))]:
            image, boxes = apply_operation(name, prob, level, image, boxes, rng)
        return {"aug_image": image, "aug_boxes": boxes / scale}

    def apply(self, img: np.ndarray, aug_image: np.ndarray, **params: Any) -> np.ndarray:
        """The augmented image."""
        return aug_image

    def apply_to_bboxes(self, bboxes: np.ndarray, aug_boxes: np.ndarray, **params: Any
                        ) -> np.ndarray:
        """The boxes (normalised, albumentations' internal format), extra columns kept."""
        out = np.array(bboxes, dtype=np.float32, copy=True)
        if len(out):
            out[:, :4] = aug_boxes
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        """No constructor arguments besides ``p``."""
        return ()
