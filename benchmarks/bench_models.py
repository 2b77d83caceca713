"""Benchmark ThunderNet-lite on the CPU: cost, latency and training throughput.

Every figure is printed with its ratio against a peer measured in the same process:

- Cost: multiply-accumulates (``torch.utils.flop_counter.FlopCounterMode`` FLOPs / 2) of the
  eval forward at 320x320 (80 classes, 200 RoIs, class-agnostic boxes), split into backbone /
  CEM / RPN / SAM / R-CNN head, for SNet49 / 146 / 535 against the paper's 262 / 473 / 1300 M
  MACs (target within 20 %, goal 10 %). ``torchvision.ops.ps_roi_align`` is a custom operator
  that FlopCounterMode does not count (it is a gather + average, not multiply-accumulates);
  neither are BatchNorm, activations, NMS or box decoding.
- Latency: batch 1 at 320x320, median of ``--runs`` (>= 20) eval forwards, against
  torchvision's ``ssdlite320_mobilenet_v3_large`` (target <= 0.6x, goal <= 0.35x); also the
  dense detector (``detkit.models.dense_detector``, ResNet-18 FPN) and ThunderNet-lite at 640.
- Training throughput: batch 8 at 320x320, images/s of forward + backward + SGD step
  against SSDlite's (target >= 1x, goal 3x).

Models alternate run by run (A, B, A, B, ...) so that load from other processes on shared
cores hits both sides alike. Weights are random; nothing is downloaded.

Run: ``python benchmarks/bench_models.py [--threads 2] [--runs 20] [--train-steps 6]
[--json PATH]`` (``--json`` writes the training throughput).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP waits

import torch
import torchvision
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency_parts import count_macs, write_json  # noqa: E402

from detkit.models.detectors.thundernet import ThunderNet, thundernet_lite  # noqa: E402

PAPER_MACS = {"snet49": 262.0, "snet146": 473.0, "snet535": 1300.0}


def fixed_rois(num: int, size: int, seed: int = 0) -> Tensor:
    """``num`` random xyxy boxes inside a ``size`` x ``size`` image (sides 16..size/2)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num, 2, generator=g) * size / 2
    wh = torch.rand(num, 2, generator=g) * (size / 2 - 16) + 16
    return torch.cat([xy, xy + wh], dim=1)


@torch.inference_mode()
def cost_breakdown(model: ThunderNet, size: int = 320, num_rois: int = 200) -> dict[str, float]:
    """MACs (millions) per part of ThunderNet-lite's eval forward at ``size`` x ``size``."""
    x = torch.rand(1, 3, size, size)
    parts: dict[str, float] = {}
    feats = model.backbone(x)
    parts["backbone"] = count_macs(lambda: model.backbone(x))
    parts["CEM"] = count_macs(lambda: model.neck(feats))
    (cem,) = model.neck(feats).values()
    parts["RPN"] = count_macs(lambda: model.rpn.head(cem))
    rpn_features = model.rpn.head(cem)[0]
    parts["SAM"] = 0.0 if model.sam is None else count_macs(lambda: model.sam(cem, rpn_features))
    roi_map = model.roi_features(cem, rpn_features)
    rois = [fixed_rois(num_rois, size)]
    parts["R-CNN head"] = count_macs(lambda: model.rcnn.head(roi_map, rois))
    parts["total"] = sum(parts.values())
    return parts


def median_ms(times: list[float]) -> float:
    """Median of seconds, in milliseconds."""
    return 1000.0 * statistics.median(times)


def timed(fn: Callable[[], object]) -> float:
    """Seconds taken by one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], object]], runs: int, warmup: int) -> dict[str, float]:
    """Median milliseconds per function, calling them in turn ``runs`` times."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return {name: median_ms(t) for name, t in times.items()}


def latency(args: argparse.Namespace) -> None:
    """Batch-1 eval latency at 320 (and ThunderNet at 640) against SSDlite."""
    ssd = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None
    ).eval()
    tn = thundernet_lite(80).eval()
    img320, img640 = [torch.rand(3, 320, 320)], [torch.rand(3, 640, 640)]
    fns: dict[str, Callable[[], object]] = {
        "SSDlite320 (peer)": lambda: ssd(img320),
        "ThunderNet-lite SNet49 @320": lambda: tn(img320),
        "ThunderNet-lite SNet49 @640": lambda: tn(img640),
    }
    try:
        from detkit.models import dense_detector

        dense = dense_detector(80).eval()
        fns["dense detector (R18-FPN) @320"] = lambda: dense(img320)
    except (ImportError, AttributeError) as err:
        print(f"dense detector skipped: {err}")
    with torch.inference_mode():
        ms = interleaved(fns, args.runs, warmup=3)
    peer = ms["SSDlite320 (peer)"]
    print(f"\nLatency, batch 1, {args.threads} threads, median of {args.runs} runs")
    print(f"{'model':34s} {'ms':>8s} {'x SSDlite':>10s}")
    for name, value in ms.items():
        print(f"{name:34s} {value:8.1f} {value / peer:10.2f}")
    t320, t640 = ms["ThunderNet-lite SNet49 @320"], ms["ThunderNet-lite SNet49 @640"]
    print(f"ThunderNet 640 / 320 latency: {t640 / t320:.2f}x (pixels: 4x)")
    print(
        "target ThunderNet@320 <= 0.60x SSDlite (goal <= 0.35x): "
        f"{'met' if t320 / peer <= 0.6 else 'MISSED'}"
    )


