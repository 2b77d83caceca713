"""The NMS family behind one API: NMS, DIoU-NMS, Soft-NMS and Cluster-NMS.

All functions take ``boxes [N, 4]`` in (x1, y1, x2, y2) and ``scores [N]``,
run on CPU and CUDA tensors, never modify their inputs, and return kept
indices (``int64``) sorted by decreasing score, like ``torchvision.ops.nms``.
Empty input returns an empty index tensor.

Suppression rules (a kept box M suppresses a lower-scored box B when):

- NMS:       IoU(M, B) > t
- DIoU-NMS:  IoU(M, B) - (rho^2(M, B) / c^2)^beta > t, rho the distance of the
  centres and c the diagonal of the smallest enclosing box
  (Zheng et al., "Distance-IoU Loss", AAAI 2020; beta defaults to 1.0)
- Cluster-NMS: the matrix iteration of Zheng et al. ("Enhancing Geometric
  Factors ...", 2020) that converges to exactly the greedy result above
- Soft-NMS: scores decayed by exp(-IoU^2 / sigma) ("gaussian") or by
  (1 - IoU) when IoU > t ("linear") (Bodla et al., ICCV 2017)

On CPU, DIoU-NMS and Cluster-NMS run a sparse greedy kernel compiled with numba
(only intersecting pairs are ever compared); on CUDA, or without numba, they run
the Cluster-NMS matrix form, whose result is identical. (The dense matrix costs
O(N^2) memory and up to N passes: 4.7 s at 5,000 boxes on this CPU, against
milliseconds for the sparse kernel, so CPU calls never take it when numba is there.)
:func:`warm_up_kernels` loads the numba kernel ahead of a timed loop.

Hostile input has one defined behaviour on every path (numba, torch, CUDA):

- a box with a NaN or +-inf coordinate, or a NaN or +-inf score, is never kept
  and never suppresses another box (it is dropped before the NMS runs);
- any dtype works: float16 / bfloat16 / integer input is computed in float32
  (integers in float64); the returned indices point into the input;
- coordinates too large for float32 arithmetic (beyond 2^40) are computed in
  float64, and beyond 2^500 scaled by a power of two, which leaves every IoU
  and DIoU ratio unchanged bit for bit; so no range of finite values overflows.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torchvision
from torch import Tensor

from detkit.ops._nms_sparse import HAVE_NUMBA, greedy_sparse, warm_up

__all__ = [
    "nms",
    "batched_nms",
    "diou_nms",
    "batched_diou_nms",
    "soft_nms",
    "cluster_nms",
    "batched_nms_by_kind",
    "NMS_KINDS",
    "warm_up_kernels",
]

NMS_KINDS = ("nms", "diou_nms", "soft_nms", "cluster_nms")


def warm_up_kernels() -> bool:
    """Load the compiled DIoU / Cluster-NMS kernel now (0.25-0.75 s once per process).

    Returns True when this call did the loading, False when it was already loaded or numba
    is absent. Results of the NMS functions do not depend on it.
    """
    return warm_up()


def _check_inputs(boxes: Tensor, scores: Tensor, idxs: Tensor | None = None) -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [N, 4], got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"scores must be [{boxes.shape[0]}], got {tuple(scores.shape)}")
    if idxs is not None and idxs.shape != boxes.shape[:1]:
        raise ValueError(f"idxs must be [{boxes.shape[0]}], got {tuple(idxs.shape)}")


_FLOAT_KINDS = (torch.float32, torch.float64)
_FLOAT32_SAFE = 2.0**40  # |coordinate| above this: areas could overflow float32 -> float64
_OFFSET_EXACT = 2.0**20  # batched_nms offsets classes apart exactly below this range
_FLOAT64_SAFE = 2.0**500  # above this: scale by a power of two (exact) so areas stay finite


def _as_float(t: Tensor) -> Tensor:
    """``t`` detached, as float32 / float64 (half -> float32, integers -> float64)."""
    t = t.detach()
    if t.dtype in _FLOAT_KINDS:
        return t
    return t.to(torch.float32 if t.is_floating_point() else torch.float64)


def sanitize_nms_input(
    boxes: Tensor, scores: Tensor, idxs: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Checked NMS input: finite rows only, a float dtype, a range that cannot overflow.

    Returns ``(boxes, scores, idxs, rows)``: ``rows [M]`` (int64) are the input
    indices of the rows kept (those with four finite coordinates and a finite
    score), or ``None`` when every row is finite. Boxes are scaled only by a
    power of two, which leaves every IoU / DIoU bit for bit unchanged.
    """
    _check_inputs(boxes, scores, idxs)
    boxes, scores = _as_float(boxes), _as_float(scores)
    rows = None
    finite = torch.isfinite(boxes).all(1) & torch.isfinite(scores)
    if not bool(finite.all()):
        rows = torch.nonzero(finite).flatten()
        boxes, scores = boxes[rows], scores[rows]
        idxs = idxs[rows] if idxs is not None else None
    if boxes.numel() > 0:
        top = float(boxes.abs().max())
        if top > _FLOAT32_SAFE:
            boxes = boxes.to(torch.float64)
        if top > _FLOAT64_SAFE:
            boxes = boxes * 2.0 ** (math.floor(math.log2(_FLOAT64_SAFE / top)))
    return boxes, scores, idxs, rows


