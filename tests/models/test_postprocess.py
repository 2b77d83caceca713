"""Post-processing: top-k selection by hand, and the full chain against torchvision."""

import math
import warnings

import pytest
import torch
import torchvision

from detkit.models.postprocess import (
    NonFiniteOutputWarning,
    PostprocessConfig,
    postprocess_image,
    select_topk,
)


def test_select_topk_by_hand():
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.6], [0.04, 0.05]])
    rows, labels, top = select_topk(scores, score_threshold=0.05, topk=3)
    # above 0.05: 0.9 (r0, l1), 0.1 (r0, l2), 0.2 (r1, l1), 0.6 (r1, l2); 0.05 is not > 0.05
    # top 3 by score: 0.9, 0.6, 0.2
    assert rows.tolist() == [0, 1, 1]
    assert labels.tolist() == [1, 2, 1]
    assert top.tolist() == pytest.approx([0.9, 0.6, 0.2])


def test_postprocess_by_hand():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [-5, -5, 30, 30], [50, 50, 60, 60.0]])
    scores = torch.tensor([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.3, 0.0]])
    cfg = PostprocessConfig(score_threshold=0.05, nms_threshold=0.5, max_detections=10)
    out = postprocess_image([scores], [boxes], (20, 25), cfg)
    # box 1 overlaps box 0 (IoU 90 / 110 = 0.82, same class) -> suppressed;
    # box 2 is class 2 -> kept, clipped to x in [0, 25], y in [0, 20];
    # box 3 clips to (25, 20, 25, 20) (zero area) and is kept with 0.3
    assert out["scores"].tolist() == pytest.approx([0.9, 0.7, 0.3])
    assert out["labels"].tolist() == [1, 2, 1]
    assert out["labels"].dtype == torch.int64
    assert out["boxes"].tolist() == [[0, 0, 10, 10], [0, 0, 25, 20], [25, 20, 25, 20]]
    out = postprocess_image([scores], [boxes], (20, 25), PostprocessConfig(max_detections=1))
    assert out["scores"].tolist() == pytest.approx([0.9])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_torchvision_chain(seed):
    g = torch.Generator().manual_seed(seed)
    levels_s, levels_b = [], []
    for n in (60, 30):
        xy = torch.rand(n, 2, generator=g) * 80
        levels_b.append(torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 40], dim=1))
        levels_s.append(torch.rand(n, 3, generator=g))
    cfg = PostprocessConfig(
        score_threshold=0.3, topk_candidates=50, nms_threshold=0.4, max_detections=20
    )
    out = postprocess_image(levels_s, levels_b, (100, 90), cfg)
    # reference: per level threshold + top 50 in plain Python, clip, torchvision batched_nms
    cand = []
    for s, b in zip(levels_s, levels_b, strict=True):
        trip = [
            (s[i, k].item(), i, k) for i in range(s.shape[0]) for k in range(3) if s[i, k] > 0.3
        ]
        trip.sort(key=lambda t: -t[0])
        cand += [(sc, b[i], k + 1) for sc, i, k in trip[:50]]
    rb = torchvision.ops.clip_boxes_to_image(torch.stack([c[1] for c in cand]), (100, 90))
    rs = torch.tensor([c[0] for c in cand])
    rl = torch.tensor([c[2] for c in cand])
    keep = torchvision.ops.batched_nms(rb, rs, rl, 0.4)[:20]
    assert torch.allclose(out["boxes"], rb[keep])
    assert torch.allclose(out["scores"], rs[keep])
    assert out["labels"].tolist() == rl[keep].tolist()


def test_class_specific_boxes_and_other_nms_kinds():
    boxes = torch.tensor([[[0, 0, 10, 10], [20, 20, 30, 30]], [[0, 0, 5, 5], [1, 1, 6, 6.0]]])
    scores = torch.tensor([[0.9, 0.6], [0.0, 0.8]])
    for kind in ("nms", "diou_nms", "cluster_nms", "soft_nms"):
        out = postprocess_image([scores], [boxes], (40, 40), PostprocessConfig(nms=kind))
        # (row 0, label 1) -> box (0,0,10,10); (row 1, label 2) -> (1,1,6,6) overlaps
        # (row 0, label 2) (20,20,30,30)? no: IoU 0, so all three survive, sorted 0.9, 0.8, 0.6
        assert out["labels"].tolist() == [1, 2, 2], kind
        assert out["boxes"].tolist() == [[0, 0, 10, 10], [1, 1, 6, 6], [20, 20, 30, 30]], kind
        assert out["scores"].tolist() == pytest.approx([0.9, 0.8, 0.6]), kind


