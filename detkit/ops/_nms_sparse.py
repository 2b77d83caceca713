"""Sparse greedy NMS kernel (IoU or DIoU criterion), compiled with numba when present.

Greedy NMS only ever needs to compare boxes that intersect: for two boxes
with no overlap IoU = 0, so neither IoU > t nor IoU - (rho^2 / c^2)^beta > t
can hold for t >= 0. The kernel therefore

1. files the boxes into uniform grids, one per size level (sides within a
   factor of 2), each cell as large as the level's largest side, keyed by the
   cell of the box's top-left corner;
2. runs the greedy pass in score order: each kept box visits, on every level,
   only the cells where a box intersecting it can start, skipping boxes that
   are already suppressed or better ranked, and suppresses those whose
   criterion exceeds the threshold.

Work thus follows kept boxes times their neighbours, whether the boxes are
spread out (most kept) or clustered (most suppressed), and a few huge boxes
do not coarsen the grid of the small ones. The result equals the dense
greedy loop exactly: the criterion is symmetric and is computed in float64 in
a fixed order of operations. Without numba the
same Python functions run as plain (slow) Python; ``detkit.ops.nms`` uses a
pure-torch matrix path instead in that case.

The first call of a numba kernel in a process loads its cached machine code (or compiles
it): 0.25-0.75 s here. :func:`warm_up` pays that once, on purpose (detkit's
post-processing calls it when a model using DIoU- or Cluster-NMS is built), so that no
timed loop and no first image pays it.
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


_WARM = [False]


def warm_up() -> bool:
    """Load (or compile) the numba kernel now; later calls return at once.

    Returns True when this call did the loading. Without numba it does nothing.
    """
    if _WARM[0] or not HAVE_NUMBA:
        return False
    boxes = np.array([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])
    greedy_sparse(boxes, np.zeros(2, dtype=np.int64), 0.5, True, 1.0)
    _WARM[0] = True
    return True


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
    Every coordinate must be finite (``detkit.ops.nms`` drops the others first).
    Returns a bool [N] keep mask in rank order.
    """
    n = boxes.shape[0]
    keep = np.zeros(n, dtype=np.bool_)
    if n == 0:
        return keep
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(np.maximum(w, h), 0.0)
    x0 = np.min(boxes[:, 0])
    y0 = np.min(boxes[:, 1])
    # spans over both corners: an inverted box (x2 < x1) may start right of every x2
    span_x = max(max(np.max(boxes[:, 0]), np.max(boxes[:, 2])) - x0, 0.0)
    span_y = max(max(np.max(boxes[:, 1]), np.max(boxes[:, 3])) - y0, 0.0)
    smin = max(np.min(side), 1e-6)
    nlev = 16  # size levels: level l holds sides in [smin * 2^l, smin * 2^(l+1))
    level = np.empty(n, dtype=np.int64)
    for i in range(n):
        lv = 0
        if side[i] > smin:
            lv = min(int(np.log2(side[i] / smin)), nlev - 1)
        level[i] = lv
    maxw = np.zeros(nlev)
    maxh = np.zeros(nlev)
    count = np.zeros(nlev, dtype=np.int64)
    for i in range(n):
        lv = level[i]
        count[lv] += 1
        maxw[lv] = max(maxw[lv], w[i])
        maxh[lv] = max(maxh[lv], h[i])
    # one grid per level, cells as large as the level's largest side (at most ~4 cells
    # per box), boxes filed by the cell of their top-left corner (CSR layout)
    cell = np.ones(nlev)
    nx = np.zeros(nlev, dtype=np.int64)
    ny = np.zeros(nlev, dtype=np.int64)
    base = np.zeros(nlev + 1, dtype=np.int64)
    for lv in range(nlev):
        if count[lv] > 0:
            c = max(maxw[lv], maxh[lv], 1e-6)
            # counted in float64: int64 cell counts overflow for spans of 1e12 and more
            budget = 4.0 * count[lv] + 16.0
            while (np.floor(span_x / c) + 1.0) * (np.floor(span_y / c) + 1.0) > budget:
                c *= 2.0
            cell[lv] = c
            nx[lv] = int(span_x / c) + 1
            ny[lv] = int(span_y / c) + 1
        base[lv + 1] = base[lv] + nx[lv] * ny[lv]
    key = np.empty(n, dtype=np.int64)
    start = np.zeros(base[nlev] + 1, dtype=np.int64)
    for i in range(n):
        lv = level[i]
        gx = min(int((boxes[i, 0] - x0) / cell[lv]), nx[lv] - 1)
        gy = min(int((boxes[i, 1] - y0) / cell[lv]), ny[lv] - 1)
        key[i] = base[lv] + gy * nx[lv] + gx
        start[key[i] + 1] += 1
    for k in range(base[nlev]):
        start[k + 1] += start[k]
    fill = start[:-1].copy()
    members = np.empty(n, dtype=np.int64)
    for i in range(n):
        members[fill[key[i]]] = i
        fill[key[i]] += 1
    # greedy pass: a kept box visits only the cells where an intersecting box can start
    suppressed = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        if suppressed[i]:
            continue
        keep[i] = True
        ax1, ay1, ax2, ay2 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        if ax2 <= ax1 or ay2 <= ay1:
            continue  # zero or negative width: intersects nothing, so suppresses nothing
        for lv in range(nlev):
            if count[lv] == 0:
                continue
            c = cell[lv]
            gx0 = max(int((ax1 - maxw[lv] - x0) / c), 0)
            gx1 = min(int((ax2 - x0) / c), nx[lv] - 1)
            gy0 = max(int((ay1 - maxh[lv] - y0) / c), 0)
            gy1 = min(int((ay2 - y0) / c), ny[lv] - 1)
            for gy in range(gy0, gy1 + 1):
                row = base[lv] + gy * nx[lv]
                for q in range(start[row + gx0], start[row + gx1 + 1]):
                    j = members[q]
                    if j <= i or suppressed[j]:
                        continue
                    bx1, by1, bx2, by2 = boxes[j, 0], boxes[j, 1], boxes[j, 2], boxes[j, 3]
                    if bx1 >= ax2 or bx2 <= ax1 or by1 >= ay2 or by2 <= ay1:
                        continue
                    if classes[i] != classes[j]:
                        continue
                    crit = pair_criterion(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2, use_diou, beta)
                    if crit > threshold:
                        suppressed[j] = True
    return keep
