"""Classification losses: focal loss, label-smoothed cross-entropy, distillation.

Box regression losses (IoU / GIoU / DIoU / CIoU) live in :mod:`detkit.ops`.
"""

from detkit.losses.distillation import distillation_loss
from detkit.losses.focal import sigmoid_focal_loss
from detkit.losses.label_smoothing import label_smoothing_cross_entropy

__all__ = ["distillation_loss", "sigmoid_focal_loss", "label_smoothing_cross_entropy"]
