"""Export a detector to ONNX: ``tools/export.py CONFIG CKPT --out model.onnx [--img-size N]``.

The graph takes ``image: float32 [1, 3, N, N]`` RGB in [0, 1], letterboxed (resize keeping the
aspect ratio, pad right/bottom), and returns ``boxes [D, 4]`` xyxy in the input's pixels,
``scores [D]``, ``labels [D]`` (1..K). Class names and the input size are stored in the model's
metadata. When onnxruntime is installed, its output on a test image is compared with PyTorch's.
Needs the ``onnx`` package (and ``onnxruntime`` for the check): pip install onnx onnxruntime.
"""

from __future__ import annotations

import os

# Shared CPUs: OpenMP threads that spin while waiting slow every step down many times over
# when another process holds a core (measured here: 20 training steps took 111 s instead
# of 10 s). Passive waiting avoids that; export OMP_WAIT_POLICY to override. It must be set
# before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detkit.config import load_cli_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="YAML config file (see configs/)")
    parser.add_argument("checkpoint", help="checkpoint written by tools/train.py (.pth)")
    parser.add_argument("--out", required=True, help="output .onnx file")
    parser.add_argument("--img-size", type=int, default=None,
                        help="square input size (default: test.img_size or data.img_size)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 16)")
    parser.add_argument("--no-ema", action="store_true",
                        help="export the raw weights even when the checkpoint has EMA ones")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted config overrides, e.g. model.score_threshold=0.3")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    cfg = load_cli_config(args.config, args.overrides)
    if cfg is None:
        return 2
    import torch

    from detkit.engine.export import (
        describe_model,
        export_onnx,
        exportable_copy,
        match_detections,
    )
    from detkit.engine.export import run_onnxruntime as run_ort
    from detkit.engine.inference import class_names_from_config, load_detector, read_test_options

    try:
        options = read_test_options(cfg)
        names = class_names_from_config(cfg)
    except ValueError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    size = args.img_size or options.img_size
    try:
        loaded = load_detector(cfg, args.checkpoint, len(names), "cpu", options,
                               prefer_ema=not args.no_ema)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    meta = describe_model(cfg["model"]["type"], size, names)
    path = export_onnx(loaded.model, args.out, size, opset=args.opset, metadata=meta)
    print(f"exported {cfg['model']['type']} ({loaded.weights} weights, input 1x3x{size}x{size}) "
          f"to {path} ({path.stat().st_size / 1e6:.1f} MB)")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime not installed: output check skipped (pip install onnxruntime)")
        return 0
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = exportable_copy(loaded.model)([image[0]])[0]
    got = run_ort(path, image)
    same, worst = match_detections(got, {k: v.numpy() for k, v in ref.items()})
    counts = f"{len(got['boxes'])} detections vs PyTorch's {len(ref['boxes'])}"
    if same:
        print(f"onnxruntime check on a random image: {counts}; all match "
              f"(max |box diff| {worst:.2e} px)")
    else:
        print(f"warning: onnxruntime check on a random image: {counts}; not all match (nearly "
              f"equal scores can change NMS decisions)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
