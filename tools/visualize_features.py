"""Draw a detector's feature maps and attention for one image:
``tools/visualize_features.py [CONFIG] CKPT IMAGE --out DIR [--layers NAME ...] [key=value ...]``.

Writes ``DIR/features.png``: a row per chosen layer's map (default: the backbone stages, the
neck's levels - FPN / SSH or ThunderNet's CEM output - and ThunderNet's RPN head map), its
channel mean then its most active channels; and, for ThunderNet with its Spatial Attention
Module, ``DIR/attention.png``: the SAM weights (channel mean) as a heat map over the image.
The image is letterboxed to the config's test size, as in ``tools/test.py``; a checkpoint
trained with ``model.acnet`` is drawn folded. Without CONFIG the checkpoint's own config is used.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (see tools/infer.py)

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detkit.cli import help_text  # noqa: E402
from detkit.presets import tool_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=help_text(__doc__))
    parser.add_argument("inputs", nargs="+", metavar="[CONFIG] CHECKPOINT IMAGE [key=value]",
                        help="optional config or preset, the checkpoint, one image, overrides")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--layers", nargs="+", default=None,
                        help="module names to draw (default: backbone, neck, rpn.head)")
    parser.add_argument("--channels", type=int, default=7, help="channels drawn per map")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights, not EMA")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    found = tool_config(args.inputs, 2)
    if found is None:
        return 2
    cfg, (checkpoint, image_path) = found
    import numpy as np

    from detkit.data.image_io import read_image_rgb
    from detkit.engine.inference import (
        class_names_from_config,
        letterbox_image,
        load_detector,
        read_test_options,
    )
    from detkit.evaluation.features import (
        attention_overlay,
        capture_features,
        default_layers,
        feature_grid,
        sam_attention,
    )

    try:
        image = read_image_rgb(image_path)
        size = read_test_options(cfg).img_size
        from detkit.engine.checkpoint import as_checkpoint

        ckpt = as_checkpoint(checkpoint)
        names = class_names_from_config(cfg, ckpt)
        model = load_detector(cfg, ckpt, len(names), prefer_ema=not args.no_ema).model
        tensor, _ = letterbox_image(image, size)
        layers = args.layers or default_layers(model)
        features = capture_features(model, tensor, layers)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    title = f"{cfg['model']['type']} on {Path(image_path).name} ({size}x{size} letterbox)"
    grid = feature_grid(features, out / "features.png", args.channels, title)
    print(f"{len(features)} maps ({', '.join(features)}) drawn in {grid}")
    if getattr(model, "sam", None) is not None:
        canvas = (tensor.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        att = sam_attention(model, tensor)
        path = attention_overlay(canvas, att, out / "attention.png", title=title)
        print(f"SAM attention {tuple(att.shape)} in [{float(att.min()):.3f}, "
              f"{float(att.max()):.3f}] drawn in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
