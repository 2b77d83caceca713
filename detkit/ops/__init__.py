"""Box operations, IoU-family losses and the NMS family.

Self-contained: ``from detkit.ops import ciou_loss, diou_nms`` imports nothing
else of detkit, so these pieces drop into any PyTorch detector.
"""

from detkit.ops.boxes import (
    aligned_box_iou,
    aligned_complete_box_iou,
    aligned_distance_box_iou,
    aligned_generalized_box_iou,
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    complete_box_iou,
    distance_box_iou,
    generalized_box_iou,
    remove_small_boxes,
)
from detkit.ops.iou_loss import IoULoss, box_loss_fn, ciou_loss, diou_loss, giou_loss, iou_loss
from detkit.ops.nms import (
    NMS_KINDS,
    batched_diou_nms,
    batched_nms,
    batched_nms_by_kind,
    cluster_nms,
    diou_nms,
    nms,
    soft_nms,
)

__all__ = [
    "aligned_box_iou",
    "aligned_complete_box_iou",
    "aligned_distance_box_iou",
    "aligned_generalized_box_iou",
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes_to_image",
    "complete_box_iou",
    "distance_box_iou",
    "generalized_box_iou",
    "remove_small_boxes",
    "IoULoss",
    "box_loss_fn",
    "ciou_loss",
    "diou_loss",
    "giou_loss",
    "iou_loss",
    "NMS_KINDS",
    "batched_diou_nms",
    "batched_nms",
    "batched_nms_by_kind",
    "cluster_nms",
    "diou_nms",
    "nms",
    "soft_nms",
]
