"""Sliced inference for small objects (in the manner of SAHI, Akyon et al. 2022).

The image is cut into overlapping ``tile x tile`` windows; each window goes through the
detector at the model's input size, so a window of 320 px seen at 320 keeps full resolution
where the whole 640 x 480 image would be halved. Window boxes are shifted back to image pixels,
the whole image is predicted too (large objects), and everything is merged by per-class NMS of
the configured kind (DIoU-NMS included; :func:`detkit.engine.inference.merge_detections`).

Windows (:func:`tile_windows`): along each axis they start at 0, then every
``tile * (1 - overlap)`` pixels, and the last one is moved back to end at the image border, so
every pixel is covered and no window leaves the image. An image no larger than ``tile`` is one
window (itself). A window detection that touches a side of its window lying inside the image
(within ``edge`` px) is cut by the window and dropped: a small object appears whole in a
neighbouring window (when the overlap exceeds its size), a large one comes from the whole-image
pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

__all__ = ["SlicedPredictor", "drop_cut_detections", "tile_windows"]

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive) in image pixels


class _Predicts(Protocol):
    def predict(self, images: Sequence[np.ndarray]) -> list[dict[str, Tensor]]: ...


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def tile_windows(height: int, width: int, tile: int, overlap: float) -> list[Window]:
    """Overlapping windows covering an ``height x width`` image, row by row (module docs).

    ``overlap`` in [0, 1): the share of ``tile`` two neighbouring windows have in common.
    """
    if tile < 1:
        raise ValueError(f"tile must be >= 1 px, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    step = max(1, int(round(tile * (1.0 - overlap))))
    return [(x0, y0, min(x0 + tile, width), min(y0 + tile, height))
            for y0 in _starts(height, tile, step) for x0 in _starts(width, tile, step)]


def drop_cut_detections(det: Mapping[str, Tensor], window: Window, image_hw: tuple[int, int],
                        edge: float = 2.0) -> dict[str, Tensor]:
    """Keep the detections of one window (boxes xyxy in image pixels) that do not touch a
    side of ``window`` lying inside the image, within ``edge`` px."""
    x0, y0, x1, y1 = window
    height, width = image_hw
    boxes = det["boxes"]
    cut = torch.zeros(len(boxes), dtype=torch.bool)
    if x0 > 0:
        cut |= boxes[:, 0] <= x0 + edge
    if y0 > 0:
        cut |= boxes[:, 1] <= y0 + edge
    if x1 < width:
        cut |= boxes[:, 2] >= x1 - edge
    if y1 < height:
        cut |= boxes[:, 3] >= y1 - edge
    return {k: v[~cut] for k, v in det.items()}


class SlicedPredictor:
    """Wrap a predictor (``predict(images) -> per-image dicts in original pixels``, e.g.
    :class:`detkit.engine.inference.Predictor`) so that it predicts over windows + the whole
    image and merges (module docstring).

    Args:
        predictor: the single-image predictor.
        tile / overlap: window side (px) and overlap share.
        nms / iou_threshold / max_detections / nms_kwargs: the merge's NMS.
        whole_image: also predict the whole image (large objects); default True.
        edge: px within which a window detection counts as cut (:func:`drop_cut_detections`).
    """

    def __init__(self, predictor: _Predicts, tile: int = 320, overlap: float = 0.25,
                 nms: str = "nms", iou_threshold: float = 0.5, max_detections: int = 100,
                 nms_kwargs: Mapping[str, Any] | None = None, whole_image: bool = True,
                 edge: float = 2.0) -> None:
        tile_windows(tile, tile, tile, overlap)  # validates tile and overlap
        self.predictor = predictor
        self.tile, self.overlap, self.edge = int(tile), float(overlap), float(edge)
        self.nms, self.iou_threshold = nms, float(iou_threshold)
        self.max_detections = int(max_detections)
        self.nms_kwargs = dict(nms_kwargs or {})
        self.whole_image = whole_image

    @classmethod
    def around(cls, predictor: Any, tile: int = 320, overlap: float = 0.25) -> SlicedPredictor:
        """Merge with the wrapped model's own NMS kind, threshold and detection count."""
        from detkit.engine.inference import postprocess_config

        own = postprocess_config(predictor.model)
        if callable(own.nms):
            raise ValueError("the model uses a callable NMS; sliced inference needs a named kind")
        return cls(predictor, tile, overlap, own.nms, own.nms_threshold, own.max_detections,
                   own.nms_kwargs)

    def predict_one(self, image: np.ndarray) -> dict[str, Tensor]:
        """Detections of one uint8 ``[H, W, 3]`` image, boxes xyxy in its pixels (CPU)."""
        from detkit.engine.inference import merge_detections

        height, width = image.shape[:2]
        windows = tile_windows(height, width, self.tile, self.overlap)
        crops = [np.ascontiguousarray(image[y0:y1, x0:x1]) for x0, y0, x1, y1 in windows]
        dets = []
        for (x0, y0, x1, y1), det in zip(windows, self.predictor.predict(crops), strict=True):
            shift = torch.tensor([x0, y0, x0, y0], dtype=det["boxes"].dtype)
            moved = {**det, "boxes": det["boxes"] + shift}
            dets.append(drop_cut_detections(moved, (x0, y0, x1, y1), (height, width),
                                            self.edge))
        if self.whole_image and len(windows) > 1:
            dets.extend(self.predictor.predict([image]))
        return merge_detections(dets, self.nms, self.iou_threshold, self.max_detections,
                                **self.nms_kwargs)

    def predict(self, images: Sequence[np.ndarray]) -> list[dict[str, Tensor]]:
        """:meth:`predict_one` for each image (the interface of the wrapped predictor)."""
        return [self.predict_one(image) for image in images]
