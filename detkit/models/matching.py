"""Anchor-to-ground-truth matching by IoU, with crowd ignoring and S3FD scale compensation.

The matcher returns, for every anchor, the index of its ground-truth box
(``>= 0``, a positive), :data:`NEGATIVE` (-1) or :data:`IGNORE` (-2). Rules,
applied in this order (boxes xyxy):

1. IoU thresholds: an anchor whose best IoU is ``>= high`` is positive for
   that box; ``< low`` negative; in ``[low, high)`` ignored.
2. Low-quality matches (Faster R-CNN): every ground truth with some IoU > 0
   also claims the anchors whose IoU with it equals its best IoU; such an
   anchor is assigned its own best box (the torchvision/detectron2 rule).
3. S3FD scale compensation (Zhang et al., ICCV 2017, section 3.2), when on:
   stage 1 uses ``stage1_threshold`` (e.g. 0.35) in place of ``high``; then
   ``N = max(1, floor(mean positives per ground truth after stage 1 + 0.5))`` and
   every ground truth with fewer than ``N`` positives sorts the anchors with
   IoU ``> stage2_min_iou`` (0.1) by IoU, takes the top ``N``, and claims those
   of them that are not positive already (positives keep their box). An
   anchor claimed by several such boxes goes to the one it overlaps most.
4. Crowd / difficult regions: a non-positive anchor whose intersection with an
   ``ignore_boxes`` box covers ``>= ignore_threshold`` of the anchor's own area
   (IoF, intersection over foreground) is ignored rather than negative.
5. SNIP invalid ground truth (Singh & Davis, CVPR 2018; :mod:`detkit.models.snip`): boxes
   outside the training scale's valid range are passed as ``invalid_boxes``, not as ground
   truth, so no anchor is positive for them; a non-positive anchor whose IoU with an
   invalid box is ``>= low`` (the IoU from which it would not be a negative of a valid box:
   0.3 in the RPN, as in the paper, 0.5 for R-CNN RoIs, 0.4 in the dense head) is ignored
   rather than negative. IoU, not the IoF of rule 4: an invalid box may be far smaller or
   larger than the anchors, and IoF would ignore every small anchor inside a large object
   while leaving the anchors around a small one as negatives.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from detkit.ops.boxes import box_iou

__all__ = ["IGNORE", "NEGATIVE", "Matcher", "intersection_over_anchor"]

NEGATIVE = -1
IGNORE = -2


def intersection_over_anchor(anchors: Tensor, regions: Tensor) -> Tensor:
    """``Tensor[A, M]``: area(anchor_i ∩ region_j) / area(anchor_i), xyxy boxes."""
    lt = torch.maximum(anchors[:, None, :2], regions[None, :, :2])
    rb = torch.minimum(anchors[:, None, 2:], regions[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area = ((anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])).clamp(min=1e-12)
    return inter / area[:, None]


class Matcher:
    """Assign anchors to ground-truth boxes (see the module docstring for the rules).

    Args:
        high: IoU at or above which an anchor is positive (0.5 for RetinaNet).
        low: IoU below which an anchor is negative (0.4 for RetinaNet); ``low <= high``.
            With scale compensation ``low`` is lowered to ``stage1_threshold`` if above it.
        allow_low_quality_matches: give every box its best-overlapping anchor(s).
        ignore_threshold: IoF with an ignore box at which a non-positive anchor is ignored.
        scale_compensation: S3FD's two-stage matching.
        stage1_threshold: the lowered positive threshold of stage 1 (S3FD: 0.35).
        stage2_min_iou: IoU an anchor needs to be taken in stage 2 (S3FD: 0.1).

    ``matcher(anchors [A, 4], gt_boxes [G, 4], ignore_boxes [M, 4] | None,
    invalid_boxes [V, 4] | None) -> Tensor[A]`` int64 with the gt index, -1 (negative) or
    -2 (ignore).
    """

    def __init__(
        self,
        high: float = 0.5,
        low: float = 0.4,
        allow_low_quality_matches: bool = True,
        ignore_threshold: float = 0.5,
        scale_compensation: bool = False,
        stage1_threshold: float = 0.35,
        stage2_min_iou: float = 0.1,
    ) -> None:
        top = stage1_threshold if scale_compensation else high
        if scale_compensation:
            low = min(low, stage1_threshold)
        if not 0.0 <= low <= top <= 1.0:
            raise ValueError(f"need 0 <= low ({low}) <= positive threshold ({top}) <= 1")
        self.high = float(high)
        self.low = float(low)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)
        self.ignore_threshold = float(ignore_threshold)
        self.scale_compensation = bool(scale_compensation)
        self.stage1_threshold = float(stage1_threshold)
        self.stage2_min_iou = float(stage2_min_iou)

    def __call__(
        self,
        anchors: Tensor,
        gt_boxes: Tensor,
        ignore_boxes: Tensor | None = None,
        invalid_boxes: Tensor | None = None,
    ) -> Tensor:
        """Match ``anchors`` to ``gt_boxes`` (xyxy); see the class docstring."""
        num_anchors = anchors.shape[0]
        matched = torch.full((num_anchors,), NEGATIVE, dtype=torch.int64, device=anchors.device)
        if gt_boxes.numel() > 0:
            matched = self._match(anchors, gt_boxes.to(anchors.dtype))
        if ignore_boxes is not None and ignore_boxes.numel() > 0:
            iof = intersection_over_anchor(anchors, ignore_boxes.to(anchors.dtype))
            crowd = iof.max(dim=1).values >= self.ignore_threshold
            matched = torch.where(crowd & (matched < 0), torch.full_like(matched, IGNORE), matched)
        if invalid_boxes is not None and invalid_boxes.numel() > 0:
            iou = box_iou(invalid_boxes.to(anchors.dtype).reshape(-1, 4), anchors)  # [V, A]
            near = iou.max(dim=0).values >= self.low
            matched = torch.where(near & (matched < 0), torch.full_like(matched, IGNORE), matched)
        return matched

    def _match(self, anchors: Tensor, gt_boxes: Tensor) -> Tensor:
        """Rules 1-3 on a non-empty ``gt_boxes``."""
        iou = box_iou(gt_boxes, anchors)  # [G, A]
        best_iou, best_gt = iou.max(dim=0)
        high = self.stage1_threshold if self.scale_compensation else self.high
        matched = best_gt.clone()
        matched[best_iou < high] = IGNORE
        matched[best_iou < self.low] = NEGATIVE
        if self.allow_low_quality_matches:
            matched = self._low_quality(iou, best_gt, matched)
        if self.scale_compensation:
            matched = self._compensate(iou, matched)
        return matched

    @staticmethod
    def _low_quality(iou: Tensor, best_gt: Tensor, matched: Tensor) -> Tensor:
        """Rule 2: anchors tying a box's best IoU (> 0) become positive for their best box."""
        per_gt_best = iou.max(dim=1, keepdim=True).values  # [G, 1]
        ties = (iou == per_gt_best) & (per_gt_best > 0)
        claimed = ties.any(dim=0)
        return torch.where(claimed, best_gt, matched)

    def _compensate(self, iou: Tensor, matched: Tensor) -> Tensor:
        """Rule 3, S3FD stage 2: top-N anchors for boxes with fewer than N matches."""
        num_gt = iou.shape[0]
        counts = torch.bincount(matched[matched >= 0], minlength=num_gt)
        n = max(1, int(math.floor(counts.float().mean().item() + 0.5)))
        needy = counts < n
        if not bool(needy.any()):
            return matched
        scores = torch.where(iou > self.stage2_min_iou, iou, torch.full_like(iou, -1.0))
        k = min(n, iou.shape[1])
        top_iou, top_idx = scores.topk(k, dim=1)
        take = torch.zeros(iou.shape, dtype=torch.bool, device=iou.device)
        take = take.scatter(1, top_idx, top_iou > 0)
        take = take & needy[:, None] & (matched < 0)[None, :]
        wanted = torch.where(take, iou, torch.full_like(iou, -1.0))
        best_iou, best_gt = wanted.max(dim=0)
        return torch.where(best_iou > 0, best_gt, matched)

    def __repr__(self) -> str:
        """Show the thresholds."""
        return (
            f"Matcher(high={self.high}, low={self.low}, "
            f"allow_low_quality_matches={self.allow_low_quality_matches}, "
            f"ignore_threshold={self.ignore_threshold}, "
            f"scale_compensation={self.scale_compensation}, "
            f"stage1_threshold={self.stage1_threshold}, stage2_min_iou={self.stage2_min_iou})"
        )
