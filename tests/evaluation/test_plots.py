"""Tests of detkit.evaluation.plots: PR curve data, PNG figures, drawn detections."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from detkit.evaluation import evaluate_detections
from detkit.evaluation.plots import (
    draw_detections,
    label_color,
    plot_per_class_ap,
    plot_pr_curves,
    pr_curves,
    save_evaluation_plots,
    write_image,
)


def _result():
    """Class "a": 2 GT, detections TP(.9) FP(.8) TP(.7) with exact boxes.
    Class "b": 1 GT 100x100, one detection 100x72 inside it: IoU = 7200 / 10000 = 0.72.
    Class "c": no GT."""
    box = [50.0, 50.0, 100.0, 100.0]
    gt = {
        "images": [{"id": i, "width": 640, "height": 480} for i in (1, 2)],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": box, "area": 1e4, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": box, "area": 1e4, "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 2, "bbox": box, "area": 1e4, "iscrowd": 0},
        ],
    }
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": box, "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [400.0, 300.0, 50.0, 50.0], "score": 0.8},
        {"image_id": 2, "category_id": 1, "bbox": box, "score": 0.7},
        {"image_id": 1, "category_id": 2, "bbox": [50.0, 50.0, 100.0, 72.0], "score": 0.6},
    ]
    return evaluate_detections(gt, dets, backend="pycocotools")


def test_pr_curve_values() -> None:
    result = _result()
    curves = pr_curves(result, iou=0.5)
    assert set(curves) == {"a", "b"}  # "c" has no GT: no curve
    recall, precision = curves["a"]
    # Envelope of TP(.9) P=1 R=.5, FP P=1/2, TP(.7) P=2/3 R=1: 1 up to R=.5, 2/3 after.
    np.testing.assert_allclose(recall, np.linspace(0, 1, 101))
    np.testing.assert_allclose(precision[:51], 1.0, atol=1e-12)
    np.testing.assert_allclose(precision[51:], 2 / 3, atol=1e-12)
    # Class b at IoU .5:.95: IoU 0.72 passes .50, .55, .60, .65, .70 (5 of 10) -> mean 0.5.
    _, averaged = pr_curves(result, iou=None)["b"]
    np.testing.assert_allclose(averaged, 0.5, atol=1e-12)
    with pytest.raises(ValueError, match="not among"):
        pr_curves(result, iou=0.42)


def test_figures_are_written_with_expected_size(tmp_path) -> None:
    result = _result()
    pr_path = plot_pr_curves(result, tmp_path / "plots" / "pr_curves.png")
    bar_path = plot_per_class_ap(result, tmp_path / "plots" / "per_class_ap.png")
    pr_img = cv2.imread(str(pr_path))
    bar_img = cv2.imread(str(bar_path))
    assert pr_img.shape == (450, 1000, 3)  # 10 x 4.5 in at 100 dpi
    assert bar_img.shape == (int(round((1.8 + 0.35 * 3) * 100)), 800, 3)
    assert (pr_img < 250).any() and (bar_img < 250).any()  # something drawn on white
    paths = save_evaluation_plots(result, tmp_path / "report")
    assert sorted(p.name for p in paths.values()) == ["per_class_ap.png", "pr_curves.png"]
    assert cv2.imread(str(paths["pr_curves"])).shape == (450, 1000, 3)


def test_draw_detections_colours_box_edges_only() -> None:
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    boxes = torch.tensor([[20.0, 30.0, 50.0, 60.0], [0.0, 0.0, 10.0, 10.0]])
    out = draw_detections(image, boxes, torch.tensor([2, 1]), torch.tensor([0.9, 0.1]),
                          class_names=["rbc", "wbc"], score_threshold=0.5, thickness=1)
    assert out is not image and not image.any()  # input untouched
    assert tuple(out[45, 20]) == label_color(2)  # left edge x=20 at mid height y=45
    assert tuple(out[60, 35]) == label_color(2)  # bottom edge
    assert not out[45, 35].any()  # interior untouched
    assert not out[5, 5].any()  # the 0.1-score box is below the threshold
    # Caption "wbc 0.90" sits on a filled label-colour strip right above the box's top-left.
    (_, text_h), base = cv2.getTextSize("wbc 0.90", cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
    assert tuple(out[30 - text_h - base, 20]) == label_color(2)


def test_draw_accepts_dataset_tensor_and_writes(tmp_path) -> None:
    image = torch.zeros(3, 32, 48)
    out = draw_detections(image, np.array([[4.0, 20.0, 40.0, 30.0]]), np.array([1]))
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8
    path = write_image(out, tmp_path / "det.png")
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), out)
    with pytest.raises(ValueError, match="same length"):
        draw_detections(out, np.zeros((2, 4)), np.array([1]))


def test_pr_curves_use_the_palette_of_the_drawn_boxes(tmp_path, monkeypatch) -> None:
    from detkit.evaluation import plots
    from detkit.evaluation.draw import PALETTE

    figures = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or save(fig, path))
    plot_pr_curves(_result(), tmp_path / "pr.png")
    (fig,) = figures
    assert len(fig.axes) == 2
    for ax in fig.axes:
        # curves of a and b ("c" has no GT); curve k is PALETTE[k], given in [0, 1] RGB
        colours = [tuple(int(v) for v in np.round(np.asarray(line.get_color()) * 255))
                   for line in ax.lines]
        assert colours == [PALETTE[0], PALETTE[1]]
