"""ThunderNet-lite: a two-stage detector for CPU budgets (Qin et al., ICCV 2019).

Pipeline (all maps at stride 16 after the backbone)::

    images [0, 1] -> DetectionTransform (ImageNet mean/std, pad to a multiple of 32)
      -> SNet (C4, C5) -> CEM (245 ch) -> compressed RPN (5x5 dw + 1x1 -> 256 ch; 25 anchors)
      -> SAM: CEM * sigmoid(BN(1x1(RPN features)))  (245 ch)
      -> PSRoIAlign 7x7 x 5 ch on the RPN's proposals -> FC 1024 -> classes (K + 1), boxes

Ablation switches of :func:`thundernet_lite`:

* ``use_cem=False``: the 245-channel map is a 1x1 convolution of C4 alone
  (:class:`C4Projection`): no C5 and no global context, the plain "C4" baseline.
* ``use_sam=False``: the R-CNN pools the CEM (or C4 projection) map directly.

The model takes the contract's ``model(images, targets)``: in training it returns
``{"rpn_objectness", "rpn_box", "rcnn_cls", "rcnn_box"}``; in eval a list of
``dict(boxes [D, 4] xyxy, scores [D], labels [D] int64 in 1..K)`` per image, sorted by
decreasing score and clipped to the image. No resizing happens inside the model: detkit's
data pipeline letterboxes to the training size (320x320 for ThunderNet-lite, the paper's
input). :meth:`ThunderNet.roi_class_logits` gives the R-CNN logits of given boxes, for
knowledge distillation.

Cost at 320x320 (SNet49, 80 classes, 200 RoIs, class-agnostic boxes): about 260 M
multiply-accumulates, the paper's 262 M (see ``benchmarks/bench_models.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from detkit.models.acnet import convert_detector
from detkit.models.backbones import build_backbone
from detkit.models.detectors.protocol import DetkitDetector
from detkit.models.heads.rcnn import RCNNHead, RCNNStage
from detkit.models.heads.rpn import (
    THUNDERNET_ANCHOR_SIZES,
    RegionProposalNetwork,
    RPNHead,
    thundernet_anchor_generator,
)
from detkit.models.heads.sam import SpatialAttentionModule
from detkit.models.necks.cem import CEM, init_lateral
from detkit.models.postprocess import PostprocessConfig
from detkit.models.targets import validate_targets
from detkit.models.transform import DetectionTransform

__all__ = ["C4Projection", "ThunderNet", "ThunderNetLite", "thundernet_lite"]


class C4Projection(nn.Module):
    """The no-CEM baseline: ``conv1x1(C4)`` to ``out_channels`` (245), stride 16.

    ``forward(features)`` takes a mapping holding ``"c4"`` [B, C4, H, W] and returns
    ``OrderedDict(p4=[B, out_channels, H, W])``, like :class:`CEM`. The convolution starts
    as CEM's C4 branch does (:func:`detkit.models.necks.cem.init_lateral`), so with CEM's
    zero-started context the two necks give the same map at step 0 and the ablation isolates
    the structure, not the start.
    """

    def __init__(self, c4_channels: int, out_channels: int = 245) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.conv = nn.Conv2d(c4_channels, out_channels, 1)
        init_lateral(self.conv)

    def forward(self, features: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
        """See the class docstring."""
        if "c4" not in features:
            raise KeyError(f"C4Projection needs key 'c4'; got {list(features)}")
        return OrderedDict([("p4", self.conv(features["c4"]))])


class ThunderNet(DetkitDetector):
    """Two-stage ThunderNet detector from its parts (see the module docstring).

    Args:
        backbone: ``Tensor[B, 3, H, W]`` -> mapping with ``"c4"`` / ``"c5"`` (e.g. SNet).
        neck: mapping -> ``OrderedDict`` with one 245-channel stride-16 map (:class:`CEM` or
            :class:`C4Projection`).
        rpn: the :class:`RegionProposalNetwork`.
        rcnn: the :class:`RCNNStage` (its head's ``num_classes`` is the detector's K).
        sam: the :class:`SpatialAttentionModule`, or None to pool the neck output directly.
        transform: default :class:`DetectionTransform` (ImageNet mean/std, pad to 32).
        channels_last: hand the backbone a channels-last batch (same values; on CPU the
            3x3 max-pool and the 5x5 depthwise convolutions run faster in that layout:
            SNet49 at 320x320, 1 thread, 10.0 -> 6.2 ms measured).
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        rpn: RegionProposalNetwork,
        rcnn: RCNNStage,
        sam: SpatialAttentionModule | None = None,
        transform: DetectionTransform | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.channels_last = bool(channels_last)
        self.transform = transform or DetectionTransform()
        self.backbone = backbone
        self.neck = neck
        self.rpn = rpn
        self.sam = sam
        self.rcnn = rcnn
        self.num_classes = rcnn.head.num_classes

    def feature_map(self, batch: Tensor) -> Tensor:
        """Normalised batch [B, 3, H, W] -> the neck's 245-channel map [B, 245, H/16, W/16]."""
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        (features,) = self.neck(self.backbone(batch)).values()
        return features

    def roi_features(self, features: Tensor, rpn_features: Tensor) -> Tensor:
        """The map the R-CNN pools: SAM output, or ``features`` when there is no SAM."""
        return features if self.sam is None else self.sam(features, rpn_features)

    def forward(
        self,
        images: Sequence[Tensor],
        targets: Sequence[Mapping[str, Tensor]] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Training: dict of the four losses; eval: detections per image (module docstring)."""
        if self.training:
            if targets is None:
                raise ValueError("ThunderNet needs targets in training mode")
            if len(targets) != len(images):
                raise ValueError(f"{len(images)} images but {len(targets)} targets")
            targets = validate_targets(targets, self.num_classes)
        batch = self.transform(images)
        features = self.feature_map(batch.tensor)
        rpn_out = self.rpn(features, batch.image_sizes, targets if self.training else None)
        pooled_from = self.roi_features(features, rpn_out.features)
        detections, rcnn_losses = self.rcnn(
            pooled_from, rpn_out.proposals, batch.image_sizes, targets if self.training else None
        )
        if self.training:
            return {**rpn_out.losses, **rcnn_losses}
        return detections

    def roi_class_logits(
        self, images: Sequence[Tensor], boxes_per_image: Sequence[Tensor]
    ) -> Tensor:
        """R-CNN classification logits ``Tensor[R, K + 1]`` of the given boxes.

        ``boxes_per_image``: per image ``[R_i, 4]`` xyxy in the input tensor's pixels; rows of
        the result follow the images' order then the boxes'. Runs in the module's current
        mode (use ``eval()`` for a teacher).
        """
        if len(boxes_per_image) != len(images):
            raise ValueError(f"{len(images)} images but {len(boxes_per_image)} box tensors")
        batch = self.transform(images)
        features = self.feature_map(batch.tensor)
        rpn_features = self.rpn.head(features)[0]
        logits, _ = self.rcnn.head(self.roi_features(features, rpn_features), boxes_per_image)
        return logits

    # ----------------------------------------------------------------- detector protocol
    distillation_kind = "roi"

    def distillation_logits(self, images: Sequence[Tensor],
                            targets: Sequence[Mapping[str, Tensor]]) -> Tensor:
        """R-CNN logits ``Tensor[R, K + 1]`` of the targets' ground-truth boxes."""
        return self.roi_class_logits(images, [t["boxes"] for t in targets])

    def postprocess_settings(self) -> PostprocessConfig:
        """The R-CNN stage's final post-processing."""
        return self.rcnn.postprocess

    def set_postprocess_settings(self, config: PostprocessConfig) -> None:
        """Use ``config`` for the R-CNN stage's final post-processing."""
        self.rcnn.postprocess = config


ThunderNetLite = ThunderNet
"""Alias of :class:`ThunderNet` (the name :mod:`detkit.models.detectors` exports)."""


def thundernet_lite(
    num_classes: int,
    backbone: str | nn.Module = "snet49",
    use_cem: bool = True,
    use_sam: bool = True,
    box_loss: str | Callable[[Tensor, Tensor], Tensor] = "ciou",
    nms: str = "diou_nms",
    label_smoothing: float = 0.0,
    class_agnostic: bool = True,
    rpn_box_loss: str | Callable[[Tensor, Tensor], Tensor] = "smooth_l1",
    rpn_pre_nms_top_n: Sequence[int] = (1000, 600),
    rpn_post_nms_top_n: Sequence[int] = (1000, 200),
    rpn_nms_threshold: float = 0.7,
    rcnn_batch_size_per_image: int = 256,
    rcnn_positive_fraction: float = 0.25,
    rcnn_positive_sampling: str = "random",
    score_threshold: float = 0.05,
    nms_threshold: float = 0.5,
    max_detections: int = 100,
    nms_kwargs: Mapping[str, float | str] | None = None,
    class_agnostic_nms: bool = False,
    backbone_weights: str | None = None,
    feature_channels: int = 245,
    channels_last: bool = True,
    anchor_sizes: Sequence[float] = THUNDERNET_ANCHOR_SIZES,
    anchor_densities: Sequence[float] | None = None,
    cem_context_init: str = "zero",
    box_loss_weight: float | None = None,
    rpn_box_loss_weight: float | None = None,
    acnet: bool = False,
) -> ThunderNet:
    """ThunderNet-lite preset (SNet + CEM + compressed RPN + SAM + PSRoIAlign R-CNN).

    Args:
        num_classes: K foreground classes.
        backbone: "snet49" | "snet146" | "snet535" (any name of
            :func:`detkit.models.backbones.build_backbone`) or a module with ``out_channels``
            holding "c4" and "c5".
        use_cem / use_sam: the ablation switches (module docstring).
        cem_context_init: "zero" (default; CEM's C5 and global branches start at zero, the
            from-scratch start), "default" (all three branches Kaiming) or "scale" (Kaiming
            branches behind learnable per-channel gates that start at zero); see :class:`CEM`.
        box_loss: R-CNN box loss, "smooth_l1" | "iou" | "giou" | "diou" | "ciou" or a callable.
        box_loss_weight / rpn_box_loss_weight: multipliers of the R-CNN / RPN box loss; None
            takes the convention of :func:`detkit.models.box_coder.normalise_box_loss`
            (1 for smooth-L1, 12 for the IoU family, both summed over the sampled
            foreground and divided by the number of sampled RoIs / anchors).
        nms: "nms" | "diou_nms" | "soft_nms" | "cluster_nms" for the final detections.
        label_smoothing: epsilon of the R-CNN classification loss.
        class_agnostic: one box per RoI (True, the paper's cost) or one per class.
        rpn_box_loss: RPN box loss (smooth-L1 on deltas by default).
        rpn_pre_nms_top_n / rpn_post_nms_top_n: (train, test) proposal counts, (1000, 600) /
            (1000, 200) by default (see :mod:`detkit.models.heads.rpn`).
        rpn_nms_threshold: proposal NMS IoU (0.7).
        rcnn_batch_size_per_image / rcnn_positive_fraction: RoI sampling (256 / 0.25).
        rcnn_positive_sampling: "random" (Faster R-CNN) or "instance_balanced" (Libra R-CNN:
            the foreground quota spread evenly over the ground-truth boxes); see
            :func:`detkit.models.sampling.sample_instance_balanced`.
        score_threshold / nms_threshold / max_detections / nms_kwargs: final post-processing.
        class_agnostic_nms: one final NMS over all classes (default: per class).
        backbone_weights: optional local state-dict file of the backbone.
        feature_channels: channels of the CEM / SAM map (245 = 5 x 7 x 7).
        channels_last: run the backbone on a channels-last batch (faster on CPU).
        anchor_sizes: RPN anchor sizes in input pixels, each with the 5 aspect ratios
            (paper: 32, 64, 128, 256, 512; at 320 input a 32-px anchor reaches IoU 0.5 with
            few objects under about 20 px, so small-object data may want 16 first).
        anchor_densities: FaceBoxes densification per anchor size (e.g. 2 for a 16-px anchor
            at stride 16 tiles it 2 x 2 per cell); None: one anchor per size and ratio.
        acnet: train SNet's and the RPN head's k x k convolutions (depthwise included) as
            ACNet blocks (:mod:`detkit.models.acnet`); a loaded checkpoint is folded back.
    """
    if not anchor_sizes or any(float(s) <= 0 for s in anchor_sizes):
        raise ValueError(f"anchor_sizes must be positive sizes, got {list(anchor_sizes)}")
    if isinstance(backbone, str):
        kwargs = {} if backbone_weights is None else {"weights_path": backbone_weights}
        backbone = build_backbone(backbone, **kwargs)
    channels = backbone.out_channels
    if use_cem:
        neck: nn.Module = CEM(channels["c4"], channels["c5"], feature_channels,
                              context_init=cem_context_init)
    else:
        neck = C4Projection(channels["c4"], feature_channels)
    if anchor_densities is not None and len(anchor_densities) != len(anchor_sizes):
        raise ValueError(f"{len(anchor_densities)} anchor_densities for {len(anchor_sizes)} "
                         "anchor_sizes; give one per size")
    anchors = thundernet_anchor_generator(sizes=[float(s) for s in anchor_sizes],
                                          densities=anchor_densities)
    rpn = RegionProposalNetwork(
        head=RPNHead(feature_channels, 256, anchors.num_anchors_per_location[0]),
        anchor_generator=anchors,
        pre_nms_top_n=rpn_pre_nms_top_n,
        post_nms_top_n=rpn_post_nms_top_n,
        nms_thresh=rpn_nms_threshold,
        box_loss=rpn_box_loss,
        box_loss_weight=rpn_box_loss_weight,
    )
    postprocess = PostprocessConfig(score_threshold, 1000, nms, nms_threshold, max_detections,
                                    nms_kwargs or {}, bool(class_agnostic_nms))
    rcnn = RCNNStage(
        RCNNHead(num_classes, feature_channels, class_agnostic=class_agnostic),
        batch_size_per_image=rcnn_batch_size_per_image,
        positive_fraction=rcnn_positive_fraction,
        positive_sampling=rcnn_positive_sampling,
        box_loss=box_loss,
        box_loss_weight=box_loss_weight,
        label_smoothing=label_smoothing,
        postprocess=postprocess,
    )
    sam = SpatialAttentionModule(256, feature_channels) if use_sam else None
    model = ThunderNet(backbone, neck, rpn, rcnn, sam, channels_last=channels_last)
    if acnet:
        convert_detector(model)
    return model
