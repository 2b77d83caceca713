"""Datasets of the benchmark suite and its k-fold protocol (benchmarks/suite.py).

A dataset is a set of COCO split files (``train.json``, ``val.json``, ``test.json`` in one
folder; any subset of them) and the image folder their ``file_name`` paths are relative to.
The protocol pools every split into one image set and cuts it into ``k`` folds (images in a
fixed random order, fold = position mod k; the order is a function of the file names and
``fold_seed`` only). Fold ``f`` trains on the other ``k - 1`` folds and predicts fold ``f``;
the held-out predictions of all folds are pooled into one COCO evaluation over every image.
Each image is predicted by a model that never saw it, and the evaluation counts all of them
(BCCD: 364 images instead of the 72 of its test split, which shrinks the standard error of a
paired AP difference by about sqrt(364 / 72) = 2.2x).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Dataset:
    """A benchmark dataset: ``name`` (folder names of its results), the split files and the
    image folder."""

    name: str
    ann_files: tuple[Path, ...]
    img_dir: Path

    @classmethod
    def from_folder(cls, folder: Path, img_dir: Path | None = None, name: str | None = None
                    ) -> Dataset:
        """The splits found in ``folder`` (train/val/test.json); ValueError if none."""
        files = tuple(folder / f"{s}.json" for s in SPLITS if (folder / f"{s}.json").is_file())
        if not files:
            raise ValueError(f"no {'/'.join(s + '.json' for s in SPLITS)} in {folder}")
        return cls(name or folder.name, files, img_dir or folder)


def pool_splits(ann_files: Sequence[Path]) -> dict[str, Any]:
    """One COCO dict of every image of ``ann_files`` (categories must agree; annotation ids
    are renumbered 1..N; an image id or file used twice raises ValueError)."""
    images, annotations, categories = [], [], None
    seen_ids: dict[int, Path] = {}
    seen_files: dict[str, Path] = {}
    for path in ann_files:
        data = json.loads(Path(path).read_text())
        cats = sorted((c["id"], c["name"]) for c in data["categories"])
        if categories is None:
            categories = data["categories"]
        elif cats != sorted((c["id"], c["name"]) for c in categories):
            raise ValueError(f"{path}: categories differ from {ann_files[0]}'s")
        for img in data["images"]:
            for key, seen, value in (("id", seen_ids, img["id"]),
                                     ("file_name", seen_files, img["file_name"])):
                if value in seen:
                    raise ValueError(f"image {key} {value!r} is in both {seen[value]} and {path}")
                seen[value] = path
            images.append(img)
        annotations.extend(data.get("annotations", []))
    anns = [{**a, "id": i} for i, a in enumerate(annotations, start=1)]
    return {"images": images, "annotations": anns, "categories": categories or []}


def fold_of_images(images: Sequence[Mapping[str, Any]], k: int, fold_seed: int = 0
                   ) -> dict[int, int]:
    """Image id -> fold in 0..k-1 (file names sorted, shuffled with ``fold_seed``)."""
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    if len(images) < k:
        raise ValueError(f"{len(images)} images cannot fill {k} folds")
    ordered = sorted(images, key=lambda im: str(im["file_name"]))
    random.Random(fold_seed).shuffle(ordered)
    return {int(im["id"]): pos % k for pos, im in enumerate(ordered)}


def subset(pooled: Mapping[str, Any], image_ids: set[int]) -> dict[str, Any]:
    """The COCO dict restricted to ``image_ids``."""
    return {"images": [im for im in pooled["images"] if im["id"] in image_ids],
            "annotations": [a for a in pooled["annotations"] if a["image_id"] in image_ids],
            "categories": pooled["categories"]}


@dataclass(frozen=True)
class Folds:
    """The written fold files: ``all_file`` (pooled) and per fold (train file, test file)."""

    k: int
    all_file: Path
    files: tuple[tuple[Path, Path], ...]


def write_folds(dataset: Dataset, k: int, out_dir: Path, fold_seed: int = 0) -> Folds:
    """Write ``all.json`` and ``fold<f>_{train,test}.json`` into ``out_dir`` (kept when they
    already hold the same content, so reruns and resumed runs see identical files)."""
    pooled = pool_splits(dataset.ann_files)
    assignment = fold_of_images(pooled["images"], k, fold_seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_file = _write_if_changed(out_dir / "all.json", pooled)
    files = []
    for f in range(k):
        test_ids = {i for i, fold in assignment.items() if fold == f}
        train_ids = set(assignment) - test_ids
        files.append((_write_if_changed(out_dir / f"fold{f}_train.json", subset(pooled, train_ids)),
                      _write_if_changed(out_dir / f"fold{f}_test.json", subset(pooled, test_ids))))
    return Folds(k, all_file, tuple(files))


def _write_if_changed(path: Path, data: Mapping[str, Any]) -> Path:
    text = json.dumps(data, sort_keys=True) + "\n"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def pooled_detections(per_fold: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Concatenate the held-out detections of every fold (each image appears in one fold)."""
    seen: set[int] = set()
    out: list[dict[str, Any]] = []
    for fold, dets in enumerate(per_fold):
        ids = {int(d["image_id"]) for d in dets}
        if ids & seen:
            raise ValueError(f"fold {fold} predicts images another fold predicted: "
                             f"{sorted(ids & seen)[:3]}")
        seen |= ids
        out.extend(dict(d) for d in dets)
    return out
