"""Ground-truth browser: draw a COCO dataset's boxes, with the converter's problems marked.

:func:`draw_ground_truth` writes one PNG per image: every annotation with its class name
(:func:`detkit.evaluation.draw.draw_detections`), ``iscrowd`` boxes (VOC ``difficult``)
dashed in grey, and the boxes named in a VOC conversion report
(``conversion_report.json``, :mod:`detkit.data.voc`) dashed in red with their reason: a
dropped box where it was (a zero-size box as a cross), a clipped box as it was before
clipping. Images with marks come first, so the data's problems are the first pictures seen.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detkit.data.image_io import read_image_rgb
from detkit.evaluation.draw import FONT, FONT_SCALE, draw_detections, write_image

__all__ = ["BrowseSummary", "draw_ground_truth", "read_marks"]

CROWD_COLOR = (160, 160, 160)
MARK_COLOR = (255, 0, 0)


@dataclass(frozen=True)
class BrowseSummary:
    """What :func:`draw_ground_truth` drew: the PNG paths, and how many carry marks."""

    pictures: list[Path]
    marked_images: int
    marks_drawn: int


def read_marks(report: str | Path | None) -> dict[str, list[dict[str, Any]]]:
    """The conversion report's marks grouped by image ``file_name`` ({} without a report)."""
    if report is None:
        return {}
    data = json.loads(Path(report).read_text())
    if not isinstance(data, Mapping) or not isinstance(data.get("marks"), list):
        raise ValueError(f"{report}: not a conversion report (no 'marks' list)")
    by_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for mark in data["marks"]:
        by_file[str(mark["file_name"])].append(mark)
    return dict(by_file)


def _dashed_rect(canvas: np.ndarray, box: Sequence[float], color: tuple[int, int, int],
                 dash: int = 6) -> None:
    """Dashed rectangle (xyxy, pixels) drawn in place; a zero-size box becomes a cross."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    if x2 - x1 < 2 and y2 - y1 < 2:
        cv2.drawMarker(canvas, (x1, y1), color, cv2.MARKER_TILTED_CROSS, 14, 2)
        return
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)),
                               ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(bx - ax), abs(by - ay), 1)
        for start in range(0, length, 2 * dash):
            end = min(start + dash, length)
            p = (ax + (bx - ax) * start // length, ay + (by - ay) * start // length)
            q = (ax + (bx - ax) * end // length, ay + (by - ay) * end // length)
            cv2.line(canvas, p, q, color, 2)


def _caption(canvas: np.ndarray, text: str, at: tuple[int, int],
             color: tuple[int, int, int]) -> None:
    """Filled caption with its top-left at ``at``, shifted to lie inside the image."""
    (tw, th), base = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
    height, width = canvas.shape[:2]
    x = min(max(at[0], 0), max(width - tw - 2, 0))
    y = min(max(at[1], 0), max(height - th - base - 2, 0))
    cv2.rectangle(canvas, (x, y), (x + tw + 1, y + th + base + 1), color, -1)
    cv2.putText(canvas, text, (x + 1, y + 1 + th), FONT, FONT_SCALE, (255, 255, 255), 1,
                cv2.LINE_AA)


def _xyxy(bbox: Sequence[float]) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + max(w, 0.0), y + max(h, 0.0)]


def draw_ground_truth(ann_file: str | Path, img_dir: str | Path, out_dir: str | Path,
                      report: str | Path | None = None, images: int = 16) -> BrowseSummary:
    """Draw the ground truth of ``ann_file`` (COCO; ``file_name`` under ``img_dir``) into
    ``out_dir`` as ``<image id>_<name>.png``: marked images first, then by image id, at most
    ``images`` pictures (0: all). ``report``: a ``conversion_report.json`` whose boxes to mark.
    """
    coco = json.loads(Path(ann_file).read_text())
    cats = sorted(coco.get("categories", []), key=lambda c: c["id"])
    label_of = {c["id"]: k for k, c in enumerate(cats, start=1)}
    names = [c["name"] for c in cats]
    anns: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in coco.get("annotations", []):
        anns[ann["image_id"]].append(ann)
    marks = read_marks(report)
    order = sorted(coco.get("images", []),
                   key=lambda im: (im["file_name"] not in marks, im["id"]))
    if images > 0:
        order = order[:images]
    out = Path(out_dir)
    pictures, marked, drawn = [], 0, 0
    for info in order:
        plain = [a for a in anns[info["id"]] if not a.get("iscrowd")]
        crowd = [a for a in anns[info["id"]] if a.get("iscrowd")]
        image = read_image_rgb(Path(img_dir) / info["file_name"])
        canvas = draw_detections(image, np.array([_xyxy(a["bbox"]) for a in plain]),
                                 np.array([label_of[a["category_id"]] for a in plain]),
                                 class_names=names)
        for ann in crowd:
            box = _xyxy(ann["bbox"])
            _dashed_rect(canvas, box, CROWD_COLOR)
            _caption(canvas, f"{names[label_of[ann['category_id']] - 1]} (crowd)",
                     (int(box[0]), int(box[3]) + 1), CROWD_COLOR)
        own = marks.get(info["file_name"], [])
        for mark in own:
            box = _xyxy(mark["bbox"])
            _dashed_rect(canvas, box, MARK_COLOR)
            _caption(canvas, f"{mark['class']}: {mark['reason']}",
                     (int(box[0]), int(box[1]) - 14), MARK_COLOR)
        marked += bool(own)
        drawn += len(own)
        stem = Path(info["file_name"]).stem
        pictures.append(write_image(canvas, out / f"{info['id']:06d}_{stem}.png"))
    return BrowseSummary(pictures, marked, drawn)
