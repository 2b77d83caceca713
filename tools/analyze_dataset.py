"""Print statistics of a COCO detection annotation file and save them as PNG plots.

Usage: python tools/analyze_dataset.py ANN.json [--out DIR]

Table: class counts, objects per image, COCO size buckets (from the ``area`` field)
and percentiles of sqrt(area) and aspect ratio w/h per class. With --out, writes
class_counts.png, objects_per_image.png, size_buckets.png, sizes.png, aspect_ratios.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from detkit.cli import help_text
from detkit.data.stats import BUCKETS, DatasetStats, compute_dataset_stats, format_stats  # noqa: E402
from detkit.data.validation import AnnotationFormatError  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_plots(stats: DatasetStats, out_dir: Path) -> list[Path]:
    """Write the five PNG plots to ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = stats.class_names
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(names, [stats.class_counts[n] for n in names])
    ax.set(title="objects per class", ylabel="count")
    paths.append(_save(fig, out_dir / "class_counts.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    opi = stats.objects_per_image
    ax.hist(opi, bins=np.arange(opi.max() + 2) - 0.5 if opi.size else 1)
    ax.set(title="objects per image", xlabel="objects", ylabel="images")
    paths.append(_save(fig, out_dir / "objects_per_image.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    bottom = np.zeros(len(names))
    for bucket in BUCKETS:
        heights = np.array([stats.buckets.get(n, {}).get(bucket, 0) for n in names], float)
        ax.bar(names, heights, bottom=bottom, label=bucket)
        bottom += heights
    ax.set(title="COCO size buckets (area field)", ylabel="count")
    ax.legend()
    paths.append(_save(fig, out_dir / "size_buckets.png"))

    for key, title, fname in (
        ("areas", "sqrt(area) [px]", "sizes.png"),
        ("aspect_ratios", "aspect ratio w/h", "aspect_ratios.png"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in names:
            values = getattr(stats, key).get(name, np.zeros(0))
            values = np.sqrt(values) if key == "areas" else values
            values = values[np.isfinite(values) & (values > 0)]
            if values.size:
                bins = np.geomspace(values.min(), values.max() * 1.001 + 1e-9, 30)
                ax.hist(values, bins=bins, histtype="step", label=name)
        ax.set_xscale("log")
        ax.set(title=title, ylabel="count")
        ax.legend(fontsize="small")
        paths.append(_save(fig, out_dir / fname))
    return paths


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, print the table, optionally save plots; returns the exit status."""
    parser = argparse.ArgumentParser(description=help_text(__doc__))
    parser.add_argument("ann_file", help="COCO JSON annotation file")
    parser.add_argument("--out", default=None, help="folder for the PNG plots")
    args = parser.parse_args(argv)
    try:
        stats = compute_dataset_stats(args.ann_file)
    except (FileNotFoundError, AnnotationFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_stats(stats))
    if args.out:
        for path in save_plots(stats, Path(args.out)):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
