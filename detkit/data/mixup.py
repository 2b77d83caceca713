"""Visually coherent mixup for detection ("Bag of Freebies for Training Object Detection
Neural Networks", Zhang et al. 2019).

Two images are blended on a canvas of their maximum size, both placed at the top-left corner
without resizing, so the geometry of every object is kept. The ratio lambda ~ Beta(alpha, alpha)
(alpha = 1.5 in the paper). All boxes of both images are kept; the per-box loss weight is
lambda for image A's boxes and (1 - lambda) for image B's, times their existing ``weights``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from detkit.data.random_state import RandomStateWrapper, WorkerRng


def _pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 copy of ``image`` [h, w, C] zero-padded right/bottom to [height, width, C]."""
    out = np.zeros((height, width, *image.shape[2:]), dtype=np.float32)
    out[: image.shape[0], : image.shape[1]] = image
    return out


def _boxes(target: dict, key: str) -> np.ndarray:
    return np.asarray(target.get(key, np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)


def mixup_pair(
    image_a: np.ndarray, target_a: dict, image_b: np.ndarray, target_b: dict, lam: float
) -> tuple[np.ndarray, dict]:
    """Blend A and B: canvas [max h, max w, 3], pixel = lam * A + (1 - lam) * B (rounded).

    Outside an image's extent its contribution is 0 (zero padding, as in the paper's code).
    Boxes/labels/ignore_boxes are concatenated (A first); weights = lam * w_A, (1 - lam) * w_B.
    ``masks`` are kept (padded) only when both targets have them. The mixed image is a new
    "original": orig_size = canvas size, img_scale = 1.0, image_id = A's.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"mixup ratio must be in [0, 1], got {lam}")
    h = max(image_a.shape[0], image_b.shape[0])
    w = max(image_a.shape[1], image_b.shape[1])
    mixed = _pad_to(image_a, h, w) * lam + _pad_to(image_b, h, w) * (1.0 - lam)
    image = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)

    out = {k: v for k, v in target_a.items() if k != "masks"}
    boxes_a, boxes_b = _boxes(target_a, "boxes"), _boxes(target_b, "boxes")
    n_a, n_b = len(boxes_a), len(boxes_b)
    out["boxes"] = np.concatenate([boxes_a, boxes_b])
    out["ignore_boxes"] = np.concatenate(
        [_boxes(target_a, "ignore_boxes"), _boxes(target_b, "ignore_boxes")]
    )
    out["labels"] = np.concatenate(
        [np.asarray(target_a["labels"], np.int64), np.asarray(target_b["labels"], np.int64)]
    )
    w_a = np.asarray(target_a.get("weights", np.ones(n_a)), dtype=np.float32)
    w_b = np.asarray(target_b.get("weights", np.ones(n_b)), dtype=np.float32)
    out["weights"] = np.concatenate([w_a * np.float32(lam), w_b * np.float32(1.0 - lam)])
    for key, dtype in (("area", np.float32), ("iscrowd", np.int64)):
        if key in target_a and key in target_b:
            out[key] = np.concatenate(
                [np.asarray(target_a[key], dtype), np.asarray(target_b[key], dtype)]
            )
        else:
            out.pop(key, None)
    if "masks" in target_a and "masks" in target_b:
        masks = [np.asarray(target_a["masks"]), np.asarray(target_b["masks"])]
        padded = [np.zeros((len(m), h, w), np.uint8) for m in masks]
        for dst, src in zip(padded, masks, strict=True):
            dst[:, : src.shape[1], : src.shape[2]] = src
        out["masks"] = np.concatenate(padded)
    out["orig_size"] = (h, w)
    out["img_scale"] = 1.0
    return image, out


class MixupDataset(RandomStateWrapper, Dataset):
    """Dataset wrapper applying visually coherent mixup with probability ``p``.

    Reads raw samples through ``dataset.load_raw(i)``, mixes item ``i`` with a random other
    item, then applies ``transforms`` (default: the wrapped dataset's ``transforms``; when that
    is None the sample goes through :func:`detkit.data.coco.to_tensor_target`).
    lambda ~ Beta(alpha, alpha). The random stream is seeded by ``seed`` per DataLoader worker.
    """

    def __init__(
        self,
        dataset: Any,
        p: float = 0.5,
        alpha: float = 1.5,
        seed: int | None = None,
        transforms: Callable[[np.ndarray, dict], tuple[Any, dict]] | None = None,
    ) -> None:
        if not 0.0 <= p <= 1.0 or alpha <= 0:
            raise ValueError(f"need 0 <= p <= 1 and alpha > 0, got p={p}, alpha={alpha}")
        self.dataset = dataset
        self.p = p
        self.alpha = alpha
        self.transforms = transforms if transforms is not None else dataset.transforms
        self.rng = WorkerRng(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def load_raw(self, index: int) -> tuple[np.ndarray, dict]:
        """Item ``index`` mixed (or not) but untransformed: uint8 HWC image, numpy target."""
        rng = self.rng.get()
        image, target = self.dataset.load_raw(index)
        if len(self.dataset) < 2 or rng.random() >= self.p:
            return image, target
        other = int(rng.integers(0, len(self.dataset) - 1))
        other += int(other >= index)
        image_b, target_b = self.dataset.load_raw(other)
        lam = float(rng.beta(self.alpha, self.alpha))
        return mixup_pair(image, target, image_b, target_b, lam)

    def __getitem__(self, index: int) -> tuple[Any, dict]:
        image, target = self.load_raw(index)
        if self.transforms is None:
            from detkit.data.coco import to_tensor_target

            return to_tensor_target(image, target)
        return self.transforms(image, target)
