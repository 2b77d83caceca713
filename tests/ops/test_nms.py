"""The NMS family against plain-Python references, per-class loops and hand examples."""

import importlib
import math

import pytest
import torch
import torchvision
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from detkit.ops import (
    batched_diou_nms,
    batched_nms,
    batched_nms_by_kind,
    cluster_nms,
    diou_nms,
    nms,
    soft_nms,
)

# the module (the package attribute "nms" is the function of the same name)
nms_module = importlib.import_module("detkit.ops.nms")
SEEDS = range(10)
THRESHOLDS = [0.2, 0.5, 0.8]


def clustered(n: int, seed: int, objects: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes jittered around a few objects, so that many pairs overlap."""
    g = torch.Generator().manual_seed(seed)
    base_xy = torch.rand(objects, 2, generator=g) * 200
    base_wh = torch.rand(objects, 2, generator=g) * 60 + 5
    pick = torch.randint(0, objects, (n,), generator=g)
    wh = base_wh[pick] * (1 + 0.25 * torch.randn(n, 2, generator=g)).clamp(min=0.3)
    xy = base_xy[pick] + 0.2 * base_wh[pick] * torch.randn(n, 2, generator=g)
    return torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g)


def ref_criterion(a: list[float], b: list[float], diou: bool, beta: float = 1.0) -> float:
    """IoU, or IoU - (rho^2 / c^2)^beta, of two xyxy boxes in plain Python floats."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = iw * ih if (iw > 0.0 and ih > 0.0) else 0.0
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    iou = inter / union if union > 0.0 else 0.0
    if not diou:
        return iou
    cw = max(a[2], b[2]) - min(a[0], b[0])
    ch = max(a[3], b[3]) - min(a[1], b[1])
    c2 = cw * cw + ch * ch
    dx = (a[0] + a[2]) - (b[0] + b[2])
    dy = (a[1] + a[3]) - (b[1] + b[3])
    rho2 = (dx * dx + dy * dy) / 4.0
    return iou - ((rho2 / c2) ** beta if c2 > 0.0 else 0.0)


def ref_greedy(boxes, scores, threshold, diou, beta=1.0, classes=None) -> list[int]:
    """Textbook greedy NMS: keep the best remaining box, drop those it suppresses."""
    b, s = boxes.tolist(), scores.tolist()
    c = classes.tolist() if classes is not None else [0] * len(s)
    order = sorted(range(len(s)), key=lambda i: -s[i])  # stable: ties keep index order
    keep: list[int] = []
    alive = set(order)
    for i in order:
        if i not in alive:
            continue
        keep.append(i)
        for j in list(alive):
            if j != i and c[j] == c[i] and ref_criterion(b[i], b[j], diou, beta) > threshold:
                alive.discard(j)
        alive.discard(i)
    return keep


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_nms_and_diou_nms_equal_reference(seed, threshold):
    boxes, scores = clustered(150, seed)
    assert nms(boxes, scores, threshold).tolist() == ref_greedy(boxes, scores, threshold, False)
    expected = ref_greedy(boxes, scores, threshold, True)
    assert diou_nms(boxes, scores, threshold).tolist() == expected
    # the pure-torch matrix path (used on CUDA and without numba) agrees exactly
    assert cluster_nms(boxes, scores, threshold, kind="diou").tolist() == expected
    assert (
        cluster_nms(boxes, scores, threshold, kind="iou").tolist()
        == nms(boxes, scores, threshold).tolist()
    )


@pytest.mark.parametrize("beta", [0.6, 1.0, 1.4])
def test_diou_nms_beta(beta):
    boxes, scores = clustered(120, 3)
    assert diou_nms(boxes, scores, 0.4, beta=beta).tolist() == ref_greedy(
        boxes, scores, 0.4, True, beta
    )


def test_diou_keeps_separated_box_that_nms_drops():
    # A = (0,0,10,10) and B = (0,0,10,10) shifted: B = (4,0,14,10): inter 6*10 = 60,
    # union 140, IoU = 3/7 = 0.4286 > 0.4 so NMS(0.4) drops B. Centres (5,5) and (9,5):
    # rho^2 = 16; enclosing (0,0,14,10): c^2 = 196 + 100 = 296; DIoU = 0.4286 - 0.0541
    # = 0.3745 < 0.4, so DIoU-NMS keeps B.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0]])
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.4).tolist() == [0]
    assert diou_nms(boxes, scores, 0.4).tolist() == [0, 1]
    assert 3 / 7 - 16 / 296 == pytest.approx(0.37452, abs=1e-5)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_batched_forms_equal_per_class_loops(seed, threshold):
    boxes, scores = clustered(160, seed)
    idxs = torch.randint(0, 3, (160,), generator=torch.Generator().manual_seed(seed))
    for batched, single in ((batched_nms, nms), (batched_diou_nms, diou_nms)):
        kept = []
        for c in idxs.unique():
            m = torch.where(idxs == c)[0]
            kept += m[single(boxes[m], scores[m], threshold)].tolist()
        kept.sort(key=lambda i: -scores[i].item())
        assert batched(boxes, scores, idxs, threshold).tolist() == kept
    expected = ref_greedy(boxes, scores, threshold, True, classes=idxs)
    assert cluster_nms(boxes, scores, threshold, kind="diou", idxs=idxs).tolist() == expected


