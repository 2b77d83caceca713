"""Decode images ahead of the model: loader workers for ``predict`` on a folder.

:func:`iter_decoded` yields the images of a list of sources in order. With ``workers > 0``
a :class:`torch.utils.data.DataLoader` decodes image files in worker processes while the
model runs on earlier batches, so JPEG decoding overlaps inference instead of adding to
it. Unreadable files are reported, not raised, so the caller decides (skip or raise).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["DecodedSource", "iter_decoded"]

Decoded = tuple[int, "np.ndarray | None", "str | None"]


class DecodedSource(Dataset):
    """Item ``i`` -> ``(i, uint8 [H, W, 3] RGB image or None, error message or None)``.

    ``items``: image paths, or in-memory images that ``convert(item, index)`` turns into
    uint8 RGB arrays (e.g. :func:`detkit.api._as_rgb_uint8`).
    """

    def __init__(self, items: Sequence[Any],
                 convert: Callable[[Any, int], np.ndarray] | None = None) -> None:
        self.items = list(items)
        self.convert = convert

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Decoded:
        from detkit.data.image_io import read_image_rgb

        item = self.items[index]
        if not isinstance(item, Path):
            image = self.convert(item, index) if self.convert is not None else np.asarray(item)
            return index, image, None
        try:
            return index, read_image_rgb(item), None
        except OSError as err:  # FileNotFoundError included
            return index, None, str(err)


def _as_is(item: Decoded) -> Decoded:
    """Collate function of unbatched items: keep the numpy arrays as they are."""
    return item


def iter_decoded(items: Sequence[Any], workers: int = 0,
                 convert: Callable[[Any, int], np.ndarray] | None = None,
                 prefetch: int = 4) -> Iterator[Decoded]:
    """``(index, image, error)`` for every item, in order (see :class:`DecodedSource`).

    ``workers``: decoding processes (0 decodes in this process, one item at a time);
    ``prefetch``: items each worker decodes ahead.
    """
    source = DecodedSource(items, convert)
    if workers <= 0 or len(source) <= 1:
        yield from (source[i] for i in range(len(source)))
        return
    loader = DataLoader(source, batch_size=None, shuffle=False, num_workers=int(workers),
                        collate_fn=_as_is, prefetch_factor=int(prefetch),
                        worker_init_fn=_one_thread)
    yield from loader


def _one_thread(_worker_id: int) -> None:
    """Decoding workers use one torch thread each (the model keeps the others)."""
    torch.set_num_threads(1)
