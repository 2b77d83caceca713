"""Export a detector to ONNX: ``tools/export.py [CONFIG] CKPT --out model.onnx [--img-size N]``.

The graph takes ``image: float32 [1, 3, N, N]`` RGB in [0, 1], letterboxed (resize keeping the
aspect ratio, pad right/bottom), and returns ``boxes [D, 4]`` xyxy in the input's pixels,
``scores [D]``, ``labels [D]`` (1..K). Class names and the input size are stored in the model's
metadata with the pre-processing (letterbox size, interpolation, normalisation), the box format
and the NMS (configured kind and the plain NMS the graph runs). When onnxruntime is installed,
its output is compared with PyTorch's on a validation image with detections.
Needs the ``onnx`` package (and ``onnxruntime`` for the check): pip install onnx onnxruntime.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's detkit

from detkit.cli import help_text  # noqa: E402
from detkit.presets import tool_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=help_text(__doc__))
    parser.add_argument("inputs", nargs="+", metavar="[CONFIG] CHECKPOINT [key=value]",
                        help="optional YAML config or preset name (default: the config stored "
                             "in the checkpoint), the .pth checkpoint, dotted overrides such "
                             "as model.score_threshold=0.3")
    parser.add_argument("--out", required=True, help="output .onnx file")
    parser.add_argument("--img-size", type=int, default=None,
                        help="square input size (default: test.img_size or data.img_size)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 16)")
    parser.add_argument("--no-ema", action="store_true",
                        help="export the raw weights even when the checkpoint has EMA ones")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    found = tool_config(args.inputs, 1)
    if found is None:
        return 2
    cfg, (args.checkpoint,) = found
    from detkit.engine.export import export_checked

    try:
        export_checked(cfg, args.checkpoint, args.out, args.img_size, args.opset,
                       prefer_ema=not args.no_ema)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
