"""One decoder for validation and training: what OpenCV cannot read fails validation, and a
file that breaks only at training time is skipped, named and counted."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detkit.data.coco import CocoDetection
from detkit.data.image_io import UnreadableImageWarning, check_image_file
from detkit.data.validation import validate_coco

RGB = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def _corrupt_png_body(path: Path) -> None:
    """Zero 32 bytes of the first IDAT chunk; the IEND end marker stays intact."""
    data = bytearray(path.read_bytes())
    start = data.find(b"IDAT") + 8
    data[start:start + 32] = bytes(32)
    path.write_bytes(bytes(data))


@pytest.mark.faults
@pytest.mark.parametrize("suffix", ["ico", "tga", "tif32"])
def test_formats_pil_opens_but_training_cannot_read_fail_validation(tmp_path, suffix):
    """Issue 13: these passed validation (PIL) and killed training (OpenCV)."""
    path = tmp_path / f"a.{suffix[:3]}"
    if suffix == "tif32":
        Image.fromarray(RGB[..., 0].astype(np.float32), mode="F").save(path)
    else:
        Image.fromarray(RGB).save(path)
    problem, size = check_image_file(path)
    assert problem is not None and "OpenCV" in problem and size is None


@pytest.mark.faults
def test_corrupt_png_body_found_by_full_decode_only(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(RGB).save(path)
    _corrupt_png_body(path)
    assert check_image_file(path) == (None, (16, 16))  # the fast path sees an intact end
    problem, size = check_image_file(path, full_decode=True)
    assert problem is not None and size is None


def _dataset(tmp_path: Path, n: int, corrupt: int) -> Path:
    images, anns = [], []
    for i in range(1, n + 1):
        Image.fromarray(np.roll(RGB, i, axis=0)).save(tmp_path / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 16, "height": 16})
        anns.append({"id": i, "image_id": i, "category_id": 1 + i % 3, "bbox": [2, 3, 6, 7],
                     "area": 42.0})
    _corrupt_png_body(tmp_path / f"{corrupt}.png")
    cats = [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def test_full_decode_drops_the_corrupt_image_by_name(tmp_path):
    ann = _dataset(tmp_path, 4, corrupt=3)
    clean, report = validate_coco(ann, full_decode=True, log=None)
    assert [img["file_name"] for img in clean["images"]] == ["1.png", "2.png", "4.png"]
    assert report.images_dropped == 1 and any("3.png" in str(e)
                                              for ex in report.examples.values() for e in ex)


@pytest.mark.faults
def test_training_run_survives_a_corrupt_image_in_the_middle(tmp_path):
    """8 images, batch 2, 6 iterations: image 5 breaks only when decoded; the run finishes,
    the file is named in a warning and counted once."""
    from detkit.engine import distributed as du
    from detkit.engine.build import build_trainer
    from tests.engine._tiny import TinyDetector, tiny_config

    ann = _dataset(tmp_path, 8, corrupt=5)
    train = CocoDetection(ann, skip_unreadable=True, log=None)
    assert len(train) == 8  # the fast validation cannot see the corrupt body
    cfg = tiny_config(data={"batch_size": 2, "num_workers": 0}, schedule={"max_iters": 6},
                      train={"checkpoint_interval": 0})
    trainer = build_trainer(cfg, tmp_path / "work", du.init_distributed("cpu"),
                            model=TinyDetector(), datasets=(train, None), use_tqdm=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = trainer.train()
    assert state.global_iter == 6
    named = [w for w in caught if issubclass(w.category, UnreadableImageWarning)]
    assert named and "5.png" in str(named[0].message) and "1 unreadable" in str(named[0].message)
    assert list(train.unreadable) == [str(tmp_path / "5.png")]
    with pytest.raises(OSError, match="5.png"):  # evaluation sets raise instead
        CocoDetection(ann, log=None)[4]
