"""Post-processing: top-k selection by hand, and the full chain against torchvision."""

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