def _to_input_index(keep: Tensor, rows: Tensor | None) -> Tensor:
    """Map kept indices of the sanitized rows back to indices of the input."""
    return keep if rows is None else rows[keep]


def _empty(boxes: Tensor) -> Tensor:
    return torch.empty(0, dtype=torch.int64, device=boxes.device)


def _rank(scores: Tensor) -> Tensor:
    """Indices sorting ``scores`` in decreasing order; ties keep input order."""
    return torch.argsort(scores, descending=True, stable=True)


def _check_threshold(threshold: float) -> None:
    if not math.isfinite(float(threshold)):
        raise ValueError(f"the NMS threshold must be a finite number, got {threshold!r}")


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS (IoU > ``iou_threshold`` suppresses); wraps ``torchvision.ops.nms``.

    Non-finite boxes or scores are never kept; any dtype works (module docstring).
    """
    _check_inputs(boxes, scores)
    if torch.jit.is_tracing():  # export: the plain traceable op
        return torchvision.ops.nms(boxes, scores, iou_threshold)
    _check_threshold(iou_threshold)
    b, s, _, rows = sanitize_nms_input(boxes, scores)
    return _to_input_index(torchvision.ops.nms(b, s.to(b.dtype), iou_threshold), rows)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Per-category NMS (boxes with different ``idxs [N]`` never suppress each other)."""
    _check_inputs(boxes, scores, idxs)
    if torch.jit.is_tracing():
        return torchvision.ops.batched_nms(boxes, scores, idxs, iou_threshold)
    _check_threshold(iou_threshold)
    b, s, i, rows = sanitize_nms_input(boxes, scores, idxs)
    s = s.to(b.dtype)
    if b.numel() == 0 or float(b.abs().max()) <= _OFFSET_EXACT:
        keep = torchvision.ops.batched_nms(b, s, i, iou_threshold)
    else:  # torchvision's per-class coordinate offset would round such boxes away
        parts = [torch.nonzero(i == c).flatten() for c in torch.unique(i)]
        kept = torch.cat([p[torchvision.ops.nms(b[p], s[p], iou_threshold)] for p in parts])
        kept = kept.sort().values  # ties in score: lower index first, as torchvision
        keep = kept[_rank(s[kept])]
    return _to_input_index(keep, rows)


def criterion_matrix(boxes: Tensor, use_diou: bool, beta: float = 1.0, chunk: int = 2048) -> Tensor:
    """Pairwise suppression criterion (IoU or IoU - (rho^2/c^2)^beta), float64 ``[N, N]``.

    The order of operations matches the sparse kernel exactly, so both paths
    reach identical decisions. Computed in row chunks to bound memory.
    """
    b = boxes.to(torch.float64)
    x1, y1, x2, y2 = b.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    rows = []
    for s in range(0, b.shape[0], chunk):
        a = slice(s, s + chunk)
        iw = torch.minimum(x2[a, None], x2) - torch.maximum(x1[a, None], x1)
        ih = torch.minimum(y2[a, None], y2) - torch.maximum(y1[a, None], y1)
        inter = torch.where((iw > 0) & (ih > 0), iw * ih, torch.zeros_like(iw))
        union = area[a, None] + area - inter
        iou = torch.where(union > 0, inter / union, torch.zeros_like(inter))
        if use_diou:
            cw = torch.maximum(x2[a, None], x2) - torch.minimum(x1[a, None], x1)
            ch = torch.maximum(y2[a, None], y2) - torch.minimum(y1[a, None], y1)
            c2 = cw * cw + ch * ch
            dx = (x1[a, None] + x2[a, None]) - (x1 + x2)
            dy = (y1[a, None] + y2[a, None]) - (y1 + y2)
            rho2 = (dx * dx + dy * dy) / 4.0
            ratio = rho2 / torch.where(c2 > 0, c2, torch.ones_like(c2))
            iou = iou - torch.where(c2 > 0, ratio**beta, torch.zeros_like(c2))
        rows.append(iou)
    return torch.cat(rows) if rows else b.new_zeros((0, 0))


