"""Tests for detkit.evaluation.gt_rois (the R-CNN's view of ground-truth boxes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from detkit.evaluation.gt_rois import format_gt_roi_scores, gt_roi_scores, has_roi_classifier


class _TableClassifier(nn.Module):
    """Logits = log of a fixed probability row per box, looked up by the box's x1 (so the
    softmax gives those probabilities back exactly); records the boxes it was given."""

    def __init__(self, rows: dict[float, list[float]]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.rows = rows
        self.seen: list[torch.Tensor] = []
        self.transform = lambda images: images

    def roi_class_logits(self, images, boxes_per_image):  # type: ignore[no-untyped-def]
        (boxes,) = boxes_per_image
        self.seen.append(boxes.clone())
        return torch.tensor([[math.log(p) for p in self.rows[float(b[0])]] for b in boxes])


class _Data:
    """Two 128 x 64 images; letterboxed to 64 the scale is 0.5."""
    class_names = ["a", "b"]
    targets = [
        {"boxes": np.array([[2, 0, 12, 10], [4, 0, 14, 10]], np.float32),
         "labels": np.array([1, 2])},
        {"boxes": np.array([[6, 0, 16, 10]], np.float32), "labels": np.array([1])},
    ]

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        return np.zeros((64, 128, 3), np.uint8), self.targets[i]


def test_probabilities_of_the_true_class_background_and_top1_by_hand() -> None:
    # letterbox scale 64 / 128 = 0.5, so the boxes arrive with x1 = 1, 2 and 3
    # columns: background, a, b
    model = _TableClassifier({1.0: [0.7, 0.2, 0.1],    # class a: p(a) 0.2, bg wins
                              2.0: [0.1, 0.3, 0.6],    # class b: p(b) 0.6, b wins
                              3.0: [0.2, 0.5, 0.3]})   # class a: p(a) 0.5, a wins
    assert has_roi_classifier(model) and not has_roi_classifier(nn.Linear(1, 1))
    table = gt_roi_scores(model, _Data(), size=64)
    assert torch.equal(model.seen[0], torch.tensor([[1.0, 0, 6, 5], [2, 0, 7, 5]]))
    a, b = table["by_class"]["a"], table["by_class"]["b"]
    assert a["boxes"] == 2 and b["boxes"] == 1
    assert a["p_true"] == pytest.approx((0.2 + 0.5) / 2)        # 0.35
    assert a["p_background"] == pytest.approx((0.7 + 0.2) / 2)  # 0.45
    assert a["top1"] == pytest.approx(0.5)                      # one of two
    assert (b["p_true"], b["p_background"], b["top1"]) == pytest.approx((0.6, 0.1, 1.0))
    everything = table["all"]
    assert everything["boxes"] == 3
    assert everything["p_true"] == pytest.approx((0.2 + 0.6 + 0.5) / 3)
    assert everything["top1"] == pytest.approx(2 / 3)
    line = format_gt_roi_scores(table)
    assert "a p(true) 0.350, p(background) 0.450, top-1 0.500 (2 boxes)" in line
    assert "b p(true) 0.600, p(background) 0.100, top-1 1.000 (1 boxes)" in line


def test_a_model_without_a_roi_classifier_is_refused() -> None:
    with pytest.raises(ValueError, match="roi_class_logits"):
        gt_roi_scores(nn.Linear(1, 1), _Data(), size=64)
