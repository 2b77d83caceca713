"""Matcher rules checked on hand-built boxes (IoU arithmetic in the comments)."""

import pytest
import torch

from detkit.models.matching import IGNORE, NEGATIVE, Matcher, intersection_over_anchor


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_thresholds_positive_negative_ignore():
    anchors = _t([[0, 0, 10, 10], [0, 0, 20, 20], [100, 100, 110, 110], [5, 0, 15, 10]])
    gt = _t([[0, 0, 10, 10]])
    # IoU: a0 = 1; a1 = 100 / 400 = 0.25; a2 = 0; a3 = 50 / (100 + 100 - 50) = 1/3
    out = Matcher(high=0.5, low=0.4, allow_low_quality_matches=False)(anchors, gt)
    assert out.tolist() == [0, NEGATIVE, NEGATIVE, NEGATIVE]
    # low 0.3: a3 (1/3) falls in [0.3, 0.5) -> ignore
    out = Matcher(high=0.5, low=0.3, allow_low_quality_matches=False)(anchors, gt)
    assert out.tolist() == [0, NEGATIVE, NEGATIVE, IGNORE]


def test_best_of_two_ground_truths():
    anchors = _t([[0, 0, 10, 10], [20, 0, 30, 10]])
    gt = _t([[21, 0, 30, 10], [0, 0, 10, 10]])
    # a0 -> gt1 (IoU 1); a1 -> gt0 (IoU 90 / 100 = 0.9)
    assert Matcher()(anchors, gt).tolist() == [1, 0]


def test_low_quality_match():
    anchors = _t([[0, 0, 10, 10], [20, 0, 30, 10]])
    gt = _t([[0, 0, 10, 25]])
    # IoU(a0, gt) = 100 / 250 = 0.4 -> in [0.3, 0.5): ignored unless low-quality matches allowed
    off = Matcher(high=0.5, low=0.3, allow_low_quality_matches=False)(anchors, gt)
    on = Matcher(high=0.5, low=0.3, allow_low_quality_matches=True)(anchors, gt)
    assert off.tolist() == [IGNORE, NEGATIVE]
    assert on.tolist() == [0, NEGATIVE]


def _scale_case():
    anchors = _t(
        [
            [0, 0, 16, 16],  # a0: IoU with G0 = 1
            [4, 0, 20, 16],  # a1: inter 12 * 16 = 192, union 256 + 256 - 192 = 320 -> 0.6
            [0, 4, 16, 20],  # a2: 0.6 likewise
            [36, 36, 52, 52],  # a3: contains G1: 64 / 256 = 0.25
            [40, 40, 56, 56],  # a4: contains G1: 0.25
            [44, 44, 60, 60],  # a5: inter 4 * 4 = 16, union 256 + 64 - 16 = 304 -> 0.053
            [42, 40, 58, 56],  # a6: inter 6 * 8 = 48, union 256 + 64 - 48 = 272 -> 0.176
        ]
    )
    gt = _t([[0, 0, 16, 16], [40, 40, 48, 48]])  # G0 large, G1 tiny (8 x 8)
    return anchors, gt


def test_tiny_box_missed_without_scale_compensation():
    anchors, gt = _scale_case()
    out = Matcher(high=0.5, low=0.4, allow_low_quality_matches=False)(anchors, gt)
    # G1's best IoU is 0.25 < 0.4: no anchor for it
    assert out.tolist() == [0, 0, 0, NEGATIVE, NEGATIVE, NEGATIVE, NEGATIVE]
    assert not (out == 1).any()


def test_tiny_box_matched_with_scale_compensation():
    anchors, gt = _scale_case()
    matcher = Matcher(
        high=0.5,
        low=0.4,
        allow_low_quality_matches=False,
        scale_compensation=True,
        stage1_threshold=0.35,
        stage2_min_iou=0.1,
    )
    out = matcher(anchors, gt)
    # stage 1 (0.35): G0 gets a0, a1, a2; G1 none -> mean = (3 + 0) / 2 = 1.5 -> N = 2.
    # stage 2: G1's anchors with IoU > 0.1 sorted: a3 (0.25), a4 (0.25), a6 (0.176); top 2 = a3, a4.
    # a5 (0.053) is below 0.1; a6 is third and stays negative.
    assert out.tolist() == [0, 0, 0, 1, 1, NEGATIVE, NEGATIVE]


def test_stage_two_does_not_steal_positives():
    anchors = _t([[0, 0, 16, 16], [0, 0, 12, 12]])
    # G0 = a0 exactly; G1 small inside a0 and a1.
    gt = _t([[0, 0, 16, 16], [0, 0, 6, 6]])
    # IoU(a0, G0) = 1; IoU(a1, G0) = 144 / 256 = 0.5625: G0 takes both in stage 1, G1 none
    # -> mean (2 + 0) / 2 = 1 -> N = 1.
    # G1: IoU(a0) = 36 / 256 = 0.14, IoU(a1) = 36 / 144 = 0.25; its top-1 is a1, already G0's.
    m = Matcher(allow_low_quality_matches=False, scale_compensation=True)
    assert m(anchors, gt).tolist() == [0, 0]


