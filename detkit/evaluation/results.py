"""Model outputs -> COCO results (original category ids, original image pixels), and DDP gather.

Model outputs follow the torchvision convention: per image ``{"boxes": [D, 4] xyxy in the input
tensor's pixels, "scores": [D], "labels": [D] int64 in 1..K}``. The dataset target of the same
image carries ``image_id``, ``img_scale`` (transformed = original * img_scale; letterbox pads
right/bottom only) and optionally ``orig_size`` (h, w). A COCO result is
``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` in the original image's pixels,
with the dataset's own category id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from pycocotools.coco import COCO


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _scalar(value: Any) -> float:
    return float(_numpy(value).reshape(-1)[0])


def label_to_category_from_coco(coco_gt: COCO | Mapping) -> dict[int, int]:
    """Contiguous label -> original category id: label k (1..K) is the k-th smallest id.

    This is the convention ``detkit.data`` uses to turn category ids into labels 1..K; a dataset
    with another mapping passes its own dict to :func:`detections_to_coco_results`.
    """
    dataset = coco_gt.dataset if isinstance(coco_gt, COCO) else coco_gt
    cat_ids = sorted(int(cat["id"]) for cat in dataset["categories"])
    return {label: cat_id for label, cat_id in enumerate(cat_ids, start=1)}


def _category_lookup(label_to_category: Mapping[int, int] | Sequence[int]) -> dict[int, int]:
    if isinstance(label_to_category, Mapping):
        return {int(k): int(v) for k, v in label_to_category.items()}
    return {label: int(cat) for label, cat in enumerate(label_to_category, start=1)}


def detections_to_coco_results(
    outputs: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    label_to_category: Mapping[int, int] | Sequence[int],
    score_threshold: float = 0.0,
) -> list[dict]:
    """Turn per-image model outputs into COCO results in original image coordinates.

    Boxes are divided by the target's ``img_scale`` (default 1.0), clipped to ``orig_size``
    (h, w) when the target has it (letterbox padding lies outside the original image), then
    converted from xyxy to xywh.

    Args:
        outputs: per image ``boxes`` [D, 4] xyxy, ``scores`` [D], ``labels`` [D] in 1..K
            (tensors or arrays).
        targets: per image ``image_id`` and optional ``img_scale``, ``orig_size``; same order.
        label_to_category: {label: category id}, or a sequence whose item k-1 is label k's id.
        score_threshold: detections with a lower score are left out.

    Returns:
        A new list of result dicts (Python ints/floats, JSON-serialisable).

    Raises:
        ValueError: length mismatch, bad shapes, a label missing from the mapping, or a
            non-positive ``img_scale``.
    """
    if len(outputs) != len(targets):
        raise ValueError(f"{len(outputs)} outputs but {len(targets)} targets")
    lookup = _category_lookup(label_to_category)
    results: list[dict] = []
    for output, target in zip(outputs, targets, strict=True):
        boxes = _numpy(output["boxes"]).astype(np.float64).reshape(-1, 4)
        scores = _numpy(output["scores"]).astype(np.float64).reshape(-1)
        labels = _numpy(output["labels"]).astype(np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"boxes/scores/labels lengths differ: {len(boxes)}, {len(scores)}, {len(labels)}"
            )
        missing = sorted(set(labels.tolist()) - set(lookup))
        if missing:
            raise ValueError(f"labels {missing} have no category id in label_to_category")
        scale = _scalar(target.get("img_scale", 1.0))
        if not scale > 0:
            raise ValueError(f"img_scale must be > 0, got {scale}")
        boxes = boxes / scale
        if target.get("orig_size") is not None:
            height, width = (float(v) for v in _numpy(target["orig_size"]).reshape(-1)[:2])
            boxes = np.clip(boxes, 0.0, [width, height, width, height])
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        image_id = int(_scalar(target["image_id"]))
        keep = scores >= score_threshold
        results.extend(
            {"image_id": image_id, "category_id": lookup[label], "bbox": box, "score": score}
            for box, score, label in zip(
                xywh[keep].tolist(), scores[keep].tolist(), labels[keep].tolist(), strict=True
            )
        )
    return results


def save_results_json(results: Sequence[Mapping], path: str | os.PathLike) -> Path:
    """Write COCO results (e.g. ``detections.json``) for the COCO API or a leaderboard."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(results)))
    return path


def load_results_json(results: str | os.PathLike | Sequence[Mapping]) -> list[dict]:
    """COCO results from a JSON file (a list of detections, as written by
    :func:`save_results_json` or any COCO tool); a sequence is returned as a list unchanged.

    Raises FileNotFoundError for a missing file, ValueError for a file that is not a JSON list.
    """
    if not isinstance(results, (str, os.PathLike)):
        return list(results)
    path = Path(results)
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if isinstance(data, Mapping) and "annotations" in data:
        raise ValueError(f"{path} looks like a COCO ground-truth file (it has 'annotations'); "
                         f"a results file is a JSON list of detections")
    if not isinstance(data, list):
        raise ValueError(f"{path}: a COCO results file is a JSON list of detections, got "
                         f"{type(data).__name__}")
    return data


def merge_rank_results(per_rank: Sequence[Sequence[Mapping]]) -> list[dict]:
    """Concatenate per-rank result lists, keeping each image's detections from one rank only.

    ``DistributedSampler`` pads the dataset by repeating images, so an image can be evaluated on
    two ranks; its detections would otherwise count twice (the copies become false positives).
    The first rank (lowest index) that reports an image wins.
    """
    owner: dict[int, int] = {}
    merged: list[dict] = []
    for rank, results in enumerate(per_rank):
        for result in results:
            image_id = int(result["image_id"])
            if owner.setdefault(image_id, rank) == rank:
                merged.append(dict(result))
    return merged


def all_gather_results(results: Sequence[Mapping]) -> list[dict]:
    """Gather COCO results from every DDP rank (``all_gather_object``); identity without DDP.

    Every rank gets the merged list (see :func:`merge_rank_results` for duplicate images).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [dict(r) for r in results]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, [dict(r) for r in results])
    return merge_rank_results(gathered)