def test_soft_nms_hand_worked():
    # A = (0,0,10,10) s .9; B = (0,0,10,5) s .85: IoU(A, B) = 50 / 100 = 0.5;
    # C = (20,20,30,30) s .8 overlaps nothing.
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30]])
    scores = torch.tensor([0.9, 0.85, 0.8])
    keep, new = soft_nms(boxes, scores, method="gaussian", sigma=0.5)
    # gaussian: B -> 0.85 * exp(-0.5^2 / 0.5) = 0.85 * exp(-0.5) = 0.515551
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(new, torch.tensor([0.9, 0.8, 0.85 * math.exp(-0.5)]))
    keep, new = soft_nms(boxes, scores, method="linear", iou_threshold=0.3)
    # linear: IoU 0.5 > 0.3, B -> 0.85 * (1 - 0.5) = 0.425
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(new, torch.tensor([0.9, 0.8, 0.425]))
    # a score threshold of 0.5 removes the decayed B
    keep, new = soft_nms(boxes, scores, method="linear", iou_threshold=0.3, score_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_soft_nms_linear_below_threshold_is_hard_free():
    # IoU 0.5 below a linear threshold of 0.6 leaves scores unchanged
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5]])
    keep, new = soft_nms(boxes, torch.tensor([0.9, 0.85]), method="linear", iou_threshold=0.6)
    assert keep.tolist() == [0, 1] and new.tolist() == pytest.approx([0.9, 0.85])


def test_soft_nms_batched_keeps_classes_apart():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5]])
    scores = torch.tensor([0.9, 0.85])
    keep, new = soft_nms(boxes, scores, idxs=torch.tensor([1, 2]))
    assert keep.tolist() == [0, 1] and new.tolist() == pytest.approx([0.9, 0.85])


@pytest.mark.parametrize("kind", ["nms", "diou_nms", "soft_nms", "cluster_nms"])
def test_dispatcher_and_empty_input(kind):
    empty = torch.zeros(0, 4)
    keep, sc = batched_nms_by_kind(empty, torch.zeros(0), torch.zeros(0, dtype=torch.long), kind)
    assert keep.dtype == torch.int64 and keep.numel() == 0 and sc.numel() == 0
    boxes, scores = clustered(80, 11)
    idxs = torch.zeros(80, dtype=torch.long)
    keep, sc = batched_nms_by_kind(boxes, scores, idxs, kind, 0.5)
    assert torch.all(sc[:-1] >= sc[1:])
    if kind in ("nms", "cluster_nms"):
        assert keep.tolist() == torchvision.ops.nms(boxes, scores, 0.5).tolist()
    if kind == "diou_nms":
        assert keep.tolist() == ref_greedy(boxes, scores, 0.5, True)


