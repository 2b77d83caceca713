"""The detector protocol: what the engine may ask of a detector, as named methods.

Every detector follows torchvision's call convention (``model(images, targets)`` -> dict of
scalar losses in train mode, ``model(images)`` -> one ``{boxes, scores, labels}`` dict per
image in eval mode). Beyond that, the engine needs two things, and asks for them only
through the methods of :class:`DetkitDetector`:

* its final post-processing (score threshold, NMS kind and IoU, max detections), read by
  :meth:`~DetkitDetector.postprocess_settings` and replaced by
  :meth:`~DetkitDetector.set_postprocess_settings` (test-time options, export, pyramids);
* its distillation logits (Hinton et al. 2015): :meth:`~DetkitDetector.distillation_logits`
  of a family named by :attr:`~DetkitDetector.distillation_kind` ("dense": per-anchor class
  logits of the same anchors; "roi": R-CNN logits of the ground-truth boxes). Student and
  teacher must be of the same family.

torchvision's detection models train unchanged (their call convention is the same); for
post-processing they are seen through :class:`TorchvisionAdapter`. :func:`as_detector`
returns the protocol view of any supported model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from detkit.models.postprocess import PostprocessConfig

__all__ = ["DISTILLATION_KINDS", "DetkitDetector", "TorchvisionAdapter", "as_detector",
           "replace_postprocess"]

DISTILLATION_KINDS = ("dense", "roi")


class DetkitDetector(nn.Module):
    """Base class of detkit's detectors (see the module docstring); adds no parameters."""

    distillation_kind: str = ""

    def postprocess_settings(self) -> PostprocessConfig:
        """The detector's current final post-processing."""
        raise NotImplementedError(f"{type(self).__name__} must implement postprocess_settings")

    def set_postprocess_settings(self, config: PostprocessConfig) -> None:
        """Use ``config`` for the final post-processing from now on."""
        raise NotImplementedError(f"{type(self).__name__} must implement "
                                  "set_postprocess_settings")

    def distillation_logits(self, images: Sequence[Tensor],
                            targets: Sequence[Mapping[str, Tensor]]) -> Tensor | list[Tensor]:
        """Class logits to distil, ``[..., C]`` (a tensor or per-level tensors), computed in
        the module's current mode; which rows depends on :attr:`distillation_kind`."""
        raise NotImplementedError(f"{type(self).__name__} must implement distillation_logits")


class TorchvisionAdapter:
    """Post-processing of a torchvision Faster R-CNN / SSD through the detector protocol.

    torchvision applies a plain per-class NMS; its score threshold, NMS IoU and detection
    limit (``score_thresh``, ``nms_thresh``, ``detections_per_img``; Faster R-CNN keeps them
    on ``roi_heads``) map to :class:`PostprocessConfig`. Other NMS kinds raise ValueError.
    """

    distillation_kind = ""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.owner = getattr(model, "roi_heads", model)  # Faster R-CNN: roi_heads; SSD: itself

    def postprocess_settings(self) -> PostprocessConfig:
        """The torchvision model's thresholds as a :class:`PostprocessConfig`."""
        o = self.owner
        return PostprocessConfig(score_threshold=float(o.score_thresh),
                                 topk_candidates=int(getattr(o, "topk_candidates", 1000)),
                                 nms="nms", nms_threshold=float(o.nms_thresh),
                                 max_detections=int(o.detections_per_img))

    def set_postprocess_settings(self, config: PostprocessConfig) -> None:
        """Write ``config``'s thresholds into the torchvision model (plain NMS only)."""
        if config.nms != "nms":
            raise ValueError(f"torchvision detectors apply plain NMS; test.nms={config.nms!r} "
                             "is not available for them")
        if config.class_agnostic_nms:
            raise ValueError("torchvision detectors apply per-class NMS; class_agnostic_nms is "
                             "not available for them")
        o = self.owner
        o.score_thresh, o.nms_thresh = config.score_threshold, config.nms_threshold
        o.detections_per_img = config.max_detections

    def distillation_logits(self, images: Sequence[Tensor],
                            targets: Sequence[Mapping[str, Tensor]]) -> Tensor:
        """Not available: torchvision models cannot be distilled by detkit."""
        raise ValueError(f"{type(self.model).__name__} (torchvision) has no distillation "
                         "logits; distil between detkit detectors of the same family")


def as_detector(model: nn.Module) -> DetkitDetector | TorchvisionAdapter:
    """The protocol view of ``model`` (DDP / EMA wrappers are seen through by the caller)."""
    if isinstance(model, DetkitDetector):
        return model
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.models.detection.ssd import SSD

    if isinstance(model, GeneralizedRCNN | SSD):
        return TorchvisionAdapter(model)
    raise ValueError(f"{type(model).__name__} is neither a detkit detector nor a supported "
                     f"torchvision detector, so it exposes no PostprocessConfig")


def replace_postprocess(model: nn.Module, **changes: Any) -> None:
    """Apply ``dataclasses.replace(settings, **changes)`` to ``model``'s post-processing."""
    view = as_detector(model)
    view.set_postprocess_settings(dataclasses.replace(view.postprocess_settings(), **changes))
