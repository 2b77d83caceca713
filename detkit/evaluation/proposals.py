"""Proposal recall of a two-stage detector: do the objects reach the second stage?

A ground-truth object is *found* when one of the image's test-time proposals (the RPN's
``post_nms_top_n`` for testing, 200 in ThunderNet-lite) overlaps it with IoU >= ``iou``.
Recall is reported overall, by COCO size bucket of the object's ``area`` (small < 32^2 <=
medium < 96^2 <= large, in original pixels) and per class. An object the RPN never proposes
cannot be detected by the R-CNN however good it is, so a class with proposal recall 0 has AP 0
for a reason the AP table alone does not show (BCCD platelets with the paper's 32-512 px
anchors at 320 input).

Models: anything with ``transform``, ``feature_map`` and ``rpn`` attributes
(:class:`detkit.models.detectors.thundernet.ThunderNet`); :func:`has_proposals` tells.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from detkit.evaluation.coco import COCO_AREA_RANGES
from detkit.ops.boxes import box_iou

__all__ = ["format_recall", "has_proposals", "proposal_recall", "recall_table", "rpn_proposals",
           "write_recall"]

_BUCKETS = [(name, lo, hi) for name, lo, hi in COCO_AREA_RANGES if name != "all"]


def has_proposals(model: nn.Module) -> bool:
    """Whether ``model`` is a two-stage detector this module can query."""
    return all(hasattr(model, a) for a in ("transform", "feature_map", "rpn"))


@torch.no_grad()
def rpn_proposals(model: nn.Module, images: Sequence[Tensor]) -> list[Tensor]:
    """Test-time proposals per image, ``[P_i, 4]`` xyxy in the input tensors' pixels."""
    if not has_proposals(model):
        raise ValueError(f"{type(model).__name__} has no RPN (needs transform, feature_map, rpn)")
    batch = model.transform(list(images))
    features = model.feature_map(batch.tensor)
    return [p.detach() for p in model.rpn(features, batch.image_sizes, None).proposals]


def _bucket(area: float) -> str:
    for name, lo, hi in _BUCKETS:
        if lo <= area < hi:
            return name
    return _BUCKETS[-1][0]


def proposal_recall(
    model: nn.Module,
    dataset: Any,
    size: int,
    iou: float = 0.5,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Count found objects over ``dataset`` (a ``CocoDetection`` built with ``keep_raw``).

    Images are letterboxed to ``size`` as at test time; proposals are mapped back to original
    pixels (divided by the letterbox scale) and compared with the original boxes. Crowd /
    ignore regions are not counted. Returns :func:`recall_table` of the counts.
    """
    from detkit.engine.inference import letterbox_image

    model.eval()
    names = list(getattr(dataset, "class_names", []))
    counts: dict[tuple[str, str], list[int]] = {}
    total_proposals = 0
    for index in range(len(dataset)):
        image, target = dataset[index]
        tensor, scale = letterbox_image(image, size)
        (props,) = rpn_proposals(model, [tensor.to(device)])
        total_proposals += int(props.shape[0])
        gt = torch.as_tensor(np.asarray(target["boxes"], np.float32)).reshape(-1, 4)
        if gt.numel() == 0:
            continue
        props = props.cpu().float() / scale
        if props.numel():
            found = (box_iou(gt, props).max(dim=1).values >= iou).tolist()
        else:
            found = [False] * gt.shape[0]
        areas = np.asarray(target["area"], np.float64)
        for k, hit in enumerate(found):
            label = int(target["labels"][k])
            name = names[label - 1] if 0 < label <= len(names) else str(label)
            for key in (("size", _bucket(float(areas[k]))), ("class", name), ("all", "all")):
                c = counts.setdefault(key, [0, 0])
                c[0] += int(hit)
                c[1] += 1
    return recall_table(counts, iou, total_proposals / max(len(dataset), 1))


def recall_table(counts: Mapping[tuple[str, str], Sequence[int]], iou: float,
                 proposals_per_image: float) -> dict[str, Any]:
    """``{"iou", "proposals_per_image", "all", "by_size", "by_class"}``; each entry
    ``{"found", "total", "recall"}`` (recall None for a bucket without objects).

    ``counts``: (kind, name) -> [found, total] with kind "all" | "size" | "class"; tables of
    several folds pool by adding their counts before this call.
    """
    def entry(found: int, total: int) -> dict[str, Any]:
        return {"found": int(found), "total": int(total),
                "recall": (found / total) if total else None}

    out: dict[str, Any] = {"iou": iou, "proposals_per_image": proposals_per_image,
                           "all": entry(*counts.get(("all", "all"), (0, 0))),
                           "by_size": {}, "by_class": {}}
    for name, _, _ in _BUCKETS:
        out["by_size"][name] = entry(*counts.get(("size", name), (0, 0)))
    for (kind, name), (found, total) in sorted(counts.items()):
        if kind == "class":
            out["by_class"][name] = entry(found, total)
    return out


def _cell(e: Mapping[str, Any]) -> str:
    return "n/a" if e["recall"] is None else f"{e['recall']:.3f} ({e['found']}/{e['total']})"


def format_recall(table: Mapping[str, Any]) -> str:
    """Two printable lines: recall overall, by size and by class."""
    sizes = ", ".join(f"{k} {_cell(v)}" for k, v in table["by_size"].items())
    classes = ", ".join(f"{k} {_cell(v)}" for k, v in table["by_class"].items())
    return (f"proposal recall @IoU {table['iou']:g} ({table['proposals_per_image']:.0f} "
            f"proposals/image): all {_cell(table['all'])}; {sizes}\n"
            f"proposal recall by class: {classes}")


def write_recall(path: Any, table: Mapping[str, Any]) -> Any:
    """Write ``table`` as JSON to ``path`` (folders created); returns the path."""
    import json
    from pathlib import Path

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=1) + "\n")
    return out
