"""Detection confusion matrix: which class each ground-truth object was detected as.

Per image, detections scoring at least ``score_threshold`` are taken by decreasing score; each
is matched to the not yet matched ground-truth box (any class, crowd boxes excluded) of
highest IoU, if that IoU is at least ``iou_threshold``. The matrix has K + 1 rows and
columns in category-id order:

* ``matrix[i, j]`` (i, j < K): ground truth of class i matched by a detection of class j
  (the diagonal is correct, off-diagonal a class confusion);
* ``matrix[i, K]``: ground truth of class i that no detection matched (missed);
* ``matrix[K, j]``: detections of class j matching no ground truth (background false
  positives); a detection overlapping a crowd box by IoU >= ``iou_threshold`` is not counted.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ConfusionMatrix", "confusion_matrix"]


def _xyxy(boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """COCO ``[x, y, w, h]`` rows -> float64 ``[N, 4]`` (x1, y1, x2, y2)."""
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([arr[:, :2], arr[:, :2] + arr[:, 2:]], axis=1)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``[N, M]`` of xyxy boxes ``a [N, 4]`` and ``b [M, 4]``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass(frozen=True)
class ConfusionMatrix:
    """``matrix`` int64 ``[K + 1, K + 1]`` (see the module docstring), rows ground truth,
    columns detections, the last row "background" and the last column "missed"."""

    matrix: np.ndarray
    class_names: list[str]
    score_threshold: float
    iou_threshold: float

    def table(self) -> str:
        """Text table with row = ground truth, column = detected class."""
        rows = [*self.class_names, "background"]
        cols = [*self.class_names, "missed"]
        corner = "gt \\ detected"
        width = max(len(n) for n in [*rows, corner])
        cell = max(7, *(len(c) for c in cols))
        lines = [f"confusion matrix (score >= {self.score_threshold:g}, "
                 f"IoU >= {self.iou_threshold:g}; rows: ground truth, columns: detected as)",
                 f"{corner:<{width}} " + " ".join(f"{c:>{cell}}" for c in cols)]
        for name, row in zip(rows, self.matrix, strict=True):
            lines.append(f"{name:<{width}} " + " ".join(f"{int(v):>{cell}}" for v in row))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready dict with the matrix and its axis names."""
        return {"rows_ground_truth": [*self.class_names, "background"],
                "columns_detected": [*self.class_names, "missed"],
                "matrix": self.matrix.tolist(), "score_threshold": self.score_threshold,
                "iou_threshold": self.iou_threshold}

    def save(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``confusion_matrix.json`` and ``confusion_matrix.png`` into ``out_dir``."""
        from matplotlib.figure import Figure

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        json_path = out / "confusion_matrix.json"
        json_path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        n = len(self.class_names) + 1
        fig = Figure(figsize=(1.0 + 0.7 * n, 0.8 + 0.6 * n))
        ax = fig.subplots()
        ax.imshow(self.matrix, cmap="Blues")
        for (i, j), v in np.ndenumerate(self.matrix):
            ax.text(j, i, str(int(v)), ha="center", va="center",
                    color="white" if v > self.matrix.max() / 2 else "black", fontsize=8)
        ax.set_xticks(range(n), [*self.class_names, "missed"], rotation=45, ha="right")
        ax.set_yticks(range(n), [*self.class_names, "background"])
        ax.set(xlabel="detected as", ylabel="ground truth",
               title=f"score >= {self.score_threshold:g}, IoU >= {self.iou_threshold:g}")
        fig.tight_layout()
        png_path = out / "confusion_matrix.png"
        fig.savefig(png_path, dpi=100)
        return {"confusion_json": json_path, "confusion_png": png_path}


def confusion_matrix(gt: Mapping, results: Sequence[Mapping], score_threshold: float = 0.25,
                     iou_threshold: float = 0.5) -> ConfusionMatrix:
    """Confusion matrix of COCO results against a COCO ground-truth dict (module docstring).

    Raises ValueError for thresholds outside [0, 1] or category ids the ground truth lacks.
    """
    if not 0.0 <= score_threshold <= 1.0 or not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1] and iou_threshold in (0, 1], got "
                         f"{score_threshold}, {iou_threshold}")
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    index = {c["id"]: k for k, c in enumerate(cats)}
    k_bg = len(cats)
    matrix = np.zeros((k_bg + 1, k_bg + 1), dtype=np.int64)
    gts: dict[int, list[Mapping]] = defaultdict(list)
    for ann in gt.get("annotations", []):
        gts[ann["image_id"]].append(ann)
    dets: dict[int, list[Mapping]] = defaultdict(list)
    for det in results:
        if det["category_id"] not in index:
            raise ValueError(f"detection category_id {det['category_id']} is not in the "
                             f"ground truth's categories")
        if det["score"] >= score_threshold:
            dets[det["image_id"]].append(det)
    for image_id in {img["id"] for img in gt["images"]}:
        anns = [a for a in gts[image_id] if not a.get("iscrowd", 0)]
        crowd = [a for a in gts[image_id] if a.get("iscrowd", 0)]
        found = sorted(dets[image_id], key=lambda d: -d["score"])
        det_boxes = _xyxy([d["bbox"] for d in found])
        iou = _iou(det_boxes, _xyxy([a["bbox"] for a in anns]))
        crowd_iou = _iou(det_boxes, _xyxy([a["bbox"] for a in crowd]))
        taken = np.zeros(len(anns), dtype=bool)
        for d, det in enumerate(found):
            col = index[det["category_id"]]
            cand = np.where(taken, -1.0, iou[d]) if len(anns) else np.zeros(0)
            best = int(np.argmax(cand)) if cand.size else -1
            if best >= 0 and cand[best] >= iou_threshold:
                taken[best] = True
                matrix[index[anns[best]["category_id"]], col] += 1
            elif not (crowd and crowd_iou[d].max() >= iou_threshold):
                matrix[k_bg, col] += 1
        for a, ann in enumerate(anns):
            if not taken[a]:
                matrix[index[ann["category_id"]], k_bg] += 1
    names = [str(c.get("name", c["id"])) for c in cats]
    return ConfusionMatrix(matrix, names, float(score_threshold), float(iou_threshold))
