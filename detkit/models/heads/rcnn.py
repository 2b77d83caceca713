"""ThunderNet's light R-CNN stage (Qin et al., ICCV 2019, section 3.4).

Head (:class:`RCNNHead`): Position-Sensitive RoIAlign (Light-Head R-CNN, Li et al. 2017;
``torchvision.ops.ps_roi_align``) on the 245-channel stride-16 map (SAM output) with 7x7 bins,
so each RoI gives 245 / 49 = 5 channels x 7 x 7 = a 245-d vector; one fully connected layer to
1024 (+ ReLU); then class logits ``[R, K + 1]`` (column 0 = background) and box deltas.
Regression is class-agnostic by default (``[R, 4]``: the paper's 262 M MACs for SNet49 at
320x320 with 200 RoIs matches this) or class-specific (``[R, 4K]``, group ``k - 1`` for
label ``k``). Deltas use ``BoxCoder((10, 10, 5, 5))`` relative to the RoIs.

Training (:class:`RCNNStage`, Faster R-CNN's rules): the ground-truth boxes are appended to the
proposals; RoIs with IoU >= 0.5 to a box are foreground (its label), the others background
(label 0); RoIs mostly inside ``ignore_boxes`` are left out, and so are the background RoIs
with IoU >= 0.5 to a SNIP ``invalid_boxes`` box (:mod:`detkit.models.snip`: an object outside
the training scale's valid range is neither foreground nor background);
``batch_size_per_image`` RoIs (256, a CPU-sized version of the paper's 512) with at most 25 %
foreground are sampled, the foreground at random (``positive_sampling="random"``, Faster
R-CNN) or spread evenly over the ground-truth boxes (``"instance_balanced"``, Libra R-CNN: a
small box whose only foreground RoI is often its own copy keeps it beside large boxes with
hundreds; :func:`detkit.models.sampling.sample_instance_balanced`).
Classification: :func:`detkit.losses.label_smoothing_cross_entropy` (``label_smoothing`` =
epsilon, 0 gives plain cross-entropy), averaged over the sampled RoIs. Box loss on the
foreground RoIs: "smooth_l1" on deltas or an IoU kind ("iou" | "giou" | "diou" | "ciou") on
decoded boxes, summed over the foreground, divided by the number of sampled RoIs and weighted
(1 for smooth-L1, 12 for IoU kinds, as the DIoU authors train Faster R-CNN) by
:func:`detkit.models.box_coder.normalise_box_loss`. Per-box
``weights`` (mixup ratios) of the matched ground truth multiply both losses of a foreground
RoI; background RoIs, which belong to neither mixed image, keep weight 1.

Inference: softmax scores of classes 1..K, boxes decoded from the RoIs, then
:func:`detkit.models.postprocess.postprocess_image` (score threshold, clip, per-class NMS of
the chosen kind, ``max_detections`` best by decreasing score).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.ops import ps_roi_align, roi_align

from detkit.losses.label_smoothing import label_smoothing_cross_entropy
from detkit.models.box_coder import BoxCoder, box_regression_loss, normalise_box_loss
from detkit.models.matching import Matcher
from detkit.models.postprocess import PostprocessConfig, postprocess_image
from detkit.models.sampling import POSITIVE_SAMPLINGS, sample_balanced, sample_instance_balanced

__all__ = ["RCNNHead", "RCNNStage", "SampledRoIs", "ps_roi_align_by_roi_align", "sample_rois"]


def ps_roi_align_by_roi_align(
    features: Tensor,
    boxes_per_image: Sequence[Tensor],
    pooled_size: int,
    spatial_scale: float,
    sampling_ratio: int,
) -> Tensor:
    """PSRoIAlign written with ``roi_align(aligned=True)``, for ONNX export.

    ``torchvision.ops.ps_roi_align`` has no ONNX symbolic; ``roi_align`` has (opset >= 16 for
    ``aligned=True``, the half-pixel offset that ``ps_roi_align`` applies). Output channel
    ``c`` of bin ``(i, j)`` is input channel ``(c * n + i) * n + j`` pooled over bin ``(i, j)``
    (``n = pooled_size``), i.e. the diagonal of the full ``[R, C, n, n]`` RoIAlign viewed as
    ``[R, C / n^2, n^2 (channel), n^2 (bin)]``. Returns ``Tensor[R, C / n^2, n, n]``, equal to
    ``ps_roi_align``; it pools ``n^2`` times more values, so it serves export only.
    """
    bins = pooled_size * pooled_size
    full = roi_align(
        features, list(boxes_per_image), pooled_size, spatial_scale, sampling_ratio, aligned=True
    )
    num_rois, channels = full.shape[0], full.shape[1] // bins
    eye = torch.eye(bins, dtype=full.dtype, device=full.device)
    diagonal = (full.reshape(num_rois, channels, bins, bins) * eye).sum(dim=2)
    return diagonal.reshape(num_rois, channels, pooled_size, pooled_size)


class RCNNHead(nn.Module):
    """PSRoIAlign (7x7 x 5 channels) -> FC 1024 + ReLU -> class logits and box deltas.

    Args:
        num_classes: K foreground classes (logits have K + 1 columns).
        in_channels: channels of the feature map, ``out_channels_per_bin * pooled_size**2`` (245).
        pooled_size: PSRoIAlign bins per side (7).
        spatial_scale: feature-map pixels per input pixel (1 / 16).
        sampling_ratio: bilinear samples per bin side (2).
        hidden_dim: width of the fully connected layer (1024).
        class_agnostic: one box per RoI (True) or one per class.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 245,
        pooled_size: int = 7,
        spatial_scale: float = 1.0 / 16,
        sampling_ratio: int = 2,
        hidden_dim: int = 1024,
        class_agnostic: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if in_channels % (pooled_size * pooled_size) != 0:
            raise ValueError(
                f"PSRoIAlign needs in_channels ({in_channels}) divisible by "
                f"pooled_size**2 ({pooled_size * pooled_size})"
            )
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.pooled_size = pooled_size
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.class_agnostic = bool(class_agnostic)
        self.fc = nn.Linear(in_channels, hidden_dim)
        self.cls_score = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(hidden_dim, 4 if class_agnostic else 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.zeros_(layer.bias)

    def pool(self, features: Tensor, boxes_per_image: Sequence[Tensor]) -> Tensor:
        """PSRoIAlign of xyxy boxes (input pixels) -> ``Tensor[R, in_channels]`` (5 x 7 x 7)."""
        rois = [b.to(features.dtype) for b in boxes_per_image]
        pool_fn = ps_roi_align_by_roi_align if torch.onnx.is_in_onnx_export() else ps_roi_align
        pooled = pool_fn(features, rois, self.pooled_size, self.spatial_scale, self.sampling_ratio)
        return pooled.flatten(1)

    def forward(self, features: Tensor, boxes_per_image: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """``features`` [B, in_channels, H, W], boxes per image [R_i, 4] -> (logits [R, K+1],
        deltas [R, 4] or [R, 4K]), RoIs in image order."""
        hidden = torch.relu(self.fc(self.pool(features, boxes_per_image)))
        return self.cls_score(hidden), self.bbox_pred(hidden)


class SampledRoIs(NamedTuple):
    """One image's training RoIs: ``rois`` [S, 4], ``labels`` [S] (0 = background),
    ``target_boxes`` [S, 4] (matched ground truth; zeros for background), ``weights`` [S]."""

    rois: Tensor
    labels: Tensor
    target_boxes: Tensor
    weights: Tensor


def sample_rois(
    proposals: Tensor,
    target: Mapping[str, Tensor],
    matcher: Matcher,
    batch_size_per_image: int = 256,
    positive_fraction: float = 0.25,
    positive_sampling: str = "random",
) -> SampledRoIs:
    """Append the ground truth to ``proposals`` [P, 4], match and sample (module docstring;
    ``positive_sampling``: "random" or "instance_balanced").

    Foreground RoIs come first, then background ones.
    """
    gt = target["boxes"].to(proposals.dtype)
    gt_labels = target["labels"].to(torch.int64)
    gt_weights = target.get("weights")
    if gt_weights is None:
        gt_weights = torch.ones(gt.shape[0], dtype=proposals.dtype, device=proposals.device)
    rois = torch.cat([proposals, gt], dim=0)
    matched = matcher(rois, gt, target.get("ignore_boxes"), target.get("invalid_boxes"))
    sampler = sample_instance_balanced if positive_sampling == "instance_balanced" else \
        sample_balanced
    pos, neg = sampler(matched, batch_size_per_image, positive_fraction)
    pos_idx = torch.nonzero(pos).flatten()
    neg_idx = torch.nonzero(neg).flatten()
    gt_idx = matched[pos_idx]
    num_neg = neg_idx.numel()
    labels = torch.cat([gt_labels[gt_idx], gt_labels.new_zeros(num_neg)])
    targets = torch.cat([gt[gt_idx], gt.new_zeros((num_neg, 4))])
    weights = torch.cat([gt_weights.to(proposals.dtype)[gt_idx], gt.new_ones(num_neg)])
    return SampledRoIs(rois[torch.cat([pos_idx, neg_idx])], labels, targets, weights)


class RCNNStage(nn.Module):
    """The second stage: RoI sampling, :class:`RCNNHead`, losses and detections.

    Args:
        head: the :class:`RCNNHead`.
        fg_iou_thresh: IoU at which a RoI is foreground (0.5).
        batch_size_per_image / positive_fraction: RoI sampling (256 / 0.25).
        positive_sampling: "random" (default) or "instance_balanced" foreground RoIs.
        box_loss: "smooth_l1" | "iou" | "giou" | "diou" | "ciou" or a callable on decoded boxes.
        label_smoothing: epsilon of the classification loss (0 = plain cross-entropy).
        box_loss_weight: multiplier of the box loss; None: 1 for smooth-L1, 12 for IoU kinds.
        postprocess: :class:`PostprocessConfig` (score threshold, NMS kind and threshold,
            max detections).
        box_coder: default ``BoxCoder((10, 10, 5, 5))``.
    """

    def __init__(
        self,
        head: RCNNHead,
        fg_iou_thresh: float = 0.5,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.25,
        box_loss: str | Callable[[Tensor, Tensor], Tensor] = "smooth_l1",
        label_smoothing: float = 0.0,
        postprocess: PostprocessConfig | None = None,
        box_coder: BoxCoder | None = None,
        box_loss_weight: float | None = None,
        positive_sampling: str = "random",
    ) -> None:
        super().__init__()
        if positive_sampling not in POSITIVE_SAMPLINGS:
            raise ValueError(f"positive_sampling must be one of {POSITIVE_SAMPLINGS}, got "
                             f"{positive_sampling!r}")
        self.positive_sampling = positive_sampling
        if box_loss_weight is not None and not box_loss_weight >= 0:
            raise ValueError(f"box_loss_weight must be >= 0, got {box_loss_weight}")
        self.box_loss_weight = box_loss_weight
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.head = head
        self.matcher = Matcher(fg_iou_thresh, fg_iou_thresh, allow_low_quality_matches=False)
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        self.box_loss = box_loss
        self.label_smoothing = float(label_smoothing)
        self.postprocess = postprocess or PostprocessConfig()
        self.box_coder = box_coder or BoxCoder((10.0, 10.0, 5.0, 5.0))

    def _foreground_deltas(self, deltas: Tensor, labels: Tensor) -> Tensor:
        """Deltas ``[F, 4]`` of foreground RoIs (their class's group when class-specific)."""
        if self.head.class_agnostic:
            return deltas
        grouped = deltas.reshape(deltas.shape[0], -1, 4)
        rows = torch.arange(deltas.shape[0], device=deltas.device)
        return grouped[rows, labels - 1]

    def compute_losses(
        self, logits: Tensor, deltas: Tensor, samples: Sequence[SampledRoIs]
    ) -> dict[str, Tensor]:
        """``rcnn_cls`` and ``rcnn_box`` for the head outputs of the concatenated samples."""
        labels = torch.cat([s.labels for s in samples])
        weights = torch.cat([s.weights for s in samples]).to(logits.dtype)
        rois = torch.cat([s.rois for s in samples])
        targets = torch.cat([s.target_boxes for s in samples])
        if labels.numel() == 0:
            zero = logits.sum() * 0.0 + deltas.sum() * 0.0
            return {"rcnn_cls": zero, "rcnn_box": zero}
        cls_loss = label_smoothing_cross_entropy(
            logits, labels, epsilon=self.label_smoothing, weight=weights, reduction="mean"
        )
        fg = torch.nonzero(labels > 0).flatten()
        if fg.numel() == 0:
            box_loss = deltas.sum() * 0.0
        else:
            per_box = box_regression_loss(
                self.box_loss,
                self._foreground_deltas(deltas[fg], labels[fg]),
                rois[fg],
                targets[fg],
                self.box_coder,
                weights=weights[fg],
            )
            box_loss = normalise_box_loss(per_box, self.box_loss, labels.numel(),
                                          self.box_loss_weight)
        return {"rcnn_cls": cls_loss, "rcnn_box": box_loss}

    def detect(
        self,
        logits: Tensor,
        deltas: Tensor,
        rois_per_image: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Per-image detections ``dict(boxes [D, 4], scores [D], labels [D])``, best first."""
        probs = torch.softmax(logits, dim=1)[:, 1:]
        rois = torch.cat(list(rois_per_image))
        boxes = self.box_coder.decode(deltas, rois)
        if not self.head.class_agnostic:
            boxes = boxes.reshape(boxes.shape[0], -1, 4)
        if len(rois_per_image) == 1:
            # one image: no split, so an exported graph keeps the RoI count dynamic
            per_image = [(probs, boxes)]
        else:
            counts = [int(r.shape[0]) for r in rois_per_image]
            per_image = list(zip(probs.split(counts), boxes.split(counts), strict=True))
        return [
            postprocess_image([p], [b], (int(size[0]), int(size[1])), self.postprocess)
            for (p, b), size in zip(per_image, image_sizes, strict=True)
        ]

    def forward(
        self,
        features: Tensor,
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[Mapping[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Training: ``([], {"rcnn_cls", "rcnn_box"})``; eval: ``(detections, {})``.

        ``features`` [B, 245, H, W] at stride 16; ``proposals`` per image [P_i, 4] xyxy.
        """
        if self.training:
            if targets is None:
                raise ValueError("the R-CNN stage needs targets in training mode")
            samples = [
                sample_rois(
                    p.detach(),
                    t,
                    self.matcher,
                    self.batch_size_per_image,
                    self.positive_fraction,
                    self.positive_sampling,
                )
                for p, t in zip(proposals, targets, strict=True)
            ]
            logits, deltas = self.head(features, [s.rois for s in samples])
            return [], self.compute_losses(logits, deltas, samples)
        logits, deltas = self.head(features, proposals)
        return self.detect(logits, deltas, proposals, image_sizes), {}
