"""Detect objects in images: ``tools/infer.py CONFIG CKPT IMAGE_OR_DIR --out DIR [key=value ...]``.

For every image (one file, or the image files of a folder, not recursive) writes into DIR the
image with its detections drawn (class name and score; same format as the input for PNG/JPEG,
PNG otherwise) and ``<name>.json`` with the boxes in original image pixels (x1, y1, x2, y2),
scores, labels (1..K) and class names. EMA weights are used when the checkpoint has them; the
config's ``test`` section sets the input size, image pyramid and NMS. An unreadable file is
skipped and named; the rest of the folder is still processed, and the exit code is then 1.
"""

from __future__ import annotations

import os

# Shared CPUs: OpenMP threads that spin while waiting slow every step down many times over
# when another process holds a core (measured here: 20 training steps took 111 s instead
# of 10 s). Passive waiting avoids that; export OMP_WAIT_POLICY to override. It must be set
# before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detkit.config import load_cli_config  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DRAWN_SUFFIXES = (".jpg", ".jpeg", ".png")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="YAML config file (see configs/)")
    parser.add_argument("checkpoint", help="checkpoint written by tools/train.py (.pth)")
    parser.add_argument("source", help="an image file or a folder of images")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="keep detections scoring at least this (default 0.3)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    parser.add_argument("--no-ema", action="store_true",
                        help="use the raw weights even when the checkpoint has EMA ones")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted config overrides, e.g. test.img_size=640")
    return parser.parse_intermixed_args(argv)


def list_images(source: str | Path, out_dir: str | Path) -> list[Path]:
    """Image files of ``source`` (a file or a folder), sorted by name.

    Raises FileNotFoundError / ValueError for a missing source, a folder without images, two
    images with the same stem (their outputs would overwrite each other) or an output folder
    equal to the input folder (drawn images would replace the originals).
    """
    source = Path(source)
    if source.is_file():
        files = [source]
    elif source.is_dir():
        files = sorted(p for p in source.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {source}")
    else:
        raise FileNotFoundError(f"image or folder not found: {source}")
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise ValueError(f"{stems[path.stem].name} and {path.name} share the name "
                             f"'{path.stem}': their outputs would collide")
        stems[path.stem] = path
    if Path(out_dir).resolve() in {p.parent.resolve() for p in files}:
        raise ValueError(f"--out {out_dir} is the input folder; choose another folder")
    return files


def detections_json(path: Path, size: tuple[int, int], det: dict, names: Sequence[str]) -> dict:
    """JSON record of one image's detections (boxes xyxy in original pixels)."""
    labels = [int(v) for v in det["labels"].tolist()]
    return {
        "image": str(path),
        "height": int(size[0]),
        "width": int(size[1]),
        "boxes": [[float(v) for v in box] for box in det["boxes"].tolist()],
        "scores": [float(v) for v in det["scores"].tolist()],
        "labels": labels,
        "class_names": [names[k - 1] if 1 <= k <= len(names) else str(k) for k in labels],
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    cfg = load_cli_config(args.config, args.overrides)
    if cfg is None:
        return 2
    from detkit.data.image_io import read_images
    from detkit.engine.inference import (
        Predictor,
        class_names_from_config,
        load_detector,
        postprocess_config,
        read_test_options,
        resolve_device,
        with_postprocess,
    )
    from detkit.evaluation.plots import draw_detections, write_image

    try:
        files = list_images(args.source, args.out)
        options = read_test_options(cfg)
        names = class_names_from_config(cfg)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        loaded = load_detector(cfg, args.checkpoint, len(names), resolve_device(cfg["device"]),
                               options, prefer_ema=not args.no_ema)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.score_threshold < postprocess_config(loaded.model).score_threshold:
        # the model's own threshold would hide detections the user asked for
        loaded.model = with_postprocess(loaded.model, score_threshold=args.score_threshold)
    predictor = Predictor.from_options(loaded, options)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    total, skipped = 0, []
    for start in range(0, len(files), max(1, args.batch_size)):
        chunk, images, failed = read_images(files[start:start + max(1, args.batch_size)])
        for path, reason in failed:  # one bad file does not end the folder
            print(f"skipped {path}: {reason}", file=sys.stderr, flush=True)
            skipped.append(path)
        if not images:
            continue
        for path, image, det in zip(chunk, images, predictor.predict(images), strict=True):
            keep = det["scores"] >= args.score_threshold
            det = {k: v[keep] for k, v in det.items()}
            total += int(keep.sum())
            drawn = draw_detections(image, det["boxes"], det["labels"], det["scores"], names)
            suffix = path.suffix.lower() if path.suffix.lower() in DRAWN_SUFFIXES else ".png"
            write_image(drawn, out / f"{path.stem}{suffix}")
            record = detections_json(path, image.shape[:2], det, names)
            (out / f"{path.stem}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"{len(files) - len(skipped)} images, {total} detections with score >= "
          f"{args.score_threshold} ({loaded.weights} weights); drawn images and JSON files "
          f"in {out}")
    if skipped:
        print(f"{len(skipped)} unreadable file(s) skipped: "
              f"{', '.join(p.name for p in skipped[:10])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
