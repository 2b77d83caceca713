"""A tiny detector and data set for engine tests (CPU, seconds, no BatchNorm)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from detkit.config import defaults, merge
from detkit.engine import distributed as du
from detkit.engine.build import build_trainer
from detkit.engine.trainer import Trainer

SIZE = 16


class TinyDetector(nn.Module):
    """Conv(3->4) -> ReLU -> mean pool -> Linear(4 -> 4 + C): one box and class per image.

    Train mode returns {"loss_box", "loss_cls"}, each a mean over the images of the batch, so
    the gradient of a batch equals the mean of per-image gradients (needed for DDP parity).
    ``nan_at`` holds forward-call indices whose loss is replaced by NaN.
    """

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 4 + num_classes)
        self.nan_at: set[int] = set()
        self.calls = 0

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, Any]] | None = None
                ) -> Any:
        x = torch.stack(images)
        out = self.fc(F.relu(self.conv(x)).mean(dim=(2, 3)))
        boxes = out[:, :4].sigmoid() * SIZE
        if not self.training or targets is None:
            scores, labels = out[:, 4:].softmax(-1).max(-1)
            return [{"boxes": b[None], "scores": s[None], "labels": (lab + 1)[None]}
                    for b, s, lab in zip(boxes, scores, labels, strict=True)]
        box_t = torch.stack([t["boxes"][0] for t in targets])
        lab_t = torch.stack([t["labels"][0] - 1 for t in targets])
        loss_box = ((boxes - box_t) / SIZE).pow(2).mean()
        loss_cls = F.cross_entropy(out[:, 4:], lab_t)
        if self.calls in self.nan_at:
            loss_box = loss_box * float("nan")
        self.calls += 1
        return {"loss_box": loss_box, "loss_cls": loss_cls}


class TinyDataset(torch.utils.data.Dataset):
    """``n`` images [3, 16, 16] with one box each; adds noise drawn from the global python,
    numpy and torch RNGs, so a resume that does not restore them changes the losses."""

    num_classes = 3

    def __init__(self, n: int = 16, noise: bool = True) -> None:
        self.n = n
        self.noise = noise

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        g = torch.Generator().manual_seed(i)
        image = torch.rand(3, SIZE, SIZE, generator=g)
        if self.noise:
            noise = 0.05 * (torch.rand(()) + float(np.random.rand()) + random.random())
            image = (image + noise).clamp(0, 1)
        x1, y1 = torch.randint(0, 8, (2,), generator=g).tolist()
        box = torch.tensor([[x1, y1, x1 + 6.0, y1 + 7.0]])
        return image, {"boxes": box, "labels": torch.tensor([1 + i % 3]), "image_id": i + 1,
                       "area": torch.tensor([42.0]), "iscrowd": torch.zeros(1, dtype=torch.int64),
                       "ignore_boxes": torch.zeros(0, 4), "weights": torch.ones(1),
                       "orig_size": (SIZE, SIZE), "img_scale": 1.0}


def tiny_config(**sections: dict[str, Any]) -> dict[str, Any]:
    """Defaults tuned for the tiny run, merged with ``sections`` (nested dicts)."""
    base = {
        "seed": 3, "deterministic": True, "device": "cpu",
        "data": {"batch_size": 4, "num_workers": 0},
        "optim": {"type": "sgd", "base_lr": 0.5, "base_batch_size": 4, "weight_decay": 1e-3,
                  "clip_grad_norm": 5.0},
        "schedule": {"max_iters": 10, "warmup_iters": 3, "warmup_factor": 0.1},
        "train": {"amp": False, "log_interval": 1, "checkpoint_interval": 1,
                  "ema": {"enabled": True, "decay": 0.9, "tau": 0.0}},
        "eval": {"interval": 0},
    }
    return merge(merge(defaults(), base), sections)


def tiny_trainer(work_dir: str | Path, cfg: dict[str, Any], n: int = 16,
                 model: nn.Module | None = None, noise: bool = True) -> Trainer:
    """Seeded tiny trainer on this process's rank (see ``tiny_config``)."""
    info = du.init_distributed("cpu")
    random.seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    model = model if model is not None else TinyDetector()
    return build_trainer(cfg, work_dir, info, model=model, datasets=(TinyDataset(n, noise), None),
                         use_tqdm=False)
