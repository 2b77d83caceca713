"""Evaluation pictures: PR curves, per-class AP bars (matplotlib Agg), detections on images (cv2).

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend
switch, no window), so they work on headless machines and inside training loops.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from detkit.evaluation.summary import EvalResult

# Distinct RGB colours; label k (1..K) uses PALETTE[(k - 1) % len(PALETTE)].
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128),
    (170, 110, 40), (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 128),
)


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


def _as_uint8_rgb(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """HxWx3 uint8 RGB copy of an HxWx3 uint8 array or a [3, H, W] float tensor in [0, 1]."""
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().permute(1, 2, 0).numpy()
        return np.ascontiguousarray((np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8 RGB, got {array.shape} {array.dtype}")
    return np.ascontiguousarray(array).copy()


def label_color(label: int) -> tuple[int, int, int]:
    """RGB colour of contiguous label ``label`` (1..K)."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def draw_detections(
    image: np.ndarray | torch.Tensor,
    boxes: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    scores: np.ndarray | torch.Tensor | None = None,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    score_threshold: float = 0.0,
    thickness: int = 2,
) -> np.ndarray:
    """Draw boxes with "name score" captions; returns a new HxWx3 uint8 RGB image.

    Args:
        image: HxWx3 uint8 RGB array, or a [3, H, W] float tensor in [0, 1] (dataset format).
        boxes: [D, 4] xyxy in the image's pixels.
        labels: [D] contiguous labels 1..K (colour = :func:`label_color`).
        scores: [D] or None; boxes below ``score_threshold`` are not drawn.
        class_names: {label: name} or a sequence with label k's name at k-1; default: the label.
        thickness: rectangle line width in pixels.
    """
    canvas = _as_uint8_rgb(image)
    box_arr = np.asarray(torch.as_tensor(boxes).detach().cpu(), dtype=np.float64).reshape(-1, 4)
    label_arr = np.asarray(torch.as_tensor(labels).detach().cpu()).reshape(-1).astype(np.int64)
    score_arr = (None if scores is None
                 else np.asarray(torch.as_tensor(scores).detach().cpu(), dtype=np.float64))
    if len(label_arr) != len(box_arr) or (score_arr is not None and len(score_arr) != len(box_arr)):
        raise ValueError("boxes, labels and scores must have the same length")
    names = (dict(class_names) if isinstance(class_names, Mapping)
             else {k + 1: n for k, n in enumerate(class_names or [])})
    for i, (box, label) in enumerate(zip(box_arr, label_arr, strict=True)):
        if score_arr is not None and score_arr[i] < score_threshold:
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        color = label_color(label)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        caption = str(names.get(int(label), int(label)))
        if score_arr is not None:
            caption += f" {score_arr[i]:.2f}"
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        top = max(y1 - th - base, 0)
        cv2.rectangle(canvas, (x1, top), (x1 + tw, top + th + base), color, -1)
        cv2.putText(canvas, caption, (x1, top + th), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def write_image(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an HxWx3 uint8 RGB image (e.g. from :func:`draw_detections`) as PNG/JPEG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image {path}")
    return path


def save_evaluation_plots(result: EvalResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``pr_curves.png`` and ``per_class_ap.png`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    return {
        "pr_curves": plot_pr_curves(result, out / "pr_curves.png"),
        "per_class_ap": plot_per_class_ap(result, out / "per_class_ap.png"),
    }
