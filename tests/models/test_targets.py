"""detkit.models.targets: one validator and one zero-area policy for every detector."""

from __future__ import annotations

import pytest
import torch

from detkit.models.targets import DegenerateBoxWarning, validate_targets


def _target(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    n = len(labels)
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels), "weights": torch.arange(n, dtype=torch.float32),
            "ignore_boxes": torch.zeros(n, 4)}


def test_valid_targets_pass_through_unchanged() -> None:
    targets = [_target([[0, 0, 4, 4]], [1]), _target([], [])]
    out = validate_targets(targets, num_classes=2)
    assert out[0] is targets[0] and out[1] is targets[1]


def test_zero_area_boxes_are_dropped_with_one_warning() -> None:
    # box 1 has zero width (x2 == x1 == 5), box 2 zero height; only box 0 (area 16) stays
    t = _target([[0, 0, 4, 4], [5, 0, 5, 9], [1, 3, 8, 3]], [1, 2, 2])
    reason = (r"2 zero-area ground-truth box\(es\) in this batch dropped: no anchor or "
              r"proposal can match them \(remove them in the data pipeline\)$")
    with pytest.warns(DegenerateBoxWarning, match=reason):
        (out,) = validate_targets([t], num_classes=2)
    torch.testing.assert_close(out["boxes"], torch.tensor([[0.0, 0, 4, 4]]))
    assert out["labels"].tolist() == [1] and out["weights"].tolist() == [0.0]
    # per-image entries are not per-box: the 3 ignore rows stay although there were 3 boxes
    assert out["ignore_boxes"].shape == (3, 4)
    assert t["boxes"].shape == (3, 4)  # the input is not modified


@pytest.mark.parametrize(("target", "message"), [
    ({"boxes": torch.zeros(1, 4)}, "needs 'boxes' and 'labels'"),
    ({"boxes": torch.zeros(4), "labels": torch.tensor([1])}, "expected \\[N, 4\\]"),
    ({"boxes": torch.tensor([[0.0, 0, 2, 2]]), "labels": torch.tensor([3])}, "in 1..2"),
    ({"boxes": torch.tensor([[4.0, 0, 2, 2]]), "labels": torch.tensor([1])}, "x2 >= x1"),
])
def test_malformed_targets_raise_naming_the_image(target: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"target 1: .*{message}|target 1 {message}"):
        validate_targets([_target([], []), target], num_classes=2)
