"""Anchor tables written out by hand: sizes, ratios, densification offsets, order."""

import math

import pytest
import torch

from detkit.models.anchors import (
    AnchorGenerator,
    anchor_generator_from_preset,
    auto_densities,
    cell_anchors,
    grid_anchors,
    preset_sizes,
)


def test_single_square_anchor_centred_in_cell():
    # stride 16, size 32, ratio 1: centre (8, 8), half side 16 -> (-8, -8, 24, 24)
    cell = cell_anchors(16, [32.0], [1.0])
    assert cell.tolist() == [[-8.0, -8.0, 24.0, 24.0]]


def test_aspect_ratio_is_height_over_width():
    # size 32, ratio 4: w = 32 / 2 = 16, h = 32 * 2 = 64; centre (4, 4) on stride 8
    cell = cell_anchors(8, [32.0], [4.0])
    assert cell.tolist() == [[4 - 8.0, 4 - 32.0, 4 + 8.0, 4 + 32.0]]


def test_faceboxes_density_four_on_stride_32():
    # 32-px anchors, stride 32, density 4: centres at (k + 0.5) / 4 * 32 = 4, 12, 20, 28
    # per axis, 16 anchors ordered (ky, kx) row-major, each centre +- 16.
    cell = cell_anchors(32, [32.0], [1.0], [4])
    assert cell.shape == (16, 4)
    centres = [4.0, 12.0, 20.0, 28.0]
    expected = [[cx - 16, cy - 16, cx + 16, cy + 16] for cy in centres for cx in centres]
    assert cell.tolist() == expected


def test_faceboxes_level_counts_per_cell():
    # sizes 32 / 64 / 128 on stride 32 with densities 4 / 2 / 1 -> 16 + 4 + 1 = 21 per cell
    gen = AnchorGenerator([32], [[32.0, 64.0, 128.0]], [1.0], [[4, 2, 1]])
    assert gen.num_anchors_per_location == [21]
    cell = gen.cells[0]
    # the 64-px group (rows 16..19): centres (k + 0.5) / 2 * 32 = 8, 24, half side 32
    expected64 = [[cx - 32, cy - 32, cx + 32, cy + 32] for cy in (8.0, 24.0) for cx in (8.0, 24.0)]
    assert cell[16:20].tolist() == expected64
    # the 128-px anchor: centre 16, half side 64
    assert cell[20].tolist() == [-48.0, -48.0, 80.0, 80.0]


def test_auto_densities_match_faceboxes():
    # round(4 * 32 / 32) = 4, round(4 * 32 / 64) = 2, round(4 * 32 / 128) = 1, 256 -> max(1, 0.5)
    assert auto_densities([32, 64, 128, 256], 32) == [4, 2, 1, 1]


def test_grid_order_is_y_then_x_then_anchor():
    # two anchors per cell (sizes 8 and 16, stride 8) on a 2 x 3 map
    gen = AnchorGenerator([8], [[8.0, 16.0]])
    anchors = gen([(2, 3)])[0]
    assert anchors.shape == (2 * 3 * 2, 4)
    # index = (y * 3 + x) * 2 + a; cell (y=1, x=2) anchor 1 (size 16): centre (20, 12)
    assert anchors[(1 * 3 + 2) * 2 + 1].tolist() == [12.0, 4.0, 28.0, 20.0]
    # cell (y=0, x=1) anchor 0 (size 8): centre (12, 4)
    assert anchors[(0 * 3 + 1) * 2 + 0].tolist() == [8.0, 0.0, 16.0, 8.0]


def test_grid_anchors_shift_matches_loop():
    cell = cell_anchors(16, [16.0, 40.0], [0.5, 2.0], [2, 1])
    out = grid_anchors(cell, 16, 3, 2)
    expected = []
    for y in range(3):
        for x in range(2):
            for row in cell.tolist():
                expected.append(
                    [row[0] + 16 * x, row[1] + 16 * y, row[2] + 16 * x, row[3] + 16 * y]
                )
    assert torch.allclose(out, torch.tensor(expected))


def test_s3fd_preset_sizes_are_four_strides():
    # S3FD: strides 4..128 -> sizes 16, 32, 64, 128, 256, 512
    assert preset_sizes("s3fd", [4, 8, 16, 32, 64, 128]) == [
        [16.0],
        [32.0],
        [64.0],
        [128.0],
        [256.0],
        [512.0],
    ]
    gen = anchor_generator_from_preset("s3fd", [8, 16])
    assert gen.num_anchors_per_location == [1, 1]
    # stride 8, size 32, centre 4: (-12, -12, 20, 20)
    assert gen.cells[0].tolist() == [[-12.0, -12.0, 20.0, 20.0]]
    # S3FD anchors need no densification: round(4 * 8 / 32) = 1
    assert anchor_generator_from_preset("s3fd", [8], densify=True).num_anchors_per_location == [1]


def test_retinanet_preset():
    sizes = preset_sizes("retinanet", [8])[0]
    assert sizes == pytest.approx([32.0, 32.0 * 2 ** (1 / 3), 32.0 * 2 ** (2 / 3)])
    gen = anchor_generator_from_preset("retinanet", [8, 16])
    assert gen.num_anchors_per_location == [9, 9]
    # first anchor: size 32, ratio 0.5 -> w = 32 * sqrt(2), h = 32 / sqrt(2), centre (4, 4)
    w, h = 32 * math.sqrt(2), 32 / math.sqrt(2)
    assert gen.cells[0][0].tolist() == pytest.approx([4 - w / 2, 4 - h / 2, 4 + w / 2, 4 + h / 2])


def test_faceboxes_preset_densify_on_and_off():
    # sizes (8, 16, 32) on stride 8; densify: 4, 2, 1 -> 16 + 4 + 1
    assert anchor_generator_from_preset(
        "faceboxes", [8], densify=True
    ).num_anchors_per_location == [21]
    assert anchor_generator_from_preset("faceboxes", [8]).num_anchors_per_location == [3]


def test_concat_and_feature_sizes():
    gen = anchor_generator_from_preset("s3fd", [8, 16, 32])
    # input 100 x 70: ceil(100/8)=13, ceil(70/8)=9; 7, 5; 4, 3
    sizes = gen.feature_sizes_for((100, 70))
    assert sizes == [(13, 9), (7, 5), (4, 3)]
    assert gen.concat(sizes).shape == (13 * 9 + 7 * 5 + 4 * 3, 4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown anchor preset"):
        preset_sizes("yolo", [8])
    with pytest.raises(ValueError, match="densities"):
        cell_anchors(8, [8.0, 16.0], [1.0], [1])
    with pytest.raises(ValueError, match="round to >= 1"):
        cell_anchors(8, [8.0], [1.0], [0.2])
    gen = AnchorGenerator([8, 16], [[32.0], [64.0]])
    with pytest.raises(ValueError, match="feature maps"):
        gen([(4, 4)])
    with pytest.raises(ValueError, match="^aspect_ratios has 1 levels, the generator has 2$"):
        AnchorGenerator([8, 16], [[32.0], [64.0]], aspect_ratios=[[1.0]])
