"""PNG figures of the benchmark suite, drawn from its results (see benchmarks/suite.py).

Every function takes already loaded result dicts and a path, writes one PNG with
matplotlib's Agg backend and returns the path, or None when the results hold nothing to draw.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

CLASS_COLORS = {"Platelets": "tab:orange", "RBC": "tab:red", "WBC": "tab:blue"}


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")  # long labels stay inside the picture
    return path


def plot_training_curves(results: Mapping[str, Mapping[str, Any]], path: Path) -> Path | None:
    """Two panels: training loss and val AP against the iteration, one line per row."""
    rows = {name: r["curves"] for name, r in results.items() if r.get("curves")}
    if not rows:
        return None
    fig = Figure(figsize=(11, 4))
    loss_ax, ap_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, curves in rows.items():
        if curves.get("loss"):
            it, loss = zip(*[(p[0], p[1]) for p in curves["loss"]], strict=True)
            loss_ax.plot(it, loss, label=name, linewidth=1)
        val = [(p[0], p[1]) for p in curves.get("val", []) if p[1] is not None]
        if val:
            ap_ax.plot(*zip(*val, strict=True), marker="o", label=name)
    loss_ax.set(xlabel="iteration", ylabel="total training loss", title="training loss",
                yscale="log")
    ap_ax.set(xlabel="iteration", ylabel="val AP (IoU .50:.95)", title="validation AP")
    for ax in (loss_ax, ap_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, path)


def plot_pr_curves(result: Mapping[str, Any], path: Path, title: str) -> Path | None:
    """Per-class PR curves of one run at IoU .50 and averaged over IoU .50:.95."""
    curves = result.get("pr_curves") or {}
    if not curves:
        return None
    fig = Figure(figsize=(10, 4.2))
    for i, (key, label, metric) in enumerate((("precision50", "IoU=0.50", "AP50"),
                                               ("precision", "IoU=0.50:0.95", "AP"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for name, curve in curves.items():
            ap = (result.get("per_class") or {}).get(name, {}).get(metric)
            shown = f"{name} ({metric}={ap:.3f})" if isinstance(ap, float) else name
            ax.plot(curve["recall"], curve[key], label=shown, color=CLASS_COLORS.get(name))
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
               title=f"{title}, {label}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize="small")
    return _save(fig, path)


def plot_per_class_ap(results: Mapping[str, Mapping[str, float]], path: Path) -> Path | None:
    """Grouped horizontal bars: per-class AP (IoU .50:.95) of each row.

    ``results`` maps row name -> {class name: AP} (means over seeds).
    """
    if not results:
        return None
    classes = sorted({c for per in results.values() for c in per})
    rows = list(results)
    fig = Figure(figsize=(8, 1.5 + 0.45 * len(rows) * max(len(classes), 1) / 2))
    ax = fig.add_subplot(1, 1, 1)
    height = 0.8 / max(len(classes), 1)
    y = np.arange(len(rows))
    for k, name in enumerate(classes):
        values = [results[r].get(name) for r in rows]
        shown = [v if isinstance(v, float) else 0.0 for v in values]
        ax.barh(y + (k - (len(classes) - 1) / 2) * height, shown, height=height, label=name,
                color=CLASS_COLORS.get(name))
        for yi, v in zip(y, values, strict=True):
            text = f"{v:.3f}" if isinstance(v, float) else "n/a"
            ax.text((v if isinstance(v, float) else 0.0) + 0.005,
                    yi + (k - (len(classes) - 1) / 2) * height, text, va="center",
                    fontsize="x-small")
    ax.set_yticks(y, rows)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="AP (IoU .50:.95), held-out folds pooled",
           title="per-class AP, every image predicted by a model that never saw it")
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def _draw_boxes(ax: Any, boxes: Sequence[Sequence[float]], names: Sequence[str],
                scores: Sequence[float] | None = None) -> None:
    """COCO xywh boxes with class colours (and scores) on an image axis."""
    for i, (box, name) in enumerate(zip(boxes, names, strict=True)):
        x, y, w, h = box
        color = CLASS_COLORS.get(name, "tab:green")
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=color, linewidth=1.2))
        label = name if scores is None else f"{name} {scores[i]:.2f}"
        ax.text(x, y - 2, label, color=color, fontsize=5)


def plot_detections(result: Mapping[str, Any], gt_file: Path, image_root: Path,
                    path: Path, title: str) -> Path | None:
    """Rows of (ground truth | detections) for the test images stored in ``result``.

    ``gt_file`` is the COCO test JSON; its ``file_name`` entries are relative to
    ``image_root``. Returns None when the result has no stored detections or an image is
    missing.
    """
    from detkit.data.image_io import read_image_rgb

    drawn = result.get("drawn_detections") or {}
    if not drawn or not gt_file.is_file():
        return None
    gt = json.loads(gt_file.read_text())
    images = {img["id"]: img for img in gt["images"]}
    names = {c["id"]: c["name"] for c in gt["categories"]}
    ids = [int(i) for i in drawn if int(i) in images]
    files = {i: image_root / images[i]["file_name"] for i in ids}
    if not ids or not all(f.is_file() for f in files.values()):
        return None
    fig = Figure(figsize=(10, 3.8 * len(ids)))
    for row, image_id in enumerate(ids):
        image = read_image_rgb(str(files[image_id]))
        anns = [a for a in gt["annotations"] if a["image_id"] == image_id]
        dets = drawn[str(image_id)]
        for col, (label, boxes, cats, scores) in enumerate((
                ("ground truth", [a["bbox"] for a in anns], [a["category_id"] for a in anns],
                 None),
                (f"{title} (score >= 0.3)", [d["bbox"] for d in dets],
                 [d["category_id"] for d in dets], [d["score"] for d in dets]))):
            ax = fig.add_subplot(len(ids), 2, 2 * row + col + 1)
            ax.imshow(image)
            _draw_boxes(ax, boxes, [names.get(c, str(c)) for c in cats], scores)
            ax.set_title(f"{images[image_id]['file_name'].rsplit('/', 1)[-1]}: {label}, "
                         f"{len(boxes)} boxes", fontsize=8)
            ax.axis("off")
    return _save(fig, path)


def plot_claim_intervals(claims: Sequence[tuple[str, float, float, float]], path: Path
                         ) -> Path | None:
    """Each claim's delta (AP points) with its 95% bootstrap interval as an error bar;
    green when the interval is above 0, red below, grey when it contains 0."""
    if not claims:
        return None
    fig = Figure(figsize=(8.5, 1.2 + 0.42 * len(claims)))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(claims))
    delta = np.array([100 * c[1] for c in claims])
    low = np.array([100 * c[2] for c in claims])
    high = np.array([100 * c[3] for c in claims])
    colors = ["tab:green" if lo > 0 else "tab:red" if hi < 0 else "tab:gray"
              for lo, hi in zip(low, high, strict=True)]
    ax.barh(y, delta, xerr=np.vstack([delta - low, high - delta]), color=colors, capsize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    reach = float(np.max(np.abs(np.concatenate([low, high])))) * 1.15 or 1.0
    ax.set_xlim(-reach, reach)  # symmetric, so a loss and a gain read alike
    ax.set_yticks(y, [c[0] for c in claims])
    ax.invert_yaxis()
    ax.set(xlabel="delta x 100 (AP points)\nerror bar: 95% paired bootstrap interval",
           title="claims: green holds, red contradicted,\ngrey unresolved")
    return _save(fig, path)


def plot_ap_vs_minutes(curves: Mapping[str, Sequence[tuple[float, float]]], path: Path
                       ) -> Path | None:
    """AP on the held-out fold against training minutes, one line per row (fold 0)."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for name, points in curves.items():
        ax.plot(*zip(*points, strict=True), marker="o", label=name)
    ax.set(xlabel="training minutes (idle 2-core machine: iterations x measured s/iteration)",
           ylabel="AP on the held-out fold 0", title="AP against training time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)
