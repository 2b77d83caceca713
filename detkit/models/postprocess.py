"""From per-anchor (or per-RoI) scores and boxes to one image's final detections.

The steps, per image (torchvision RetinaNet's order):

1. per level: drop scores ``<= score_threshold``, keep the ``topk_candidates``
   highest (score, anchor, class) triples;
2. clip the candidate boxes to the image (``(h, w)``: x to [0, w], y to [0, h]);
   candidates with a NaN / inf box or score (a model gone non-finite) are
   dropped here with a ``NonFiniteOutputWarning``, for every NMS kind and callable;
3. per-class NMS (or, with ``class_agnostic_nms``, one NMS over all classes, so that an
   object keeps one box of one class) of the chosen kind through
   :func:`detkit.ops.nms.batched_nms_by_kind` ("nms" | "diou_nms" |
   "soft_nms" | "cluster_nms"), or a callable
   ``(boxes, scores, labels, iou_threshold) -> (keep, kept_scores)``;
4. keep the ``max_detections`` best, sorted by decreasing score.

Scores are probabilities ``[N, K]`` for classes 1..K (column ``k`` is label
``k + 1``; a softmax head drops its background column before calling). Boxes
are xyxy, either class-agnostic ``[N, 4]`` or class-specific ``[N, K, 4]``.
The result is the contract's ``dict(boxes [D, 4], scores [D], labels [D] int64)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from detkit.ops.boxes import clip_boxes_to_image
from detkit.ops.nms import NMS_KINDS, batched_nms_by_kind, warm_up_kernels

__all__ = [
    "NmsFn",
    "NonFiniteOutputWarning",
    "PostprocessConfig",
    "drop_non_finite",
    "postprocess_image",
    "select_topk",
    "run_nms",
]

NmsFn = Callable[[Tensor, Tensor, Tensor, float], tuple[Tensor, Tensor]]


class NonFiniteOutputWarning(RuntimeWarning):
    """A model produced NaN / inf boxes or scores; those detections were dropped."""


def drop_non_finite(boxes: Tensor, scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Keep the candidates whose 4 coordinates and score are finite; warn when any were not."""
    if torch.jit.is_tracing():
        return boxes, scores, labels
    finite = torch.isfinite(boxes).all(1) & torch.isfinite(scores)
    if bool(finite.all()):
        return boxes, scores, labels
    warnings.warn(
        "post-processing dropped candidate detections with a NaN or inf box or score: "
        "the model output is not finite (check the checkpoint's weights)",
        NonFiniteOutputWarning,
        stacklevel=3,
    )
    return boxes[finite], scores[finite], labels[finite]


@dataclass(frozen=True)
class PostprocessConfig:
    """Detection post-processing settings.

    Attributes:
        score_threshold: candidates need a score above this (0.05).
        topk_candidates: candidates kept per level before NMS (1000).
        nms: "nms" | "diou_nms" | "soft_nms" | "cluster_nms" or a callable :data:`NmsFn`.
        nms_threshold: the IoU (or DIoU) threshold of the NMS (0.5).
        max_detections: detections kept per image after NMS (100).
        nms_kwargs: extra arguments of ``batched_nms_by_kind`` (``beta``, ``sigma`` ...).
        class_agnostic_nms: suppress overlapping boxes whatever their classes (False: only
            boxes of the same class suppress each other).
    """

    score_threshold: float = 0.05
    topk_candidates: int = 1000
    nms: str | NmsFn = "nms"
    nms_threshold: float = 0.5
    max_detections: int = 100
    nms_kwargs: Mapping[str, float | str] = field(default_factory=dict)
    class_agnostic_nms: bool = False

    def __post_init__(self) -> None:
        """Validate the settings; ``nms_kwargs`` is copied into a plain dict."""
        object.__setattr__(self, "nms_kwargs", dict(self.nms_kwargs))
        if isinstance(self.nms, str) and self.nms not in NMS_KINDS:
            raise ValueError(f"unknown nms {self.nms!r}; valid: {', '.join(NMS_KINDS)}")
        if self.topk_candidates < 1 or self.max_detections < 1:
            raise ValueError("topk_candidates and max_detections must be >= 1")
        if self.nms in ("diou_nms", "cluster_nms"):
            # load the compiled kernel now, once per process, not on the first image
            warm_up_kernels()


