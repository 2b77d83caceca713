"""Repeat-factor sampling and small-object oversampling (Kisantal et al. 2019,
"Augmentation for small object detection": images with small objects are oversampled).

Image i appears ``r_i`` times per epoch. Integer factors repeat exactly; a fractional part
f is realised as one more copy with probability f, drawn per epoch (as in LVIS repeat-factor
sampling). The repeated index list is shuffled with a generator seeded by (seed, epoch), padded
by wrapping around to a multiple of ``num_replicas`` (as ``torch.utils.data.DistributedSampler``
does) and split rank-wise by striding, so every rank gets the same number of indices.
Resuming mid-epoch: ``state_dict()`` / ``load_state_dict()`` or ``set_start_index(k)`` skip the
first k indices of this rank's list for the current epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from detkit.ops.boxes import COCO_SMALL_AREA


def _dist_defaults(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """World size and rank from torch.distributed when initialised, else (1, 0)."""
    ready = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if ready else 1
    if rank is None:
        rank = dist.get_rank() if ready else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"invalid rank {rank} for num_replicas {num_replicas}")
    return num_replicas, rank


class RepeatFactorSampler(Sampler[int]):
    """Sampler repeating image i ``repeat_factors[i]`` times per epoch (DDP-aware).

    Args:
        repeat_factors: r_i >= 0 per image (floats allowed; fractional parts are stochastic).
        shuffle: shuffle the repeated list each epoch (else images in order, repeats adjacent).
        seed: base seed; the order depends on (seed, epoch) only.
        num_replicas, rank: distributed split (default: from torch.distributed, else 1 / 0).
    """

    def __init__(
        self,
        repeat_factors: Sequence[float],
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        factors = np.asarray(repeat_factors, dtype=np.float64).reshape(-1)
        if len(factors) == 0 or (factors < 0).any() or not np.isfinite(factors).all():
            raise ValueError("repeat_factors must be a non-empty list of finite values >= 0")
        self.repeat_factors = factors
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_replicas, self.rank = _dist_defaults(num_replicas, rank)
        self.epoch = 0
        self.start_index = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (changes the shuffle and the stochastic rounding); resets the start."""
        self.epoch = int(epoch)
        self.start_index = 0

    def set_start_index(self, start_index: int) -> None:
        """Skip the first ``start_index`` indices of this rank's list (resume mid-epoch).

        Pass the number of samples this rank has consumed (batches done * batch size): the
        DataLoader prefetches, so the sampler cannot know it itself.
        """
        if not 0 <= start_index <= self.num_samples_per_rank():
            raise ValueError(f"start_index {start_index} outside this rank's epoch")
        self.start_index = int(start_index)

    def state_dict(self) -> dict[str, int]:
        """Position to restore: epoch, start_index and seed."""
        return {"epoch": self.epoch, "start_index": self.start_index, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Restore a :meth:`state_dict` (its seed must equal this sampler's seed)."""
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"state seed {state['seed']} != sampler seed {self.seed}")
        self.epoch = int(state["epoch"])
        self.set_start_index(int(state.get("start_index", 0)))

    def _generator(self) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        return g

    def repeated_indices(self, generator: torch.Generator | None = None) -> np.ndarray:
        """This epoch's full repeated index list (all ranks, before shuffle and padding).

        ``generator``: where the fractional-copy draws come from (default: a fresh one seeded
        by (seed, epoch)); :meth:`epoch_indices` passes the generator it then shuffles with, so
        the draws and the permutation are successive, not identical, random streams.
        """
        whole = np.floor(self.repeat_factors).astype(np.int64)
        frac = self.repeat_factors - whole
        if (frac > 0).any():
            g = generator if generator is not None else self._generator()
            draws = torch.rand(len(frac), generator=g, dtype=torch.float64)
            whole = whole + (draws.numpy() < frac)
        return np.repeat(np.arange(len(whole)), whole)

    def epoch_indices(self) -> np.ndarray:
        """Shuffled and padded list for all ranks (length num_replicas * per-rank length)."""
        g = self._generator()
        indices = self.repeated_indices(g)
        if len(indices) == 0:
            raise ValueError("every repeat factor rounded to 0: nothing to sample")
        if self.shuffle:
            perm = torch.randperm(len(indices), generator=g).numpy()
            indices = indices[perm]
        total = math.ceil(len(indices) / self.num_replicas) * self.num_replicas
        if total > len(indices):
            indices = np.resize(indices, total)  # wraps around from the start
        return indices

    def num_samples_per_rank(self) -> int:
        """Length of each rank's list this epoch (before start_index)."""
        return len(self.epoch_indices()) // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        mine = self.epoch_indices()[self.rank :: self.num_replicas]
        return iter(int(i) for i in mine[self.start_index :])

    def __len__(self) -> int:
        return self.num_samples_per_rank() - self.start_index


RepeatRule = int | Callable[[int], float]


class SmallObjectOversampler(RepeatFactorSampler):
    """Oversample images that contain small objects (Kisantal et al. 2019).

    ``repeat`` is an int r (an image with >= 1 small object appears r times, others once)
    or a rule ``count -> factor`` (e.g. ``lambda n: min(1 + n, 4)``).
    """

    def __init__(
        self,
        dataset_small_counts: Sequence[int],
        repeat: RepeatRule = 2,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        counts = [int(c) for c in dataset_small_counts]
        if any(c < 0 for c in counts):
            raise ValueError("small-object counts must be >= 0")
        if callable(repeat):
            factors = [float(repeat(c)) for c in counts]
        else:
            if int(repeat) < 1:
                raise ValueError(f"repeat must be >= 1, got {repeat}")
            factors = [float(repeat) if c > 0 else 1.0 for c in counts]
        self.small_counts = counts
        super().__init__(factors, shuffle, seed, num_replicas, rank)

    @classmethod
    def from_coco_dataset(
        cls,
        dataset: Any,
        input_size: int | None = None,
        max_area: float = COCO_SMALL_AREA,
        **kwargs: Any,
    ) -> SmallObjectOversampler:
        """Build from a ``CocoDetection`` (its ``coco.dataset`` JSON and ``ids`` order);
        counts via :func:`small_object_counts_from_coco`, other arguments as in ``__init__``."""
        counts = small_object_counts_from_coco(
            dataset.coco.dataset, dataset.ids, input_size, max_area
        )
        return cls(counts, **kwargs)


def small_object_counts_from_coco(
    coco: str | Path | Mapping[str, Any],
    image_ids: Sequence[int],
    input_size: int | None = None,
    max_area: float = COCO_SMALL_AREA,
) -> list[int]:
    """Count small objects per image, in ``image_ids`` order (e.g. ``CocoDetection.ids``).

    ``area`` of each non-crowd annotation (the JSON's ``area``, else bbox w * h) is scaled to
    the training resolution by s^2, s = input_size / max(height, width) (the letterbox scale;
    s = 1 when input_size is None), and counted when 0 < scaled area < max_area.
    For a :class:`detkit.data.coco.CocoDetection` pass ``dataset.coco.dataset, dataset.ids``.
    """
    if not isinstance(coco, Mapping):
        import json

        with open(coco, encoding="utf-8") as f:
            coco = json.load(f)
    images = {img["id"]: img for img in coco["images"]}
    counts = {int(i): 0 for i in image_ids}
    for ann in coco.get("annotations", []):
        img_id = ann["image_id"]
        if img_id not in counts or ann.get("iscrowd", 0):
            continue
        area = float(ann.get("area", ann["bbox"][2] * ann["bbox"][3]))
        info = images[img_id]
        s = 1.0 if input_size is None else input_size / max(info["height"], info["width"])
        if 0 < area * s * s < max_area:
            counts[img_id] += 1
    return [counts[int(i)] for i in image_ids]


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of a per-epoch deterministic sampler, able to start at batch ``start_batch``.

    ``set_epoch(epoch, start_batch)`` forwards the epoch to the inner sampler (whose order must
    depend only on its seed and the epoch, like ``DistributedSampler``) and skips the first
    ``start_batch`` batches without loading them: the resume path of a mid-epoch checkpoint.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool = True) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order and the first batch to yield."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[list[int]]:
        indices = list(iter(self.sampler))
        n = len(self)
        for b in range(self.start_batch, n):
            yield indices[b * self.batch_size:(b + 1) * self.batch_size]

    def __len__(self) -> int:
        size = len(self.sampler)
        return size // self.batch_size if self.drop_last else math.ceil(size / self.batch_size)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` of ``range(size)``: each image exactly once overall."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, size, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
