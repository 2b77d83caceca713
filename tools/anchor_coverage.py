"""Anchor coverage: ``tools/anchor_coverage.py CONFIG_OR_PRESET ANN.json [--input-size 320]
[--out DIR] [--density | --no-density] [key=value ...]``.

CONFIG_OR_PRESET is a YAML config (its ``model`` mapping goes to
``detkit.models.build.build_model``; dotted ``key=value`` overrides apply) or an anchor
preset name (retinanet | s3fd | faceboxes) on strides ``--strides``. ``--density`` /
``--no-density`` switch FaceBoxes densification on or off. Prints, per COCO area bucket
and class, the share of ground-truth boxes (letterboxed to the input size) that have an
anchor at IoU >= 0.5 and the mean best IoU; with ``--out`` writes coverage.txt and
coverage.png there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detkit.cli import help_text  # noqa: E402
from detkit.models.anchors import (  # noqa: E402
    ANCHOR_PRESETS,
    AnchorGenerator,
    anchor_generator_from_preset,
)
from detkit.models.coverage import (  # noqa: E402
    anchor_coverage,
    model_anchor_generator,
    plot_coverage,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=help_text(__doc__))
    parser.add_argument(
        "config", help=f"YAML config or anchor preset ({', '.join(ANCHOR_PRESETS)})"
    )
    parser.add_argument("ann", help="COCO annotation JSON")
    parser.add_argument("--input-size", type=int, default=320, help="letterbox size (px)")
    parser.add_argument("--out", default=None, help="folder for coverage.txt and coverage.png")
    parser.add_argument(
        "--density",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="FaceBoxes densification on/off (default: as configured, off for presets)",
    )
    parser.add_argument(
        "--strides", default="8,16,32,64,128", help="level strides for a preset (comma separated)"
    )
    parser.add_argument("--iou", type=float, default=0.5, help="IoU that counts as covered")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted config overrides, e.g. model.anchors=s3fd",
    )
    return parser.parse_intermixed_args(argv)


def generator_from_args(args: argparse.Namespace, num_classes: int) -> AnchorGenerator:
    """Build the anchor generator named by a preset or described by a config."""
    if args.config in ANCHOR_PRESETS:
        if args.overrides:
            raise ValueError("key=value overrides need a YAML config, not a preset name")
        strides = [int(s) for s in args.strides.split(",") if s]
        return anchor_generator_from_preset(args.config, strides, densify=bool(args.density))
    from detkit.config import load_config
    from detkit.engine.build import build_model_from_cfg
    from detkit.presets import resolve_config_path

    model_cfg = dict(load_config(resolve_config_path(args.config), args.overrides)["model"])
    num_classes = model_cfg.setdefault("num_classes", num_classes)
    if args.density is not None:
        if model_cfg["type"] != "dense_detector":
            raise ValueError(f"--density applies to dense_detector, not {model_cfg['type']}")
        model_cfg["densify"] = args.density
        if not args.density:
            model_cfg["anchor_densities"] = None
    return model_anchor_generator(build_model_from_cfg(model_cfg, num_classes))


def main(argv: list[str] | None = None) -> int:
    """Run the coverage analysis; returns the process exit code."""
    args = parse_args(argv)
    from detkit.config import ConfigError
    from detkit.presets import resolve_config_path

    if args.config not in ANCHOR_PRESETS:
        try:
            resolve_config_path(args.config)
        except ConfigError:
            print(f"error: {args.config!r} is neither a file, a config preset nor an anchor "
                  f"preset ({', '.join(ANCHOR_PRESETS)})", file=sys.stderr)
            return 2
    with open(args.ann, encoding="utf-8") as f:
        coco = json.load(f)
    generator = generator_from_args(args, len(coco["categories"]))
    report = anchor_coverage(coco, generator, args.input_size, args.iou)
    density = "on" if any(n > 1 for lvl in generator.densities for n in lvl) else "off"
    if args.density and density == "off":
        # FaceBoxes' rule round(4 x stride / size) gives 1 for anchors >= 4x their stride
        density = "on, but every density is 1 for these anchor sizes (nothing added)"
    title = f"{Path(args.config).stem}, densification {density}"
    text = f"{title}\n{generator.extra_repr()}\n{report.table()}"
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "coverage.txt").write_text(text + "\n", encoding="utf-8")
        png = plot_coverage(report, out / "coverage.png", title)
        print(f"wrote {out / 'coverage.txt'} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
