"""detkit.models.info: parameter count and MACs worked out by hand, the CLI on a preset."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from torch import nn

from detkit.models.info import main, model_info


class OneConv(nn.Module):
    """A 'detector' of one 3x3 conv (3 -> 4 channels, padding 1, with bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        return [{"boxes": self.conv(torch.stack(images))}]


def test_counts_by_hand() -> None:
    info = model_info(OneConv(), 32, runs=2, warmup=0)
    assert info.params == 4 * 3 * 9 + 4  # weights + biases = 112
    assert info.macs == 32 * 32 * 4 * 3 * 9  # output pixels x out ch x in ch x kernel = 110592
    assert info.latency_ms > 0 and info.img_size == 32
    with pytest.raises(ValueError, match="img_size"):
        model_info(OneConv(), 16)


def test_cli_on_a_preset() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["demo_synthetic", "--num-classes", "3", "--runs", "1", "--img-size", "64"])
    assert code == 0
    text = out.getvalue()
    assert "plain_cnn" in text and "MACs" in text and "at 64x64" in text


class CountingConv(OneConv):
    """:class:`OneConv` that counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        self.calls += 1
        return super().forward(images)


def test_default_runs_and_warmup_are_ten_and_two() -> None:
    # one pass under the FLOP counter, 2 warm-up passes, 10 timed passes
    model = CountingConv()
    model_info(model, 32)
    assert model.calls == 1 + 2 + 10
    model.calls = 0
    model_info(model, 32, runs=3, warmup=1)
    assert model.calls == 1 + 1 + 3