def test_errors_and_inputs_untouched():
    boxes, scores = clustered(30, 1)
    b0, s0 = boxes.clone(), scores.clone()
    diou_nms(boxes, scores, 0.5)
    soft_nms(boxes, scores)
    assert torch.equal(boxes, b0) and torch.equal(scores, s0)
    with pytest.raises(ValueError, match="unknown NMS kind"):
        batched_nms_by_kind(boxes, scores, torch.zeros(30, dtype=torch.long), "fast_nms")
    with pytest.raises(ValueError, match="scores must be"):
        diou_nms(boxes, scores[:5], 0.5)
    with pytest.raises(ValueError, match="unknown soft_nms method"):
        soft_nms(boxes, scores, method="hard")


def test_torch_fallback_without_numba(monkeypatch):
    monkeypatch.setattr(nms_module, "HAVE_NUMBA", False)
    boxes, scores = clustered(100, 4)
    assert diou_nms(boxes, scores, 0.5).tolist() == ref_greedy(boxes, scores, 0.5, True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_paths_match_cpu():
    boxes, scores = clustered(300, 2)
    cpu = diou_nms(boxes, scores, 0.5)
    gpu = diou_nms(boxes.cuda(), scores.cuda(), 0.5)
    assert gpu.is_cuda and gpu.cpu().tolist() == cpu.tolist()
    keep, _ = soft_nms(boxes.cuda(), scores.cuda())
    assert keep.is_cuda


@pytest.mark.parametrize("seed", range(5))
def test_mixed_sizes_zero_area_and_huge_boxes(seed):
    """Sizes over five orders of magnitude, zero-area and image-sized boxes (grid levels)."""
    g = torch.Generator().manual_seed(seed)
    boxes, scores = clustered(120, seed)
    tiny_xy = torch.rand(30, 2, generator=g) * 200
    tiny = torch.cat([tiny_xy, tiny_xy + torch.rand(30, 2, generator=g) * 0.5], dim=1)
    flat = torch.cat([tiny_xy[:10], tiny_xy[:10] + torch.tensor([0.0, 20.0])], dim=1)  # w = 0
    huge = torch.tensor([[0.0, 0.0, 260.0, 250.0], [5.0, 3.0, 255.0, 240.0]])
    boxes = torch.cat([boxes, tiny, flat, huge])
    scores = torch.cat([scores, torch.rand(42, generator=g)])
    for threshold in THRESHOLDS:
        assert diou_nms(boxes, scores, threshold).tolist() == ref_greedy(
            boxes, scores, threshold, True
        )
        assert nms_module._greedy(boxes, scores, None, threshold, False, 1.0).tolist() == (
            ref_greedy(boxes, scores, threshold, False)
        )


# ---- fault suite: hostile boxes (docs/reliability.md) -----------------------------------

NAN, INF = float("nan"), float("inf")
finite_coord = st.floats(min_value=-50.0, max_value=150.0, allow_nan=False, width=32)
# negative sides give inverted boxes, 0 gives zero area, -1e-7 the h = -eps corner
box_side = st.sampled_from([-5.0, -1e-7, 0.0, 1e-7, 0.5, 3.0, 20.0, 60.0])
hostile = st.sampled_from([NAN, INF, -INF, 1e12, -1e20])


@st.composite
def hostile_boxes(draw):
    """Up to 12 boxes (float64) and scores; some coordinates or scores NaN / inf."""
    n = draw(st.integers(min_value=0, max_value=12))
    rows, scores = [], []
    for _ in range(n):
        x, y = draw(finite_coord), draw(finite_coord)
        row = [x, y, x + draw(box_side), y + draw(box_side)]
        if draw(st.integers(0, 3)) == 0:
            row[draw(st.integers(0, 3))] = draw(hostile)
        rows.append(row)
        score = draw(st.sampled_from([0.9, 0.5, 0.5, 0.3, 0.1]))  # ties on purpose
        scores.append(NAN if draw(st.integers(0, 7)) == 0 else score)
    boxes = torch.tensor(rows, dtype=torch.float64).reshape(n, 4)
    classes = torch.tensor([draw(st.integers(0, 1)) for _ in range(n)], dtype=torch.int64)
    return boxes, torch.tensor(scores, dtype=torch.float64), classes


def finite_rows(boxes: torch.Tensor, scores: torch.Tensor) -> list[int]:
    """Rows with four finite coordinates and a finite score, in plain Python."""
    return [
        i
        for i in range(len(scores))
        if all(math.isfinite(v) for v in boxes[i].tolist()) and math.isfinite(float(scores[i]))
    ]


def expected_keep(boxes, scores, threshold, diou, classes=None) -> list[int]:
    """The documented behaviour: the reference greedy NMS over the finite rows only."""
    rows = finite_rows(boxes, scores)
    sub_classes = classes[rows] if classes is not None else None
    kept = ref_greedy(boxes[rows], scores[rows], threshold, diou, classes=sub_classes)
    return [rows[k] for k in kept]


@pytest.mark.faults
@settings(max_examples=150, deadline=None)
@given(data=hostile_boxes(), threshold=st.sampled_from([0.0, 0.3, 0.5, 0.7]))
def test_every_nms_kind_defined_on_hostile_boxes(data, threshold):
    """NaN / inf / 1e20 / inverted / zero-area boxes: no crash, the finite rows' greedy
    result on every path (numba, torch matrix, torchvision), nothing non-finite kept."""
    boxes, scores, classes = data
    plain = expected_keep(boxes, scores, threshold, False)
    dist = expected_keep(boxes, scores, threshold, True)
    assert nms(boxes, scores, threshold).tolist() == plain
    assert cluster_nms(boxes, scores, threshold, kind="iou").tolist() == plain
    assert diou_nms(boxes, scores, threshold).tolist() == dist
    assert cluster_nms(boxes, scores, threshold, kind="diou").tolist() == dist
    by_class = expected_keep(boxes, scores, threshold, True, classes)
    assert batched_diou_nms(boxes, scores, classes, threshold).tolist() == by_class
    assert batched_nms(boxes, scores, classes, threshold).tolist() == expected_keep(
        boxes, scores, threshold, False, classes
    )
    keep, new_scores = soft_nms(boxes, scores, iou_threshold=threshold, idxs=classes)
    assert set(keep.tolist()) <= set(finite_rows(boxes, scores))
    assert torch.isfinite(new_scores).all()


@pytest.mark.faults
@settings(max_examples=60, deadline=None)
@given(data=hostile_boxes(), power=st.sampled_from([45, 300, 700, 960]))
def test_nms_results_survive_coordinates_beyond_float32_and_float64_areas(data, power):
    """Scaling every box by 2^power (up to ~1e289, whose areas overflow float64) keeps
    the result: IoU and DIoU are scale-free, and detkit computes them without overflow."""
    boxes, scores, classes = data
    big = boxes * 2.0**power
    assume(torch.equal(torch.isfinite(big), torch.isfinite(boxes)))  # 1e20 * 2^960 is inf
    for fn in (nms, diou_nms, lambda b, s, t: cluster_nms(b, s, t, kind="diou")):
        assert fn(big, scores, 0.5).tolist() == fn(boxes, scores, 0.5).tolist()
    assert soft_nms(big, scores)[0].tolist() == soft_nms(boxes, scores)[0].tolist()


@pytest.mark.faults
def test_issue_reproductions_nan_inf_and_huge_boxes():
    # issue 13: this segfaulted (rc 139) on the numba path; the NaN box is dropped
    boxes = torch.tensor([[NAN, 0, 10, 10], [0, 0, 10, 10.0]])
    assert diou_nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [1]
    both = torch.tensor([[INF, INF, INF, INF], [0, 0, 10, 10.0]])  # was ZeroDivisionError
    assert diou_nms(both, torch.tensor([0.9, 0.8]), 0.5).tolist() == [1]
    idxs = torch.tensor([0, 0])
    assert batched_diou_nms(boxes, torch.tensor([0.9, 0.8]), idxs, 0.5).tolist() == [1]
    # boxes spanning 1e12 (was "negative dimensions") and 1e20 (was a wrong keep set):
    # two overlapping boxes (IoU 81/119 > 0.5, the second suppressed) plus two far away
    for span in (1e12, 1e20):
        far = [[span, span, span + 10, span + 10], [-span, -span, -span + 10, -span + 10]]
        b = torch.tensor([[0, 0, 10, 10.0], [1, 1, 11, 11], *far], dtype=torch.float64)
        s = torch.tensor([0.9, 0.8, 0.7, 0.6])
        assert diou_nms(b, s, 0.5).tolist() == [0, 2, 3]
        assert nms(b, s, 0.5).tolist() == [0, 2, 3]


@pytest.mark.faults
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64,
                                   torch.int32, torch.int64])
