"""Cost-growth curves of the benchmarks: a line plot per measured series and its JSON record.

A curve is ``{series name: {x: value}}`` (e.g. milliseconds per input size, one series per
model). :func:`plot_curves` draws every series on one pair of axes (the peer's dashed),
:func:`growth` says how much a series grows from its first to its last point, and
:func:`write_json` stores the figures with the load average they were measured under.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["Curves", "growth", "plot_curves", "write_json"]

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
