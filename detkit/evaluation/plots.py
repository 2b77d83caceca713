"""Evaluation pictures: PR curves, per-class AP bars (matplotlib Agg), detections on images (cv2).

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend
switch, no window), so they work on headless machines and inside training loops.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# draw_detections / label_color / write_image moved to detkit.evaluation.draw; importable here
from detkit.evaluation.draw import PALETTE, draw_detections, label_color, write_image
from detkit.evaluation.summary import EvalResult

__all__ = ["draw_detections", "label_color", "plot_per_class_ap", "plot_pr_curves",
           "pr_curves", "save_evaluation_plots", "write_image"]


def pr_curves(
    result: EvalResult, iou: float | None = 0.5, area: str = "all"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Interpolated precision-recall curve per class at the largest ``max_dets``.

    Args:
        result: an evaluation result.
        iou: IoU threshold (one of ``result.iou_thrs``), or None for the mean over all thresholds
            (the curve whose area is COCO AP).
        area: area range label.

    Returns:
        {class name: (recall points [R], precision [R])}; classes without ground truth in that
        area range are left out.
    """
    a = result.area_labels.index(area)
    if iou is None:
        prec = result.precision[:, :, :, a, -1]
    else:
        hits = np.flatnonzero(np.isclose(result.iou_thrs, iou))
        if hits.size == 0:
            raise ValueError(f"iou {iou} not among {result.iou_thrs.tolist()}")
        prec = result.precision[hits[:1], :, :, a, -1]
    curves = {}
    for k, name in enumerate(result.class_names):
        per_iou = prec[:, :, k]
        if (per_iou > -1).all():
            curves[name] = (result.rec_thrs.copy(), per_iou.mean(axis=0))
    return curves


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path)
    return path


def plot_pr_curves(
    result: EvalResult, path: str | os.PathLike, area: str = "all", dpi: int = 100
) -> Path:
    """PNG with two panels: per-class PR curves at IoU=.50 and averaged over IoU=.50:.95.

    The legend gives each class's AP50 (left) / AP (right). The image is 1000 x 450 px at dpi 100.
    """
    fig = Figure(figsize=(10, 4.5), dpi=dpi)
    panels = ((0.5, "IoU=0.50", "AP50"), (None, "IoU=0.50:0.95 (mean)", "AP"))
    for i, (iou, title, key) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        for k, (name, (rec, prec)) in enumerate(pr_curves(result, iou, area).items()):
            score = result.per_class[name][key]
            ax.plot(rec, prec, color=np.array(PALETTE[k % len(PALETTE)]) / 255.0,
                    label=f"{name} ({key}={score:.3f})")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
               title=f"{title}, area={area}")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def plot_per_class_ap(result: EvalResult, path: str | os.PathLike, dpi: int = 100) -> Path:
    """PNG bar chart of AP and AP50 per class (classes without ground truth marked "no GT").

    Width 8 in, height 1.8 in + 0.35 in per class (at dpi 100: 800 px wide).
    """
    names = list(result.per_class)
    fig = Figure(figsize=(8, 1.8 + 0.35 * max(len(names), 1)), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(names))
    for offset, key, color in ((-0.2, "AP", "tab:blue"), (0.2, "AP50", "tab:orange")):
        values = [result.per_class[n][key] for n in names]
        shown = [0.0 if math.isnan(v) else v for v in values]
        ax.barh(y + offset, shown, height=0.4, color=color, label=key)
        for yi, v in zip(y, values, strict=True):
            ax.text(0.005 if math.isnan(v) else v + 0.005, yi + offset,
                    "no GT" if math.isnan(v) else f"{v:.3f}", va="center", fontsize="x-small")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.1), xlabel="average precision")
    ax.set_title("per-class AP (IoU=.50:.95) and AP50", loc="left")
    # Legend above the axes, right-aligned: bars reach x=1 and must stay readable.
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def save_evaluation_plots(result: EvalResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``pr_curves.png`` and ``per_class_ap.png`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    return {
        "pr_curves": plot_pr_curves(result, out / "pr_curves.png"),
        "per_class_ap": plot_per_class_ap(result, out / "per_class_ap.png"),
    }
