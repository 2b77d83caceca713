"""SNIP end to end: the config's valid ranges reach the detectors' matchers through the real
build path (build_trainer -> Recipe.build_batch_transform / build_model), and the test-time
pyramid keeps from each scale only the detections in its range."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from detkit.engine import distributed as du
from detkit.engine.build import build_trainer
from detkit.engine.inference import LoadedDetector, Predictor, TestOptions, read_test_options

from ._tiny import TinyDataset, tiny_config

INF = math.inf


class _Recording:
    """Wraps a Matcher; records (gt boxes, invalid boxes) of every call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[Tensor, Tensor | None]] = []

    def __call__(self, anchors: Tensor, gt: Tensor, ignore: Tensor | None = None,
                 invalid: Tensor | None = None) -> Tensor:
        self.calls.append((gt.clone(), None if invalid is None else invalid.clone()))
        return self.inner(anchors, gt, ignore, invalid)


def _snip_trainer(tmp_path: Any, model: dict[str, Any]) -> Any:
    cfg = tiny_config(model=model, data={"img_size": 64, "multiscale": {
        "enabled": True, "sizes": [64, 128], "valid_ranges": [[0, 32], [40, INF]]}})
    torch.manual_seed(0)
    return build_trainer(cfg, tmp_path, du.init_distributed("cpu"),
                         datasets=(TinyDataset(8), None), use_tqdm=False)


# One 64 x 64 image, A (0, 0, 16, 16) of size 16 and B (8, 8, 56, 56) of size 48.
# Drawn size 64 (factor 1), range [0, 32): A is ground truth, B invalid.
# Drawn size 128 (factor 2): A -> (0, 0, 32, 32), size 32 < 40: invalid;
# B -> (16, 16, 112, 112), size 96 in [40, inf): ground truth.
EXPECTED = {
    64: (torch.tensor([[0.0, 0, 16, 16]]), torch.tensor([[8.0, 8, 56, 56]])),
    128: (torch.tensor([[16.0, 16, 112, 112]]), torch.tensor([[0.0, 0, 32, 32]])),
}


def _batch() -> tuple[list[Tensor], list[dict[str, Any]]]:
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    target = {"boxes": torch.tensor([[0.0, 0, 16, 16], [8, 8, 56, 56]]),
              "labels": torch.tensor([1, 2]), "img_scale": 1.0}
    return [image], [target]


def _draws(n: int) -> list[int]:
    # the resizer's generator is seeded with the config seed (3): sizes[randint(2)] per batch
    g = torch.Generator().manual_seed(3)
    return [[64, 128][int(torch.randint(2, (1,), generator=g))] for _ in range(n)]


@pytest.mark.parametrize("model, matchers", [
    ({"type": "dense_detector", "backbone": "plain_cnn", "neck_channels": 16, "head_convs": 1},
     ("loss.matcher",)),
    ({"type": "thundernet_lite"}, ("rpn.matcher", "rcnn.matcher")),
])
def test_valid_ranges_reach_the_matchers_through_the_build_path(
        tmp_path: Any, model: dict[str, Any], matchers: tuple[str, ...]) -> None:
    trainer = _snip_trainer(tmp_path, model)
    recorders = []
    for path in matchers:
        owner_path, name = path.rsplit(".", 1)
        owner = (trainer.model.loss if owner_path == "loss"
                 else trainer.model.get_submodule(owner_path))
        recorder = _Recording(getattr(owner, name))
        setattr(owner, name, recorder)
        recorders.append(recorder)
    draws = _draws(4)
    assert set(draws) == {64, 128}  # both scales are exercised
    trainer.model.train()
    for size in draws:
        images, targets = trainer.batch_transform(*_batch())
        assert images[0].shape[-1] == size
        losses = trainer.model(images, targets)
        assert all(bool(torch.isfinite(v)) for v in losses.values())
        gt, invalid = EXPECTED[size]
        for recorder in recorders:
            seen_gt, seen_invalid = recorder.calls[-1]
            torch.testing.assert_close(seen_gt, gt)
            assert seen_invalid is not None
            torch.testing.assert_close(seen_invalid, invalid)


class _Fixed(nn.Module):
    """Returns, for any input, a 10 px box (score 0.9) and a 40 px box (0.8) in input pixels."""

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        return [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 60, 60]]),
                 "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 1])}
                for _ in images]


def test_pyramid_keeps_each_scale_in_range_before_the_merge() -> None:
    # A 100 x 100 image at scales 50 (img_scale 0.5) and 200 (img_scale 2). Ranges: 50 ->
    # [0, 20) keeps the 10 px box -> (0, 0, 20, 20) in original pixels; 200 -> [20, inf)
    # keeps the 40 px box -> (20, 20, 60, 60) / 2 = (10, 10, 30, 30). The two overlap with
    # IoU 100 / 700 < 0.5: both survive the merge, best first.
    image = np.zeros((100, 100, 3), np.uint8)
    options = TestOptions(scales=(50, 200), nms="nms", iou_threshold=0.5, max_detections=100,
                          valid_ranges=((0.0, 20.0), (20.0, INF)))
    loaded = LoadedDetector(_Fixed(), "model", 1, torch.device("cpu"))
    (out,) = Predictor.from_options(loaded, options).predict([image])
    torch.testing.assert_close(out["boxes"], torch.tensor([[0.0, 0, 20, 20], [10, 10, 30, 30]]))
    assert out["scores"].tolist() == pytest.approx([0.9, 0.8])
    # without ranges all four survive: scale 50 also gives (40, 40, 120, 120) clipped to
    # (40, 40, 100, 100), scale 200 also gives (0, 0, 5, 5); no pair has IoU >= 0.5
    (every,) = Predictor(_Fixed(), [50, 200], "nms", 0.5, 100).predict([image])
    torch.testing.assert_close(every["boxes"], torch.tensor(
        [[0.0, 0, 20, 20], [0, 0, 5, 5], [40, 40, 100, 100], [10, 10, 30, 30]]))
    with pytest.raises(ValueError, match="1 valid ranges for 2 sizes"):
        Predictor(_Fixed(), [50, 200], "nms", valid_ranges=[(0, 20)])
    with pytest.raises(ValueError, match="needs 0 <= min < max"):
        Predictor(_Fixed(), [50, 200], "nms", valid_ranges=[(0, 20), (30, 30)])


def test_read_test_options_reads_and_checks_valid_ranges() -> None:
    from detkit.config import defaults, merge

    cfg = merge(defaults(), {"model": {"type": "dense_detector"},
                             "test": {"scales": [64, 128], "valid_ranges": [[0, 32], [16, INF]]}})
    assert read_test_options(cfg).valid_ranges == ((0.0, 32.0), (16.0, INF))
    assert read_test_options(merge(defaults(), {})).valid_ranges == ()
    cfg["test"]["valid_ranges"] = [[0, 32]]
    with pytest.raises(ValueError, match="'test.valid_ranges' needs one"):
        read_test_options(cfg)
