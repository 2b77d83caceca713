"""Rendering of one synthetic detection image: shapes on a smooth, noisy background.

:func:`render_sample` draws image ``i`` of a synthetic set from its own
``numpy.random.Generator`` (see :mod:`detkit.data.synthetic`, which writes whole COCO sets):
filled shapes of :data:`CLASSES` with random colour, texture and rotation, placed largest
first on a coloured background; a placement that would hide more than ``max_visible_loss``
of an earlier object is retried. Boxes are tight around each object's visible pixels, COCO
``[x, y, w, h]`` with pixel ``i`` covering ``[i, i + 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["CLASSES", "SyntheticSample", "SyntheticStyle", "render_sample"]

CLASSES = ("circle", "square", "triangle", "star", "ellipse", "cross")
# (probability, min box area, max box area) per COCO bucket, at 320 x 320; areas scale
# with the image area. The ranges keep clear of the 32^2 and 96^2 bucket edges.
SIZE_BUCKETS = ((0.40, 8**2, 29**2), (0.35, 35**2, 90**2), (0.25, 102**2, 150**2))
MAX_VISIBLE_LOSS = 0.5
EMPTY_FRACTION = 0.05
_STRIPE_LUT = np.round(18.0 + 18.0 * np.sin(np.arange(256) * 2.0 * np.pi / 256)).astype(np.uint8)


@dataclass(frozen=True)
class SyntheticStyle:
    """What the generator draws (the defaults are the COCO-like set described above).

    Attributes:
        classes: shape names, a subset of :data:`CLASSES`; category ``k`` is ``classes[k-1]``.
        max_objects: objects per image are drawn from ``1..max_objects``.
        side_range: ``(min, max)`` box side in pixels, areas log-uniform in between; None
            takes the COCO-like :data:`SIZE_BUCKETS`.
        clutter: background stripes and lines (the smooth colour field and noise stay).
        textures: stripes / checker / speckle / gradient fills; False fills flat colours.
        max_visible_loss: fraction of an earlier object a new one may hide.
    """

    classes: tuple[str, ...] = CLASSES
    max_objects: int = 10
    side_range: tuple[float, float] | None = None
    clutter: bool = True
    textures: bool = True
    max_visible_loss: float = MAX_VISIBLE_LOSS

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in CLASSES]
        if not self.classes or unknown or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct names out of {CLASSES}, got {self.classes}")
        if not 1 <= self.max_objects < 255:
            raise ValueError(f"max_objects must be in 1..254, got {self.max_objects}")
        if self.side_range is not None and not 1 <= self.side_range[0] <= self.side_range[1]:
            raise ValueError(f"side_range must be (min, max) with 1 <= min <= max, "
                             f"got {self.side_range}")
        if not 0.0 <= self.max_visible_loss <= 1.0:
            raise ValueError(f"max_visible_loss must be in [0, 1], got {self.max_visible_loss}")


@dataclass(frozen=True)
class SyntheticSample:
    """One rendered image: ``image``/``background`` uint8 ``[H, W, 3]`` RGB, ``label_map``
    uint8 ``[H, W]`` (0 background, ``i + 1`` visible pixels of object ``i``), ``boxes``
    float32 ``[N, 4]`` COCO ``[x, y, w, h]``, ``labels`` int64 ``[N]`` in ``1..6``."""

    image: np.ndarray
    background: np.ndarray
    label_map: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


def _unit_polygon(rng: np.random.Generator, shape: str) -> np.ndarray:
    """Outline of ``shape`` around the origin, float ``[P, 2]``, before rotation/scaling."""
    if shape in ("circle", "ellipse"):
        t = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
        ratio = 1.0 if shape == "circle" else rng.uniform(0.35, 0.65)
        return np.stack([np.cos(t), ratio * np.sin(t)], axis=1)
    if shape == "square":
        return np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    if shape == "triangle":
        t = np.pi / 2 + np.array([0.0, 2.0, 4.0]) * np.pi / 3 + rng.uniform(-0.2, 0.2, 3)
        return np.stack([np.cos(t), np.sin(t)], axis=1)
    if shape == "star":
        t = np.linspace(0.0, 2.0 * np.pi, 10, endpoint=False)
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    a = rng.uniform(0.25, 0.4)  # cross: half arm width
    xs = [-a, a, a, 1, 1, a, a, -a, -a, -1, -1, -a]
    ys = [-1, -1, -a, -a, a, a, 1, 1, a, a, -a, -a]
    return np.stack([xs, ys], axis=1).astype(np.float64)


def _shape_points(rng: np.random.Generator, shape: str, box_area: float) -> np.ndarray:
    """Rotated outline scaled so that its bounding box has area ``box_area``."""
    pts = _unit_polygon(rng, shape)
    if shape in ("triangle", "star", "cross"):
        pts = pts * np.array([rng.uniform(0.6, 1.6), 1.0])
    angle = rng.uniform(0.0, np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ rot.T
    w, h = np.ptp(pts, axis=0)
    return (pts - pts.min(axis=0)) * np.sqrt(box_area / (w * h))


def _texture(
    rng: np.random.Generator, h: int, w: int, base: np.ndarray, textures: bool = True
) -> np.ndarray:
    """A textured (``textures``, else flat) ``[h, w, 3]`` uint8 patch around colour ``base``."""
    kind = rng.integers(5) if textures else 0
    if kind == 0:
        return np.broadcast_to(base.astype(np.uint8), (h, w, 3))
    if kind == 3:
        shade = rng.normal(0.0, 25.0, (h, w, 1)).astype(np.float32)
    else:
        yy = np.arange(h, dtype=np.float32)[:, None, None]
        xx = np.arange(w, dtype=np.float32)[None, :, None]
        if kind == 1:
            theta, period = rng.uniform(0, np.pi), rng.uniform(3.0, 9.0)
            phase = (xx * np.cos(theta) + yy * np.sin(theta)) * (6.28 / period)
            shade = 40.0 * np.sign(np.sin(phase))
        elif kind == 2:
            cell = int(rng.integers(3, 8))
            shade = 35.0 * (((xx // cell + yy // cell) % 2) * 2.0 - 1.0)
        else:
            shade = 60.0 * (xx / max(w, 1) + yy / max(h, 1) - 1.0)
    patch = base.astype(np.float32) + shade
    return np.clip(patch, 0, 255).astype(np.uint8)


def _background(rng: np.random.Generator, size: int, clutter: bool = True) -> np.ndarray:
    """Smooth colour field + (``clutter``) optional stripes and lines + pixel noise, uint8 RGB."""
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    if clutter and rng.random() < 0.5:
        # stripes: phase index (x cos + y sin) / period, as uint8 so it wraps mod 256
        theta, period = rng.uniform(0, np.pi), rng.uniform(4.0, 20.0)
        step = np.arange(size, dtype=np.float64) * (256.0 / (2.0 * np.pi * period))
        col = np.mod(step * np.cos(theta), 256).astype(np.uint8)
        row = np.mod(step * np.sin(theta), 256).astype(np.uint8)
        stripes = cv2.LUT(np.add.outer(row, col, dtype=np.uint8), _STRIPE_LUT)
        image = cv2.subtract(cv2.add(image, cv2.merge([stripes] * 3)), (18, 18, 18, 0))
    for _ in range(int(rng.integers(0, 6)) if clutter else 0):
        p1, p2 = rng.integers(0, size, 2), rng.integers(0, size, 2)
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.line(image, tuple(map(int, p1)), tuple(map(int, p2)), color, int(rng.integers(1, 3)))
    noise = np.frombuffer(rng.bytes(size * size * 3), np.uint8).reshape(size, size, 3) >> 3
    return cv2.subtract(cv2.add(image, noise), (16, 16, 16, 0))


def _sample_areas(
    rng: np.random.Generator, n: int, size: int, side_range: tuple[float, float] | None = None
) -> np.ndarray:
    """``n`` target box areas, largest first: from :data:`SIZE_BUCKETS`, or log-uniform
    between ``side_range[0]**2`` and ``side_range[1]**2`` pixels^2 when it is given."""
    if side_range is not None:
        lo, hi = np.log(np.square(np.asarray(side_range, np.float64)))
        return np.sort(np.exp(rng.uniform(lo, hi, n)))[::-1]
    probs = np.array([b[0] for b in SIZE_BUCKETS])
    buckets = rng.choice(len(SIZE_BUCKETS), size=n, p=probs / probs.sum())
    lo = np.log([SIZE_BUCKETS[b][1] for b in buckets])
    hi = np.log([SIZE_BUCKETS[b][2] for b in buckets])
    areas = np.exp(rng.uniform(lo, hi)) * (size / 320.0) ** 2
    return np.sort(areas)[::-1]


def render_sample(rng: np.random.Generator, image_size: int = 320,
                  num_objects: int | None = None, style: SyntheticStyle | None = None
                  ) -> SyntheticSample:
    """Render one image and its tight boxes (see the module docstring for conventions).

    ``num_objects``: objects to try to place (default: 1..``style.max_objects`` drawn from
    ``rng``); an object that finds no place hiding at most ``style.max_visible_loss`` of an
    earlier one after 10 tries is skipped. Labels are 1-based indices into ``style.classes``.
    """
    if num_objects is not None and not 0 <= num_objects < 255:
        raise ValueError(f"num_objects must be in 0..254 (uint8 label map), got {num_objects}")
    style = style or SyntheticStyle()
    image = _background(rng, image_size, style.clutter)
    background = image.copy()
    label_map = np.zeros((image_size, image_size), np.uint8)
    n = int(rng.integers(1, style.max_objects + 1)) if num_objects is None else num_objects
    full, visible, labels, regions = [], [], [], []
    for area in _sample_areas(rng, n, image_size, style.side_range):
        label = int(rng.integers(len(style.classes)))
        pts = _shape_points(rng, style.classes[label], area)
        span = np.ceil(pts.max(axis=0)).astype(int) + 2
        if np.any(span >= image_size):
            continue
        mask = np.zeros((span[1], span[0]), np.uint8)
        cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
        inside = mask.astype(bool)
        if not inside.any():
            continue
        for _ in range(10):
            x0, y0 = (int(rng.integers(0, image_size - s)) for s in span)
            region = label_map[y0 : y0 + span[1], x0 : x0 + span[0]]
            covered = np.bincount(region[inside], minlength=len(full) + 1)[1:]
            if np.all(np.array(visible) - covered >= (1 - style.max_visible_loss) * np.array(full)):
                break
        else:
            continue
        base = rng.integers(0, 256, 3)
        patch_bg = image[y0 : y0 + span[1], x0 : x0 + span[0]]
        if np.abs(base - np.array(cv2.mean(patch_bg)[:3])).sum() < 120:
            base = 255 - base
        patch = _texture(rng, span[1], span[0], base, style.textures)
        np.copyto(patch_bg, patch, where=inside[:, :, None])
        region[inside] = len(full) + 1
        pixels = cv2.countNonZero(mask)
        visible = [v - c for v, c in zip(visible, covered, strict=True)] + [pixels]
        full.append(pixels)
        labels.append(label + 1)
        regions.append((x0, y0, int(span[0]), int(span[1])))
    boxes = _tight_boxes(label_map, regions)
    keep = [i for i, v in enumerate(visible) if v > 0]
    return SyntheticSample(
        image, background, label_map, boxes[keep], np.array(labels, np.int64)[keep]
    )


def _tight_boxes(label_map: np.ndarray, regions: list[tuple[int, int, int, int]]) -> np.ndarray:
    """COCO ``[x, y, w, h]`` of the pixels labelled ``i + 1`` inside ``regions[i]``
    (``(x0, y0, w, h)``, the area object ``i`` was drawn in); zeros when none is left."""
    boxes = np.zeros((len(regions), 4), np.float32)
    for i, (x0, y0, w, h) in enumerate(regions):
        own = label_map[y0 : y0 + h, x0 : x0 + w] == i + 1
        rows = np.flatnonzero(own.any(axis=1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(own.any(axis=0))
        boxes[i] = [x0 + cols[0], y0 + rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
    return boxes
