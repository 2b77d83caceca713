"""detkit.engine.prefetch: decoding workers keep the order and report unreadable files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detkit.data.image_io import read_image_rgb
from detkit.engine.prefetch import iter_decoded
from detkit.evaluation.plots import write_image


def _folder(tmp_path: Path, count: int = 5) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = tmp_path / f"img{i}.png"
        write_image(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8), path)
        paths.append(path)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    return [*paths[:2], bad, *paths[2:]]


@pytest.mark.parametrize("workers", [0, 2])
def test_order_images_and_errors(tmp_path: Path, workers: int) -> None:
    items = _folder(tmp_path)
    got = list(iter_decoded(items, workers))
    assert [i for i, _, _ in got] == list(range(len(items)))
    for (_, image, error), path in zip(got, items, strict=True):
        if path.name == "broken.png":
            assert image is None and error
        else:
            assert error is None
            np.testing.assert_array_equal(image, read_image_rgb(path))


def test_in_memory_items_go_through_convert() -> None:
    arrays = [np.full((2, 2, 3), v, dtype=np.uint8) for v in (1, 2)]
    got = list(iter_decoded(arrays, 0, lambda x, i: x + i))
    assert [int(img[0, 0, 0]) for _, img, _ in got] == [1, 3]  # 1 + 0, 2 + 1
