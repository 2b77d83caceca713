"""Detect objects in images: ``tools/infer.py [CONFIG] CKPT SOURCE --out DIR [key=value ...]``.

SOURCE is an image file, a folder (its image files, not recursive) or a COCO annotation file
(the images it lists, e.g. ``data/bccd/test.json`` from ``tools/convert_voc.py``). Without
CONFIG (a YAML file or a preset name) the config stored in the checkpoint is used (the same
loading as the Python API ``detkit.load(CKPT).predict(SOURCE)``). For every image writes into
DIR the image with its detections drawn (class name and score; same format as the input for
PNG/JPEG, PNG otherwise; images under --draw-size pixels drawn enlarged) and ``<name>.json``
with the boxes in original image pixels (x1, y1, x2, y2), scores, labels (1..K) and class
names. EMA weights are used when the checkpoint has them; the
config's ``test`` section sets the input size, image pyramid and NMS. An unreadable file is
skipped and named; the rest is still processed, and the exit code is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's detkit

from detkit.cli import help_text  # noqa: E402
from detkit.presets import tool_config  # noqa: E402

DRAWN_SUFFIXES = (".jpg", ".jpeg", ".png")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=help_text(__doc__))
    parser.add_argument("inputs", nargs="+", metavar="[CONFIG] CHECKPOINT SOURCE [key=value]",
                        help="optional YAML config or preset name (default: the config stored "
                             "in the checkpoint), the .pth checkpoint, an image / folder / COCO "
                             "JSON, dotted overrides such as test.img_size=640")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="keep detections scoring at least this (default 0.3)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    parser.add_argument("--tile", type=int, default=None, metavar="PX",
                        help="sliced inference for small objects: PX-pixel windows, each at the "
                             "model's input size, plus the whole image, merged by the model's "
                             "NMS (default: the config's test.tile; 0: off)")
    parser.add_argument("--tile-overlap", type=float, default=None, metavar="F",
                        help="share of a window's side its neighbours overlap, in [0, 1) "
                             "(default: the config's test.tile_overlap, 0.25)")
    parser.add_argument("--draw-size", type=int, default=512,
                        help="draw images whose longer side is shorter enlarged by an integer "
                             "factor to at least this many pixels, so captions stay readable "
                             "(default 512; 0 keeps the size)")
    parser.add_argument("--runtime", choices=("torch", "folded", "onnxruntime"),
                        default="torch",
                        help="torch (default), folded (BatchNorm folded into convolutions) or "
                             "onnxruntime (the folded model exported to ONNX, plain NMS)")
    parser.add_argument("--workers", type=int, default=0,
                        help="processes decoding images ahead of the model (default 0)")
    parser.add_argument("--no-ema", action="store_true",
                        help="use the raw weights even when the checkpoint has EMA ones")
    return parser.parse_intermixed_args(argv)


def list_images(source: str | Path, out_dir: str | Path) -> list[Path]:
    """Image files of ``source`` (a file, a folder or a COCO JSON), in the API's order.

    Raises FileNotFoundError / ValueError for a missing source, a folder without images, two
    images with the same stem (their outputs would overwrite each other) or an output folder
    equal to the input folder (drawn images would replace the originals).
    """
    from detkit.api import expand_sources

    files = [Path(p) for p in expand_sources(str(source))]
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise ValueError(f"{stems[path.stem].name} and {path.name} share the name "
                             f"'{path.stem}': their outputs would collide")
        stems[path.stem] = path
    if Path(out_dir).resolve() in {p.parent.resolve() for p in files}:
        raise ValueError(f"--out {out_dir} is the input folder; choose another folder")
    return files


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    if (args.tile is not None and args.tile < 0) or (
            args.tile_overlap is not None and not 0.0 <= args.tile_overlap < 1.0):
        print(f"error: --tile must be >= 0 px (0: off) and --tile-overlap in [0, 1), got "
              f"{args.tile} and {args.tile_overlap}", file=sys.stderr)
        return 2
    found = tool_config(args.inputs, 2)
    if found is None:
        return 2
    cfg, (checkpoint, source) = found
    from detkit.api import Detector
    from detkit.evaluation.plots import draw_detections, write_image

    try:
        files = list_images(source, args.out)
        detector = Detector.from_config(cfg, checkpoint, prefer_ema=not args.no_ema)
        if args.runtime != "torch":
            detector.use_runtime(args.runtime, args.score_threshold)
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    total, skipped = 0, []

    def skip(path: Path, reason: str) -> None:  # one bad file does not end the folder
        print(f"skipped {path}: {reason}", file=sys.stderr, flush=True)
        skipped.append(path)

    for image, pred in detector.iter_predict(files, args.batch_size, args.score_threshold,
                                             on_unreadable=skip, tile=args.tile,
                                             tile_overlap=args.tile_overlap,
                                             workers=args.workers):
        path = Path(pred.source)
        total += len(pred)
        drawn = draw_detections(image, pred.boxes, pred.labels, pred.scores, detector.names,
                                min_side=args.draw_size)
        suffix = path.suffix.lower() if path.suffix.lower() in DRAWN_SUFFIXES else ".png"
        write_image(drawn, out / f"{path.stem}{suffix}")
        (out / f"{path.stem}.json").write_text(json.dumps(pred.to_dict(), indent=1) + "\n")
    print(f"{len(files) - len(skipped)} images, {total} detections with score >= "
          f"{args.score_threshold} ({detector.loaded.weights} weights); drawn images and JSON "
          f"files in {out}")
    if skipped:
        print(f"{len(skipped)} unreadable file(s) skipped: "
              f"{', '.join(p.name for p in skipped[:10])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