def _cluster_keep(boxes: Tensor, classes: Tensor, threshold: float, use_diou: bool, beta: float):
    """Cluster-NMS on boxes in rank order -> bool keep mask (exact greedy fixed point)."""
    n = boxes.shape[0]
    crit = criterion_matrix(boxes, use_diou, beta)
    suppress = crit > threshold
    suppress &= classes[:, None] == classes[None, :]
    suppress = torch.triu(suppress, diagonal=1)
    keep = torch.ones(n, dtype=torch.bool, device=boxes.device)
    # Each pass fixes at least one more box in rank order, so n passes suffice;
    # in practice it converges in a handful.
    for _ in range(n):
        new_keep = ~(suppress & keep[:, None]).any(0)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep


def _greedy(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor | None,
    threshold: float,
    use_diou: bool,
    beta: float,
) -> Tensor:
    _check_threshold(threshold)
    boxes, scores, idxs, rows = sanitize_nms_input(boxes, scores, idxs)
    if boxes.shape[0] == 0:
        return _empty(boxes)
    if boxes.is_cuda or not HAVE_NUMBA or threshold < 0:
        order = _rank(scores)
        ranked = boxes.detach()[order]
        classes = idxs[order] if idxs is not None else torch.zeros_like(order)
        keep = _cluster_keep(ranked, classes, threshold, use_diou, beta)
        return _to_input_index(order[keep], rows)
    # CPU: gather in numpy (small torch gathers pay thread-pool start-up costs)
    s = scores.detach().cpu().numpy()
    order_np = np.argsort(-s, kind="stable")
    b = boxes.detach().cpu().numpy().astype(np.float64)[order_np]
    if idxs is None:
        classes_np = np.zeros(len(order_np), dtype=np.int64)
    else:
        classes_np = idxs.detach().cpu().numpy().astype(np.int64)[order_np]
    keep = greedy_sparse(b, classes_np, float(threshold), use_diou, float(beta))
    return _to_input_index(torch.from_numpy(order_np[keep]).to(boxes.device), rows)


def diou_nms(boxes: Tensor, scores: Tensor, iou_threshold: float, beta: float = 1.0) -> Tensor:
    """DIoU-NMS: suppress when IoU - (rho^2 / c^2)^beta > ``iou_threshold``.

    boxes: ``[N, 4]`` xyxy; scores: ``[N]``. Returns kept indices ``[K]``
    sorted by decreasing score; equal to the plain greedy loop exactly.
    """
    return _greedy(boxes, scores, None, iou_threshold, True, beta)


def batched_diou_nms(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, beta: float = 1.0
) -> Tensor:
    """DIoU-NMS applied per category ``idxs [N]``; kept indices by decreasing score."""
    return _greedy(boxes, scores, idxs, iou_threshold, True, beta)


def cluster_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float,
    kind: str = "iou",
    beta: float = 1.0,
    idxs: Tensor | None = None,
) -> Tensor:
    """Cluster-NMS (Zheng et al. 2020), the matrix form; equals greedy NMS exactly.

    ``kind="iou"`` reproduces NMS, ``kind="diou"`` DIoU-NMS. Optional
    ``idxs [N]`` keeps categories apart. On CUDA (or without numba) it runs as
    batched tensor ops, the natural GPU path; on CPU its fixed point is computed
    by the exact sparse greedy kernel, which reaches the same result without
    the O(N^2) matrix.
    """
    if kind not in ("iou", "diou"):
        raise ValueError(f"unknown cluster_nms kind {kind!r}; valid: iou, diou")
    return _greedy(boxes, scores, idxs, iou_threshold, kind == "diou", beta)


