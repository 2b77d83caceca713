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


def test_size_buckets_at_their_edges() -> None:
    from detkit.evaluation.proposals import _bucket

    # COCO: small [0, 32^2), medium [32^2, 96^2), large [96^2, 1e5^2); beyond -> large
    assert _bucket(0.0) == "small" and _bucket(1023.9) == "small"
    assert _bucket(1024.0) == "medium" and _bucket(9215.9) == "medium"
    assert _bucket(9216.0) == "large" and _bucket(1e10) == "large" and _bucket(1e12) == "large"


class _TwoImages:
    """No ``class_names``; image 0 has no boxes, image 1 has a label-0 box and a label-3 box."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        if i == 0:
            target = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
                      "area": np.zeros(0)}
        else:
            target = {"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32),
                      "labels": np.array([0, 3]), "area": np.array([100.0, 100.0])}
        return np.zeros((64, 64, 3), np.uint8), target


def test_iou_limit_is_inclusive_and_images_without_boxes_are_skipped() -> None:
    # [0, 0, 10, 20] over the 10 x 10 box: IoU 100 / 200 = 0.5 exactly, which counts; the
    # other box is not reached. Two proposals on each of the two images: 4 / 2 = 2 per image.
    model = _FixedRPN(torch.tensor([[0.0, 0, 10, 20], [40, 40, 50, 50]]))
    table = proposal_recall(model, _TwoImages(), size=64)
    assert table["all"] == {"found": 1, "total": 2, "recall": 0.5}
    assert table["proposals_per_image"] == 2.0
    # without class names the labels are the class keys, label 0 included
    assert table["by_class"] == {"0": {"found": 1, "total": 1, "recall": 1.0},
                                 "3": {"found": 0, "total": 1, "recall": 0.0}}


def test_label_zero_is_not_the_last_class_name() -> None:
    class Named(_TwoImages):
        class_names = ["a", "b", "c"]

    table = proposal_recall(_FixedRPN(torch.tensor([[0.0, 0, 10, 10]])), Named(), size=64)
    # label 3 -> names[2] = "c"; label 0 is outside 1..3 and keeps its number
    assert set(table["by_class"]) == {"0", "c"}


def test_no_proposals_find_nothing() -> None:
    table = proposal_recall(_FixedRPN(torch.zeros((0, 4))), _Data(), size=64)
    assert table["all"] == {"found": 0, "total": 2, "recall": 0.0}
    assert table["proposals_per_image"] == 0.0


def test_empty_counts_format_and_write(tmp_path) -> None:
    import json

    from detkit.evaluation.proposals import write_recall

    table = recall_table({}, 0.5, 0.0)
    assert table["all"] == {"found": 0, "total": 0, "recall": None}
    table = recall_table({("all", "all"): (1, 2), ("size", "small"): (1, 2),
                          ("class", "a"): (1, 1), ("class", "b"): (0, 1)}, 0.7, 12.4)
    assert format_recall(table) == (
        "proposal recall @IoU 0.7 (12 proposals/image): all 0.500 (1/2); small 0.500 (1/2), "
        "medium n/a, large n/a\n"
        "proposal recall by class: a 1.000 (1/1), b 0.000 (0/1)")
    path = write_recall(tmp_path / "x" / "y" / "recall.json", table)
    assert path == tmp_path / "x" / "y" / "recall.json"
    text = path.read_text()
    assert text == json.dumps(table, indent=1) + "\n" and text.startswith('{\n "iou": 0.7,')
    write_recall(path, table)  # an existing folder is fine
