"""The dense one-stage detector (RetinaNet-style) and its preset builder.

``DenseDetector(backbone, neck, num_classes, ...)`` follows torchvision's
``RetinaNet`` convention: plain constructor arguments whose parts (anchor
generator, head, matcher, box coder, box loss, NMS) default when omitted.
``dense_detector(num_classes, backbone="resnet18", neck="fpn", ...)`` builds a
complete model from names and numbers (what configs use).

Call (the contract): ``model(images: list[Tensor[3, H, W]] in [0, 1], targets)``;
train mode returns ``{"loss_cls", "loss_box"}``, eval mode a list of
``dict(boxes [D, 4] xyxy, scores [D], labels [D] int64 1..K)`` sorted by
decreasing score and clipped to each input image. ``head_logits(images)``
returns the raw per-anchor classification logits ``[B, A, K]`` for
knowledge distillation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from detkit.models.anchors import AnchorGenerator, anchor_generator_from_preset
from detkit.models.box_coder import BoxCoder
from detkit.models.detectors.dense_loss import DenseLoss
from detkit.models.detectors.protocol import DetkitDetector
from detkit.models.heads.dense import DenseHead
from detkit.models.matching import Matcher
from detkit.models.postprocess import NmsFn, PostprocessConfig, postprocess_image
from detkit.models.transform import IMAGENET_MEAN, IMAGENET_STD, DetectionTransform

__all__ = ["DENSE_NECKS", "DenseDetector", "dense_detector"]

DENSE_NECKS = ("fpn", "ssh", "fpn_ssh")


class DenseDetector(DetkitDetector):
    """Backbone -> neck -> shared dense head over anchors, trained with focal + box loss.

    Args:
        backbone: module mapping ``[B, 3, H, W]`` to an ``OrderedDict`` of feature maps.
        neck: module mapping that dict to an ``OrderedDict`` of pyramid levels; must expose
            ``out_channels: int`` and ``strides: list[int]``.
        num_classes: K foreground classes (labels 1..K).
        anchor_generator: defaults to the RetinaNet preset on ``neck.strides``.
        head: defaults to a 4-conv GroupNorm :class:`DenseHead`.
        matcher: defaults to ``Matcher(0.5, 0.4)`` with low-quality matches.
        box_coder: defaults to ``BoxCoder((1, 1, 1, 1))``.
        box_loss: "smooth_l1" | "iou" | "giou" | "diou" | "ciou" or a callable
            ``(pred_boxes [N, 4], target_boxes [N, 4]) -> Tensor[N]`` on decoded boxes.
        box_loss_weight, focal_alpha, focal_gamma, sampling, neg_pos_ratio: see
            :class:`detkit.models.detectors.dense_loss.DenseLoss`.
        postprocess: a :class:`PostprocessConfig` (score threshold, top-k, NMS kind, max dets).
        transform: the input step; defaults to ImageNet mean/std, padding to 32.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        num_classes: int,
        anchor_generator: AnchorGenerator | None = None,
        head: nn.Module | None = None,
        matcher: Matcher | None = None,
        box_coder: BoxCoder | None = None,
        box_loss: str | Callable[[Tensor, Tensor], Tensor] = "giou",
        box_loss_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        sampling: str = "none",
        neg_pos_ratio: float = 3.0,
        postprocess: PostprocessConfig | None = None,
        transform: DetectionTransform | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.num_classes = int(num_classes)
        if anchor_generator is None:
            anchor_generator = anchor_generator_from_preset("retinanet", list(neck.strides))
        self.anchor_generator = anchor_generator
        per_cell = set(self.anchor_generator.num_anchors_per_location)
        if len(per_cell) != 1:
            raise ValueError(
                f"the shared head needs the same anchor count on every level, got "
                f"{self.anchor_generator.num_anchors_per_location}"
            )
        if head is None:
            head = DenseHead(neck.out_channels, per_cell.pop(), self.num_classes)
        self.head = head
        self.box_coder = box_coder if box_coder is not None else BoxCoder()
        self.loss = DenseLoss(
            num_classes=self.num_classes,
            matcher=matcher if matcher is not None else Matcher(),
            coder=self.box_coder,
            box_loss=box_loss,
            box_loss_weight=box_loss_weight,
            focal_alpha=focal_alpha,
            focal_gamma=focal_gamma,
            sampling=sampling,
            neg_pos_ratio=neg_pos_ratio,
        )
        self.postprocess_config = postprocess if postprocess is not None else PostprocessConfig()
        self.transform = transform if transform is not None else DetectionTransform()

    def _forward_head(
        self, images: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[tuple[int, int]]]:
        """Per-level logits [B, N_l, K], deltas [B, N_l, 4], anchors [N_l, 4], image sizes."""
        batch = self.transform(images)
        features = list(self.neck(self.backbone(batch.tensor)).values())
        if len(features) != len(self.anchor_generator.strides):
            raise ValueError(
                f"the neck gave {len(features)} levels, the anchors expect "
                f"{len(self.anchor_generator.strides)}"
            )
        cls_logits, box_deltas = self.head(features)
        sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
        anchors = self.anchor_generator(sizes, device=batch.tensor.device, dtype=batch.tensor.dtype)
        return cls_logits, box_deltas, anchors, batch.image_sizes

    def head_logits(self, images: Sequence[Tensor]) -> Tensor:
        """Raw classification logits per anchor, ``Tensor[B, A, K]`` (all levels, anchor order)."""
        cls_logits, _, _, _ = self._forward_head(images)
        return torch.cat(cls_logits, dim=1)

    # ----------------------------------------------------------------- detector protocol
    distillation_kind = "dense"

    def distillation_logits(self, images: Sequence[Tensor],
                            targets: Sequence[Mapping[str, Tensor]]) -> Tensor:
        """Per-anchor class logits ``Tensor[B, A, K]`` (:meth:`head_logits`; no targets used)."""
        return self.head_logits(images)

    def postprocess_settings(self) -> PostprocessConfig:
        """The final post-processing (``postprocess_config``)."""
        return self.postprocess_config

    def set_postprocess_settings(self, config: PostprocessConfig) -> None:
        """Use ``config`` for the final post-processing."""
        self.postprocess_config = config

    def forward(
        self, images: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses in train mode (``targets`` required), detections in eval mode."""
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        if targets is not None and len(targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        cls_logits, box_deltas, anchors, image_sizes = self._forward_head(images)
        if self.training:
            return self.loss(
                torch.cat(cls_logits, dim=1),
                torch.cat(box_deltas, dim=1),
                torch.cat(anchors, dim=0),
                targets,
            )
        return self.detect(cls_logits, box_deltas, anchors, image_sizes)

    def detect(
        self,
        cls_logits: Sequence[Tensor],
        box_deltas: Sequence[Tensor],
        anchors: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Decode, threshold, NMS and clip per image (see :mod:`detkit.models.postprocess`)."""
        results = []
        for i, size in enumerate(image_sizes):
            scores = [c[i].sigmoid() for c in cls_logits]
            boxes = [
                self.box_coder.decode(d[i], a) for d, a in zip(box_deltas, anchors, strict=True)
            ]
            results.append(postprocess_image(scores, boxes, size, self.postprocess_config))
        return results


def _build_neck(
    neck: str | nn.Module, backbone: nn.Module, channels: int, kwargs: Mapping[str, object]
) -> nn.Module:
    """Build the named neck on ``backbone``'s C3-C5 (or return a given module)."""
    if isinstance(neck, nn.Module):
        return neck
    from detkit.models.necks import build_neck

    if neck not in DENSE_NECKS:
        raise ValueError(f"unknown neck {neck!r} for the dense detector; valid: {DENSE_NECKS}")
    keys = list(backbone.out_channels)
    in_channels = [backbone.out_channels[k] for k in keys]
    if neck == "ssh":
        strides = [backbone.strides[k] for k in keys]
        return build_neck(
            "ssh", in_channels=in_channels, out_channels=channels, strides=strides, **kwargs
        )
    return build_neck(neck, in_channels=in_channels, out_channels=channels, **kwargs)


def dense_detector(
    num_classes: int,
    backbone: str | nn.Module = "resnet18",
    neck: str | nn.Module = "fpn",
    neck_channels: int = 128,
    anchors: str = "retinanet",
    anchor_sizes: Sequence[Sequence[float]] | None = None,
    aspect_ratios: Sequence[float] | None = None,
    densify: bool = False,
    anchor_densities: Sequence[Sequence[float]] | None = None,
    match_high: float = 0.5,
    match_low: float = 0.4,
    allow_low_quality_matches: bool = True,
    ignore_threshold: float = 0.5,
    scale_compensation: bool = False,
    stage1_threshold: float = 0.35,
    head_convs: int = 4,
    head_norm: str = "gn",
    prior_prob: float = 0.01,
    box_loss: str | Callable[[Tensor, Tensor], Tensor] = "giou",
    box_loss_weight: float = 1.0,
    box_coder_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    sampling: str = "none",
    neg_pos_ratio: float = 3.0,
    nms: str | NmsFn = "nms",
    nms_threshold: float = 0.5,
    score_threshold: float = 0.05,
    topk_candidates: int = 1000,
    max_detections: int = 100,
    nms_kwargs: Mapping[str, float | str] | None = None,
    class_agnostic_nms: bool = False,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    backbone_kwargs: Mapping[str, object] | None = None,
    neck_kwargs: Mapping[str, object] | None = None,
    acnet: bool = False,
) -> DenseDetector:
    """A complete :class:`DenseDetector` from names and numbers.

    ``backbone`` is a :func:`detkit.models.backbones.build_backbone` name ("resnet18",
    "snet49", ...) or a module; ``neck`` is "fpn" (P3-P7), "ssh" (SSH modules on C3-C5),
    "fpn_ssh" or a module. Anchors: ``anchors`` preset ("retinanet" | "s3fd" | "faceboxes"),
    optional per-level ``anchor_sizes`` / ``aspect_ratios``, FaceBoxes densification with
    ``densify`` (auto densities) or explicit ``anchor_densities``. Matching: IoU thresholds,
    low-quality matches, crowd IoF threshold, S3FD ``scale_compensation``. The remaining
    arguments configure the head, losses and post-processing (see :class:`DenseDetector`;
    ``class_agnostic_nms``: one NMS over all classes, see :class:`PostprocessConfig`).
    ``acnet`` trains an SNet backbone's and the head towers' k x k convolutions as ACNet
    blocks (:mod:`detkit.models.acnet`); a loaded checkpoint is folded back.
    """
    if isinstance(backbone, str):
        from detkit.models.backbones import build_backbone

        backbone = build_backbone(backbone, **dict(backbone_kwargs or {}))
    neck_module = _build_neck(neck, backbone, neck_channels, dict(neck_kwargs or {}))
    generator = anchor_generator_from_preset(
        anchors,
        list(neck_module.strides),
        aspect_ratios=aspect_ratios,
        densify=densify,
        sizes=anchor_sizes,
        densities=anchor_densities,
    )
    per_cell = generator.num_anchors_per_location[0]
    head = DenseHead(
        neck_module.out_channels,
        per_cell,
        num_classes,
        num_convs=head_convs,
        norm=head_norm,
        prior_prob=prior_prob,
    )
    matcher = Matcher(
        high=match_high,
        low=match_low,
        allow_low_quality_matches=allow_low_quality_matches,
        ignore_threshold=ignore_threshold,
        scale_compensation=scale_compensation,
        stage1_threshold=stage1_threshold,
    )
    post = PostprocessConfig(score_threshold, topk_candidates, nms, nms_threshold,
                             max_detections, nms_kwargs or {}, bool(class_agnostic_nms))
    model = DenseDetector(
        backbone,
        neck_module,
        num_classes,
        anchor_generator=generator,
        head=head,
        matcher=matcher,
        box_coder=BoxCoder(box_coder_weights),
        box_loss=box_loss,
        box_loss_weight=box_loss_weight,
        focal_alpha=focal_alpha,
        focal_gamma=focal_gamma,
        sampling=sampling,
        neg_pos_ratio=neg_pos_ratio,
        postprocess=post,
        transform=DetectionTransform(image_mean, image_std, size_divisible=32),
    )
    if acnet:
        from detkit.models.acnet import convert_detector

        convert_detector(model)
    return model
