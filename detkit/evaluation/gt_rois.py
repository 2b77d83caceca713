"""Second-stage check of a two-stage detector: does the R-CNN recognise the objects?

Proposal recall (:mod:`detkit.evaluation.proposals`) tells whether an object reaches the
R-CNN; this module tells what the R-CNN makes of it when it does. Every ground-truth box is
fed to the R-CNN head as a RoI, exactly as a perfect proposal would be, and the softmax of
its class logits is read: per class, the mean probability of the true class, the mean
probability of background (column 0), and the share of boxes whose highest probability is
the true class. A class with proposal recall above 0 but p(true) near 0 and p(background)
near 1 fails in the second stage (BCCD platelets: the R-CNN calls their exact boxes
background), which more proposals cannot fix.

Models: anything with ``roi_class_logits(images, boxes_per_image) -> Tensor[R, K + 1]``
(:class:`detkit.models.detectors.thundernet.ThunderNet`); :func:`has_roi_classifier` tells.
``tools/test.py`` prints the table after the proposal recall and writes it (with
:func:`detkit.evaluation.proposals.write_recall`, a plain JSON writer) to
``gt_roi_scores.json``.
Boxes are xyxy; they are scaled by the letterbox factor into the input tensor's pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["format_gt_roi_scores", "gt_roi_scores", "has_roi_classifier"]


def has_roi_classifier(model: nn.Module) -> bool:
    """Whether ``model`` can classify given boxes (``roi_class_logits`` and ``transform``)."""
    return hasattr(model, "roi_class_logits") and hasattr(model, "transform")


def _entry(sums: np.ndarray) -> dict[str, Any]:
    """``[count, sum p(true), sum p(background), correct]`` -> the reported means."""
    count = int(sums[0])
    if count == 0:
        return {"boxes": 0, "p_true": None, "p_background": None, "top1": None}
    return {"boxes": count, "p_true": float(sums[1] / count),
            "p_background": float(sums[2] / count), "top1": float(sums[3] / count)}


@torch.no_grad()
def gt_roi_scores(model: nn.Module, dataset: Any, size: int,
                  device: torch.device | str = "cpu") -> dict[str, Any]:
    """R-CNN class probabilities of every ground-truth box of ``dataset`` fed as a RoI.

    ``dataset``: a ``CocoDetection`` built with ``keep_raw`` (uint8 HxWx3 images, boxes xyxy
    in original pixels, labels 1..K). Images are letterboxed to ``size`` as at test time.
    Returns ``{"by_class": {name: entry}, "all": entry}`` with entry ``{"boxes", "p_true",
    "p_background", "top1"}`` (means over the class's boxes; None without boxes).
    """
    from detkit.engine.inference import letterbox_image

    if not has_roi_classifier(model):
        raise ValueError(f"{type(model).__name__} has no roi_class_logits (not two-stage)")
    model.eval()
    names = list(getattr(dataset, "class_names", []))
    sums: dict[int, np.ndarray] = {}
    for index in range(len(dataset)):
        image, target = dataset[index]
        boxes = torch.as_tensor(np.asarray(target["boxes"], np.float32)).reshape(-1, 4)
        if boxes.shape[0] == 0:
            continue
        tensor, scale = letterbox_image(image, size)
        logits = model.roi_class_logits([tensor.to(device)], [(boxes * scale).to(device)])
        probs = logits.float().softmax(dim=1).cpu()
        labels = torch.as_tensor(np.asarray(target["labels"]), dtype=torch.int64)
        top = probs.argmax(dim=1)
        for k in range(labels.shape[0]):
            label = int(labels[k])
            row = sums.setdefault(label, np.zeros(4))
            row += (1.0, float(probs[k, label]), float(probs[k, 0]), float(top[k] == label))
    by_class = {}
    for label in sorted(sums):
        name = names[label - 1] if 0 < label <= len(names) else str(label)
        by_class[name] = _entry(sums[label])
    total = sum(sums.values(), np.zeros(4))
    return {"by_class": by_class, "all": _entry(total)}


def format_gt_roi_scores(table: Mapping[str, Any]) -> str:
    """One printable line: per class p(true), p(background) and top-1 share."""
    def cell(name: str, e: Mapping[str, Any]) -> str:
        if e["boxes"] == 0:
            return f"{name} n/a"
        return (f"{name} p(true) {e['p_true']:.3f}, p(background) {e['p_background']:.3f}, "
                f"top-1 {e['top1']:.3f} ({e['boxes']} boxes)")

    cells = "; ".join(cell(name, e) for name, e in table["by_class"].items())
    return f"R-CNN on the ground-truth boxes as RoIs: {cells}"
