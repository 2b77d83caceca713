"""Tests for detkit.data.synthetic_render: the size spread and tight boxes of one image."""

from __future__ import annotations

import numpy as np
import pytest

from detkit.data.synthetic_render import CLASSES, render_sample


def test_size_spread_matches_coco():
    areas = []
    for i in range(300):
        sample = render_sample(np.random.default_rng([7, i]), image_size=320)
        areas += (sample.boxes[:, 2] * sample.boxes[:, 3]).tolist()
    areas = np.array(areas)
    small, large = np.mean(areas < 32**2), np.mean(areas >= 96**2)
    medium = 1.0 - small - large
    assert len(areas) > 1000
    assert small == pytest.approx(0.40, abs=0.05)
    assert medium == pytest.approx(0.35, abs=0.05)
    assert large == pytest.approx(0.25, abs=0.05)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_boxes_tightly_bound_drawn_pixels(seed):
    sample = render_sample(np.random.default_rng([seed, 0]), image_size=128, num_objects=8)
    drawn = np.any(sample.image != sample.background, axis=2)
    # nothing is drawn outside the objects' visible pixels
    assert not np.any(drawn & (sample.label_map == 0))
    assert len(sample.boxes) >= 1 and len(sample.boxes) == len(sample.labels)
    labels_present = [k for k in np.unique(sample.label_map) if k]
    assert len(labels_present) == len(sample.boxes)
    for k, box in zip(labels_present, sample.boxes, strict=True):
        ys, xs = np.nonzero(sample.label_map == k)
        expected = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        np.testing.assert_array_equal(box, expected)
        x, y, w, h = box.astype(int)
        own = drawn & (sample.label_map == k)
        # the changed pixels of this object touch all four box edges
        assert own[y, x : x + w].any() and own[y + h - 1, x : x + w].any()
        assert own[y : y + h, x].any() and own[y : y + h, x + w - 1].any()
        assert not own[:y].any() and not own[y + h :].any()
        assert not own[:, :x].any() and not own[:, x + w :].any()
    assert set(sample.labels.tolist()) <= set(range(1, len(CLASSES) + 1))