def test_ignore_boxes_by_intersection_over_anchor():
    anchors = _t([[100, 100, 110, 110], [95, 100, 105, 110], [90, 100, 100, 110], [0, 0, 10, 10]])
    gt = _t([[0, 0, 10, 10]])
    crowd = _t([[100, 100, 200, 200]])
    # IoF: a0 = 100 / 100 = 1; a1 = 5 * 10 / 100 = 0.5; a2 = 0; a3 positive stays positive
    iof = intersection_over_anchor(anchors, crowd).flatten()
    assert iof.tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])
    out = Matcher(ignore_threshold=0.5)(anchors, gt, crowd)
    assert out.tolist() == [IGNORE, IGNORE, NEGATIVE, 0]
    crowd_on_positive = _t([[0, 0, 50, 50]])
    assert Matcher()(anchors, gt, crowd_on_positive)[3].item() == 0


def test_empty_ground_truth():
    anchors = _t([[0, 0, 10, 10], [5, 5, 20, 20]])
    out = Matcher(scale_compensation=True)(anchors, torch.zeros(0, 4))
    assert out.tolist() == [NEGATIVE, NEGATIVE]
    assert out.dtype == torch.int64
    out = Matcher()(anchors, torch.zeros(0, 4), _t([[0, 0, 10, 10]]))
    assert out.tolist() == [IGNORE, NEGATIVE]


def test_zero_area_ground_truth_never_matches():
    anchors = _t([[0, 0, 10, 10]])
    assert Matcher(scale_compensation=True)(anchors, _t([[5, 5, 5, 5]])).tolist() == [NEGATIVE]


def test_bad_thresholds():
    with pytest.raises(ValueError, match="low"):
        Matcher(high=0.3, low=0.5)


def test_iou_exactly_at_each_threshold():
    # gt (0, 0, 10, 10); anchors of height 5 and 4 inside it: IoU 50 / 100 = 0.5 exactly and
    # 40 / 100 = 0.4 exactly (both exact in float32 arithmetic, as the thresholds are).
    # The rule: IoU >= high is positive, IoU < low negative, [low, high) ignored.
    anchors = _t([[0, 0, 10, 5], [0, 0, 10, 4], [0, 0, 10, 3.9]])
    gt = _t([[0, 0, 10, 10]])
    out = Matcher(high=0.5, low=0.4, allow_low_quality_matches=False)(anchors, gt)
    assert out.tolist() == [0, IGNORE, NEGATIVE]  # 0.5 -> positive, 0.4 -> ignore, 0.39 -> neg
    # high == low == 0.4 (the R-CNN form): 0.4 is positive, below it negative
    out = Matcher(high=0.4, low=0.4, allow_low_quality_matches=False)(anchors, gt)
    assert out.tolist() == [0, 0, NEGATIVE]


def test_intersection_over_anchor_non_square_region_and_sub_pixel_anchor():
    # region (0, 0, 5, 20): x2 = 5 differs from y2 = 20. a0 (4, 1, 6, 3), area 4: the
    # intersection is x [4, 5] x y [1, 3] = 2 -> 0.5. a1 (0.5, 0.5, 1, 1), area 0.25, lies
    # inside -> 1. a2 (6, 0, 8, 2) is right of the region -> 0.
    anchors = _t([[4, 1, 6, 3], [0.5, 0.5, 1, 1], [6, 0, 8, 2]])
    iof = intersection_over_anchor(anchors, _t([[0, 0, 5, 20]])).flatten()
    assert iof.tolist() == pytest.approx([0.5, 1.0, 0.0])


def test_empty_ignore_boxes_change_nothing():
    anchors = _t([[0, 0, 10, 10], [0, 0, 10, 4.5], [30, 30, 40, 40]])
    gt = _t([[0, 0, 10, 10]])
    plain = Matcher()(anchors, gt)
    assert plain.tolist() == [0, IGNORE, NEGATIVE]  # IoU 1, 0.45, 0
    assert Matcher()(anchors, gt, torch.zeros(0, 4)).tolist() == plain.tolist()


def test_defaults_are_the_documented_ones():
    # defaults: high 0.5, low 0.4, low-quality matches on, S3FD stage 1 0.35 / stage 2 0.1
    anchors = _t([[0, 0, 10, 10], [20, 0, 30, 10]])
    gt = _t([[0, 0, 10, 25]])  # IoU(a0) = 100 / 250 = 0.4: ignored, then claimed (best)
    assert Matcher()(anchors, gt).tolist() == [0, NEGATIVE]
    scale_anchors, scale_gt = _scale_case()
    out = Matcher(allow_low_quality_matches=False, scale_compensation=True)(scale_anchors,
                                                                            scale_gt)
    assert out.tolist() == [0, 0, 0, 1, 1, NEGATIVE, NEGATIVE]  # as with explicit values


