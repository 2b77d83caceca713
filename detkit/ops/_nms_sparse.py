"""Sparse greedy NMS kernel (IoU or DIoU criterion), compiled with numba when present.

Greedy NMS only ever compares boxes that intersect: for two boxes with no
overlap IoU = 0, so neither IoU > t nor IoU - (rho^2 / c^2)^beta > t can
hold for t >= 0. The kernel therefore

1. sweeps the boxes sorted by x1 and, for each box, visits only the boxes
   whose x1 lies before its x2 (sweep and prune), evaluating the criterion
   for the pairs that also overlap in y and share a class;
2. records every pair whose criterion exceeds the threshold, grouped by the
   better-ranked box (a counting sort);
3. runs the greedy pass over that adjacency list.

The result equals the dense greedy loop exactly: the criterion is symmetric
and is computed in float64 in a fixed order of operations. Without numba the
same Python functions run as plain (slow) Python; ``detkit.ops.nms`` uses a
pure-torch matrix path instead in that case.
"""

from __future__ import annotations

import numpy as np

try:  # numba is a declared dependency; the torch fallback covers its absence
    from numba import njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    HAVE_NUMBA = False

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        """Identity decorator used when numba is not installed."""
        if args and callable(args[0]):
            return args[0]
        return lambda f: f


@njit(cache=True)
def pair_criterion(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2, use_diou, beta):
    """IoU (``use_diou`` False) or IoU - (rho^2 / c^2)^beta of two xyxy boxes, float64."""
    iw = min(ax2, bx2) - max(ax1, bx1)
    ih = min(ay2, by2) - max(ay1, by1)
    inter = 0.0
    if iw > 0.0 and ih > 0.0:
        inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    iou = inter / union if union > 0.0 else 0.0
    if not use_diou:
        return iou
    cw = max(ax2, bx2) - min(ax1, bx1)
    ch = max(ay2, by2) - min(ay1, by1)
    c2 = cw * cw + ch * ch
    dx = (ax1 + ax2) - (bx1 + bx2)
    dy = (ay1 + ay2) - (by1 + by2)
    rho2 = (dx * dx + dy * dy) / 4.0
    penalty = (rho2 / c2) ** beta if c2 > 0.0 else 0.0
    return iou - penalty


@njit(cache=True)
def greedy_sparse(boxes, classes, threshold, use_diou, beta):
    """Greedy NMS over boxes already sorted by decreasing score.

    boxes: float64 [N, 4] xyxy in rank order; classes: int64 [N] (boxes of
    different classes never suppress each other); threshold must be >= 0.
    Returns a bool [N] keep mask in rank order.
    """
    n = boxes.shape[0]
    keep = np.ones(n, dtype=np.bool_)
    if n == 0:
        return keep
    order = np.argsort(boxes[:, 0], kind="mergesort")
    cap = 4 * n + 16
    lo = np.empty(cap, dtype=np.int64)
    hi = np.empty(cap, dtype=np.int64)
    npairs = 0
    for a in range(n):
        i = order[a]
        ax1, ay1, ax2, ay2 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        for b in range(a + 1, n):
            j = order[b]
            if boxes[j, 0] >= ax2:
                break
            if boxes[j, 1] >= ay2 or boxes[j, 3] <= ay1 or classes[i] != classes[j]:
                continue
            crit = pair_criterion(
                ax1,
                ay1,
                ax2,
                ay2,
                boxes[j, 0],
                boxes[j, 1],
                boxes[j, 2],
                boxes[j, 3],
                use_diou,
                beta,
            )
            if crit > threshold:
                if npairs == cap:
                    cap *= 2
                    lo2 = np.empty(cap, dtype=np.int64)
                    hi2 = np.empty(cap, dtype=np.int64)
                    lo2[:npairs] = lo[:npairs]
                    hi2[:npairs] = hi[:npairs]
                    lo, hi = lo2, hi2
                lo[npairs] = min(i, j)
                hi[npairs] = max(i, j)
                npairs += 1
    # group the suppressing pairs by their better-ranked box (counting sort)
    start = np.zeros(n + 1, dtype=np.int64)
    for p in range(npairs):
        start[lo[p] + 1] += 1
    for k in range(n):
        start[k + 1] += start[k]
    fill = start[:-1].copy()
    victims = np.empty(npairs, dtype=np.int64)
    for p in range(npairs):
        victims[fill[lo[p]]] = hi[p]
        fill[lo[p]] += 1
    for i in range(n):
        if keep[i]:
            for q in range(start[i], start[i + 1]):
                keep[victims[q]] = False
    return keep
