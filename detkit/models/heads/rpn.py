"""ThunderNet's compressed Region Proposal Network (Qin et al., ICCV 2019, section 3.2).

Head: a 5x5 depthwise convolution and a 1x1 convolution to 256 channels on the CEM output
(stride 16), then two 1x1 predictors: objectness (one logit per anchor, trained with binary
cross-entropy) and box deltas (4 per anchor). The 256-channel map is also returned: the
Spatial Attention Module (:mod:`detkit.models.heads.sam`) is computed from it.

Anchors: 25 per position, 5 sizes {32, 64, 128, 256, 512} x 5 aspect ratios
{1:2, 3:4, 1:1, 4:3, 2:1} at stride 16, built with :class:`detkit.models.anchors.AnchorGenerator`
(ratio = h / w, listed by (y, x, size, ratio); see that module). Objectness channel ``a`` and
delta channels ``4 a .. 4 a + 3`` (dx, dy, dw, dh) belong to anchor ``a`` of a position.

Training (Faster R-CNN's rules, Ren et al. 2015): anchors with IoU >= 0.7 to a ground truth box
are positive, < 0.3 negative (each box also claims its best anchors); anchors mostly inside
``ignore_boxes`` (crowd / difficult) are left out, and so are the non-positive anchors with IoU
>= 0.3 to a SNIP ``invalid_boxes`` box (:mod:`detkit.models.snip`); 256 anchors per image with
at most half positives are sampled. Loss normalisation: objectness BCE summed over the sampled
anchors of the batch and divided by their number; the box loss ("smooth_l1" on deltas, beta 1/9,
or an IoU kind on decoded boxes) is summed over positives, divided by the number of sampled
anchors and multiplied by a weight (:func:`detkit.models.box_coder.normalise_box_loss`): 1 for
"smooth_l1" (torchvision's convention), 12 for the IoU kinds (the DIoU authors' Faster R-CNN
setting, Zheng et al. 2020).

Proposals (per image): the ``pre_nms_top_n`` best-scoring anchors are decoded, clipped to the
image, boxes with a side below ``min_size`` are removed, NMS at 0.7 runs, and the
``post_nms_top_n`` best are kept. Defaults, chosen for a CPU budget at 320x320 (10,000 anchors):
training 1000 pre-NMS / 1000 post-NMS (the R-CNN then samples 256 of them; NMS of 2000
boxes took 15 ms per image, 16 % of a batch-8 training step), testing 600 pre-NMS / 200
post-NMS (the paper evaluates 200 RoIs; NMS of 1000 boxes took 2.9 ms of a ~20 ms CPU
forward, of 600 boxes 1.1 ms).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.models.anchors import AnchorGenerator
from detkit.models.box_coder import BoxCoder, box_regression_loss, normalise_box_loss
from detkit.models.matching import Matcher
from detkit.models.sampling import sample_balanced
from detkit.ops.boxes import clip_boxes_to_image, remove_small_boxes
from detkit.ops.nms import nms

__all__ = [
    "THUNDERNET_ANCHOR_RATIOS",
    "THUNDERNET_ANCHOR_SIZES",
    "RPNHead",
    "RPNOutput",
    "RegionProposalNetwork",
    "flatten_rpn_outputs",
    "thundernet_anchor_generator",
]

THUNDERNET_ANCHOR_SIZES: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)
# h / w of the ratios 1:2, 3:4, 1:1, 4:3, 2:1
THUNDERNET_ANCHOR_RATIOS: tuple[float, ...] = (0.5, 0.75, 1.0, 4.0 / 3.0, 2.0)


def thundernet_anchor_generator(
    stride: int = 16,
    sizes: Sequence[float] = THUNDERNET_ANCHOR_SIZES,
    aspect_ratios: Sequence[float] = THUNDERNET_ANCHOR_RATIOS,
    densities: Sequence[float] | None = None,
) -> AnchorGenerator:
    """One-level generator with ``len(sizes) * len(aspect_ratios)`` anchors (25) per position.

    ``densities``: FaceBoxes densification per size (n -> n x n shifted copies per cell, see
    :mod:`detkit.models.anchors`); None keeps one anchor per size and ratio.
    """
    dens = None if densities is None else [list(densities)]
    return AnchorGenerator([stride], [list(sizes)], list(aspect_ratios), dens)


class RPNHead(nn.Module):
    """Compressed RPN head: dw ``k x k`` conv + BN, 1x1 conv + BN + ReLU, two 1x1 predictors.

    Args:
        in_channels: channels of the input map (245, the CEM output).
        mid_channels: channels after the 1x1 convolution (256).
        num_anchors: anchors per position ``A`` (25).
        kernel_size: depthwise kernel size (5).

    ``forward(x [B, in, H, W]) -> (features [B, mid, H, W], objectness [B, A, H, W],
    deltas [B, 4A, H, W])``.
    """

    def __init__(
        self,
        in_channels: int = 245,
        mid_channels: int = 256,
        num_anchors: int = 25,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.in_channels = in_channels
        self.mid_channels = mid_channels
        self.num_anchors = num_anchors
        self.conv = nn.Sequential(
            nn.Conv2d(
                in_channels,
                in_channels,
                kernel_size,
                padding=kernel_size // 2,
                groups=in_channels,
                bias=False,
            ),
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, mid_channels, 1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
        )
        self.objectness = nn.Conv2d(mid_channels, num_anchors, 1)
        self.deltas = nn.Conv2d(mid_channels, 4 * num_anchors, 1)
        for layer in (self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """See the class docstring."""
        features = self.conv(x)
        return features, self.objectness(features), self.deltas(features)


def flatten_rpn_outputs(objectness: Tensor, deltas: Tensor) -> tuple[Tensor, Tensor]:
    """``[B, A, H, W]`` and ``[B, 4A, H, W]`` -> ``[B, H*W*A]`` and ``[B, H*W*A, 4]``.

    The order (y, x, anchor) matches :meth:`AnchorGenerator.concat`.
    """
    b, a, h, w = objectness.shape
    obj = objectness.permute(0, 2, 3, 1).reshape(b, h * w * a)
    box = deltas.reshape(b, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * a, 4)
    return obj, box


class RPNOutput(NamedTuple):
    """What :class:`RegionProposalNetwork` returns.

    ``proposals``: per image ``Tensor[P_i, 4]`` xyxy (no gradient), best first;
    ``features``: the head's 256-channel map ``[B, 256, H, W]`` (input of the SAM);
    ``losses``: ``{"rpn_objectness", "rpn_box"}`` in training, empty otherwise.
    """

    proposals: list[Tensor]
    features: Tensor
    losses: dict[str, Tensor]


def _train_test(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """An int for both phases or a (train, test) pair."""
    if isinstance(value, int):
        return value, value
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a (train, test) pair, got {value!r}")
    return pair[0], pair[1]


class RegionProposalNetwork(nn.Module):
    """Anchors + :class:`RPNHead` + training losses + proposal selection (see module docstring).

    Args:
        head: the conv head; default ``RPNHead(in_channels, 256, A)``.
        anchor_generator: default :func:`thundernet_anchor_generator` (25 anchors, stride 16).
        in_channels: input channels (245) when ``head`` is built here.
        fg_iou_thresh / bg_iou_thresh: matching thresholds (0.7 / 0.3).
        batch_size_per_image / positive_fraction: anchor sampling (256 / 0.5).
        pre_nms_top_n / post_nms_top_n: int or (train, test); defaults (1000, 600) / (1000, 200).
        nms_thresh: proposal NMS IoU threshold (0.7).
        min_size: smallest proposal side kept, in pixels (1.0).
        box_loss: "smooth_l1" | "iou" | "giou" | "diou" | "ciou" or a callable on decoded boxes.
        box_loss_weight: multiplier of the box loss; None: 1 for smooth-L1, 12 for IoU kinds.
        box_coder: default ``BoxCoder((1, 1, 1, 1))``.
    """

    def __init__(
        self,
        head: RPNHead | None = None,
        anchor_generator: AnchorGenerator | None = None,
        in_channels: int = 245,
        fg_iou_thresh: float = 0.7,
        bg_iou_thresh: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_top_n: int | Sequence[int] = (1000, 600),
        post_nms_top_n: int | Sequence[int] = (1000, 200),
        nms_thresh: float = 0.7,
        min_size: float = 1.0,
        box_loss: str | Callable[[Tensor, Tensor], Tensor] = "smooth_l1",
        box_coder: BoxCoder | None = None,
        box_loss_weight: float | None = None,
    ) -> None:
        super().__init__()
        if box_loss_weight is not None and not box_loss_weight >= 0:
            raise ValueError(f"box_loss_weight must be >= 0, got {box_loss_weight}")
        self.box_loss_weight = box_loss_weight
        self.anchor_generator = anchor_generator or thundernet_anchor_generator()
        if len(self.anchor_generator.strides) != 1:
            raise ValueError("the ThunderNet RPN uses one feature map; give a 1-level generator")
        num_anchors = self.anchor_generator.num_anchors_per_location[0]
        self.head = head if head is not None else RPNHead(in_channels, 256, num_anchors)
        if self.head.num_anchors != num_anchors:
            raise ValueError(
                f"head predicts {self.head.num_anchors} anchors per position, "
                f"the generator makes {num_anchors}"
            )
        self.stride = self.anchor_generator.strides[0]
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        self.pre_nms_top_n = _train_test(pre_nms_top_n, "pre_nms_top_n")
        self.post_nms_top_n = _train_test(post_nms_top_n, "post_nms_top_n")
        self.nms_thresh = float(nms_thresh)
        self.min_size = float(min_size)
        self.box_loss = box_loss
        self.box_coder = box_coder or BoxCoder((1.0, 1.0, 1.0, 1.0))

    def anchors_for(self, features: Tensor) -> Tensor:
        """All anchors ``Tensor[H*W*A, 4]`` xyxy for a ``[B, C, H, W]`` map."""
        h, w = int(features.shape[-2]), int(features.shape[-1])
        return self.anchor_generator.concat([(h, w)], features.device, features.dtype)

    def select_proposals(
        self, objectness: Tensor, deltas: Tensor, anchors: Tensor, image_sizes: Sequence[tuple]
    ) -> list[Tensor]:
        """Per image: top-k, decode, clip, drop small, NMS, keep the best (module docstring).

        ``objectness`` [B, N], ``deltas`` [B, N, 4], ``anchors`` [N, 4] -> list of [P_i, 4].
        """
        phase = 0 if self.training else 1
        pre_k = min(self.pre_nms_top_n[phase], objectness.shape[1])
        post_k = self.post_nms_top_n[phase]
        objectness = objectness.detach()
        top_scores, top_idx = objectness.topk(pre_k, dim=1)
        proposals = []
        for i, size in enumerate(image_sizes):
            idx = top_idx[i]
            boxes = self.box_coder.decode(deltas[i, idx].detach(), anchors[idx])
            boxes = clip_boxes_to_image(boxes, (int(size[0]), int(size[1])))
            keep = remove_small_boxes(boxes, self.min_size)
            boxes, scores = boxes[keep], top_scores[i, keep]
            keep = nms(boxes, scores, self.nms_thresh)[:post_k]
            proposals.append(boxes[keep])
        return proposals

    def compute_losses(
        self,
        objectness: Tensor,
        deltas: Tensor,
        anchors: Tensor,
        targets: Sequence[Mapping[str, Tensor]],
    ) -> dict[str, Tensor]:
        """``rpn_objectness`` (BCE) and ``rpn_box`` losses; see the module docstring."""
        logits, labels, obj_weights, box_terms = [], [], [], []
        for i, target in enumerate(targets):
            gt = target["boxes"].to(anchors.dtype)
            matched = self.matcher(anchors, gt, target.get("ignore_boxes"),
                                   target.get("invalid_boxes"))
            pos, neg = sample_balanced(matched, self.batch_size_per_image, self.positive_fraction)
            sampled = pos | neg
            # per-box weights (mixup ratios) weight the anchors matched to each box
            box_w = target.get("weights")
            anchor_w = torch.ones_like(objectness[i])
            if box_w is not None and bool(pos.any()):
                anchor_w[pos] = box_w.to(anchor_w)[matched[pos]]
            logits.append(objectness[i, sampled])
            labels.append(pos[sampled].to(objectness.dtype))
            obj_weights.append(anchor_w[sampled])
            if bool(pos.any()):
                box_terms.append(
                    box_regression_loss(
                        self.box_loss,
                        deltas[i, pos],
                        anchors[pos],
                        gt[matched[pos]],
                        self.box_coder,
                        anchor_w[pos],
                    )
                )
        all_logits = torch.cat(logits)
        num_sampled = all_logits.numel()
        if num_sampled == 0:
            obj_loss = objectness.sum() * 0.0
        else:
            obj_loss = (
                F.binary_cross_entropy_with_logits(
                    all_logits, torch.cat(labels), weight=torch.cat(obj_weights), reduction="sum"
                )
                / num_sampled
            )
        if box_terms:
            box_loss = normalise_box_loss(torch.cat(box_terms), self.box_loss, num_sampled,
                                          self.box_loss_weight)
        else:
            box_loss = deltas.sum() * 0.0
        return {"rpn_objectness": obj_loss, "rpn_box": box_loss}

    def forward(
        self,
        features: Tensor,
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[Mapping[str, Tensor]] | None = None,
    ) -> RPNOutput:
        """Run the RPN on the stride-16 map ``features`` [B, C, H, W].

        ``image_sizes``: unpadded (h, w) of each image (proposals are clipped to them);
        ``targets``: needed in training (``boxes`` [N, 4] xyxy, optional ``ignore_boxes`` and
        ``invalid_boxes``).
        """
        rpn_features, objectness, deltas = self.head(features)
        obj, box = flatten_rpn_outputs(objectness, deltas)
        anchors = self.anchors_for(features)
        proposals = self.select_proposals(obj, box, anchors, image_sizes)
        losses: dict[str, Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("the RPN needs targets in training mode")
            losses = self.compute_losses(obj, box, anchors, targets)
        return RPNOutput(proposals, rpn_features, losses)
