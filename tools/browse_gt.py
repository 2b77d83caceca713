"""Draw a COCO dataset's ground-truth boxes, with a VOC conversion's dropped and clipped boxes
marked, one PNG per image.

Usage: python tools/browse_gt.py ANN.json [--img-dir DIR] [--out DIR] [--images N]
[--report conversion_report.json]

``--img-dir`` defaults to the annotation file's folder (where ``tools/convert_voc.py`` writes
``file_name`` paths relative to), ``--report`` to the ``conversion_report.json`` beside the
annotation file when there is one. Images with marked boxes are drawn first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detkit.cli import help_text
from detkit.data.voc import REPORT_FILE
from detkit.evaluation.gt_browser import draw_ground_truth


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, draw, print where the pictures are; returns the exit status."""
    parser = argparse.ArgumentParser(description=help_text(__doc__))
    parser.add_argument("ann_file", help="COCO annotation file")
    parser.add_argument("--img-dir", default=None, help="image folder (default: ANN's folder)")
    parser.add_argument("--out", default="work_dirs/browse", help="output folder")
    parser.add_argument("--images", type=int, default=16, help="pictures to draw (0: all)")
    parser.add_argument("--report", default=None,
                        help=f"conversion report (default: {REPORT_FILE} beside ANN, if any)")
    args = parser.parse_args(argv)
    ann = Path(args.ann_file)
    if not ann.is_file():
        print(f"error: annotation file {ann} not found", file=sys.stderr)
        return 2
    report = Path(args.report) if args.report else ann.parent / REPORT_FILE
    if args.report and not report.is_file():
        print(f"error: conversion report {report} not found", file=sys.stderr)
        return 2
    try:
        summary = draw_ground_truth(ann, args.img_dir or ann.parent, args.out,
                                    report if report.is_file() else None, args.images)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{len(summary.pictures)} images drawn into {args.out}; "
          f"{summary.marks_drawn} dropped or clipped box(es) marked on "
          f"{summary.marked_images} of them"
          + ("" if report.is_file() else " (no conversion report)"))
    if summary.marked_images:  # drawn first, so the first pictures of the list
        names = ", ".join(Path(p).name for p in summary.pictures[: summary.marked_images])
        print(f"marked: {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