def test_every_dtype_works_and_agrees(dtype):
    """torchvision's CPU kernel rejects half, bfloat16 and integers; detkit upcasts."""
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40]]).to(dtype)
    scores = torch.tensor([0.9, 0.8, 0.7])
    if dtype.is_floating_point:
        scores = scores.to(dtype)
    idxs = torch.tensor([0, 0, 1])
    # IoU of the first two = 81 / 119 = 0.68 > 0.5; the third overlaps nothing
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert diou_nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert batched_diou_nms(boxes, scores, idxs, 0.5).tolist() == [0, 2]
    assert batched_nms(boxes, scores, idxs, 0.5).tolist() == [0, 2]
    assert cluster_nms(boxes, scores, 0.5).tolist() == [0, 2]
    keep, new_scores = soft_nms(boxes, scores)
    assert keep.tolist() == [0, 2, 1] and new_scores.dtype == (
        scores.dtype if dtype.is_floating_point else torch.float32)
    with pytest.raises(ValueError, match="finite number"):
        diou_nms(boxes, scores, float("nan"))


def ref_soft_nms(boxes, scores, method="gaussian", sigma=0.5, iou_threshold=0.3,
                 score_threshold=0.001, classes=None) -> tuple[list[int], list[float]]:
    """Textbook Soft-NMS in plain Python: take the best live box, decay its class's others."""
    b, s = boxes.tolist(), [float(v) for v in scores.tolist()]
    c = classes.tolist() if classes is not None else [0] * len(s)
    alive = [v >= score_threshold for v in s]
    keep, kept = [], []
    while any(alive):
        i = max((j for j in range(len(s)) if alive[j]), key=lambda j: (s[j], -j))
        keep.append(i)
        kept.append(s[i])
        alive[i] = False
        for j in range(len(s)):
            if alive[j] and c[j] == c[i]:
                iou = ref_criterion(b[i], b[j], False)
                if method == "gaussian":
                    s[j] *= math.exp(-iou * iou / sigma)
                elif iou > iou_threshold:
                    s[j] *= 1.0 - iou
                if s[j] < score_threshold:
                    alive[j] = False
    return keep, kept


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"method": "linear", "iou_threshold": 0.4, "score_threshold": 0.2},
     {"method": "gaussian", "sigma": 0.3, "score_threshold": 0.05}],
    ids=["defaults", "linear", "gaussian-sigma"],
)
def test_soft_nms_equals_reference(seed, kwargs):
    boxes, scores = clustered(60, seed, objects=5)
    classes = torch.randint(0, 2, (60,), generator=torch.Generator().manual_seed(seed))
    for idxs in (None, classes):
        keep, new = soft_nms(boxes, scores, idxs=idxs, **kwargs)
        ref_keep, ref_scores = ref_soft_nms(boxes, scores, classes=idxs, **kwargs)
        assert keep.tolist() == ref_keep
        torch.testing.assert_close(new, torch.tensor(ref_scores, dtype=new.dtype))


