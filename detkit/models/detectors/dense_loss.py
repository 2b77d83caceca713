"""Training losses of the dense detector: anchor targets, focal loss and box regression.

Per image, the matcher labels each anchor positive (gt index), negative or
ignored (crowd ``ignore_boxes``; SNIP ``invalid_boxes``, see
:mod:`detkit.models.snip`). Classification uses the sigmoid focal loss (Lin et al., ICCV 2017)
summed over classes, on every non-ignored anchor, or, with ``sampling="ohem"``,
on the positives and the ``neg_pos_ratio`` x hardest negatives (SSD / SSH).
Box regression runs on the positives with
:func:`detkit.models.box_coder.box_regression_loss` (smooth-L1 on deltas or an
IoU-family loss on decoded boxes). A ground truth's ``weights`` entry (e.g. a
mixup ratio) multiplies both losses of its positive anchors. Both sums are
divided by the number of positive anchors in the batch (at least 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from detkit.losses import sigmoid_focal_loss
from detkit.models.box_coder import BOX_LOSSES, BoxCoder, box_regression_loss
from detkit.models.matching import Matcher
from detkit.models.sampling import hard_negative_mining
from detkit.models.targets import validate_targets

__all__ = ["SAMPLINGS", "DenseLoss"]

SAMPLINGS = ("none", "ohem")


@dataclass
class DenseLoss:
    """Loss computation of the dense detector (see the module docstring).

    Attributes:
        num_classes: K.
        matcher: anchor assignment.
        coder: the box coder of the head's deltas.
        box_loss: "smooth_l1" | "iou" | "giou" | "diou" | "ciou" or a callable on decoded boxes.
        box_loss_weight: multiplier of the box loss.
        focal_alpha, focal_gamma: focal-loss parameters (0.25, 2.0).
        sampling: "none" (all non-ignored anchors) or "ohem".
        neg_pos_ratio: negatives per positive with OHEM (3).
    """

    num_classes: int
    matcher: Matcher
    coder: BoxCoder
    box_loss: str | Callable[[Tensor, Tensor], Tensor] = "giou"
    box_loss_weight: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    sampling: str = "none"
    neg_pos_ratio: float = 3.0

    def __post_init__(self) -> None:
        """Validate the closed choices."""
        if not callable(self.box_loss) and self.box_loss not in BOX_LOSSES:
            raise ValueError(f"unknown box_loss {self.box_loss!r}; valid: {', '.join(BOX_LOSSES)}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {self.sampling!r}; valid: {', '.join(SAMPLINGS)}")

    def __call__(
        self,
        cls_logits: Tensor,
        box_deltas: Tensor,
        anchors: Tensor,
        targets: Sequence[Mapping[str, Tensor]],
    ) -> dict[str, Tensor]:
        """``{"loss_cls", "loss_box"}`` for logits [B, A, K], deltas [B, A, 4], anchors [A, 4]."""
        targets = validate_targets(targets, self.num_classes)
        cls_sum = cls_logits.sum() * 0.0
        box_sum = box_deltas.sum() * 0.0
        num_pos = 0
        for i, target in enumerate(targets):
            cls_i, box_i, n = self._image_loss(cls_logits[i], box_deltas[i], anchors, target)
            cls_sum = cls_sum + cls_i
            box_sum = box_sum + box_i
            num_pos += n
        norm = float(max(1, num_pos))
        return {"loss_cls": cls_sum / norm, "loss_box": self.box_loss_weight * box_sum / norm}

    def _image_loss(
        self, logits: Tensor, deltas: Tensor, anchors: Tensor, target: Mapping[str, Tensor]
    ) -> tuple[Tensor, Tensor, int]:
        """Summed classification and box losses of one image, and its positive count."""
        gt = target["boxes"].to(anchors)
        labels = target["labels"]
        weights = target.get("weights")
        if weights is None:
            weights = torch.ones(gt.shape[0], device=gt.device)
        matched = self.matcher(anchors, gt, target.get("ignore_boxes"), target.get("invalid_boxes"))
        pos = matched >= 0
        pos_gt = matched[pos]
        cls_target = torch.zeros_like(logits)
        cls_target[pos.nonzero().flatten(), labels[pos_gt] - 1] = 1.0
        anchor_weight = torch.ones(logits.shape[0], device=logits.device, dtype=torch.float32)
        anchor_weight[pos] = weights[pos_gt].to(anchor_weight)
        per_anchor = sigmoid_focal_loss(
            logits, cls_target, alpha=self.focal_alpha, gamma=self.focal_gamma
        ).sum(dim=1)
        per_anchor = per_anchor * anchor_weight
        if self.sampling == "ohem":
            # an image without objects still trains its hardest negatives (as if it
            # had one positive), so background-only images are not silently ignored
            min_neg = int(self.neg_pos_ratio)
            keep_pos, keep_neg = hard_negative_mining(
                per_anchor, matched, self.neg_pos_ratio, min_negatives=min_neg
            )
            selected = keep_pos | keep_neg
        else:
            selected = matched != -2
        cls_loss = per_anchor[selected].sum()
        box_loss = box_regression_loss(
            self.box_loss, deltas[pos], anchors[pos], gt[pos_gt], self.coder, weights[pos_gt]
        ).sum()
        return cls_loss, box_loss, int(pos.sum())
