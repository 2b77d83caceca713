"""Drawing boxes with captions that stay inside the image and never overlap each other.

:func:`draw_detections` draws every box first, then the captions ("name score") by decreasing
score, each at the first free spot among: above the box's top-left corner, inside it at the
top, below the box, inside it at the bottom; then sliding down and up from the first spot in
caption-height steps. Every candidate is shifted to lie inside the image. Small images are
drawn enlarged (``min_side``) so that captions stay readable and cover little of the objects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

__all__ = ["PALETTE", "caption_spots", "draw_detections", "label_color", "write_image"]

# Distinct RGB colours; label k (1..K) uses PALETTE[(k - 1) % len(PALETTE)].
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128),
    (170, 110, 40), (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 128),
)
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.4

Rect = tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive ends)


def label_color(label: int) -> tuple[int, int, int]:
    """RGB colour of contiguous label ``label`` (1..K)."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def _as_uint8_rgb(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """HxWx3 uint8 RGB copy of an HxWx3 uint8 array or a [3, H, W] float tensor in [0, 1]."""
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().permute(1, 2, 0).numpy()
        return np.ascontiguousarray((np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8 RGB, got {array.shape} {array.dtype}")
    return np.ascontiguousarray(array).copy()


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def caption_spots(box: Sequence[int], size: tuple[int, int], image_wh: tuple[int, int]
                  ) -> list[Rect]:
    """Candidate caption rectangles for ``box`` (x1, y1, x2, y2) in placement order.

    ``size`` is the caption's (width, height), ``image_wh`` the image's (width, height); every
    rectangle is shifted to lie inside the image (a caption wider than the image starts at 0).
    """
    x1, y1, x2, y2 = (int(v) for v in box)
    w, h = size
    width, height = image_wh

    def fit(x: int, y: int) -> Rect:
        x = min(max(x, 0), max(width - w, 0))
        y = min(max(y, 0), max(height - h, 0))
        return (x, y, x + w, y + h)

    first = [fit(x1, y1 - h), fit(x1, y1), fit(x1, y2), fit(x1, y2 - h)]
    slides = [fit(first[0][0], first[0][1] + s * k * h) for k in range(1, height // max(h, 1) + 1)
              for s in (1, -1)]
    out: list[Rect] = []
    for rect in first + slides:
        if rect not in out:
            out.append(rect)
    return out


def draw_detections(
    image: np.ndarray | torch.Tensor,
    boxes: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    scores: np.ndarray | torch.Tensor | None = None,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    score_threshold: float = 0.0,
    thickness: int = 2,
    min_side: int = 0,
) -> np.ndarray:
    """Draw boxes with "name score" captions; returns a new HxWx3 uint8 RGB image.

    Args:
        image: HxWx3 uint8 RGB array, or a [3, H, W] float tensor in [0, 1] (dataset format).
        boxes: [D, 4] xyxy in the image's pixels.
        labels: [D] contiguous labels 1..K (colour = :func:`label_color`).
        scores: [D] or None; boxes below ``score_threshold`` are not drawn.
        class_names: {label: name} or a sequence with label k's name at k-1; default: the label.
        thickness: rectangle line width in pixels.
        min_side: enlarge (nearest neighbour) an image whose longer side is shorter, by an
            integer factor, before drawing; boxes are scaled with it. 0 keeps the size.
    """
    canvas = _as_uint8_rgb(image)
    box_arr = np.asarray(torch.as_tensor(boxes).detach().cpu(), dtype=np.float64).reshape(-1, 4)
    label_arr = np.asarray(torch.as_tensor(labels).detach().cpu()).reshape(-1).astype(np.int64)
    score_arr = (None if scores is None
                 else np.asarray(torch.as_tensor(scores).detach().cpu(), dtype=np.float64))
    if len(label_arr) != len(box_arr) or (score_arr is not None and len(score_arr) != len(box_arr)):
        raise ValueError("boxes, labels and scores must have the same length")
    factor = max(1, -(-int(min_side) // max(canvas.shape[:2]))) if min_side else 1
    if factor > 1:
        canvas = cv2.resize(canvas, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
        box_arr = box_arr * factor
    names = (dict(class_names) if isinstance(class_names, Mapping)
             else {k + 1: n for k, n in enumerate(class_names or [])})
    order = (np.arange(len(box_arr)) if score_arr is None
             else np.argsort(-score_arr, kind="stable"))
    keep = [i for i in order if score_arr is None or score_arr[i] >= score_threshold]
    rects = {i: tuple(int(round(v)) for v in box_arr[i]) for i in keep}
    for i in keep:
        x1, y1, x2, y2 = rects[i]
        cv2.rectangle(canvas, (x1, y1), (x2, y2), label_color(label_arr[i]), thickness)
    placed: list[Rect] = []
    height, width = canvas.shape[:2]
    for i in keep:
        caption = str(names.get(int(label_arr[i]), int(label_arr[i])))
        if score_arr is not None:
            caption += f" {score_arr[i]:.2f}"
        (tw, th), base = cv2.getTextSize(caption, FONT, FONT_SCALE, 1)
        spots = caption_spots(rects[i], (tw + 2, th + base + 2), (width, height))
        spot = next((s for s in spots if not any(_overlaps(s, p) for p in placed)), spots[0])
        placed.append(spot)
        cv2.rectangle(canvas, spot[:2], (spot[2] - 1, spot[3] - 1), label_color(label_arr[i]), -1)
        cv2.putText(canvas, caption, (spot[0] + 1, spot[1] + 1 + th), FONT, FONT_SCALE,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def write_image(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an HxWx3 uint8 RGB image (e.g. from :func:`draw_detections`) as PNG/JPEG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image {path}")
    return path