def test_soft_nms_one_box_and_two_boxes():
    # one box: kept with its score; two boxes: the second decays by exp(-IoU^2 / 0.5) with
    # IoU((0, 0, 10, 10), (0, 0, 10, 5)) = 0.5 -> exp(-0.5)
    keep, new = soft_nms(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0.7]))
    assert keep.tolist() == [0] and new.tolist() == pytest.approx([0.7])
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5]])
    keep, new = soft_nms(boxes, torch.tensor([0.9, 0.8]))
    assert keep.tolist() == [0, 1]
    assert new.tolist() == pytest.approx([0.9, 0.8 * math.exp(-0.5)])


@pytest.mark.parametrize("seed", range(3))
def test_dispatcher_passes_every_option_and_the_classes(seed):
    boxes, scores = clustered(90, seed, objects=6)
    idxs = torch.randint(0, 3, (90,), generator=torch.Generator().manual_seed(seed))
    # non-default options, each compared with the plain-Python reference
    keep, kept = batched_nms_by_kind(boxes, scores, idxs, "diou_nms", 0.4, beta=0.6)
    assert keep.tolist() == ref_greedy(boxes, scores, 0.4, True, beta=0.6, classes=idxs)
    torch.testing.assert_close(kept, scores[keep])
    keep, _ = batched_nms_by_kind(boxes, scores, idxs, "cluster_nms", 0.4, cluster_kind="diou",
                                  beta=0.6)
    assert keep.tolist() == ref_greedy(boxes, scores, 0.4, True, beta=0.6, classes=idxs)
    keep, _ = batched_nms_by_kind(boxes, scores, idxs, "cluster_nms", 0.4)
    assert keep.tolist() == ref_greedy(boxes, scores, 0.4, False, classes=idxs)
    for options in ({"method": "linear", "score_threshold": 0.1},
                    {"method": "gaussian", "sigma": 0.3, "score_threshold": 0.1}):
        keep, kept = batched_nms_by_kind(boxes, scores, idxs, "soft_nms", 0.4, **options)
        ref_keep, ref_scores = ref_soft_nms(boxes, scores, iou_threshold=0.4, classes=idxs,
                                            **options)
        assert keep.tolist() == ref_keep
        torch.testing.assert_close(kept, torch.tensor(ref_scores, dtype=kept.dtype))
    # the dispatcher's defaults: kind "nms", threshold 0.5; soft-NMS sigma 0.5, 0.001
    keep, _ = batched_nms_by_kind(boxes, scores, idxs)
    assert keep.tolist() == ref_greedy(boxes, scores, 0.5, False, classes=idxs)
    keep, kept = batched_nms_by_kind(boxes, scores, idxs, "soft_nms")
    ref_keep, ref_scores = ref_soft_nms(boxes, scores, iou_threshold=0.5, classes=idxs)
    assert keep.tolist() == ref_keep


