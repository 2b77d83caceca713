"""Pascal VOC -> COCO JSON conversion.

Layout read: ``ROOT/Annotations/<id>.xml``, ``ROOT/JPEGImages/<file>``,
``ROOT/ImageSets/Main/<split>.txt`` (one image id per line; per-class lists such as
``dog_train.txt``, whose lines have two columns, are skipped). One COCO file is
written per split: ``OUT/<split>.json``.

Conventions (fixed, tested):

* Coordinates. VOC ``xmin..xmax`` are 1-based pixel indices. They are shifted by one
  to 0-based and read as box corners: COCO ``[x, y, w, h] = [xmin - 1, ymin - 1,
  xmax - xmin, ymax - ymin]``. A box with ``xmax <= xmin`` or ``ymax <= ymin`` has zero
  or negative size and is dropped (named in the report). Boxes are clipped to
  ``[0, W] x [0, H]`` (counted).
* Classes: alphabetical (Python string order) over all objects of all split images,
  unless given explicitly; COCO category ids are ``1..K`` in that order. Objects of a
  class not in an explicit list are dropped and counted.
* ``difficult`` objects are kept as ignore regions: ``iscrowd = 1``.
* Image ids are ``1..N`` over the sorted image ids of all splits, and annotation ids
  are numbered in the same order, so one image has the same ids in every split file.
* ``file_name`` is the image path relative to ``OUT`` (forward slashes), so the
  dataset and the JSON folder can be moved together.
* ``OUT/conversion_report.json`` lists every dropped or clipped box with its image's
  ``file_name``, class, the box as read (COCO xywh, before clipping) and the reason, for the
  ground-truth browser (:mod:`detkit.evaluation.gt_browser`) to draw.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from detkit.data.image_io import check_image_file

__all__ = [
    "VocConversionReport",
    "VocObject",
    "VocRecord",
    "convert_voc_to_coco",
    "parse_voc_xml",
    "voc_box_to_coco",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
REPORT_FILE = "conversion_report.json"


@dataclass(frozen=True)
class VocObject:
    """One ``<object>``: class name, VOC box (1-based inclusive pixel indices), difficult."""

    name: str
    box: tuple[float, float, float, float]
    difficult: bool


@dataclass(frozen=True)
class VocRecord:
    """One annotation file: image file name, size from the XML (0 if absent), objects."""

    xml_name: str
    filename: str
    width: int
    height: int
    objects: tuple[VocObject, ...]


def _text(node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f"{where}: <{tag}> is missing")
    return child.text.strip()


_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


def _flag(text: str | None, where: str) -> bool:
    """A VOC 0/1 flag; "true"/"false"/"yes"/"no" too (any case); anything else is an error."""
    value = (text or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{where} must be 0 or 1, got {text!r}")


def parse_voc_xml(path: str | Path) -> VocRecord:
    """Parse a VOC annotation XML file; errors name the file and the element."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{path.name}: not valid XML: {err}") from err
    size = root.find("size")
    try:
        width = int(float(size.findtext("width") or 0)) if size is not None else 0
        height = int(float(size.findtext("height") or 0)) if size is not None else 0
    except (ValueError, OverflowError) as err:
        raise ValueError(f"{path.name}: <size> must hold numbers ({err})") from None
    objects = []
    for i, obj in enumerate(root.findall("object")):
        where = f"{path.name}: object[{i}]"
        bnd = obj.find("bndbox")
        if bnd is None:
            raise ValueError(f"{where}: <bndbox> is missing")
        try:
            box = tuple(float(_text(bnd, k, where)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as err:
            raise ValueError(f"{where}: bndbox must hold 4 numbers ({err})") from err
        difficult = _flag(obj.findtext("difficult"), f"{where}: <difficult>")
        objects.append(VocObject(_text(obj, "name", where), box, difficult))
    filename = (root.findtext("filename") or "").strip() or path.stem
    return VocRecord(path.name, filename, width, height, tuple(objects))


def voc_box_to_coco(box: Sequence[float]) -> list[float]:
    """VOC ``(xmin, ymin, xmax, ymax)`` (1-based pixel indices) -> COCO ``[x, y, w, h]``.

    ``[x, y, w, h] = [xmin - 1, ymin - 1, xmax - xmin, ymax - ymin]`` (see the module docstring).
    """
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    return [xmin - 1.0, ymin - 1.0, xmax - xmin, ymax - ymin]


@dataclass
class VocConversionReport:
    """What :func:`convert_voc_to_coco` read, kept, dropped and wrote."""

    classes: list[str]
    class_order: str
    images: int = 0
    objects: int = 0
    kept_per_class: Counter = field(default_factory=Counter)
    difficult: int = 0
    dropped: list[str] = field(default_factory=list)
    clipped: list[str] = field(default_factory=list)
    skipped_images: list[str] = field(default_factory=list)
    skipped_lists: list[str] = field(default_factory=list)
    splits: dict[str, tuple[int, int, Path]] = field(default_factory=dict)
    # one {"file_name", "class", "bbox" (xywh as read), "reason"} per dropped / clipped box
    marks: list[dict] = field(default_factory=list)

    @property
    def kept(self) -> int:
        """Objects written (including difficult ones, as iscrowd=1)."""
        return sum(self.kept_per_class.values())

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        per_class = ", ".join(f"{n} {c:,}" for n, c in self.kept_per_class.most_common())
        out = [
            f"classes ({self.class_order}): {', '.join(self.classes)}",
            f"images: {self.images:,}  objects: {self.objects:,}  kept: {self.kept:,} "
            f"({per_class})  difficult kept as iscrowd=1: {self.difficult:,}",
            f"dropped: {len(self.dropped)} object(s)",
        ]
        out += [f"  dropped {d}" for d in self.dropped]
        out.append(f"clipped to the image: {len(self.clipped)} box(es)")
        out += [f"  clipped {c}" for c in self.clipped[:20]]
        out.append(f"skipped images: {len(self.skipped_images)}")
        out += [f"  skipped {s}" for s in self.skipped_images]
        if self.skipped_lists:
            out.append(f"ImageSets/Main lists not used as splits: {len(self.skipped_lists)}")
            out += [f"  skipped {s}" for s in self.skipped_lists]
        for split, (n_img, n_obj, path) in self.splits.items():
            out.append(f"split {split}: {n_img:,} images, {n_obj:,} objects -> {path}")
        return out


def _read_splits(voc_root: Path, skipped: list[str] | None = None) -> dict[str, list[str]]:
    """Split name -> image ids from ``ImageSets/Main/*.txt``.

    A missing root or ``Annotations/`` folder is a FileNotFoundError naming it. Per-class
    lists (every line "id flag") are skipped and named in ``skipped``; an empty list, or one
    that mixes one- and two-column lines, is a ValueError naming the file and line (it would
    otherwise drop a whole split unnoticed).
    """
    if not voc_root.is_dir():
        raise FileNotFoundError(f"VOC root folder not found: {voc_root}")
    if not (voc_root / "Annotations").is_dir():
        raise FileNotFoundError(f"{voc_root} has no Annotations/ folder (is it a VOC root, the "
                                f"folder holding Annotations/, JPEGImages/, ImageSets/Main/?)")
    main = voc_root / "ImageSets" / "Main"
    splits = {}
    for txt in sorted(main.glob("*.txt")) if main.is_dir() else []:
        lines = txt.read_text().splitlines()
        rows = [(n, line.split()) for n, line in enumerate(lines, start=1) if line.strip()]
        if not rows:
            raise ValueError(f"{txt}: empty split list (no image ids); fill it or remove it")
        widths = {len(r) for _, r in rows}
        if widths == {2}:
            if skipped is not None:
                skipped.append(f"{txt.name} (per-class list: 'id flag' lines)")
            continue
        if widths != {1}:
            n, row = next((n, r) for n, r in rows if len(r) != 1)
            raise ValueError(f"{txt}:{n}: a split list needs one image id per line, got "
                             f"{' '.join(row)!r}")
        splits[txt.stem] = list(dict.fromkeys(r[0] for _, r in rows))
    if not splits:
        stems = sorted(p.stem for p in (voc_root / "Annotations").glob("*.xml"))
        if not stems:
            raise FileNotFoundError(f"{voc_root}: no ImageSets/Main/*.txt and no Annotations/*.xml")
        splits["all"] = stems
    return splits


def _find_image(voc_root: Path, record: VocRecord, stem: str) -> Path | None:
    img_dir = voc_root / "JPEGImages"
    candidates = [img_dir / record.filename] + [img_dir / (stem + e) for e in IMAGE_EXTENSIONS]
    return next((p for p in candidates if p.is_file()), None)


def convert_voc_to_coco(
    voc_root: str | Path, out_dir: str | Path, classes: Sequence[str] | None = None
) -> VocConversionReport:
    """Convert a Pascal VOC tree to one COCO JSON file per split (see module docstring).

    Returns the :class:`VocConversionReport`; every dropped object is named in it.

    Raises:
        FileNotFoundError: no split list and no annotation, or a listed id without its XML.
        ValueError: an XML file that cannot be parsed (file and element named).
    """
    voc_root, out_dir = Path(voc_root), Path(out_dir)
    skipped_lists: list[str] = []
    splits = _read_splits(voc_root, skipped_lists)
    stems = sorted({s for ids in splits.values() for s in ids})
    records = {}
    for stem in stems:
        xml = voc_root / "Annotations" / f"{stem}.xml"
        if not xml.is_file():
            raise FileNotFoundError(f"{xml}: listed in ImageSets/Main but missing")
        records[stem] = parse_voc_xml(xml)
    found = sorted({o.name for r in records.values() for o in r.objects})
    names = list(classes) if classes else found
    report = VocConversionReport(names, "as given" if classes else "alphabetical")
    report.skipped_lists = skipped_lists
    cat_ids = {name: k for k, name in enumerate(names, start=1)}

    images, annotations = {}, {}
    for image_id, stem in enumerate(stems, start=1):
        rec = records[stem]
        report.images += 1
        report.objects += len(rec.objects)
        path = _find_image(voc_root, rec, stem)
        problem, size = check_image_file(path) if path else ("missing", None)
        if problem is not None:
            report.skipped_images.append(f"{rec.filename} ({problem}, {len(rec.objects)} objects)")
            continue
        height, width = size
        rel = Path(os.path.relpath(path, out_dir)).as_posix()
        images[stem] = {"id": image_id, "file_name": rel, "width": width, "height": height}
        annotations[stem] = []
        for obj in rec.objects:
            coords = [int(v) if v.is_integer() else v for v in obj.box]
            desc = f"{rec.xml_name}: {obj.name} {coords}"
            x, y, w, h = voc_box_to_coco(obj.box)
            mark = {"file_name": rel, "class": obj.name, "bbox": [x, y, w, h]}
            reason = None
            if obj.name not in cat_ids:
                reason = "class not in the class list"
            elif not all(math.isfinite(v) for v in obj.box):  # NaN would reach the JSON
                reason = "non-finite coordinate"
            elif w <= 0 or h <= 0:
                reason = "zero or negative size"
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + w, float(width)), min(y + h, float(height))
            if reason is None and (x2 <= x1 or y2 <= y1):
                reason = "outside the image"
            if reason is not None:
                report.dropped.append(f"{desc} ({reason})")
                if reason != "non-finite coordinate":  # JSON has no NaN
                    report.marks.append({**mark, "reason": f"dropped: {reason}"})
                continue
            if (x1, y1, x2, y2) != (x, y, x + w, y + h):
                report.clipped.append(desc)
                report.marks.append({**mark, "reason": "clipped to the image"})
            report.kept_per_class[obj.name] += 1
            report.difficult += int(obj.difficult)
            annotations[stem].append(
                {
                    "image_id": image_id,
                    "category_id": cat_ids[obj.name],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(obj.difficult),
                }
            )
    ann_id = 0
    for stem in stems:
        for ann in annotations.get(stem, []):
            ann_id += 1
            ann["id"] = ann_id

    out_dir.mkdir(parents=True, exist_ok=True)
    categories = [{"id": k, "name": n, "supercategory": "none"} for n, k in cat_ids.items()]
    for split, ids in splits.items():
        kept_ids = [s for s in ids if s in images]
        anns = [a for s in kept_ids for a in annotations[s]]
        coco = {
            "info": {"description": f"Pascal VOC split '{split}' converted to COCO"},
            "images": [images[s] for s in kept_ids],
            "annotations": anns,
            "categories": categories,
        }
        path = out_dir / f"{split}.json"
        path.write_text(json.dumps(coco))
        report.splits[split] = (len(kept_ids), len(anns), path)
    (out_dir / REPORT_FILE).write_text(json.dumps({"marks": report.marks}, indent=1))
    return report
