"""Choosing which anchors (or proposals) enter the classification loss.

Both samplers take the matcher's per-anchor result (``matched >= 0``
positive, -1 negative, -2 ignore; see :mod:`detkit.models.matching`) and
return boolean masks ``(positive, negative)`` of the same length. Ignored
anchors are never sampled. Inputs are not modified.

- :func:`sample_balanced`: Faster R-CNN's random sampler, at most
  ``batch_size_per_image * positive_fraction`` positives, the rest negatives.
- :func:`sample_instance_balanced`: the same counts, with the positive quota spread evenly over
  the ground-truth boxes (instance-balanced sampling, Libra R-CNN, Pang et al., CVPR 2019), so
  a small box with few overlapping proposals keeps its positives beside large boxes with many.
- :func:`hard_negative_mining`: online hard-negative mining as in SSD (Liu et
  al., ECCV 2016) and SSH (Najibi et al., ICCV 2017): keep every positive and
  the ``neg_pos_ratio``-times-as-many negatives with the highest loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["POSITIVE_SAMPLINGS", "hard_negative_mining", "sample_balanced",
           "sample_instance_balanced"]

POSITIVE_SAMPLINGS = ("random", "instance_balanced")


def _random_subset(mask: Tensor, count: int, generator: torch.Generator | None) -> Tensor:
    """A mask with ``count`` of ``mask``'s True entries chosen uniformly at random."""
    idx = torch.nonzero(mask, as_tuple=False).flatten()
    if idx.numel() <= count:
        return mask.clone()
    perm = torch.randperm(idx.numel(), generator=generator, device="cpu").to(idx.device)
    chosen = idx[perm[:count]]
    out = torch.zeros_like(mask)
    out[chosen] = True
    return out


def _check_counts(batch_size_per_image: int, positive_fraction: float) -> int:
    """The largest number of positives; ValueError on bad counts."""
    if batch_size_per_image < 1 or not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(
            f"need batch_size_per_image >= 1 and 0 <= positive_fraction <= 1, got "
            f"{batch_size_per_image} and {positive_fraction}"
        )
    return int(batch_size_per_image * positive_fraction)


def sample_balanced(
    matched: Tensor,
    batch_size_per_image: int = 256,
    positive_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Random positive/negative sample of one image's anchors (Faster R-CNN's rule).

    Takes ``num_pos = min(#positives, int(batch_size_per_image * positive_fraction))``
    positives and ``min(#negatives, batch_size_per_image - num_pos)`` negatives.

    Args:
        matched: ``Tensor[A]`` int64 from the matcher.
        batch_size_per_image: total number of samples wanted.
        positive_fraction: the largest share of positives.
        generator: optional ``torch.Generator`` for reproducible draws.

    Returns: boolean masks ``(positive [A], negative [A])``.
    """
    max_pos = _check_counts(batch_size_per_image, positive_fraction)
    pos = _random_subset(matched >= 0, max_pos, generator)
    num_pos = int(pos.sum())
    neg = _random_subset(matched == -1, batch_size_per_image - num_pos, generator)
    return pos, neg


def sample_instance_balanced(
    matched: Tensor,
    batch_size_per_image: int = 256,
    positive_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Like :func:`sample_balanced`, with the positives spread evenly over the matched boxes.

    The quota ``max_pos = int(batch_size_per_image * positive_fraction)`` is filled box by
    box, from the box with the fewest positive candidates up: each box takes
    ``min(its candidates, remaining // boxes left)``, so what a small box cannot use passes on
    to the larger ones and the quota is filled whenever there are enough positives. Within a
    box the candidates are drawn uniformly at random. Negatives as in :func:`sample_balanced`.

    Args / Returns: as :func:`sample_balanced` (``matched[a]`` is the box index of a positive).
    """
    max_pos = _check_counts(batch_size_per_image, positive_fraction)
    positive = matched >= 0
    if int(positive.sum()) <= max_pos:
        pos = positive.clone()
    else:
        boxes, counts = torch.unique(matched[positive], return_counts=True)
        order = torch.argsort(counts, stable=True).tolist()
        pos = torch.zeros_like(positive)
        remaining = max_pos
        for left, i in zip(range(len(order), 0, -1), order, strict=True):
            take = min(int(counts[i]), remaining // left)
            pos |= _random_subset(matched == boxes[i], take, generator)
            remaining -= take
    num_pos = int(pos.sum())
    neg = _random_subset(matched == -1, batch_size_per_image - num_pos, generator)
    return pos, neg


def hard_negative_mining(
    loss: Tensor,
    matched: Tensor,
    neg_pos_ratio: float = 3.0,
    min_negatives: int = 0,
) -> tuple[Tensor, Tensor]:
    """Keep all positives and the hardest negatives of one image (SSD / SSH OHEM).

    The number of negatives kept is ``max(min_negatives, floor(neg_pos_ratio * #positives))``,
    capped by the number of negatives; they are the negatives with the largest
    ``loss``, ties broken by the lower anchor index.

    Args:
        loss: ``Tensor[A]`` per-anchor classification loss (only its order matters;
            no gradient flows through the selection).
        matched: ``Tensor[A]`` int64 from the matcher.
        neg_pos_ratio: negatives per positive (3 in SSD/SSH).
        min_negatives: negatives kept even when there is no positive.

    Returns: boolean masks ``(positive [A], negative [A])``.
    """
    if loss.shape != matched.shape:
        raise ValueError(f"loss {tuple(loss.shape)} and matched {tuple(matched.shape)} differ")
    if neg_pos_ratio < 0 or min_negatives < 0:
        raise ValueError("neg_pos_ratio and min_negatives must be >= 0")
    positive = matched >= 0
    negative = matched == -1
    num_neg = max(int(min_negatives), int(neg_pos_ratio * int(positive.sum())))
    num_neg = min(num_neg, int(negative.sum()))
    values = loss.detach().float()
    ranked = torch.where(negative, values, torch.full_like(values, -float("inf")))
    order = torch.sort(ranked, descending=True, stable=True).indices[:num_neg]
    keep = torch.zeros_like(negative)
    keep[order] = True
    return positive, keep
