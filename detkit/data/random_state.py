"""Random state of data augmentation: per-worker seeds and checkpointable generators.

Every random data step (albumentations pipeline, copy-paste, mixup, mosaic) draws from a
generator built here, so that

* a run with ``num_workers=0`` is reproducible from the config ``seed`` and its random state
  can be saved and restored exactly (``state_dict`` / ``load_state_dict``);
* inside DataLoader workers each worker (and each epoch of non-persistent workers) gets its
  own stream, derived from the seed and torch's worker seed, instead of a forked copy.

This module needs only numpy and torch (no albumentations, no cv2), so light dataset
wrappers can use it without loading the image libraries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["RandomStateWrapper", "WorkerRng", "worker_seed"]


def worker_seed(seed: int | None) -> int | None:
    """Seed for this process: ``seed`` in the main process, mixed with the DataLoader worker seed.

    Inside a DataLoader worker, ``torch`` gives every worker a different seed each epoch
    (base_seed + worker_id, base_seed drawn from the main process generator), so workers never
    repeat each other's augmentations and epochs differ, yet runs stay reproducible under
    ``torch.manual_seed``. Returns None when ``seed`` is None and no worker is active.
    """
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    if info is None:
        return seed
    base = 0 if seed is None else int(seed)
    return int(np.random.SeedSequence([base, int(info.seed) % (2**32)]).generate_state(1)[0])


class WorkerRng:
    """A numpy Generator that is re-created in each DataLoader worker (see :func:`worker_seed`).

    With ``seed`` set and no workers the stream is reproducible; in workers each worker (and
    each epoch of non-persistent workers) gets its own stream instead of a forked copy.
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._key: int | None = None
        self._rng = np.random.default_rng(seed)

    def get(self) -> np.random.Generator:
        """The generator for the current process."""
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        key = None if info is None else int(info.seed)
        if key is not None and key != self._key:
            self._rng = np.random.default_rng(worker_seed(self.seed))
            self._key = key
        return self._rng

    def state_dict(self) -> dict[str, Any]:
        """The generator's state (plain ints and strings: loadable with weights_only=True)."""
        return {"bit_generator": self._rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the stream saved by :meth:`state_dict` (main process, no workers)."""
        self._rng.bit_generator.state = dict(state["bit_generator"])




class RandomStateWrapper:
    """Checkpointable random state for dataset wrappers with ``self.rng`` (a
    :class:`WorkerRng`) around ``self.dataset`` (mixup, mosaic): exact resume, no workers."""

    def state_dict(self) -> dict[str, Any]:
        """Random state of this wrapper and of the wrapped dataset (exact resume, no workers)."""
        inner = self.dataset.state_dict() if hasattr(self.dataset, "state_dict") else None
        return {"rng": self.rng.state_dict(), "dataset": inner}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.rng.load_state_dict(state["rng"])
        if state.get("dataset") is not None and hasattr(self.dataset, "load_state_dict"):
            self.dataset.load_state_dict(state["dataset"])
