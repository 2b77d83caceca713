"""Timing helpers of the latency benchmarks: network vs post-processing, GEMM rate, MACs.

A detector's eval call mixes the network (convolutions, linear layers, RoI pooling) with
post-processing (proposal decoding and NMS, score thresholds, final NMS, Python glue).
:func:`split_times` times both apart in one call: forward hooks on the network modules
(:func:`network_modules`) add up their wall time; the rest of the call is post-processing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

_REPO = Path(__file__).resolve().parents[1]
# the benchmark suite's fold checkpoints (benchmarks/suite.py: WORK_ROOT / <data> / k3_2min)
# and BCCD's test split as tools/convert_voc.py writes it
SUITE_CHECKPOINTS = _REPO / "work_dirs" / "bench" / "bccd" / "k3_2min"
BCCD_TEST = _REPO / "data" / "bccd" / "test.json"

__all__ = ["gemm_gflops", "count_macs", "network_modules", "split_times", "timed_modules"]


def network_modules(model: nn.Module) -> list[nn.Module]:
    """The parts of ``model`` that make up its network (not its post-processing).

    ThunderNet: backbone, neck, RPN head, SAM, R-CNN head. Dense detector: backbone, neck,
    head. torchvision SSD: backbone, head. torchvision Faster R-CNN: backbone, RPN head,
    RoI pooling, box head, box predictor.
    """
    names = ("backbone", "neck", "rpn.head", "sam", "rcnn.head", "head",
             "roi_heads.box_roi_pool", "roi_heads.box_head", "roi_heads.box_predictor")
    found = []
    for name in names:
        module: nn.Module | None = model
        for part in name.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.Module):
            found.append(module)
    return found


@contextmanager
def timed_modules(modules: Sequence[nn.Module]) -> Iterator[list[float]]:
    """Record the seconds spent inside ``modules`` (outermost calls only) into a list."""
    spent = [0.0]
    depth = [0]
    start = [0.0]

    def pre(_module: nn.Module, _inputs: object) -> None:
        if depth[0] == 0:
            start[0] = time.perf_counter()
        depth[0] += 1

    def post(_module: nn.Module, _inputs: object, _output: object) -> None:
        depth[0] -= 1
        if depth[0] == 0:
            spent[0] += time.perf_counter() - start[0]

    handles = [h for m in modules for h in (m.register_forward_pre_hook(pre),
                                           m.register_forward_hook(post))]
    try:
        yield spent
    finally:
        for h in handles:
            h.remove()


def split_times(fns: dict[str, tuple[nn.Module, Callable[[int], object]]], runs: int,
                warmup: int = 3) -> dict[str, dict[str, float]]:
    """Median ms of the whole call, its network and the rest, per model, calls interleaved.

    ``fns`` maps a name to (model, call) where ``call(i)`` runs the model on input ``i``;
    models take turns run by run so load from other processes hits them alike.
    """
    for i in range(warmup):
        for _, call in fns.values():
            call(i)
    totals: dict[str, list[float]] = {n: [] for n in fns}
    nets: dict[str, list[float]] = {n: [] for n in fns}
    for i in range(runs):
        for name, (model, call) in fns.items():
            with timed_modules(network_modules(model)) as spent:
                begin = time.perf_counter()
                call(i)
                total = time.perf_counter() - begin
            totals[name].append(1000.0 * total)
            nets[name].append(1000.0 * spent[0])
    out = {}
    for name in fns:
        total, net = statistics.median(totals[name]), statistics.median(nets[name])
        post = statistics.median([t - n for t, n in zip(totals[name], nets[name], strict=True)])
        out[name] = {"total": total, "network": net, "post": post}
    return out


def gemm_gflops(size: int = 1024, repeats: int = 7) -> float:
    """Median float32 GFLOP/s of a ``size``^3 matrix product on the current torch threads."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(size, size, generator=g), torch.rand(size, size, generator=g)
    a @ b
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - begin)
    return 2.0 * size**3 / statistics.median(times) / 1e9


def count_macs(fn: Callable[[], object]) -> float:
    """Multiply-accumulates (millions) of ``fn()``: FlopCounterMode FLOPs / 2."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2e6
