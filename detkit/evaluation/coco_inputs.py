"""COCO evaluation inputs: ground truth and detections checked and copied before scoring.

:func:`prepare_ground_truth` copies a COCO ground-truth dict, fills a missing or broken
``area`` / ``iscrowd`` and indexes it without pycocotools' file reading;
:func:`prepare_detections` checks a results list (COCO results format: ``image_id``,
``category_id``, ``bbox`` [x, y, w, h], ``score``) column by column with clear errors and
counts what it repaired or left out in one :class:`EvaluationWarning` each. Neither input is
modified. Used by :func:`detkit.evaluation.coco.evaluate_detections`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import numbers
import os
import warnings
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO

__all__ = ["EvaluationWarning", "load_coco_gt", "prepare_detections", "prepare_ground_truth"]


def _valid_area(value: Any) -> bool:
    """A real number in [0, inf): what COCOeval's area buckets can hold."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= float(value) < math.inf


class EvaluationWarning(UserWarning):
    """Warning about evaluation input that was repaired or excluded (always with a count)."""


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while tens of thousands of small dicts are built.

    The dicts hold no reference cycles, so the collector has nothing to free; its generation
    scans over them were a third of the evaluation time on 50k detections.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _index(dataset: dict) -> COCO:
    """Build a pycocotools COCO object around ``dataset`` without printing or re-reading files."""
    coco = COCO()
    coco.dataset = dataset
    img_to_anns: defaultdict[int, list[dict]] = defaultdict(list)
    cat_to_imgs: defaultdict[int, list[int]] = defaultdict(list)
    for ann in dataset["annotations"]:
        img_to_anns[ann["image_id"]].append(ann)
        cat_to_imgs[ann["category_id"]].append(ann["image_id"])
    coco.anns = {ann["id"]: ann for ann in dataset["annotations"]}
    coco.imgs = {img["id"]: img for img in dataset["images"]}
    coco.cats = {cat["id"]: cat for cat in dataset["categories"]}
    coco.imgToAnns = img_to_anns
    coco.catToImgs = cat_to_imgs
    return coco


def load_coco_gt(coco_gt: COCO | str | os.PathLike | Mapping) -> dict:
    """Return the ground-truth dataset dict of a COCO object, a JSON file path or a dict."""
    if isinstance(coco_gt, COCO):
        return coco_gt.dataset
    if isinstance(coco_gt, (str, os.PathLike)):
        with open(coco_gt, encoding="utf-8") as handle:
            return json.load(handle)
    if isinstance(coco_gt, Mapping):
        return dict(coco_gt)
    raise TypeError(f"coco_gt must be a COCO object, a path or a dict, got {type(coco_gt)!r}")


def prepare_ground_truth(dataset: Mapping) -> tuple[COCO, list[str]]:
    """Copy and validate a COCO ground-truth dict; fill missing ``area`` / ``iscrowd``.

    Missing ``area`` (or a negative or non-finite one) becomes w * h of ``bbox``; missing
    ``iscrowd`` becomes 0; each repair, and zero-width/height boxes (kept: they are real
    misses), is counted in one ``EvaluationWarning``. The caller's dicts are never modified.

    Returns:
        (indexed private COCO copy, notes describing the repairs).
    """
    for key in ("images", "categories"):
        if key not in dataset:
            raise ValueError(f"ground truth has no {key!r} list")
    if not dataset["categories"]:
        raise ValueError("ground truth has no categories")
    image_ids = {img["id"] for img in dataset["images"]}
    cat_ids = {cat["id"] for cat in dataset["categories"]}
    ann_ids = [ann.get("id") for ann in dataset.get("annotations", [])]
    if None in ann_ids or len(set(ann_ids)) != len(ann_ids):
        raise ValueError("ground-truth annotations need unique 'id' values (COCO format)")
    anns, no_area, no_crowd, degenerate, unknown_cat, bad_area = [], 0, 0, 0, 0, 0
    for ann in dataset.get("annotations", []):
        bbox = ann.get("bbox")
        if bbox is None or len(bbox) != 4:
            raise ValueError(f"ground-truth annotation {ann.get('id')!r} needs bbox [x, y, w, h]")
        degenerate += int(not (bbox[2] > 0 and bbox[3] > 0) and not ann.get("iscrowd", 0))
        unknown_cat += int(ann["category_id"] not in cat_ids)
        if ann["image_id"] not in image_ids:
            raise ValueError(
                f"annotation {ann.get('id')!r} refers to unknown image {ann['image_id']!r}"
            )
        copy = dict(ann)
        if "area" not in copy:
            copy["area"] = float(bbox[2]) * float(bbox[3])
            no_area += 1
        elif not _valid_area(copy["area"]):
            copy["area"] = float(bbox[2]) * float(bbox[3])
            bad_area += 1
        if "iscrowd" not in copy:
            copy["iscrowd"] = 0
            no_crowd += 1
        anns.append(copy)
    notes = []
    if no_area:
        notes.append(f"{no_area} ground-truth annotations had no 'area'; used bbox w*h")
    if bad_area:
        notes.append(f"{bad_area} ground-truth annotations had a negative or non-finite 'area' "
                     f"(outside every area range, so they would leave every metric); used "
                     f"bbox w*h")
    if no_crowd:
        notes.append(f"{no_crowd} ground-truth annotations had no 'iscrowd'; used 0")
    if unknown_cat:
        notes.append(
            f"{unknown_cat} ground-truth annotations use a category_id missing from 'categories'; "
            f"they are not evaluated"
        )
    if degenerate:
        notes.append(
            f"{degenerate} ground-truth boxes have zero width or height: no detection can match "
            f"them (IoU 0), so they count as missed"
        )
    for note in notes:
        warnings.warn(note, EvaluationWarning, stacklevel=3)
    private = {
        "images": list(dataset["images"]),
        "categories": list(dataset["categories"]),
        "annotations": anns,
    }
    return _index(private), notes


