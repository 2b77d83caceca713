"""Augmentation random state survives a checkpoint round trip (exact resume, no workers)."""

from __future__ import annotations

import io

import torch

from detkit.data.coco import CocoDetection
from detkit.data.mixup import MixupDataset
from detkit.data.synthetic import generate_synthetic_coco
from detkit.data.transforms import build_transforms


def _dataset(tmp_path):
    paths = generate_synthetic_coco(tmp_path, num_images=6, image_size=64, seed=3)
    steps = [
        {"type": "HorizontalFlip", "p": 0.5},
        {"type": "RandomBrightnessContrast", "p": 0.5},
        {"type": "SmallObjectCopyPaste", "max_area": 1024, "num_copies": 2, "seed": 1},
    ]
    tf = build_transforms(steps, 64, train=True, seed=7)
    ds = CocoDetection(paths["train"], tmp_path, tf)
    return MixupDataset(ds, p=0.5, seed=5)


def _draws(ds, n=8):
    out = []
    for i in range(n):
        image, target = ds[i % len(ds)]
        out.append((image, target["boxes"], target["weights"]))
    return out


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)  # what the trainer's checkpoints use


def test_state_dict_restores_every_generator(tmp_path):
    ds = _dataset(tmp_path)
    _draws(ds, 5)  # advance the streams
    state = _roundtrip(ds.state_dict())
    first = _draws(ds)
    ds.load_state_dict(state)
    second = _draws(ds)
    for (im1, b1, w1), (im2, b2, w2) in zip(first, second, strict=True):
        assert torch.equal(im1, im2) and torch.equal(b1, b2) and torch.equal(w1, w2)
    # and the streams really move: without the restore the next draws differ
    third = _draws(ds)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(second, third, strict=True))


def test_random_state_helpers_need_no_image_library() -> None:
    """The helpers live in their own module: mixup / copy-paste import neither
    albumentations nor the transforms module (the former transforms <-> copy_paste circle)."""
    import subprocess
    import sys

    code = ("import sys, detkit.data.mixup, detkit.data.copy_paste, detkit.data.random_state\n"
            "print(sorted(m for m in ('albumentations', 'detkit.data.transforms') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_worker_rng_streams_follow_the_seed() -> None:
    import numpy as np

    from detkit.data.random_state import WorkerRng, worker_seed

    assert worker_seed(11) == 11 and worker_seed(None) is None  # main process: unchanged
    a, b = WorkerRng(4), WorkerRng(4)
    first = a.get().integers(0, 1000, 3).tolist()
    assert first == np.random.default_rng(4).integers(0, 1000, 3).tolist()
    state = a.state_dict()
    nxt = a.get().integers(0, 1000, 3).tolist()
    b.load_state_dict(state)
    assert b.get().integers(0, 1000, 3).tolist() == nxt
