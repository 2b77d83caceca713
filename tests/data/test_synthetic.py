"""Tests for detkit.data.synthetic: determinism, size spread, tight boxes, negatives."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detkit.data.synthetic import (
    SyntheticStyle,
    generate_synthetic_coco,
    main,
    render_sample,
    synthetic_settings,
)
from detkit.data.validation import validate_coco


def test_same_seed_gives_identical_files(tmp_path):
    a = generate_synthetic_coco(tmp_path / "a", num_images=12, image_size=96, seed=3)
    generate_synthetic_coco(tmp_path / "b", num_images=12, image_size=96, seed=3)
    c = generate_synthetic_coco(tmp_path / "c", num_images=12, image_size=96, seed=4)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.*"))
    assert files_a == files_b and len(files_a) == 12 + 2
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert a["train"].read_bytes() != c["train"].read_bytes()
    # rendering in two processes writes the same files
    d = generate_synthetic_coco(tmp_path / "d", num_images=12, image_size=96, seed=3, workers=2)
    assert d["train"].read_bytes() == a["train"].read_bytes()
    for rel in files_a:
        assert (tmp_path / "d" / rel).read_bytes() == (tmp_path / "a" / rel).read_bytes()
    assert set(a) == {"train", "val"}


def test_files_match_renderer_and_negatives_exist(tmp_path):
    paths = generate_synthetic_coco(
        tmp_path,
        num_images=40,
        image_size=128,
        seed=5,
        split_fractions={"train": 0.75, "val": 0.25},
    )
    data = [json.loads(p.read_text()) for p in paths.values()]
    assert [len(d["images"]) for d in data] == [30, 10]  # 40 * 0.75, 40 * 0.25
    images = [im for d in data for im in d["images"]]
    anns = [a for d in data for a in d["annotations"]]
    assert sorted(im["id"] for im in images) == list(range(1, 41))
    with_objects = {a["image_id"] for a in anns}
    assert len([im for im in images if im["id"] not in with_objects]) == 2  # round(0.05 * 40)
    index = next(iter(with_objects))
    sample = render_sample(np.random.default_rng([5, index - 1]), 128)
    boxes = [a["bbox"] for a in anns if a["image_id"] == index]
    np.testing.assert_array_equal(np.array(boxes, np.float32), sample.boxes)
    _, report = validate_coco(paths["train"], log=None)
    assert report.counts["unreadable_image"] == 0 and report.counts["degenerate_box"] == 0
    assert report.counts["clipped_box"] == 0


def test_cli_writes_dataset(tmp_path, capsys):
    main(["--out", str(tmp_path), "--num-images", "10", "--image-size", "64"])
    out = capsys.readouterr().out
    assert "train: 8 images" in out and "val: 2 images" in out  # 10 * 0.8, 10 * 0.2
    assert len(list((tmp_path / "images").glob("*.jpg"))) == 10


def test_style_sets_classes_sizes_and_clutter(tmp_path):
    style = SyntheticStyle(classes=("square", "star"), max_objects=3, side_range=(12, 20),
                           clutter=False, textures=False)
    sides, counts = [], []
    for i in range(40):
        sample = render_sample(np.random.default_rng([2, i]), 96, style=style)
        counts.append(len(sample.labels))
        sides += np.sqrt(sample.boxes[:, 2] * sample.boxes[:, 3]).tolist()
        assert set(sample.labels.tolist()) <= {1, 2}
        # flat fills: every object's visible pixels take one colour
        for k in np.unique(sample.label_map[sample.label_map > 0]):
            assert len(np.unique(sample.image[sample.label_map == k], axis=0)) == 1
    assert max(counts) <= 3 and min(counts) >= 1
    # tight boxes of visible pixels: a hidden part can only shrink a box below 12 px
    assert max(sides) <= 20 + 1 and np.median(sides) > 12
    paths = generate_synthetic_coco(tmp_path, num_images=6, image_size=64, seed=1, style=style)
    data = json.loads(paths["train"].read_text())
    assert [c["name"] for c in data["categories"]] == ["square", "star"]
    assert data["info"]["detkit_synthetic"] == synthetic_settings(6, 64, 1, style)
    with pytest.raises(ValueError, match="classes must be distinct"):
        SyntheticStyle(classes=("hexagon",))
    with pytest.raises(ValueError, match="side_range"):
        SyntheticStyle(side_range=(20, 10))
