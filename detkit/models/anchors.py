"""Anchor boxes on a pyramid of feature maps, with FaceBoxes densification.

Conventions (all boxes are (x1, y1, x2, y2) in input-image pixels, float):

- A level has a stride ``d`` (its "interval"), anchor ``sizes`` and aspect
  ratios ``r = h / w``. An anchor of size ``s`` and ratio ``r`` has width
  ``s / sqrt(r)`` and height ``s * sqrt(r)`` (area ``s^2``).
- Densification (FaceBoxes, Zhang et al., IJCB 2017): each size carries a
  density; with ``n = round(density)`` its anchors are tiled ``n x n`` times
  per cell. The centre of tile ``(ky, kx)`` in cell ``(i, j)`` (row ``i``,
  column ``j``) is ``x = (j + (kx + 0.5) / n) * d``, ``y = (i + (ky + 0.5) / n) * d``.
  With ``n = 1`` this is the cell centre ``((j + 0.5) d, (i + 0.5) d)``; 32-px
  anchors on a stride-32 map with density 4 get centres at 4, 12, 20, 28 px
  (+ 32 j) along each axis.
- Order: per level, anchors are listed by (y, x, anchor-in-cell); within a
  cell by (size, aspect ratio, ky, kx). Levels are concatenated in the order
  given. This matches a head output reshaped from ``[B, A*K, H, W]`` to
  ``[B, H, W, A, K]`` and flattened.
- The "auto" density rule generalises FaceBoxes: ``n = max(1, round(4 d / s))``
  tiles every size until its tiling interval is ``s / 4``, the interval that
  S3FD's equal-proportion anchors (``s = 4 d``) have. FaceBoxes' stride-32
  level with sizes 32, 64, 128 gets densities 4, 2, 1.
- S3FD preset (Zhang et al., ICCV 2017, "equal-proportion interval"):
  one square anchor of size ``4 d`` per level.
- RetinaNet preset (Lin et al., ICCV 2017): sizes ``4 d * 2^(k/3)``, k = 0, 1, 2,
  ratios 0.5, 1, 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "ANCHOR_PRESETS",
    "AnchorGenerator",
    "anchor_generator_from_preset",
    "auto_densities",
    "cell_anchors",
    "grid_anchors",
    "preset_sizes",
]

ANCHOR_PRESETS = ("retinanet", "s3fd", "faceboxes")


def cell_anchors(
    stride: float,
    sizes: Sequence[float],
    aspect_ratios: Sequence[float],
    densities: Sequence[float] | None = None,
) -> Tensor:
    """Anchors of cell (0, 0) of a level, ``Tensor[A, 4]`` xyxy in pixels (float32).

    ``A = sum_s len(aspect_ratios) * round(density_s)^2``, ordered by
    (size, aspect ratio, ky, kx). See the module docstring for the centres.
    """
    if densities is None:
        densities = [1.0] * len(sizes)
    if len(densities) != len(sizes):
        raise ValueError(f"{len(densities)} densities for {len(sizes)} sizes; give one per size")
    rows: list[list[float]] = []
    for size, density in zip(sizes, densities, strict=True):
        if size <= 0:
            raise ValueError(f"anchor sizes must be positive, got {size}")
        n = int(round(density))
        if n < 1:
            raise ValueError(f"density {density} rounds to {n}; densities must round to >= 1")
        for ratio in aspect_ratios:
            if ratio <= 0:
                raise ValueError(f"aspect ratios must be positive, got {ratio}")
            w = size / math.sqrt(ratio)
            h = size * math.sqrt(ratio)
            for ky in range(n):
                cy = (ky + 0.5) / n * stride
                for kx in range(n):
                    cx = (kx + 0.5) / n * stride
                    rows.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def grid_anchors(cell: Tensor, stride: float, height: int, width: int) -> Tensor:
    """Tile ``cell`` ([A, 4], the anchors of cell (0, 0)) over an ``height x width`` map.

    Returns ``Tensor[height * width * A, 4]`` ordered by (y, x, anchor).
    """
    ys = torch.arange(height, device=cell.device, dtype=cell.dtype) * stride
    xs = torch.arange(width, device=cell.device, dtype=cell.dtype) * stride
    shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)
    return (shifts + cell.reshape(1, -1, 4)).reshape(-1, 4)


def auto_densities(sizes: Sequence[float], stride: float, ratio: float = 4.0) -> list[int]:
    """FaceBoxes-style densities ``max(1, round(ratio * stride / size))`` per size.

    Example: stride 32, sizes (32, 64, 128) -> (4, 2, 1).
    """
    return [max(1, int(round(ratio * stride / s))) for s in sizes]


def preset_sizes(preset: str, strides: Sequence[int]) -> list[list[float]]:
    """Per-level anchor sizes of a preset.

    - "s3fd": ``[4 d]`` (S3FD equal-proportion rule).
    - "retinanet": ``[4 d, 4 d 2^(1/3), 4 d 2^(2/3)]``.
    - "faceboxes": ``[d, 2 d, 4 d]``, small sizes meant to be densified.
    """
    if preset == "s3fd":
        return [[4.0 * d] for d in strides]
    if preset == "retinanet":
        return [[4.0 * d * 2.0 ** (k / 3.0) for k in range(3)] for d in strides]
    if preset == "faceboxes":
        return [[1.0 * d, 2.0 * d, 4.0 * d] for d in strides]
    raise ValueError(
        f"unknown anchor preset {preset!r}; valid presets: {', '.join(ANCHOR_PRESETS)}"
    )


def _per_level(value: Sequence, num_levels: int, name: str) -> list[list[float]]:
    """Broadcast a flat sequence to every level, or check a per-level one."""
    if len(value) > 0 and not isinstance(value[0], (list, tuple)):
        return [list(value) for _ in range(num_levels)]
    if len(value) != num_levels:
        raise ValueError(f"{name} has {len(value)} levels, the generator has {num_levels}")
    return [list(v) for v in value]


class AnchorGenerator(nn.Module):
    """Anchors for a list of feature maps (see the module docstring for conventions).

    Args:
        strides: stride ``d`` of each level in input pixels, e.g. (8, 16, 32, 64, 128).
        sizes: per-level anchor sizes, e.g. ((32,), (64,), ...).
        aspect_ratios: ratios ``h / w``; one flat sequence for all levels or one per level.
        densities: per-level, per-size densities (``round``-ed to tile counts);
            None means 1 everywhere.

    ``forward(feature_sizes)`` takes the (h, w) of each level and returns a list of
    ``Tensor[h * w * A_l, 4]``; :meth:`concat` gives all levels in one tensor.
    """

    def __init__(
        self,
        strides: Sequence[int],
        sizes: Sequence[Sequence[float]],
        aspect_ratios: Sequence[float] | Sequence[Sequence[float]] = (1.0,),
        densities: Sequence[Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        num_levels = len(strides)
        if len(sizes) != num_levels:
            raise ValueError(
                f"{len(sizes)} size lists for {num_levels} strides; give one per level"
            )
        self.strides = [int(d) for d in strides]
        self.sizes = [list(map(float, s)) for s in sizes]
        self.aspect_ratios = _per_level(aspect_ratios, num_levels, "aspect_ratios")
        if densities is None:
            densities = [[1.0] * len(s) for s in self.sizes]
        if len(densities) != num_levels:
            raise ValueError(f"densities has {len(densities)} levels, expected {num_levels}")
        self.densities = [list(map(float, v)) for v in densities]
        self.cells = [
            cell_anchors(d, s, r, n)
            for d, s, r, n in zip(
                self.strides, self.sizes, self.aspect_ratios, self.densities, strict=True
            )
        ]

    @property
    def num_anchors_per_location(self) -> list[int]:
        """Anchors per feature-map cell on each level (the head's ``A``)."""
        return [int(c.shape[0]) for c in self.cells]

    def forward(
        self,
        feature_sizes: Sequence[tuple[int, int]],
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> list[Tensor]:
        """Per-level anchors ``Tensor[h_l * w_l * A_l, 4]`` for maps of the given (h, w)."""
        if len(feature_sizes) != len(self.cells):
            raise ValueError(
                f"got {len(feature_sizes)} feature maps for {len(self.cells)} anchor levels"
            )
        return [
            grid_anchors(cell.to(device=device, dtype=dtype), d, int(h), int(w))
            for cell, d, (h, w) in zip(self.cells, self.strides, feature_sizes, strict=True)
        ]

    def concat(
        self,
        feature_sizes: Sequence[tuple[int, int]],
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """All levels' anchors in one ``Tensor[sum_l h_l w_l A_l, 4]`` (level-major order)."""
        return torch.cat(self.forward(feature_sizes, device, dtype), dim=0)

    def feature_sizes_for(self, image_size: tuple[int, int]) -> list[tuple[int, int]]:
        """Map sizes ``ceil(h / d), ceil(w / d)`` of a padded input of ``image_size``."""
        h, w = image_size
        return [(int(math.ceil(h / d)), int(math.ceil(w / d))) for d in self.strides]

    def extra_repr(self) -> str:
        """Summarise strides, sizes, ratios and densities."""
        return (
            f"strides={self.strides}, sizes={self.sizes}, aspect_ratios={self.aspect_ratios}, "
            f"densities={self.densities}"
        )


def anchor_generator_from_preset(
    preset: str,
    strides: Sequence[int],
    aspect_ratios: Sequence[float] | Sequence[Sequence[float]] | None = None,
    densify: bool = False,
    sizes: Sequence[Sequence[float]] | None = None,
    densities: Sequence[Sequence[float]] | None = None,
) -> AnchorGenerator:
    """Build an :class:`AnchorGenerator` from a preset name.

    Args:
        preset: "retinanet", "s3fd" or "faceboxes" (see :func:`preset_sizes`).
        strides: per-level strides.
        aspect_ratios: overrides the preset's ratios ((0.5, 1, 2) for retinanet, (1,) else).
        densify: use :func:`auto_densities` on every level (ignored if ``densities`` is given).
        sizes: overrides the preset's per-level sizes.
        densities: explicit per-level, per-size densities.
    """
    level_sizes = [list(s) for s in sizes] if sizes is not None else preset_sizes(preset, strides)
    if sizes is not None and preset not in ANCHOR_PRESETS:
        raise ValueError(f"unknown anchor preset {preset!r}; valid: {', '.join(ANCHOR_PRESETS)}")
    if aspect_ratios is None:
        aspect_ratios = (0.5, 1.0, 2.0) if preset == "retinanet" else (1.0,)
    if densities is None and densify:
        densities = [auto_densities(s, d) for s, d in zip(level_sizes, strides, strict=True)]
    return AnchorGenerator(strides, level_sizes, aspect_ratios, densities)