def test_empty_and_bad_config():
    out = postprocess_image([torch.zeros(0, 2)], [torch.zeros(0, 4)], (10, 10), PostprocessConfig())
    assert out["boxes"].shape == (0, 4) and out["labels"].dtype == torch.int64
    with pytest.raises(ValueError, match="unknown nms"):
        PostprocessConfig(nms="fast_nms")


@pytest.mark.faults
@pytest.mark.parametrize("kind", ["nms", "diou_nms", "soft_nms", "cluster_nms", "callable"])
def test_non_finite_candidates_are_dropped_with_a_warning(kind):
    """Issue 13: clipping leaves NaN in place, which crashed diou_nms; now such
    candidates are dropped (named warning) and the finite ones come out as before."""
    nan = float("nan")
    boxes = torch.tensor([[nan, 0, 10, 10], [0, 0, 10, 10], [1, 0, 11, 10], [0, 0, nan, nan]])
    scores = torch.tensor([[0.95, 0.0], [0.9, 0.0], [0.8, 0.0], [0.0, 0.7]])

    def plain(b, s, labels, t):
        keep = torchvision.ops.batched_nms(b, s, labels, t)
        return keep, s[keep]

    cfg = PostprocessConfig(nms=plain if kind == "callable" else kind, nms_threshold=0.5)
    with pytest.warns(NonFiniteOutputWarning, match="NaN or inf"):
        out = postprocess_image([scores], [boxes], (20, 25), cfg)
    # rows 0 and 3 carry NaN; of the rest, row 2 overlaps row 1 (IoU 90 / 110 = 0.82)
    assert torch.isfinite(out["boxes"]).all()
    assert out["boxes"][0].tolist() == [0, 0, 10, 10]
    assert out["scores"][0].item() == pytest.approx(0.9)
    if kind != "soft_nms":  # soft-NMS decays row 2 instead of dropping it
        assert out["scores"].tolist() == pytest.approx([0.9])


# Two same-class boxes that overlap (IoU 7/13) but have distant centres, so the NMS kinds
# disagree. A = (0, 0, 20, 4), B = (6, 0, 26, 4): intersection 14 x 4 = 56, union
# 80 + 80 - 56 = 104, IoU = 56 / 104 = 0.53846 > 0.5. Centres (10, 2) and (16, 2):
# rho^2 = 36; enclosing box (0, 0, 26, 4): c^2 = 26^2 + 4^2 = 692; DIoU criterion
# 0.53846 - 36 / 692 = 0.48644 <= 0.5. Soft-NMS (gaussian, sigma 0.5) decays B by
# exp(-0.53846^2 / 0.5) = exp(-98 / 169) = 0.55997.
OVERLAP_A_B = torch.tensor([[0.0, 0.0, 20.0, 4.0], [6.0, 0.0, 26.0, 4.0]])
SOFT_DECAY = math.exp(-98.0 / 169.0)


@pytest.mark.parametrize(
    ("kind", "kwargs", "expected_scores"),
    [
        ("nms", {}, [0.9]),  # IoU 0.538 > 0.5: B dropped
        ("diou_nms", {}, [0.9, 0.8]),  # DIoU criterion 0.486 <= 0.5: B kept
        ("soft_nms", {}, [0.9, 0.8 * SOFT_DECAY]),  # B kept with a decayed score
        ("cluster_nms", {}, [0.9]),  # the IoU kind of Cluster-NMS equals greedy NMS
        ("cluster_nms", {"cluster_kind": "diou"}, [0.9, 0.8]),
    ],
)
def test_nms_kind_changes_overlapping_detections(kind, kwargs, expected_scores):
    scores = torch.tensor([[0.9, 0.0], [0.8, 0.0]])
    cfg = PostprocessConfig(nms=kind, nms_threshold=0.5, nms_kwargs=kwargs)
    out = postprocess_image([scores], [OVERLAP_A_B], (10, 30), cfg)
    assert out["scores"].tolist() == pytest.approx(expected_scores, rel=1e-5)
    assert out["boxes"].tolist() == OVERLAP_A_B[: len(expected_scores)].tolist()
    assert out["labels"].tolist() == [1] * len(expected_scores)


