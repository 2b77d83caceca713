"""Tests of detkit.evaluation.fast: backend choice and faster-coco-eval parity with pycocotools."""

from __future__ import annotations

import numpy as np
import pytest

from detkit.evaluation import evaluate_detections
from detkit.evaluation import fast as fast_module
from detkit.evaluation.fast import fast_backend_available, resolve_backend


@pytest.mark.parametrize("seed", [0, 3, 4])
def test_fast_backend_matches_pycocotools(seed: int, random_case, pycocotools_reference) -> None:
    if not fast_backend_available():
        pytest.skip("optional faster-coco-eval not installed")
    gt, dets = random_case(seed, num_images=20)
    fast = evaluate_detections(gt, dets, backend="faster_coco_eval")
    slow = evaluate_detections(gt, dets, backend="pycocotools")
    ref = pycocotools_reference(gt, dets).stats
    assert fast.backend == "faster_coco_eval" and slow.backend == "pycocotools"
    # The 12 numbers of plain pycocotools (its -1 = no GT in bucket is NaN in detkit).
    expected = np.where(ref == -1, np.nan, ref)
    np.testing.assert_allclose(fast.stats, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(slow.stats, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.precision, slow.precision, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.recall, slow.recall, rtol=0, atol=1e-12)


def test_auto_prefers_fast_backend_when_installed(monkeypatch) -> None:
    monkeypatch.setattr(fast_module, "fast_backend_available", lambda: True)
    assert resolve_backend("auto") == "faster_coco_eval"
    monkeypatch.setattr(fast_module, "fast_backend_available", lambda: False)
    assert resolve_backend("auto") == "pycocotools"
    with pytest.raises(ImportError, match="faster-coco-eval"):
        resolve_backend("faster_coco_eval")
    assert resolve_backend("pycocotools") == "pycocotools"


def test_unknown_backend_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="auto, pycocotools, faster_coco_eval"):
        resolve_backend("cocoapi")


def _one_box_case():
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "width": 100, "height": 100}],
                  "annotations": [{"id": 1, "image_id": 1, "category_id": 5,
                                   "bbox": [10.0, 10.0, 20.0, 20.0], "area": 400.0,
                                   "iscrowd": 0}],
                  "categories": [{"id": 5, "name": "cell"}]}
    gt.createIndex()
    dt = gt.loadRes([{"image_id": 1, "category_id": 5, "bbox": [10.0, 10.0, 20.0, 20.0],
                      "score": 0.9}])
    return gt, dt


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_run_cocoeval_arrays_on_one_perfect_box(backend, capfd) -> None:
    from detkit.evaluation.fast import run_cocoeval

    if backend == "faster_coco_eval" and not fast_backend_available():
        pytest.skip("optional faster-coco-eval not installed")
    gt, dt = _one_box_case()
    capfd.readouterr()
    acc = run_cocoeval(gt, dt, img_ids=[1], cat_ids=[5], max_dets=[1, 10],
                       area_ranges=[("all", 0.0, 1e10), ("small", 0.0, 1024.0)],
                       backend=backend)
    # nothing printed by either backend
    assert capfd.readouterr().out == ""
    assert acc.backend == backend
    # the detection equals the box: precision 1 at every IoU threshold and recall point, the
    # score 0.9 at each recall point, recall 1; the 400 px^2 box is in both area ranges
    assert acc.precision.shape == (10, 101, 1, 2, 2) and acc.precision.dtype == np.float64
    np.testing.assert_allclose(acc.precision, 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(acc.scores, 0.9)
    assert acc.scores.shape == (10, 101, 1, 2, 2) and acc.scores.dtype == np.float64
    np.testing.assert_allclose(acc.recall, 1.0, rtol=0, atol=1e-12)
    assert acc.recall.dtype == np.float64


def test_run_cocoeval_default_backend_is_auto() -> None:
    from detkit.evaluation.fast import run_cocoeval

    gt, dt = _one_box_case()
    acc = run_cocoeval(gt, dt, img_ids=[1], cat_ids=[5], max_dets=[100],
                       area_ranges=[("all", 0.0, 1e10)])
    assert acc.backend == resolve_backend("auto")


def test_missing_fast_backend_message(monkeypatch) -> None:
    monkeypatch.setattr(fast_module, "fast_backend_available", lambda: False)
    with pytest.raises(ImportError, match=r"^backend='faster_coco_eval' needs the optional "
                                          r"package faster-coco-eval \(pip install "
                                          r"'detkit\[fast\]' or pip install faster-coco-eval\)$"):
        resolve_backend("faster_coco_eval")
