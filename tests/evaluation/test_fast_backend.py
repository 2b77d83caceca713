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