@pytest.mark.parametrize("kind", ["nms", "diou_nms", "soft_nms", "cluster_nms"])
def test_class_agnostic_nms_keeps_one_box_per_object(kind):
    # Boxes (0,0,10,10) and (1,0,11,10): intersection 9*10 = 90, union 100 + 100 - 90 = 110,
    # IoU 0.818 (DIoU: centres 1 px apart in an 11 x 10 enclosing box, 0.818 - 1/221 = 0.814).
    # Class 1 at 0.9 and class 2 at 0.8: per-class NMS keeps both (different classes);
    # class-agnostic NMS keeps only the 0.9 box. Soft-NMS (linear) decays the 0.8 to
    # 0.8 * (1 - 0.818) = 0.145, which stays above the 0.05 score floor, so it keeps two
    # boxes but the second at 0.145.
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10]])
    scores = torch.tensor([[0.9, 0.0], [0.0, 0.8]])
    per_class = postprocess_image([scores], [boxes], (20, 20), PostprocessConfig(nms=kind))
    assert per_class["scores"].tolist() == pytest.approx([0.9, 0.8])
    assert per_class["labels"].tolist() == [1, 2]
    cfg = PostprocessConfig(nms=kind, class_agnostic_nms=True,
                            nms_kwargs={"method": "linear"} if kind == "soft_nms" else {})
    agnostic = postprocess_image([scores], [boxes], (20, 20), cfg)
    if kind == "soft_nms":
        assert agnostic["scores"].tolist() == pytest.approx([0.9, 0.8 * (1 - 90 / 110)],
                                                            rel=1e-5)
    else:
        assert agnostic["scores"].tolist() == pytest.approx([0.9])
        assert agnostic["labels"].tolist() == [1]
        assert agnostic["boxes"].tolist() == [[0.0, 0.0, 10.0, 10.0]]


def test_callable_nms_gets_the_candidates_and_its_choice_is_kept():
    # a callable NMS receives the clipped candidate boxes, their scores, labels and the
    # configured threshold; what it keeps (with its scores) is the output, best first
    calls = []

    def keep_lowest(boxes, scores, labels, threshold):
        calls.append((boxes.clone(), scores.clone(), labels.clone(), threshold))
        order = torch.argsort(scores)  # the two lowest, deliberately not the greedy choice
        return order[:2], scores[order[:2]] / 2

    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [-5, -5, 30, 30]])
    scores = torch.tensor([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7]])
    cfg = PostprocessConfig(nms=keep_lowest, nms_threshold=0.3)
    out = postprocess_image([scores], [boxes], (20, 25), cfg)
    (got_boxes, got_scores, got_labels, threshold), = calls
    assert threshold == 0.3
    assert got_scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert got_labels.tolist() == [1, 1, 2]
    assert got_boxes[2].tolist() == [0.0, 0.0, 25.0, 20.0]  # clipped before the NMS
    # kept: candidates 2 (0.7 -> 0.35) and 1 (0.8 -> 0.4), sorted by the new scores
    assert out["scores"].tolist() == pytest.approx([0.4, 0.35])
    assert out["labels"].tolist() == [1, 2]
    assert out["boxes"].tolist() == [[1.0, 0.0, 11.0, 10.0], [0.0, 0.0, 25.0, 20.0]]


def test_score_equal_to_the_threshold_is_dropped_and_levels_must_pair():
    # 0.25 is exact in float32: "above the threshold" leaves it out even with room to spare
    scores = torch.tensor([[0.25], [0.5]])
    boxes = torch.tensor([[0.0, 0, 4, 4], [10, 10, 14, 14]])
    rows, labels, top = select_topk(scores, score_threshold=0.25, topk=10)
    assert rows.tolist() == [1] and top.tolist() == [0.5]
    with pytest.raises(ValueError):
        postprocess_image([scores, scores], [boxes], (20, 20), PostprocessConfig())


def test_one_candidate_and_one_detection_are_valid_limits():
    cfg = PostprocessConfig(topk_candidates=1, max_detections=1, score_threshold=0.0)
    boxes = torch.tensor([[0.0, 0, 4, 4], [10, 10, 14, 14]])
    out = postprocess_image([torch.tensor([[0.3], [0.6]])], [boxes], (20, 20), cfg)
    assert out["scores"].tolist() == pytest.approx([0.6])
    for bad in ({"topk_candidates": 0}, {"max_detections": 0}):
        with pytest.raises(ValueError, match="must be >= 1"):
            PostprocessConfig(**bad)


class _TopK(torch.nn.Module):
    """select_topk(scores, 0.5, 4), the form the ONNX export traces."""

    def forward(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return select_topk(scores, 0.5, 4)


def test_traced_topk_count_follows_each_input():
    # traced on 5 candidates above 0.5, the graph must still take min(4, #candidates) of
    # another input: 2 candidates -> 2 rows; 6 candidates -> the best 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(_TopK(), torch.tensor([[0.9], [0.8], [0.7], [0.6], [0.55]]))
    rows, labels, top = traced(torch.tensor([[0.2], [0.9], [0.1], [0.7]]))
    assert rows.tolist() == [1, 3] and labels.tolist() == [1, 1]
    assert top.tolist() == pytest.approx([0.9, 0.7])
    rows, _, top = traced(torch.tensor([[0.6], [0.9], [0.95], [0.7], [0.8], [0.3], [0.99]]))
    assert rows.tolist() == [6, 2, 1, 4]
    assert top.tolist() == pytest.approx([0.99, 0.95, 0.9, 0.8])
