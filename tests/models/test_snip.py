"""SNIP helpers (detkit.models.snip): object size, half-open valid ranges, the test-time
filter and the training split of out-of-range boxes in validate_targets."""

from __future__ import annotations

import math

import pytest
import torch

from detkit.models.snip import box_sizes, in_valid_range, keep_in_valid_range, valid_range_of
from detkit.models.targets import DegenerateBoxWarning, validate_targets


def test_box_size_is_the_square_root_of_the_area() -> None:
    # (0, 0, 8, 2): sqrt(16) = 4; (1, 1, 11, 11): sqrt(100) = 10; (0, 0, 3, 12): sqrt(36) = 6;
    # half precision is computed in float32
    boxes = torch.tensor([[0.0, 0, 8, 2], [1, 1, 11, 11], [0, 0, 3, 12]])
    torch.testing.assert_close(box_sizes(boxes), torch.tensor([4.0, 10.0, 6.0]))
    assert box_sizes(boxes.half()).dtype == torch.float32
    assert box_sizes(torch.zeros(0, 4)).shape == (0,)


def test_valid_range_is_half_open() -> None:
    # sizes 4, 10, 6 in [4, 10): 4 is in (min inclusive), 10 is out (max exclusive), 6 in
    boxes = torch.tensor([[0.0, 0, 8, 2], [1, 1, 11, 11], [0, 0, 3, 12]])
    assert in_valid_range(boxes, (4, 10)).tolist() == [True, False, True]
    assert in_valid_range(boxes, (0, math.inf)).tolist() == [True, True, True]
    assert in_valid_range(boxes, [10, 20]).tolist() == [False, True, False]


@pytest.mark.parametrize("bad", [[5, 5], [6, 2], [-1, 3], [3], [1, 2, 3], ["a", 2],
                                 [math.nan, 4], [math.inf, math.inf]])
def test_malformed_ranges_are_refused(bad: list) -> None:
    with pytest.raises(ValueError, match=r"valid range"):
        valid_range_of(bad)


def test_pyramid_filter_keeps_detections_inside_the_range() -> None:
    # hand-placed detections with sizes 5 (5 x 5), 20 (10 x 40), 32 (32 x 32), 63 (63 x 63);
    # range [20, 63): the 5 px box and the 63 px box go, 20 and 32 stay, in their order
    det = {"boxes": torch.tensor([[0.0, 0, 5, 5], [10, 0, 20, 40], [0, 0, 32, 32],
                                  [1, 1, 64, 64]]),
           "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]), "labels": torch.tensor([1, 2, 1, 3])}
    out = keep_in_valid_range(det, (20, 63))
    torch.testing.assert_close(out["boxes"], torch.tensor([[10.0, 0, 20, 40], [0, 0, 32, 32]]))
    assert out["scores"].tolist() == pytest.approx([0.8, 0.7])
    assert out["labels"].tolist() == [2, 1]
    kept = keep_in_valid_range(det, None)
    assert all(kept[k] is det[k] for k in det)  # no range: every detection, untouched


def test_validate_targets_moves_out_of_range_boxes_to_invalid() -> None:
    # sizes: b0 (0, 0, 4, 4) = 4, b1 (0, 0, 20, 5) = 10, b2 (10, 10, 50, 50) = 40, b3 zero
    # width (dropped with a warning). valid_range [5, 32): b1 stays ground truth, b0 (too
    # small) and b2 (too large) become invalid_boxes, after the invalid box the target had
    target = {"boxes": torch.tensor([[0.0, 0, 4, 4], [0, 0, 20, 5], [10, 10, 50, 50],
                                     [3, 3, 3, 9]]),
              "labels": torch.tensor([1, 2, 1, 2]), "weights": torch.tensor([0.1, 0.2, 0.3, 0.4]),
              "area": torch.tensor([16.0, 100.0, 1600.0, 0.0]),
              "invalid_boxes": torch.tensor([[7.0, 7, 8, 8]]), "valid_range": (5.0, 32.0),
              "img_scale": 2.0}
    with pytest.warns(DegenerateBoxWarning, match="1 zero-area"):
        (out,) = validate_targets([target], num_classes=2)
    torch.testing.assert_close(out["boxes"], torch.tensor([[0.0, 0, 20, 5]]))
    assert out["labels"].tolist() == [2]
    assert out["weights"].tolist() == pytest.approx([0.2])
    assert out["area"].tolist() == [100.0]
    torch.testing.assert_close(out["invalid_boxes"],
                               torch.tensor([[7.0, 7, 8, 8], [0, 0, 4, 4], [10, 10, 50, 50]]))
    assert out["img_scale"] == 2.0 and target["boxes"].shape == (4, 4)  # input untouched
    # idempotent: validating the result again changes nothing
    (again,) = validate_targets([out], num_classes=2)
    for key in ("boxes", "labels", "invalid_boxes"):
        torch.testing.assert_close(again[key], out[key])
