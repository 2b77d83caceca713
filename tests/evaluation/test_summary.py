"""Tests for detkit.evaluation.summary: the per-class table, the JSON file and the text table,
on hand-built inputs (no COCOeval run)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detkit.evaluation.fast import AccumulatedEval
from detkit.evaluation.summary import EvalResult, per_class_metrics, summarize_metrics

IOUS = np.linspace(0.5, 0.95, 10)
NAN = math.nan


def _result() -> EvalResult:
    metrics = {"AP": 0.5, "AP50": 0.75, "AP75": 0.25, "APs": NAN, "AR1": 0.125, "AR10": 0.5,
               "ARs": NAN, "AP_tiny": 1.0, "AR_tiny": 0.0}
    per_class = {"cell": {"AP": 0.5, "AP50": NAN}, "platelet": {"AP": 1.0, "AP50": 0.25}}
    return EvalResult(
        stats=np.zeros(12), metrics=metrics, per_class=per_class, precision=np.zeros(1),
        recall=np.zeros(1), iou_thrs=IOUS, rec_thrs=np.linspace(0, 1, 101), cat_ids=[1, 2],
        class_names=["cell", "platelet"], area_labels=["all", "small", "tiny"], max_dets=[1, 5, 10],
        backend="pycocotools", num_detections=3, notes=["hello"])


def test_summary_table_text() -> None:
    # written out by hand from the format: IoU padded to 9, area right-aligned in 6, maxDets
    # in 3; the headline numbers use the largest limit (10); n/a for NaN; class column as wide
    # as the longest name ("platelet", 8), numbers right-aligned in 7. max_dets is [1, 5, 10]:
    # the headline lines use 10, not the middle 5
    expected = "\n".join([
        " Average Precision (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ] = 0.500   (AP)",
        " Average Precision (AP) @[ IoU=0.50      | area=   all | maxDets= 10 ] = 0.750   (AP50)",
        " Average Precision (AP) @[ IoU=0.75      | area=   all | maxDets= 10 ] = 0.250   (AP75)",
        " Average Precision (AP) @[ IoU=0.50:0.95 | area= small | maxDets= 10 ] =   n/a   (APs)",
        " Average Recall    (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ] = 0.125   (AR1)",
        " Average Recall    (AR) @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ] = 0.500   (AR10)",
        " Average Recall    (AR) @[ IoU=0.50:0.95 | area= small | maxDets= 10 ] =   n/a   (ARs)",
        " Average Precision (AP) @[ IoU=0.50:0.95 | area=  tiny | maxDets= 10 ] = 1.000   "
        "(AP_tiny)",
        " Average Recall    (AR) @[ IoU=0.50:0.95 | area=  tiny | maxDets= 10 ] = 0.000   "
        "(AR_tiny)",
        "",
        "class         AP    AP50",
        "cell       0.500     n/a",
        "platelet   1.000   0.250",
        "n/a: no ground truth of that class in that area range",
        "note: hello",
    ])
    assert _result().summary_table() == expected


def test_summary_table_without_classes_or_nan() -> None:
    result = _result()
    result.per_class, result.notes = {}, []
    result.metrics = {"AP": 0.5}
    # the class header alone, "class" as wide as itself; no n/a line
    assert result.summary_table().split("\n")[1:] == ["", "class "]


def test_to_dict_and_to_json(tmp_path) -> None:
    result = _result()
    expected = {
        "AP": 0.5, "AP50": 0.75, "AP75": 0.25, "APs": None, "AR1": 0.125, "AR10": 0.5,
        "ARs": None, "AP_tiny": 1.0, "AR_tiny": 0.0,
        "per_class": {"cell": {"AP": 0.5, "AP50": None}, "platelet": {"AP": 1.0, "AP50": 0.25}},
        "notes": ["hello"], "backend": "pycocotools", "max_dets": [1, 5, 10], "num_detections": 3,
    }
    assert result.to_dict() == expected
    # the folders are created; the file is indented by 2 and ends with a newline
    path = result.to_json(tmp_path / "a" / "b" / "metrics.json")
    assert path == tmp_path / "a" / "b" / "metrics.json"
    text = path.read_text()
    assert text.startswith('{\n  "AP": 0.5,\n  "AP50": 0.75,') and text.endswith("}\n")
    assert json.loads(text) == expected


def _acc(m: int = 3, a: int = 2) -> AccumulatedEval:
    # precision [T=10, R=2, K=2, A, M]: the value at limit index j is 0.2 * (j + 1), except
    # class 1, which has no ground truth of the second area (-1)
    prec = np.zeros((10, 2, 2, a, m))
    for j in range(m):
        prec[..., j] = 0.2 * (j + 1)
    prec[:, :, 1, 1, :] = -1
    prec[0, :, 0, 0, :] = 0.9  # the IoU=.5 row of class 0
    rec = np.full((10, 2, a, m), 0.5)
    return AccumulatedEval(prec, rec, np.zeros_like(prec), "pycocotools")


def test_per_class_metrics_use_the_largest_limit() -> None:
    table = per_class_metrics(_acc(), IOUS, ["a", "b"], ["all", "small"])
    # the last limit (index 2) holds 0.6; class 0's IoU=.5 row is 0.9, so its AP is
    # (0.9 + 9 * 0.6) / 10 = 0.63
    assert table["a"]["AP50"] == pytest.approx(0.9)
    assert table["a"]["AP"] == pytest.approx(0.63)
    assert table["a"]["APs"] == pytest.approx(0.6)
    assert table["b"]["AP50"] == pytest.approx(0.6) and table["b"]["AP"] == pytest.approx(0.6)
    assert math.isnan(table["b"]["APs"])


def test_summarize_metrics_stats_order_and_errors() -> None:
    stats, metrics = summarize_metrics(_acc(a=4), IOUS, [1, 10, 100],
                                       ["all", "small", "medium", "large"])
    assert stats.dtype == np.float64 and stats.shape == (12,)
    # AR per limit is the mean recall 0.5; APm at the last limit is 0.6
    assert metrics["AR1"] == metrics["AR10"] == metrics["AR100"] == 0.5
    assert stats[4] == pytest.approx(0.6) and stats[6] == 0.5
    with pytest.raises(ValueError, match=r"IoU threshold 0.5 is not among \[0.6"):
        summarize_metrics(_acc(), np.array([0.6, 0.75]), [1, 10, 100], ["all"])