def test_threshold_validation_bounds():
    Matcher(high=0.5, low=0.0)  # low may be 0
    Matcher(high=1.0, low=0.5)  # high may be 1
    # with scale compensation the positive threshold is stage1 (0.35) and low drops to it
    m = Matcher(high=0.3, low=0.4, scale_compensation=True)
    assert m.low == 0.35
    with pytest.raises(ValueError, match="low"):
        Matcher(high=1.5, low=0.5)
    with pytest.raises(ValueError, match="low"):
        Matcher(high=0.5, low=-0.1)


def test_scale_compensation_stage_one_uses_its_own_threshold():
    # IoU with gt (0, 0, 10, 10): a0 (0, 0, 10, 4) = 0.4, a1 (0, 0, 10, 4.5) = 0.45; both
    # reach stage 1's 0.35 (below high = 0.5), so both are positive and stage 2 adds nothing
    anchors = _t([[0, 0, 10, 4], [0, 0, 10, 4.5]])
    m = Matcher(high=0.5, low=0.3, allow_low_quality_matches=False, scale_compensation=True,
                stage1_threshold=0.35)
    assert m(anchors, _t([[0, 0, 10, 10]])).tolist() == [0, 0]


def test_low_quality_matches_with_several_boxes():
    # a0 has IoU 0.4 with g0 only, a1 0.4 with g1 only (both in the ignore band [0.3, 0.5)),
    # a2 overlaps nothing; each box claims its best anchor
    anchors = _t([[0, 0, 10, 10], [20, 0, 30, 10], [50, 50, 60, 60]])
    gt = _t([[0, 0, 10, 25], [20, 0, 30, 25]])
    m = Matcher(high=0.5, low=0.3, allow_low_quality_matches=True)
    assert m(anchors, gt).tolist() == [0, 1, NEGATIVE]


def test_scale_compensation_takes_exactly_n_anchors():
    # G0 = a0 (stage 1), tiny G1 none: mean (1 + 0) / 2 = 0.5 -> N = floor(1.0) = 1.
    # G1's candidates: a1 (IoU 0.25) and a2 (0.176): only the top one is taken
    anchors = _t([[0, 0, 16, 16], [36, 36, 52, 52], [42, 40, 58, 56]])
    gt = _t([[0, 0, 16, 16], [40, 40, 48, 48]])
    m = Matcher(allow_low_quality_matches=False, scale_compensation=True)
    assert m(anchors, gt).tolist() == [0, 1, NEGATIVE]


def test_stage_two_needs_iou_above_its_minimum():
    # stage2_min_iou 0.25: a3, a4 have IoU exactly 64 / 256 = 0.25 with G1, not above it
    anchors, gt = _scale_case()
    m = Matcher(high=0.5, low=0.4, allow_low_quality_matches=False, scale_compensation=True,
                stage2_min_iou=0.25)
    assert m(anchors, gt).tolist() == [0, 0, 0] + [NEGATIVE] * 4


def test_snip_invalid_box_ignores_its_non_positive_anchors():
    # valid gt G (0, 0, 10, 10); invalid (SNIP: out of the scale's range) V (100, 100, 140,
    # 140) and W (0, 0, 10, 8), which overlaps G's anchor a0. IoU with V (area 1600):
    # a1 = V: 1 -> ignored (it would be V's positive if V were valid);
    # a2 (100, 100, 140, 116): 640 / 1600 = 0.4 = low -> ignored (not < low);
    # a3 (100, 100, 140, 115): 600 / 1600 = 0.375 < 0.4 -> negative; a4 far -> negative.
    # a0: IoU 1 with G, 80 / 100 = 0.8 with W -> stays G's positive (positives are kept)
    anchors = _t([[0, 0, 10, 10], [100, 100, 140, 140], [100, 100, 140, 116],
                  [100, 100, 140, 115], [50, 50, 60, 60]])
    gt = _t([[0, 0, 10, 10]])
    invalid = _t([[100, 100, 140, 140], [0, 0, 10, 8]])
    matcher = Matcher(high=0.5, low=0.4)
    assert matcher(anchors, gt, None, invalid).tolist() == [0, IGNORE, IGNORE, NEGATIVE,
                                                            NEGATIVE]
    # without invalid boxes a1 and a2 are plain negatives
    assert matcher(anchors, gt).tolist() == [0, NEGATIVE, NEGATIVE, NEGATIVE, NEGATIVE]
    # an image whose only object is invalid: no positive, a1 and a2 still ignored
    empty = torch.zeros(0, 4)
    assert matcher(anchors, empty, None, invalid).tolist() == [IGNORE, IGNORE, IGNORE,
                                                               NEGATIVE, NEGATIVE]
