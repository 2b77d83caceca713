"""Helpers of the performance benchmarks: network vs post-processing, GEMM rate, MACs, curves.

A detector's eval call mixes the network (convolutions, linear layers, RoI pooling) with
post-processing (proposal decoding and NMS, score thresholds, final NMS, Python glue).
:func:`split_times` times both apart in one call: forward hooks on the network modules
(:func:`network_modules`) add up their wall time; the rest of the call is post-processing.

A cost-growth curve is ``{series name: {x: value}}`` (e.g. milliseconds per input size, one
series per model). :func:`plot_curves` draws every series on one pair of axes (the peer's
dashed), :func:`growth` says how much a series grows from its first to its last point, and
:func:`write_json` stores the figures with the load average they were measured under.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

_REPO = Path(__file__).resolve().parents[1]
# the benchmark suite's fold checkpoints (benchmarks/suite.py: WORK_ROOT / <data> / k3_2min)
# and BCCD's test split as tools/convert_voc.py writes it
SUITE_CHECKPOINTS = _REPO / "work_dirs" / "bench" / "bccd" / "k3_2min"
BCCD_TEST = _REPO / "data" / "bccd" / "test.json"

__all__ = ["Curves", "count_macs", "gemm_gflops", "growth", "network_modules", "plot_curves",
           "split_times", "timed_modules", "write_json"]


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


Curves = Mapping[str, Mapping[float, float]]


def growth(values: Mapping[float, float]) -> float:
    """Last value over first value of a series, by ascending x (nan for fewer than 2 points)."""
    xs = sorted(values)
    if len(xs) < 2 or values[xs[0]] == 0:
        return float("nan")
    return values[xs[-1]] / values[xs[0]]


def plot_curves(curves: Curves, path: Path, xlabel: str, ylabel: str, title: str,
                logx: bool = True, logy: bool = True) -> Path:
    """Draw each series of ``curves`` as a marked line (names with "peer" dashed) to ``path``;
    the x ticks are the measured x values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, values in curves.items():
        xs = sorted(values)
        if not xs:
            continue
        ax.plot(xs, [values[x] for x in xs], marker="o", label=name,
                linestyle="--" if "peer" in name else "-")
    if logx:
        ax.set_xscale("log")
    ticks = sorted({x for values in curves.values() for x in values})
    if ticks:  # the measured x values as plain numbers, not 4 x 10^2
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot: {path}")
    return path


def write_json(path: Path, result: Mapping[str, Any]) -> Path:
    """Write ``result`` plus the current 1-minute load average (``load_avg``) to ``path``.

    Curve keys (numbers) become strings, as JSON requires.
    """
    record = {"load_avg": os.getloadavg()[0], **result}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"json: {path}")
    return path