def _column(results: Sequence[Mapping], key: str) -> list:
    try:
        return [r[key] for r in results]
    except (KeyError, TypeError):
        bad = next(i for i, r in enumerate(results) if not isinstance(r, Mapping) or key not in r)
        raise ValueError(f"detection {bad} has no {key!r} (COCO results format)") from None


def _number_column(results: Sequence[Mapping], key: str) -> list:
    """``key`` of every detection; ValueError for strings, booleans and other non-numbers
    (numpy would silently turn "0.9" into 0.9)."""
    values = _column(results, key)
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"detection {i} has {key} {value!r} ({type(value).__name__}); "
                             f"it must be a number")
    return values


def _int_column(results: Sequence[Mapping], key: str) -> list[int]:
    """``key`` of every detection as Python ints; ValueError for non-integer values."""
    values = np.asarray(_column(results, key))
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"detection {key!r} values must be integers, got dtype {values.dtype}")
    return values.astype(np.int64).tolist()


def _box_array(results: Sequence[Mapping]) -> np.ndarray:
    """Detections' ``bbox`` values as float64 [N, 4]; ValueError for anything else."""
    if not results:
        return np.zeros((0, 4), dtype=np.float64)
    try:
        boxes = np.asarray(_column(results, "bbox"), dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"detection boxes must be [x, y, w, h] numbers: {err}") from None
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"detection boxes must be [x, y, w, h]; got array shape {boxes.shape}")
    return boxes


def prepare_detections(
    gt: COCO, results: Sequence[Mapping], img_ids: Sequence[int]
) -> tuple[COCO, list[str]]:
    """Validate COCO-format detections and index them as a COCO object (the ``loadRes`` job).

    Each detection gets ``area`` = w * h, ``iscrowd`` = 0 and ``id`` = position + 1, exactly as
    ``COCO.loadRes`` does for boxes, but into new dicts, and an empty list is allowed.

    Raises:
        ValueError: missing keys, malformed or non-finite boxes/scores, negative sizes, image ids
            not in the ground truth, category ids not in the ground truth's categories.
    """
    image_ids = _int_column(results, "image_id")
    cat_ids = _int_column(results, "category_id")
    scores = np.asarray(_number_column(results, "score"), dtype=np.float64)
    boxes = _box_array(results)
    bad = ~np.isfinite(boxes).all(axis=1) | ~np.isfinite(scores) | (boxes[:, 2:] < 0).any(axis=1)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} detections have a non-finite box/score or negative width/height "
            f"(first: index {int(np.flatnonzero(bad)[0])})"
        )
    unknown_imgs = set(image_ids) - set(gt.imgs)
    if unknown_imgs:
        raise ValueError(f"detections refer to images not in the ground truth: "
                         f"{sorted(unknown_imgs)[:5]} ({len(unknown_imgs)} ids)")
    unknown_cats = set(cat_ids) - set(gt.cats)
    if unknown_cats:
        raise ValueError(
            f"detections use category ids {sorted(unknown_cats)[:5]} that the ground truth does "
            f"not define ({sorted(gt.cats)[:10]}...); map labels with detections_to_coco_results"
        )
    wanted = set(img_ids)
    keep = [i for i, image_id in enumerate(image_ids) if image_id in wanted]
    notes = []
    if len(keep) != len(image_ids):
        notes.append(f"{len(image_ids) - len(keep)} detections on images outside img_ids ignored")
        warnings.warn(notes[-1], EvaluationWarning, stacklevel=3)
    box_list = boxes.tolist()
    score_list = scores.tolist()
    anns = [
        {
            "id": n + 1,
            "image_id": image_ids[i],
            "category_id": cat_ids[i],
            "bbox": box_list[i],
            "score": score_list[i],
            "area": box_list[i][2] * box_list[i][3],
            "iscrowd": 0,
        }
        for n, i in enumerate(keep)
    ]
    dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"],
               "annotations": anns}
    return _index(dataset), notes