def _iou_one_to_many(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    iw = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    ih = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_a = (box[2] - box[0]) * (box[3] - box[1])
    union = area_a + (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 0.001,
    idxs: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al. 2017) -> (kept indices ``[K]``, their new scores ``[K]``).

    Repeatedly takes the highest (decayed) score M and multiplies the score
    of every remaining box B by exp(-IoU(M, B)^2 / sigma) ("gaussian") or by
    (1 - IoU(M, B)) when IoU(M, B) > ``iou_threshold`` ("linear"). Boxes
    whose score is, or falls, below ``score_threshold`` are removed. Optional
    ``idxs [N]`` keeps categories apart. Kept indices come out in decreasing
    new score (ties: lower index first). Non-finite boxes or scores are
    never kept (module docstring).
    """
    if method not in ("gaussian", "linear"):
        raise ValueError(f"unknown soft_nms method {method!r}; valid: gaussian, linear")
    if not (math.isfinite(float(sigma)) and sigma > 0):
        raise ValueError(f"soft_nms sigma must be a finite number > 0, got {sigma!r}")
    _check_threshold(iou_threshold)
    _check_threshold(score_threshold)
    out_dtype = scores.dtype if scores.is_floating_point() else torch.float32
    boxes_in = boxes
    boxes, scores, idxs, rows = sanitize_nms_input(boxes, scores, idxs)
    if boxes.shape[0] == 0:
        return _empty(boxes_in), torch.zeros(0, dtype=out_dtype, device=boxes_in.device)
    b = boxes.to(torch.float64).cpu().numpy()
    s = scores.to(torch.float64).cpu().numpy().copy()
    cls = idxs.cpu().numpy() if idxs is not None else np.zeros(len(s), dtype=np.int64)
    alive = s >= score_threshold
    kept, kept_scores = [], []
    while alive.any():
        cand = np.flatnonzero(alive)
        i = cand[np.argmax(s[cand])]
        kept.append(i)
        kept_scores.append(s[i])
        alive[i] = False
        rest = np.flatnonzero(alive & (cls == cls[i]))
        if rest.size == 0:
            continue
        iou = _iou_one_to_many(b[i], b[rest])
        if method == "gaussian":
            s[rest] *= np.exp(-(iou * iou) / sigma)
        else:
            s[rest] *= np.where(iou > iou_threshold, 1.0 - iou, 1.0)
        alive[rest[s[rest] < score_threshold]] = False
    keep = torch.as_tensor(np.asarray(kept, dtype=np.int64), device=boxes.device)
    new_scores = torch.as_tensor(np.asarray(kept_scores), device=boxes.device).to(out_dtype)
    return _to_input_index(keep, rows), new_scores


def batched_nms_by_kind(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    kind: str = "nms",
    iou_threshold: float = 0.5,
    **kwargs: float | str,
) -> tuple[Tensor, Tensor]:
    """Per-category NMS of the chosen ``kind`` -> (kept indices, kept scores).

    kind: "nms" | "diou_nms" (``beta``) | "soft_nms" (``method``, ``sigma``,
    ``score_threshold``) | "cluster_nms" (``cluster_kind`` "iou"|"diou",
    ``beta``). Indices are sorted by decreasing (for Soft-NMS: decayed) score.
    """
    if kind == "nms":
        keep = batched_nms(boxes, scores, idxs, iou_threshold)
        return keep, scores[keep]
    if kind == "diou_nms":
        keep = batched_diou_nms(boxes, scores, idxs, iou_threshold, float(kwargs.get("beta", 1.0)))
        return keep, scores[keep]
    if kind == "cluster_nms":
        keep = cluster_nms(
            boxes,
            scores,
            iou_threshold,
            kind=str(kwargs.get("cluster_kind", "iou")),
            beta=float(kwargs.get("beta", 1.0)),
            idxs=idxs,
        )
        return keep, scores[keep]
    if kind == "soft_nms":
        return soft_nms(
            boxes,
            scores,
            method=str(kwargs.get("method", "gaussian")),
            sigma=float(kwargs.get("sigma", 0.5)),
            iou_threshold=iou_threshold,
            score_threshold=float(kwargs.get("score_threshold", 0.001)),
            idxs=idxs,
        )
    raise ValueError(f"unknown NMS kind {kind!r}; valid: {', '.join(NMS_KINDS)}")