def test_criterion_matrix_in_small_chunks_and_sub_pixel_boxes():
    # boxes of 0.05 - 1.5 px (unions and enclosing diagonals below 1, overlaps below 1 px),
    # row chunks of 7 over 23 boxes: every pair equals the plain-Python criterion
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(23, 2, generator=g) * 2
    boxes = torch.cat([xy, xy + 0.05 + torch.rand(23, 2, generator=g) * 1.45], dim=1)
    b = boxes.tolist()
    for diou, beta in ((False, 1.0), (True, 1.0), (True, 0.5)):
        got = nms_module.criterion_matrix(boxes, diou, beta, chunk=7)
        ref = torch.tensor([[ref_criterion(p, q, diou, beta) for q in b] for p in b],
                           dtype=torch.float64)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    # degenerate identical points: c^2 = 0, criterion 0; no boxes: a [0, 0] matrix
    points = torch.tensor([[3.0, 3, 3, 3], [3, 3, 3, 3]])
    assert nms_module.criterion_matrix(points, True).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert nms_module.criterion_matrix(torch.zeros(0, 4), True).shape == (0, 0)


@pytest.mark.parametrize("kind", ["nms", "diou_nms", "cluster_nms"])
def test_criterion_equal_to_the_threshold_does_not_suppress(kind):
    # IoU((0, 0, 10, 10), (0, 0, 10, 5)) = 0.5 exactly; a box is suppressed only when the
    # criterion is > threshold; DIoU: 0.5 - 6.25 / 200 = 0.46875 (centres 2.5 apart,
    # enclosing diagonal^2 = 200)
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5]])
    keep, _ = batched_nms_by_kind(boxes, torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.long),
                                  kind, 0.5 if kind != "diou_nms" else 0.46875)
    assert keep.tolist() == [0, 1]


def test_single_box_and_equal_scores_keep_index_order():
    one = torch.tensor([[1.0, 2, 5, 7]])
    for fn in (nms, diou_nms):
        assert fn(one, torch.tensor([0.3]), 0.5).tolist() == [0]
    assert cluster_nms(one, torch.tensor([0.3]), 0.5).tolist() == [0]
    # 64 identical boxes with one score: the first index survives (stable ranking)
    same = torch.tensor([[0.0, 0, 10, 10]]).repeat(64, 1)
    ties = torch.full((64,), 0.5)
    assert diou_nms(same, ties, 0.5).tolist() == [0]
    assert nms(same, ties, 0.5).tolist() == [0]
    assert cluster_nms(same, ties, 0.5).tolist() == [0]


