"""Convert a Pascal VOC dataset to COCO JSON, one file per ImageSets/Main split.

Usage: python tools/convert_voc.py --voc-root DIR --out-dir OUT [--classes A,B,C]

Conventions (see detkit/data/voc.py): COCO bbox = [xmin-1, ymin-1, xmax-xmin, ymax-ymin];
classes alphabetical unless --classes; difficult objects -> iscrowd=1 (ignore regions);
file_name relative to OUT.
"""

from __future__ import annotations

import argparse
import sys

from detkit.cli import help_text
from detkit.data.voc import convert_voc_to_coco


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, convert, print the report; returns the exit status."""
    parser = argparse.ArgumentParser(description=help_text(__doc__))
    parser.add_argument("--voc-root", required=True, help="folder with Annotations/, JPEGImages/")
    parser.add_argument("--out-dir", required=True, help="where <split>.json files are written")
    parser.add_argument("--classes", default=None, help="comma-separated class order (1..K)")
    args = parser.parse_args(argv)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    try:
        report = convert_voc_to_coco(args.voc_root, args.out_dir, classes=classes)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