def _topk_count(values: Tensor, k: int) -> int:
    """``min(k, len(values))``; a traced tensor while exporting so the graph stays dynamic."""
    if torch.jit.is_tracing():
        length = torch._shape_as_tensor(values)[:1].to(torch.int64)
        return torch.min(torch.cat([torch.tensor([k], dtype=torch.int64), length]))  # type: ignore[return-value]
    return min(k, int(values.shape[0]))


def select_topk(scores: Tensor, score_threshold: float, topk: int) -> tuple[Tensor, Tensor, Tensor]:
    """Best (row, class) pairs of ``scores`` [N, K] above ``score_threshold``, at most ``topk``.

    Returns ``(rows [M], labels [M] int64 in 1..K, scores [M])`` by decreasing score.
    """
    num_classes = scores.shape[1]
    flat = scores.flatten()
    keep = torch.nonzero(flat > score_threshold).flatten()
    kept_scores = flat[keep]
    top_scores, order = kept_scores.topk(_topk_count(kept_scores, int(topk)))
    flat_idx = keep[order]
    rows = torch.div(flat_idx, num_classes, rounding_mode="floor")
    labels = flat_idx % num_classes + 1
    return rows, labels, top_scores


def run_nms(
    boxes: Tensor, scores: Tensor, labels: Tensor, config: PostprocessConfig
) -> tuple[Tensor, Tensor]:
    """Per-class (or, with ``config.class_agnostic_nms``, all-class) NMS of ``config.nms``
    -> (kept indices, kept scores) by decreasing score."""
    groups = torch.zeros_like(labels) if config.class_agnostic_nms else labels
    if callable(config.nms):
        keep, kept = config.nms(boxes, scores, groups, config.nms_threshold)
    else:
        keep, kept = batched_nms_by_kind(
            boxes,
            scores,
            groups,
            kind=config.nms,
            iou_threshold=config.nms_threshold,
            **dict(config.nms_kwargs),
        )
    if torch.jit.is_tracing():
        # batched_nms_by_kind already sorts; the stable re-sort has no ONNX export
        return keep, kept
    order = torch.argsort(kept, descending=True, stable=True)
    return keep[order], kept[order]


def postprocess_image(
    level_scores: Sequence[Tensor],
    level_boxes: Sequence[Tensor],
    image_size: tuple[int, int],
    config: PostprocessConfig,
) -> dict[str, Tensor]:
    """Final detections of one image (see the module docstring).

    Args:
        level_scores: per level, probabilities ``[N_l, K]``.
        level_boxes: per level, decoded xyxy boxes ``[N_l, 4]`` or ``[N_l, K, 4]``.
        image_size: (h, w) to clip to.
        config: the :class:`PostprocessConfig`.

    Returns: ``dict(boxes [D, 4], scores [D], labels [D] int64)``, D <= max_detections.
    """
    all_boxes, all_scores, all_labels = [], [], []
    for scores, boxes in zip(level_scores, level_boxes, strict=True):
        rows, labels, top = select_topk(scores, config.score_threshold, config.topk_candidates)
        picked = boxes[rows] if boxes.dim() == 2 else boxes[rows, labels - 1]
        all_boxes.append(picked)
        all_scores.append(top)
        all_labels.append(labels)
    boxes = clip_boxes_to_image(torch.cat(all_boxes), image_size)
    scores = torch.cat(all_scores)
    labels = torch.cat(all_labels)
    boxes, scores, labels = drop_non_finite(boxes, scores, labels)
    keep, kept_scores = run_nms(boxes, scores, labels, config)
    keep = keep[: config.max_detections]
    return {
        "boxes": boxes[keep],
        "scores": kept_scores[: config.max_detections],
        "labels": labels[keep].to(torch.int64),
    }