def test_input_shapes_are_checked():
    boxes, scores = clustered(10, 0)
    with pytest.raises(ValueError, match=r"boxes must be \[N, 4\]"):
        diou_nms(torch.zeros(10, 5), scores, 0.5)
    with pytest.raises(ValueError, match=r"boxes must be \[N, 4\]"):
        diou_nms(boxes[None], scores, 0.5)
    with pytest.raises(ValueError, match=r"idxs must be \[10\]"):
        batched_nms(boxes, scores, torch.zeros(9, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match=r"idxs must be \[10\]"):
        batched_diou_nms(boxes, scores, torch.zeros(9, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match=r"idxs must be \[10\]"):
        soft_nms(boxes, scores, idxs=torch.zeros(9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"scores must be \[10\]"):
        soft_nms(boxes, scores[:3])


def test_soft_nms_boundaries_defaults_and_degenerate_boxes():
    # A (0, 0, 10, 10) 0.9, B (0, 0, 10, 5) 0.5: IoU 0.5 exactly
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5]])
    scores = torch.tensor([0.9, 0.5])
    # linear at its default threshold 0.3: B -> 0.5 * (1 - 0.5) = 0.25, which equals the
    # score threshold 0.25 and is kept (removal is for scores below it)
    keep, new = soft_nms(boxes, scores, method="linear", score_threshold=0.25)
    assert keep.tolist() == [0, 1] and new.tolist() == pytest.approx([0.9, 0.25])
    # an IoU equal to the linear threshold leaves the score alone
    keep, new = soft_nms(boxes, scores, method="linear", iou_threshold=0.5)
    assert new.tolist() == pytest.approx([0.9, 0.5])
    # a start score equal to the score threshold is kept
    keep, _ = soft_nms(boxes[:1], torch.tensor([0.25]), score_threshold=0.25)
    assert keep.tolist() == [0]
    # two identical zero-area boxes: union 0, IoU 0, no decay (no 0 / 0)
    points = torch.tensor([[4.0, 4, 4, 4], [4, 4, 4, 4]])
    keep, new = soft_nms(points, torch.tensor([0.8, 0.6]))
    assert keep.tolist() == [0, 1] and new.tolist() == pytest.approx([0.8, 0.6])
    # sub-pixel boxes (unions below 1 px^2) decay like any others: plain-Python reference
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(12, 2, generator=g)
    tiny = torch.cat([xy, xy + 0.2 + 0.6 * torch.rand(12, 2, generator=g)], dim=1)
    tiny_scores = torch.rand(12, generator=g)
    keep, new = soft_nms(tiny, tiny_scores)
    ref_keep, ref_scores = ref_soft_nms(tiny, tiny_scores)
    assert keep.tolist() == ref_keep
    torch.testing.assert_close(new, torch.tensor(ref_scores, dtype=new.dtype))


@pytest.mark.parametrize("kind", ["iou", "diou"])
def test_cluster_matrix_fallback_matches_greedy(monkeypatch, kind):
    # the matrix form (CUDA / no numba) and the CPU sparse kernel reach the greedy result
    boxes, scores = clustered(140, 6)
    idxs = torch.randint(0, 3, (140,), generator=torch.Generator().manual_seed(6))
    sparse = cluster_nms(boxes, scores, 0.45, kind=kind, idxs=idxs).tolist()
    monkeypatch.setattr(nms_module, "HAVE_NUMBA", False)
    matrix = cluster_nms(boxes, scores, 0.45, kind=kind, idxs=idxs).tolist()
    assert sparse == matrix == ref_greedy(boxes, scores, 0.45, kind == "diou", classes=idxs)


def test_warm_up_kernels_loads_once():
    from detkit.ops import _nms_sparse

    nms_module.warm_up_kernels()  # loaded now, or already
    assert _nms_sparse._WARM[0] is _nms_sparse.HAVE_NUMBA
    assert nms_module.warm_up_kernels() is False  # the second call does nothing