def _random_targets(batch: int, size: int, label_max: int, seed: int) -> list[dict[str, Tensor]]:
    """Three random boxes per image with labels in 1..label_max."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        boxes = fixed_rois(3, size, seed=int(torch.randint(0, 10**6, (1,), generator=g)))
        labels = torch.randint(1, label_max + 1, (3,), generator=g)
        out.append({"boxes": boxes, "labels": labels})
    return out


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, images: list, targets: list):
    """One forward + backward + SGD step; returns a closure for :func:`interleaved`."""

    def step() -> None:
        losses = model(images, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()

    return step


def throughput(args: argparse.Namespace) -> dict[str, float]:
    """Training images/s, batch 8 at 320x320, against SSDlite; returns images/s per model."""
    batch = 8
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 320, 320, generator=g) for _ in range(batch)]
    ssd = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None
    ).train()
    tn = thundernet_lite(80).train()
    fns = {
        "SSDlite320 (peer)": _train_step(
            ssd,
            torch.optim.SGD(ssd.parameters(), lr=1e-3, momentum=0.9),
            images,
            _random_targets(batch, 320, 90, 1),
        ),
        "ThunderNet-lite SNet49": _train_step(
            tn,
            torch.optim.SGD(tn.parameters(), lr=1e-3, momentum=0.9),
            images,
            _random_targets(batch, 320, 80, 2),
        ),
    }
    ms = interleaved(fns, args.train_steps, warmup=1)
    peer = batch * 1000.0 / ms["SSDlite320 (peer)"]
    print(
        f"\nTraining, batch {batch} at 320x320, {args.threads} threads, "
        f"median of {args.train_steps} steps (load average {os.getloadavg()[0]:.2f})"
    )
    print(f"{'model':34s} {'img/s':>8s} {'x SSDlite':>10s}")
    rates = {name: batch * 1000.0 / value for name, value in ms.items()}
    for name, ips in rates.items():
        print(f"{name:34s} {ips:8.2f} {ips / peer:10.2f}")
    ratio = rates["ThunderNet-lite SNet49"] / peer
    print(f"goal ThunderNet-lite >= 3x SSDlite: {ratio:.2f}x ({'met' if ratio >= 3 else 'MISSED'})")
    return rates


def cost(args: argparse.Namespace) -> None:
    """MAC breakdown of the three presets against the paper."""
    print("\nCost at 320x320, 80 classes, 200 RoIs, class-agnostic boxes (M MACs = FLOPs / 2)")
    print("PS-RoIAlign, BatchNorm, activations, NMS and decoding are not counted.")
    names = ["backbone", "CEM", "RPN", "SAM", "R-CNN head", "total"]
    header = " ".join(f"{n:>10s}" for n in names)
    print(f"{'backbone':10s} {header} {'paper':>7s} {'ratio':>6s}")
    for backbone in args.backbones:
        parts = cost_breakdown(thundernet_lite(80, backbone=backbone).eval())
        paper = PAPER_MACS[backbone]
        ratio = parts["total"] / paper
        row = " ".join(f"{parts[n]:10.1f}" for n in names)
        flag = "goal" if abs(ratio - 1) <= 0.1 else ("target" if abs(ratio - 1) <= 0.2 else "MISS")
        print(f"{backbone:10s} {row} {paper:7.0f} {ratio:6.3f} {flag}")


def main() -> None:
    """Parse arguments and run the three benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20, help="latency runs (>= 20)")
    parser.add_argument("--train-steps", type=int, default=6)
    parser.add_argument("--backbones", nargs="+", default=list(PAPER_MACS))
    parser.add_argument("--skip", nargs="*", default=[], choices=["cost", "latency", "train"])
    parser.add_argument("--json", type=Path, default=None, help="write the training images/s")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    if "cost" not in args.skip:
        cost(args)
    if "latency" not in args.skip:
        latency(args)
    if "train" not in args.skip:
        rates = throughput(args)
        if args.json:
            write_json(args.json, {"threads": args.threads, "batch": 8, "size": 320,
                                   "steps": args.train_steps, "train_images_per_s": rates})


if __name__ == "__main__":
    main()
