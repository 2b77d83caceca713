"""Random and instance-balanced sampling and online hard-negative mining on known inputs."""

import pytest
import torch

from detkit.models.sampling import (
    hard_negative_mining,
    sample_balanced,
    sample_instance_balanced,
)


def _matched(num_pos, num_neg, num_ign):
    return torch.tensor(list(range(num_pos)) + [-1] * num_neg + [-2] * num_ign)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_caps_positives(seed):
    matched = _matched(6, 10, 4)
    g = torch.Generator().manual_seed(seed)
    pos, neg = sample_balanced(matched, batch_size_per_image=8, positive_fraction=0.25, generator=g)
    # int(8 * 0.25) = 2 positives out of 6, then 8 - 2 = 6 negatives out of 10
    assert int(pos.sum()) == 2 and int(neg.sum()) == 6
    assert bool((matched[pos] >= 0).all()) and bool((matched[neg] == -1).all())
    assert not bool((pos & neg).any())


def test_balanced_fills_with_negatives_and_never_samples_ignored():
    matched = _matched(1, 10, 4)
    pos, neg = sample_balanced(matched, batch_size_per_image=8, positive_fraction=0.5)
    # 1 positive (fewer than int(8 * 0.5) = 4), 8 - 1 = 7 negatives
    assert pos.tolist() == [True] + [False] * 14
    assert int(neg.sum()) == 7 and not bool(neg[-4:].any())
    # fewer samples than wanted: all 1 + 2 taken
    pos, neg = sample_balanced(_matched(1, 2, 1), batch_size_per_image=8)
    assert pos.tolist() == [True, False, False, False]
    assert neg.tolist() == [False, True, True, False]


def test_balanced_is_reproducible_with_generator():
    matched = _matched(20, 50, 0)
    a = sample_balanced(matched, 16, 0.5, torch.Generator().manual_seed(3))
    b = sample_balanced(matched, 16, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_hard_negative_mining_picks_highest_losses():
    loss = torch.tensor([0.9, 0.1, 0.8, 0.3, 0.7, 0.5, 0.95])
    matched = torch.tensor([0, -1, -1, -1, -1, -1, -2])
    pos, neg = hard_negative_mining(loss, matched, neg_pos_ratio=3)
    # 1 positive -> 3 negatives: losses 0.8 (#2), 0.7 (#4), 0.5 (#5); #6 is ignored (0.95)
    assert pos.tolist() == [True, False, False, False, False, False, False]
    assert neg.tolist() == [False, False, True, False, True, True, False]


def test_hard_negative_mining_without_positives_and_ties():
    loss = torch.tensor([0.5, 0.5, 0.2, 0.5])
    matched = torch.tensor([-1, -1, -1, -1])
    pos, neg = hard_negative_mining(loss, matched, neg_pos_ratio=3, min_negatives=2)
    # no positive: min_negatives = 2; three tie at 0.5 -> the two lowest indices, 0 and 1
    assert not bool(pos.any())
    assert neg.tolist() == [True, True, False, False]
    # ratio asks for more than exist: capped at the 4 negatives
    _, neg = hard_negative_mining(loss, torch.tensor([0, -1, -1, -1]), neg_pos_ratio=5)
    assert neg.tolist() == [False, True, True, True]


def test_bad_inputs():
    with pytest.raises(ValueError, match="positive_fraction"):
        sample_balanced(_matched(1, 1, 0), positive_fraction=1.5)
    with pytest.raises(ValueError, match="differ"):
        hard_negative_mining(torch.zeros(3), torch.zeros(4, dtype=torch.int64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_instance_balanced_spreads_the_quota_over_the_boxes(seed):
    # box 0 has 10 positive candidates, box 1 two, box 2 one; 50 negatives, 3 ignored
    matched = torch.tensor([0] * 10 + [1] * 2 + [2] + [-1] * 50 + [-2] * 3)
    g = torch.Generator().manual_seed(seed)
    pos, neg = sample_instance_balanced(matched, 16, 0.5, generator=g)
    # quota int(16 * 0.5) = 8, boxes from the fewest candidates up: box 2 takes
    # min(1, 8 // 3 = 2) = 1, box 1 min(2, 7 // 2 = 3) = 2, box 0 min(10, 5 // 1) = 5
    assert torch.bincount(matched[pos], minlength=3).tolist() == [5, 2, 1]
    assert int(neg.sum()) == 16 - 8 and bool((matched[neg] == -1).all())
    assert not bool((pos & neg).any())


def test_instance_balanced_keeps_the_rare_box_that_random_sampling_drops():
    # one small box with a single candidate (its ground-truth copy) beside 3 large boxes with
    # 100 candidates each; quota int(64 * 0.25) = 16: the random sampler keeps the small box
    # with probability 16 / 301 = 0.053 per draw, the balanced one always
    matched = torch.tensor([0] * 100 + [1] * 100 + [2] * 100 + [3] + [-1] * 500)
    kept_random = 0
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        pos, _ = sample_balanced(matched, 64, 0.25, generator=g)
        kept_random += int(pos[300])
        pos, _ = sample_instance_balanced(matched, 64, 0.25, generator=g)
        assert bool(pos[300]) and int(pos.sum()) == 16
        # the rest, 15, is spread 15 // 3 = 5 over the three large boxes
        assert torch.bincount(matched[pos], minlength=4).tolist() == [5, 5, 5, 1]
    # binomial(200, 0.053): mean 10.6, sd 3.2; 30 is six sd above
    assert kept_random < 30


def test_instance_balanced_takes_every_positive_under_the_quota():
    matched = _matched(3, 10, 2)
    pos, neg = sample_instance_balanced(matched, 8, 0.5)
    # 3 positives <= int(8 * 0.5) = 4: all taken, then 8 - 3 = 5 negatives
    assert pos.tolist() == [True] * 3 + [False] * 12
    assert int(neg.sum()) == 5 and not bool(neg[-2:].any())
    with pytest.raises(ValueError, match="positive_fraction"):
        sample_instance_balanced(matched, 8, 1.5)
