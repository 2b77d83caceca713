"""detkit.evaluation.draw: captions stay inside the image and never overlap each other."""

from __future__ import annotations

import cv2
import numpy as np

from detkit.evaluation.draw import (
    FONT,
    FONT_SCALE,
    caption_spots,
    draw_detections,
    label_color,
)


def _caption_rects(image: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    return np.all(image == np.array(color, dtype=np.uint8), axis=2)


def test_spots_are_inside_the_image() -> None:
    # a box touching the top-left corner: "above" is shifted down to y = 0
    spots = caption_spots((0, 0, 20, 20), (30, 10), (64, 48))
    assert spots[0] == (0, 0, 30, 10)
    for x1, y1, x2, y2 in spots:
        assert 0 <= x1 and 0 <= y1 and x2 <= 64 and y2 <= 48
    # a box at the right edge: the caption is moved left to fit (64 - 30 = 34)
    assert caption_spots((60, 30, 64, 40), (30, 10), (64, 48))[0] == (34, 20, 64, 30)


def test_five_captions_on_one_object_do_not_overlap() -> None:
    image = np.zeros((128, 128, 3), dtype=np.uint8)
    boxes = np.array([[40, 40, 70, 70]] * 5, dtype=np.float32)
    labels = np.array([1, 2, 3, 4, 5])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    names = ["circle", "square", "triangle", "star", "cross"]
    out = draw_detections(image, boxes, labels, scores, names, thickness=1)
    (tw, th), base = cv2.getTextSize("triangle 0.70", FONT, FONT_SCALE, 1)
    rects = []
    for label in labels:
        # the caption strip of each label is one filled rectangle of that label's colour
        ys, xs = np.nonzero(_caption_rects(out, label_color(label)))
        # drop the box outline (1 px lines on x = 40 / 70, y = 40 / 70)
        inside = ~(np.isin(xs, [40, 70]) & (ys >= 40) & (ys <= 70))
        inside &= ~(np.isin(ys, [40, 70]) & (xs >= 40) & (xs <= 70))
        ys, xs = ys[inside], xs[inside]
        rects.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    for i, a in enumerate(rects):
        assert a[2] - a[0] >= 20 and a[3] - a[1] >= th  # a strip, not stray pixels
        for b in rects[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)


def test_small_images_are_drawn_enlarged() -> None:
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    out = draw_detections(image, np.array([[10, 10, 20, 20]]), np.array([1]), thickness=1,
                          min_side=200)
    # factor ceil(200 / 60) = 4: 160 x 240; the box's left edge moves to x = 40
    assert out.shape == (160, 240, 3)
    assert out[60, 40].any() and not out[60, 39].any()


def test_spots_slide_one_caption_height_at_a_time() -> None:
    # box (10, 8)-(30, 12), caption 10 x 4, image 40 x 40: the caption y is clipped to
    # [0, 36]. First above (y 4), inside top (8), below (12), inside bottom (8, a repeat);
    # then from y 4 alternately down and up by k * 4: 8 (repeat), 0, 12 (repeat), -4 -> 0
    # (repeat), 16, ..., 36, then clipped repeats
    spots = caption_spots((10, 8, 30, 12), (10, 4), (40, 40))
    assert [y for _, y, _, _ in spots] == [4, 8, 12, 0, 16, 20, 24, 28, 32, 36]
    assert all((x1, x2, y2 - y1) == (10, 20, 4) for x1, y1, x2, y2 in spots)
