"""Sliced inference: windows, shifting back, cut detections, merging (boxes placed by hand)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from detkit.engine.slicing import SlicedPredictor, drop_cut_detections, tile_windows


class WhiteBoxDetector:
    """A stand-in detector: finds white rectangles on black, as a model with a 320 px input
    would: an image is seen at scale 320 / its longer side, and objects under 8 px there are
    missed (the small-object loss that slicing is for). Boxes xyxy in the image's pixels."""

    def __init__(self, size: int = 320, min_side: float = 8.0) -> None:
        self.size, self.min_side = size, min_side
        self.calls: list[tuple[int, int]] = []

    def predict(self, images):  # type: ignore[no-untyped-def]
        out = []
        for image in images:
            self.calls.append(image.shape[:2])
            scale = self.size / max(image.shape[:2])
            white = (image[..., 0] > 127).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(white)
            boxes = [[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:n]
                     if min(w, h) * scale >= self.min_side]
            boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            out.append({"boxes": boxes_t, "scores": torch.full((len(boxes),), 0.9),
                        "labels": torch.ones(len(boxes), dtype=torch.int64)})
        return out


def _scene(objects: list[tuple[int, int, int, int]]) -> np.ndarray:
    image = np.zeros((480, 640, 3), np.uint8)
    for x1, y1, x2, y2 in objects:
        image[y1:y2, x1:x2] = 255
    return image


def test_windows_of_a_640_x_480_image() -> None:
    # tile 320, overlap 0.25: step 240; x starts 0, 240 and 640 - 320 = 320;
    # y starts 0 and 480 - 320 = 160 (the next step, 240, would pass the border)
    assert tile_windows(480, 640, 320, 0.25) == [
        (0, 0, 320, 320), (240, 0, 560, 320), (320, 0, 640, 320),
        (0, 160, 320, 480), (240, 160, 560, 480), (320, 160, 640, 480)]
    assert tile_windows(200, 300, 320, 0.25) == [(0, 0, 300, 200)]  # smaller than a tile
    with pytest.raises(ValueError, match="overlap"):
        tile_windows(480, 640, 320, 1.0)


def test_cut_detections_touch_an_inner_side_only() -> None:
    det = {"boxes": torch.tensor([[240.0, 10, 260, 30],    # on the window's left side (inner)
                                  [300.0, 10, 330, 30],    # inside
                                  [530.0, 300, 560, 320],  # on the right and bottom (inner)
                                  [250.0, 0, 270, 20]]),   # on the top side: the image's own
           "scores": torch.ones(4), "labels": torch.ones(4, dtype=torch.int64)}
    kept = drop_cut_detections(det, (240, 0, 560, 320), (480, 640))
    # the window's top side is the image's: a box there is whole, and kept
    assert kept["boxes"].tolist() == [[300.0, 10, 330, 30], [250.0, 0, 270, 20]]


def test_small_objects_found_once_each_and_a_large_one_whole() -> None:
    # small 12 px objects: at scale 320 / 640 = 0.5 they are 6 px, missed without slicing;
    # (250, 100) lies in the overlap of windows 0 and 1: found by both, merged to one;
    # the large object spans four windows: cut in each, whole in the whole-image pass
    small = [(50, 50, 62, 62), (250, 100, 262, 112), (600, 440, 612, 452)]
    large = (200, 200, 440, 400)
    image = _scene(small + [large])
    plain = WhiteBoxDetector().predict([image])[0]
    assert plain["boxes"].tolist() == [[200.0, 200.0, 440.0, 400.0]]
    detector = WhiteBoxDetector()
    sliced = SlicedPredictor(detector, tile=320, overlap=0.25).predict([image])[0]
    found = sorted(tuple(int(v) for v in box) for box in sliced["boxes"].tolist())
    assert found == sorted(small + [large])
    # six windows, then the whole image once
    assert detector.calls == [(320, 320)] * 6 + [(480, 640)]


def test_around_takes_the_models_nms(monkeypatch) -> None:
    from detkit.engine import inference
    from detkit.models.postprocess import PostprocessConfig

    class Holder:
        model = object()

    monkeypatch.setattr(inference, "postprocess_config",
                        lambda model: PostprocessConfig(nms="diou_nms", nms_threshold=0.6,
                                                        max_detections=50))
    sliced = SlicedPredictor.around(Holder(), tile=256, overlap=0.5)
    assert (sliced.nms, sliced.iou_threshold, sliced.max_detections) == ("diou_nms", 0.6, 50)
