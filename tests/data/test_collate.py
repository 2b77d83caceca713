"""Tests for detkit.data.collate."""

from __future__ import annotations

import pytest
import torch

from detkit.data.collate import collate_detection


def test_collate_keeps_order_and_sizes():
    a, b = torch.zeros(3, 4, 5), torch.ones(3, 6, 2)
    ta, tb = {"image_id": 1}, {"image_id": 2}
    images, targets = collate_detection([(a, ta), (b, tb)])
    assert images[0] is a and images[1] is b  # no copy, no padding
    assert targets == [ta, tb]


def test_collate_empty_batch():
    assert collate_detection([]) == ([], [])


def test_collate_rejects_bad_item():
    with pytest.raises(ValueError, match="batch item 1"):
        collate_detection([(torch.zeros(3, 2, 2), {}), torch.zeros(3, 2, 2)])
