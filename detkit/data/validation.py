"""Build-time validation of a COCO-format detection annotation file.

``validate_coco`` runs once when a dataset is built, before any training. It checks
the JSON structure (failing fast, naming the file and the field), every image file
(missing, unreadable, truncated), every annotation (duplicate ids, unknown image or
category ids, boxes with zero or negative size, boxes past the border) and returns a
cleaned COCO dict plus a :class:`ValidationReport` with one count per kind of
problem. Nothing is dropped without being counted, and one summary line per kind
is logged (logger ``detkit.data.validation``) with up to five example file names.

Boxes are COCO ``[x, y, w, h]`` in absolute pixels; an image is ``W`` pixels wide
when its pixels cover the continuous range ``[0, W)``, so a box is clipped to
``[0, W] x [0, H]``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detkit.data.image_io import check_image_file

__all__ = ["AnnotationFormatError", "ValidationReport", "load_coco_json", "validate_coco"]

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 5
# boxes narrower or lower than this (pixels) are degenerate: in float32 targets a 1e-9 px
# side rounds to zero width
MIN_SIDE = 1e-2

# kind -> (log level, description). Order is the order of the summary lines.
KINDS: dict[str, tuple[int, str]] = {
    "missing_image": (logging.WARNING, "image file not found; image dropped"),
    "unreadable_image": (logging.WARNING, "image file unreadable or truncated; image dropped"),
    "size_mismatch": (logging.WARNING, "width/height in the JSON differ from the file; file used"),
    "duplicate_image_id": (logging.WARNING, "duplicate image id; later entry dropped"),
    "duplicate_annotation_id": (logging.WARNING, "duplicate annotation id; later entry dropped"),
    "unknown_image_id": (logging.WARNING, "annotation refers to no image; dropped"),
    "annotation_of_dropped_image": (logging.WARNING, "annotation of a dropped image; dropped"),
    "unknown_category": (logging.WARNING, "unknown category id; annotation dropped"),
    "degenerate_box": (logging.WARNING, "box narrower or lower than 0.01 px; dropped"),
    "outside_box": (logging.WARNING, "box entirely outside the image; dropped"),
    "clipped_box": (logging.WARNING, "box past the image border; clipped"),
    "bad_area": (logging.WARNING, "negative or non-finite 'area'; bbox w*h used instead"),
    "empty_image": (logging.INFO, "image with no annotations"),
    "crowd_box": (logging.INFO, "crowd box; kept as ignore region, not a target"),
}

# kinds whose count is a number of annotations removed from the dataset
DROPPED_ANNOTATION_KINDS = (
    "duplicate_annotation_id",
    "unknown_image_id",
    "annotation_of_dropped_image",
    "unknown_category",
    "degenerate_box",
    "outside_box",
)

DROPPED_IMAGE_KINDS = ("missing_image", "unreadable_image", "duplicate_image_id")


class BoxesDroppedWarning(UserWarning):
    """Boxes removed by an augmentation (min_visibility / min_area); counted, never silent."""


class AnnotationFormatError(ValueError):
    """Malformed annotation file, or nothing usable left after validation."""


@dataclass
class ValidationReport:
    """Counts of every problem found by :func:`validate_coco`.

    ``counts[kind]`` is the number of images or annotations of that kind and
    ``examples[kind]`` holds up to five example file names (or annotation ids).
    """

    source: str
    keep_empty: bool = True
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    examples: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    images_in: int = 0
    images_kept: int = 0
    annotations_in: int = 0
    annotations_kept: int = 0

    def add(self, kind: str, example: str) -> None:
        """Count one occurrence of ``kind``, remembering ``example`` if few are kept."""
        self.counts[kind] += 1
        if len(self.examples[kind]) < MAX_EXAMPLES and example not in self.examples[kind]:
            self.examples[kind].append(example)

    @property
    def annotations_dropped(self) -> int:
        """Number of input annotations not in the cleaned dataset."""
        return sum(self.counts[k] for k in DROPPED_ANNOTATION_KINDS)

    @property
    def images_dropped(self) -> int:
        """Number of input images not in the cleaned dataset."""
        dropped = sum(self.counts[k] for k in DROPPED_IMAGE_KINDS)
        return dropped + (0 if self.keep_empty else self.counts["empty_image"])

    def summary_lines(self) -> list[tuple[int, str]]:
        """One ``(log level, line)`` per kind with a non-zero count."""
        lines = []
        for kind, (level, text) in KINDS.items():
            n = self.counts[kind]
            if n == 0:
                continue
            if kind == "empty_image":
                text += "; kept as negative" if self.keep_empty else "; dropped (keep_empty=False)"
            shown = ", ".join(self.examples[kind])
            more = ", ..." if n > len(self.examples[kind]) else ""
            lines.append((level, f"{self.source}: {kind}: {n} ({text}): {shown}{more}"))
        return lines

    def log(self, log: logging.Logger = logger) -> None:
        """Log the summary lines followed by one line of totals."""
        for level, line in self.summary_lines():
            log.log(level, line)
        log.info(
            "%s: kept %d/%d images, %d/%d annotations",
            self.source,
            self.images_kept,
            self.images_in,
            self.annotations_kept,
            self.annotations_in,
        )


def _fail(source: str, where: str, what: str) -> AnnotationFormatError:
    return AnnotationFormatError(f"{source}: {where} {what}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_list(data: Mapping[str, Any], key: str, source: str, required: bool) -> list[Any]:
    if key not in data:
        if required:
            raise _fail(source, f"'{key}'", "is missing")
        return []
    value = data[key]
    if not isinstance(value, list):
        raise _fail(source, f"'{key}'", "must be a list")
    return value


def _check_structure(data: Any, source: str) -> None:
    """Raise :class:`AnnotationFormatError` naming the first malformed field."""
    if not isinstance(data, dict):
        raise _fail(source, "top level", "must be a JSON object")
    for i, cat in enumerate(_check_list(data, "categories", source, required=True)):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            raise _fail(source, f"categories[{i}].id", "must be an integer")
        if not isinstance(cat.get("name", ""), str):
            raise _fail(source, f"categories[{i}].name", "must be a string")
    for i, img in enumerate(_check_list(data, "images", source, required=True)):
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            raise _fail(source, f"images[{i}].id", "must be an integer")
        name = img.get("file_name")
        if not isinstance(name, str) or not name:
            raise _fail(source, f"images[{i}].file_name", "must be a non-empty string")
        for key in ("width", "height"):
            if key in img and not (_is_number(img[key]) and img[key] > 0):
                raise _fail(source, f"images[{i}].{key}", "must be a positive number")
    for i, ann in enumerate(_check_list(data, "annotations", source, required=False)):
        if not isinstance(ann, dict):
            raise _fail(source, f"annotations[{i}]", "must be an object")
        for key in ("id", "image_id", "category_id"):
            if not _is_int(ann.get(key)):
                raise _fail(source, f"annotations[{i}].{key}", "must be an integer")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_is_number, bbox)):
            raise _fail(source, f"annotations[{i}].bbox", "must be 4 numbers")
        if ann.get("iscrowd", 0) not in (0, 1):
            raise _fail(source, f"annotations[{i}].iscrowd", "must be 0 or 1")
        if "area" in ann and not _is_number(ann["area"]):
            raise _fail(source, f"annotations[{i}].area", "must be a number")
    cat_ids = [c["id"] for c in data["categories"]]
    if len(set(cat_ids)) != len(cat_ids):
        raise _fail(source, "categories", "contain duplicate ids")


def load_coco_json(path: str | Path) -> dict[str, Any]:
    """Read a COCO JSON file and check its structure (fails fast naming file and field)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    try:
        with path.open("rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AnnotationFormatError(f"{path.name}: not valid JSON: {err}") from err
    _check_structure(data, path.name)
    return data


def _clip_box(bbox: Sequence[float], width: float, height: float) -> list[float]:
    """Clip COCO ``[x, y, w, h]`` to ``[0, width] x [0, height]``; returns a new list."""
    x1, y1 = max(0.0, float(bbox[0])), max(0.0, float(bbox[1]))
    x2 = min(float(width), float(bbox[0]) + float(bbox[2]))
    y2 = min(float(height), float(bbox[1]) + float(bbox[3]))
    return [x1, y1, x2 - x1, y2 - y1]


def _check_images(
    data: Mapping[str, Any],
    img_dir: Path,
    report: ValidationReport,
    check_images: bool,
    full_decode: bool,
) -> tuple[dict[int, dict[str, Any]], set[int]]:
    """Return ``{image_id: cleaned image dict}`` for the usable images."""
    kept: dict[int, dict[str, Any]] = {}
    seen: set[int] = set()
    for i, img in enumerate(data["images"]):
        name = img["file_name"]
        if img["id"] in seen:
            report.add("duplicate_image_id", name)
            continue
        seen.add(img["id"])
        clean = dict(img)
        if check_images:
            problem, size = check_image_file(Path(img_dir) / name, full_decode=full_decode)
            if problem is not None:
                if problem == "missing":
                    report.add("missing_image", name)
                else:
                    report.add("unreadable_image", f"{name} ({problem})")
                continue
            height, width = size
            if ("width" in img and img["width"] != width) or (
                "height" in img and img["height"] != height
            ):
                report.add("size_mismatch", name)
            clean["width"], clean["height"] = width, height
        elif "width" not in img or "height" not in img:
            raise _fail(report.source, f"images[{i}].width/height", "are needed without files")
        kept[img["id"]] = clean
    return kept, seen


def _check_annotations(
    data: Mapping[str, Any],
    images: Mapping[int, dict[str, Any]],
    all_image_ids: set[int],
    report: ValidationReport,
) -> list[dict[str, Any]]:
    """Return the cleaned annotation list (clipped boxes, problems counted)."""
    cat_ids = {c["id"] for c in data["categories"]}
    names: dict[int, str] = {}
    for img in data["images"]:
        names.setdefault(img["id"], img["file_name"])
    kept, seen = [], set()
    for ann in data.get("annotations", []):
        img = images.get(ann["image_id"])
        name = names.get(ann["image_id"], f"annotation id {ann['id']}")
        if ann["id"] in seen:
            report.add("duplicate_annotation_id", name)
            continue
        seen.add(ann["id"])
        if ann["image_id"] not in all_image_ids:
            report.add("unknown_image_id", name)
            continue
        if img is None:
            report.add("annotation_of_dropped_image", name)
            continue
        if ann["category_id"] not in cat_ids:
            report.add("unknown_category", name)
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        if not (w >= MIN_SIDE and h >= MIN_SIDE):
            report.add("degenerate_box", name)
            continue
        clean = dict(ann, bbox=[x, y, w, h], iscrowd=int(ann.get("iscrowd", 0)))
        if x < 0 or y < 0 or x + w > img["width"] or y + h > img["height"]:
            box = _clip_box(ann["bbox"], img["width"], img["height"])
            if box[2] <= 0 or box[3] <= 0:
                report.add("outside_box", name)
                continue
            if box[2] < MIN_SIDE or box[3] < MIN_SIDE:  # a sliver left inside the image
                report.add("degenerate_box", name)
                continue
            report.add("clipped_box", name)
            clean["bbox"], clean["area"] = box, box[2] * box[3]
        clean.setdefault("area", w * h)
        if not _is_number(clean["area"]) or not 0 <= float(clean["area"]) < math.inf:
            # COCOeval buckets objects by 'area': a negative one falls outside every range
            # (even "all") and the object would leave every metric unnoticed
            report.add("bad_area", name)
            clean["area"] = clean["bbox"][2] * clean["bbox"][3]
        if clean["iscrowd"]:
            report.add("crowd_box", name)
        kept.append(clean)
    return kept


def validate_coco(
    data_or_path: str | Path | Mapping[str, Any],
    img_dir: str | Path | None = None,
    keep_empty: bool = True,
    check_images: bool = True,
    full_decode: bool = False,
    require_annotations: bool = True,
    log: logging.Logger | None = logger,
) -> tuple[dict[str, Any], ValidationReport]:
    """Validate a COCO detection dataset and return ``(cleaned COCO dict, report)``.

    Args:
        data_or_path: path of the COCO JSON file, or an already loaded dict.
        img_dir: folder that ``file_name`` is relative to (default: the JSON's folder).
        keep_empty: keep images without (non-crowd) annotations as negatives.
        check_images: open every image file (header + end marker, see
            :func:`detkit.data.image_io.check_image_file`); width/height come from the file.
        full_decode: also decode every image fully (slower, catches corrupt scan data).
        require_annotations: fail when no non-crowd annotation is left.
        log: where the summary lines go (``None``: not logged).

    Raises:
        AnnotationFormatError: malformed JSON, or nothing usable left.
    """
    if isinstance(data_or_path, Mapping):
        data, source = dict(data_or_path), "<dict>"
        _check_structure(data, source)
        img_dir = Path(img_dir if img_dir is not None else ".")
    else:
        data, source = load_coco_json(data_or_path), Path(data_or_path).name
        img_dir = Path(img_dir) if img_dir is not None else Path(data_or_path).parent
    report = ValidationReport(source=source, keep_empty=keep_empty)
    report.images_in = len(data["images"])
    report.annotations_in = len(data.get("annotations", []))

    images, all_ids = _check_images(data, img_dir, report, check_images, full_decode)
    annotations = _check_annotations(data, images, all_ids, report)
    with_targets = {a["image_id"] for a in annotations if not a["iscrowd"]}
    for image_id, img in list(images.items()):
        if image_id not in with_targets:
            report.add("empty_image", img["file_name"])
            if not keep_empty:
                del images[image_id]
    if not keep_empty:
        dropped = [a for a in annotations if a["image_id"] not in images]
        names = {img["id"]: img["file_name"] for img in data["images"]}
        for ann in dropped:
            report.counts["crowd_box"] -= 1
            report.add("annotation_of_dropped_image", names[ann["image_id"]])
        annotations = [a for a in annotations if a["image_id"] in images]

    report.images_kept, report.annotations_kept = len(images), len(annotations)
    if log is not None:
        report.log(log)
    if not images:
        raise AnnotationFormatError(f"{source}: no usable images left after validation")
    if require_annotations and not with_targets.intersection(images):
        raise AnnotationFormatError(f"{source}: no usable (non-crowd) annotations left")
    clean = dict(data, images=list(images.values()), annotations=annotations)
    return clean, report
