"""Tests for detkit.evaluation.proposals (proposal recall of two-stage detectors)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from detkit.evaluation.proposals import (
    format_recall,
    has_proposals,
    proposal_recall,
    recall_table,
)


class _FixedRPN(nn.Module):
    """Stands in for a two-stage detector: the same proposals for every image."""

    def __init__(self, proposals: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.proposals = proposals
        self.transform = lambda images: SimpleNamespace(
            tensor=torch.stack(images), image_sizes=[tuple(i.shape[-2:]) for i in images])
        self.rpn = lambda feats, sizes, targets: SimpleNamespace(
            proposals=[self.proposals for _ in sizes])

    def feature_map(self, batch: torch.Tensor) -> torch.Tensor:
        return batch


class _Data:
    class_names = ["x", "y"]

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        target = {"boxes": np.array([[0, 0, 10, 10], [20, 20, 60, 60]], np.float32),
                  "labels": np.array([1, 2]), "area": np.array([100.0, 1600.0])}
        return np.zeros((64, 64, 3), np.uint8), target


def test_recall_by_size_and_class_on_a_hand_case() -> None:
    # [0, 0, 10, 11] overlaps the 10 x 10 box with IoU 100 / 110 = 0.91: found; nothing
    # reaches IoU 0.5 with the 40 x 40 box ([0, 0, 5, 5] is inside neither enough)
    model = _FixedRPN(torch.tensor([[0.0, 0, 10, 11], [0, 0, 5, 5]]))
    assert has_proposals(model) and not has_proposals(nn.Linear(1, 1))
    table = proposal_recall(model, _Data(), size=64)  # 64 x 64 image: letterbox scale 1
    assert table["all"] == {"found": 1, "total": 2, "recall": 0.5}
    assert table["by_size"]["small"]["recall"] == 1.0  # area 100 < 32^2
    assert table["by_size"]["medium"]["recall"] == 0.0  # 32^2 <= 1600 < 96^2
    assert table["by_size"]["large"] == {"found": 0, "total": 0, "recall": None}
    assert table["by_class"] == {"x": {"found": 1, "total": 1, "recall": 1.0},
                                 "y": {"found": 0, "total": 1, "recall": 0.0}}
    assert table["proposals_per_image"] == 2.0
    text = format_recall(table)
    assert "all 0.500 (1/2)" in text and "large n/a" in text and "y 0.000 (0/1)" in text


def test_proposals_are_mapped_back_through_the_letterbox_scale() -> None:
    # at size 128 the 64-px image is scaled by 2: a proposal [0, 0, 20, 22] in input pixels
    # is [0, 0, 10, 11] in original pixels, which finds the 10 x 10 box
    model = _FixedRPN(torch.tensor([[0.0, 0, 20, 22]]))
    table = proposal_recall(model, _Data(), size=128)
    assert table["by_class"]["x"]["recall"] == 1.0


def test_recall_table_pools_counts() -> None:
    table = recall_table({("all", "all"): (3, 4), ("class", "a"): (3, 4)}, 0.5, 200.0)
    assert table["all"]["recall"] == pytest.approx(0.75)
    assert table["by_size"]["small"]["recall"] is None
