"""Benchmark detkit.ops against torchvision on the CPU (2 threads, medians).

Prints, for each figure, the ratio against the peer measured in the same run:

- ``diou_nms`` on 1,000 / 5,000 / 10,000 random boxes vs ``torchvision.ops.nms``
  (plain IoU) on the same boxes, with the keep set checked against a plain
  greedy DIoU reference (target <= 1.0x, goal <= 0.5x);
- ``ciou_loss`` forward + backward on 100,000 pairs vs
  ``torchvision.ops.complete_box_iou_loss`` (target <= 1.2x).

Run: ``python benchmarks/bench_ops.py [--repeats 15] [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision

from detkit.ops import ciou_loss, cluster_nms, diou_nms
from detkit.ops.nms import criterion_matrix


def random_boxes(n: int, seed: int, image: float = 1000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` boxes with x1, y1 ~ U[0, image) and sides ~ U[10, 100), scores ~ U[0, 1)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * image
    wh = torch.rand(n, 2, generator=g) * 90 + 10
    return torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g)


def clustered_boxes(n: int, seed: int, objects: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` boxes jittered around ``objects`` ground-truth boxes (a detector's raw output)."""
    g = torch.Generator().manual_seed(seed)
    base_xy = torch.rand(objects, 2, generator=g) * 900
    base_wh = torch.rand(objects, 2, generator=g) * 90 + 10
    pick = torch.randint(0, objects, (n,), generator=g)
    wh = base_wh[pick] * (1 + 0.2 * torch.randn(n, 2, generator=g)).clamp(min=0.3)
    xy = base_xy[pick] + 0.15 * base_wh[pick] * torch.randn(n, 2, generator=g)
    return torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g)


def greedy_reference(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    """Plain greedy DIoU-NMS over the suppression matrix (kept indices, decreasing score)."""
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    crit = criterion_matrix(boxes, use_diou=True).numpy()
    suppressed: set[int] = set()
    keep = []
    for a, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        for j in order[a + 1 :]:
            if crit[i, j] > threshold:
                suppressed.add(j)
    return keep


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_nms(sizes: list[int], repeats: int, threshold: float = 0.5) -> None:
    print(f"DIoU-NMS vs torchvision.ops.nms (IoU), threshold {threshold}, median of {repeats}")
    header = f"{'boxes':>8} {'layout':>10} {'tv nms ms':>10} {'diou_nms ms':>12} {'ratio':>7}"
    print(header + f" {'cluster ms':>11} {'same keep':>10}")
    for n in sizes:
        for layout, make in (("random", random_boxes), ("clustered", clustered_boxes)):
            boxes, scores = make(n, seed=n)
            tv = median_ms(lambda b=boxes, s=scores: torchvision.ops.nms(b, s, threshold), repeats)
            ours = median_ms(lambda b=boxes, s=scores: diou_nms(b, s, threshold), repeats)
            keep = diou_nms(boxes, scores, threshold).tolist()
            same = keep == greedy_reference(boxes, scores, threshold)
            if n <= 5000:
                cl = median_ms(
                    lambda b=boxes, s=scores: cluster_nms(b, s, threshold, kind="diou"), 3
                )
                cl_txt = f"{cl:11.2f}"
            else:
                cl_txt = f"{'-':>11}"
            print(
                f"{n:>8} {layout:>10} {tv:10.2f} {ours:12.2f} {ours / tv:6.2f}x {cl_txt} "
                f"{str(same):>10}"
            )


def bench_ciou(n: int, repeats: int) -> None:
    b1, _ = random_boxes(n, seed=1)
    b2, _ = random_boxes(n, seed=2)

    def run(fn: Callable[..., torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            pred = b1.clone().requires_grad_(True)
            fn(pred, b2, reduction="mean").backward()

        return step

    tv = median_ms(run(torchvision.ops.complete_box_iou_loss), repeats)
    ours = median_ms(run(ciou_loss), repeats)
    print(f"CIoU loss forward+backward on {n:,} pairs, median of {repeats}")
    print(f"  torchvision {tv:.2f} ms   detkit {ours:.2f} ms   ratio {ours / tv:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="1k boxes only, 5 repeats")
    args = parser.parse_args()
    torch.set_num_threads(2)
    sizes = [1000] if args.quick else [1000, 5000, 10000]
    repeats = 5 if args.quick else args.repeats
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, 2 threads")
    bench_nms(sizes, repeats)
    bench_ciou(100_000, repeats)


if __name__ == "__main__":
    main()
