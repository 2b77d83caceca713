"""Deterministic synthetic COCO detection dataset (shapes on textured backgrounds).

Every image is drawn from ``numpy.random.default_rng([seed, index])``, so the same seed
gives byte-identical files and any single image can be re-rendered alone. Six classes
of filled shapes (circle, square, triangle, star, ellipse, cross) with random colour,
texture (flat, stripes, checker, speckle, gradient) and rotation are placed on a smooth
coloured, striped, cluttered and noisy background. Objects are placed largest first and
may overlap; a placement that would hide more than half of an earlier object is retried.

Box sizes follow COCO's spread: about 40% small (area < 32^2), 35% medium and 25%
large (>= 96^2) at the default 320 x 320 image size, and about 5% of the images hold
no object. Boxes are tight around the *visible* pixels of each object: an object whose
visible pixels span columns ``c0..c1`` and rows ``r0..r1`` has COCO bbox
``[c0, r0, c1 - c0 + 1, r1 - r0 + 1]`` (pixel ``i`` covers ``[i, i + 1)``) and
``area = w * h`` (box area, no masks are stored).

One image is drawn by :func:`detkit.data.synthetic_render.render_sample`; this module
writes whole sets (images, splits, COCO JSON) and checks a cached set against its settings.

CLI: ``python -m detkit.data.synthetic --out DIR [--num-images N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from detkit.data.synthetic_render import (
    CLASSES,
    EMPTY_FRACTION,
    SyntheticSample,
    SyntheticStyle,
    render_sample,
)

__all__ = ["CLASSES", "SyntheticSample", "SyntheticStyle", "generate_synthetic_coco",
           "render_sample", "synthetic_settings"]

def _split_indices(num_images: int, fractions: Mapping[str, float], seed: int) -> dict:
    order = np.random.default_rng([seed, 1 << 30]).permutation(num_images)
    total = sum(fractions.values())
    cuts = np.round(np.cumsum([f / total for f in fractions.values()]) * num_images).astype(int)
    starts = np.concatenate([[0], cuts[:-1]])
    return {s: sorted(order[a:b].tolist()) for s, a, b in zip(fractions, starts, cuts, strict=True)}


def _encoded_sample(job: tuple[int, int, int, bool, str, SyntheticStyle]) -> tuple[bytes, list,
                                                                                   list]:
    """Render image ``index`` of ``seed`` and encode it: ``(file bytes, boxes, labels)``."""
    seed, index, image_size, empty, image_format, style = job
    rng = np.random.default_rng([seed, index])
    sample = render_sample(rng, image_size, 0 if empty else None, style)
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if image_format == "jpg" else []
    ok, data = cv2.imencode(f".{image_format}", sample.image[:, :, ::-1], params)
    if not ok:
        raise OSError(f"cannot encode image {index + 1} as {image_format}")
    return data.tobytes(), sample.boxes.tolist(), sample.labels.tolist()


def _annotations(image_id: int, boxes: list, labels: list, first_id: int) -> list[dict]:
    """COCO annotation dicts (``area`` = box w * h) numbered from ``first_id``."""
    return [
        {
            "id": first_id + k,
            "image_id": image_id,
            "category_id": label,
            "bbox": box,
            "area": box[2] * box[3],
            "iscrowd": 0,
        }
        for k, (box, label) in enumerate(zip(boxes, labels, strict=True))
    ]


def synthetic_settings(num_images: int, image_size: int, seed: int, style: SyntheticStyle) -> dict:
    """The generation settings as a JSON-able dict (stored in each split's ``info``), so a
    cached data set can be checked against the settings a config asks for."""
    return {
        "num_images": int(num_images),
        "image_size": int(image_size),
        "seed": int(seed),
        **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(style).items()},
    }


def generate_synthetic_coco(
    out_dir: str | Path,
    num_images: int = 500,
    image_size: int = 320,
    seed: int = 0,
    split_fractions: Mapping[str, float] | None = None,
    image_format: str = "jpg",
    workers: int = 1,
    style: SyntheticStyle | None = None,
) -> dict[str, Path]:
    """Write ``out_dir/images/*.{jpg,png}`` and one COCO JSON per split.

    Returns ``{split: json path}`` (default splits ``train`` 0.8 / ``val`` 0.2). File
    names in the JSON are relative to ``out_dir``; category ids are ``1..K`` in
    ``style.classes`` order (default :data:`CLASSES`); image ids are ``1..num_images``.
    ``workers > 1`` renders in that many processes; the files are the same for any number
    of workers. Each JSON's ``info`` records the generation settings
    (:func:`synthetic_settings`).
    """
    style = style or SyntheticStyle()
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    fractions = dict(split_fractions or {"train": 0.8, "val": 0.2})
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    empty = set(
        np.random.default_rng([seed, 1 << 31])
        .permutation(num_images)[: int(round(EMPTY_FRACTION * num_images))]
        .tolist()
    )
    jobs = [(seed, i, image_size, i in empty, image_format, style) for i in range(num_images)]
    images, annotations = [], []
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers))
            results = pool.imap(_encoded_sample, jobs, chunksize=16)
        else:
            results = map(_encoded_sample, jobs)
        for index, (data, boxes, labels) in enumerate(results):
            name = f"images/{index + 1:06d}.{image_format}"
            (out_dir / name).write_bytes(data)
            images.append(
                {"id": index + 1, "file_name": name, "width": image_size, "height": image_size}
            )
            annotations += _annotations(index + 1, boxes, labels, len(annotations) + 1)
    categories = [
        {"id": k, "name": n, "supercategory": "shape"}
        for k, n in enumerate(style.classes, start=1)
    ]
    settings = synthetic_settings(num_images, image_size, seed, style)
    paths = {}
    for split, indices in _split_indices(num_images, fractions, seed).items():
        ids = {i + 1 for i in indices}
        coco = {
            "info": {
                "description": f"detkit synthetic shapes, seed {seed}, split {split}",
                "detkit_synthetic": settings,
            },
            "images": [im for im in images if im["id"] in ids],
            "annotations": [a for a in annotations if a["image_id"] in ids],
            "categories": categories,
        }
        paths[split] = out_dir / f"{split}.json"
        paths[split].write_text(json.dumps(coco))
    return paths


def synthetic_set_mismatch(
    out_dir: str | Path, num_images: int, image_size: int, seed: int
) -> str | None:
    """Why the synthetic set already in ``out_dir`` is not the one asked for, or ``None``.

    Compares the image count (train + val), the image side and the seed (recorded in each
    split's ``info.description``) with the request.
    """
    out_dir = Path(out_dir)
    count, sizes, seeds = 0, set(), set()
    for split in ("train", "val"):
        path = out_dir / f"{split}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        count += len(data.get("images", []))
        sizes |= {int(im.get("width", 0)) for im in data.get("images", [])}
        seeds.add(str(data.get("info", {}).get("description", "")).split(", split")[0])
    wanted = f"detkit synthetic shapes, seed {seed}"
    if count == num_images and sizes <= {image_size} and seeds <= {wanted}:
        return None
    return (f"{out_dir} already holds a synthetic set of {count} images at "
            f"{'/'.join(str(v) for v in sorted(sizes)) or '?'} px ({', '.join(sorted(seeds))}); "
            f"the config asks for {num_images} images at {image_size} px, seed {seed}")


def main(argv: list[str] | None = None) -> None:
    """CLI: generate a dataset and print the JSON paths and the generation speed."""
    parser = argparse.ArgumentParser(description="Generate a synthetic COCO shapes dataset.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes")
    args = parser.parse_args(argv)
    start, cpu_start = time.perf_counter(), time.process_time()
    paths = generate_synthetic_coco(
        args.out,
        args.num_images,
        args.image_size,
        args.seed,
        image_format=args.format,
        workers=args.workers,
    )
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    for split, path in paths.items():
        data = json.loads(path.read_text())
        print(f"{split}: {len(data['images'])} images, {len(data['annotations'])} boxes -> {path}")
    speed = f"{args.num_images} images in {elapsed:.2f} s ({args.num_images / elapsed:.0f} images/s"
    if args.workers <= 1:  # CPU time of this process only: meaningful without workers
        speed += f"; {cpu:.2f} s CPU, {args.num_images / cpu:.0f} images per CPU second"
    print(speed + ")")


if __name__ == "__main__":
    main()
