"""detkit.evaluation.cli (``detkit eval GT RESULTS``): pycocotools' numbers on a results file."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from detkit.evaluation import evaluate_detections, load_results_json
from detkit.evaluation.cli import main


def test_results_file_gives_pycocotools_numbers(tmp_path, random_case, pycocotools_reference):
    gt, dets = random_case(2, num_images=15)
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(dets))
    ref = pycocotools_reference(gt, dets).stats
    expected = np.where(ref == -1, np.nan, ref)
    # the API takes the path as well as the list
    by_path = evaluate_detections(str(gt_path), str(res_path), backend="pycocotools")
    np.testing.assert_allclose(by_path.stats, expected, rtol=0, atol=1e-12)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(gt_path), str(res_path), "--out", str(tmp_path / "report"),
                     "--backend", "pycocotools"])
    assert code == 0
    text = out.getvalue()
    assert f"= {expected[0]:0.3f}   (AP)" in text and f"= {expected[1]:0.3f}   (AP50)" in text
    assert "confusion matrix" in text and "error analysis" in text
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["AP"] == pytest.approx(expected[0], abs=1e-12)
    names = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"pr_curves.png", "per_class_ap.png", "confusion_matrix.png", "errors.png"} <= names


def test_bad_files_are_named(tmp_path) -> None:
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1}]}))
    with pytest.raises(FileNotFoundError, match="results file not found"):
        load_results_json(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="looks like a COCO ground-truth file"):
        load_results_json(gt_path)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main([str(gt_path), str(tmp_path / "missing.json")]) == 2
    assert "results file not found" in err.getvalue()
