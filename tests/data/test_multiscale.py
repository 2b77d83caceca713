"""Tests for detkit.data.multiscale (per-batch random input size)."""

from __future__ import annotations

import pytest
import torch

from detkit.data.multiscale import (
    MultiScaleResizer,
    choose_size,
    random_resize_batch,
    resize_batch,
)


def batch(size=320, n=2):
    images = [
        torch.rand(3, size, size, generator=torch.Generator().manual_seed(i)) for i in range(n)
    ]
    targets = [
        {
            "boxes": torch.tensor([[32.0, 64.0, 160.0, 96.0]]),
            "ignore_boxes": torch.tensor([[0.0, 0.0, 40.0, 40.0]]),
            "area": torch.tensor([4096.0]),
            "img_scale": 0.5,
            "labels": torch.tensor([1]),
        }
        for _ in range(n)
    ]
    return images, targets


def test_boxes_scale_exactly_with_image():
    images, targets = batch()
    out_images, out_targets = resize_batch(images, targets, 256)
    # factor 256 / 320 = 0.8: [32, 64, 160, 96] -> [25.6, 51.2, 128, 76.8]
    assert all(tuple(im.shape) == (3, 256, 256) for im in out_images)
    torch.testing.assert_close(out_targets[0]["boxes"], torch.tensor([[25.6, 51.2, 128.0, 76.8]]))
    torch.testing.assert_close(
        out_targets[0]["ignore_boxes"], torch.tensor([[0.0, 0.0, 32.0, 32.0]])
    )
    # area 4096 * 0.8^2 = 2621.44; img_scale 0.5 * 0.8 = 0.4
    torch.testing.assert_close(out_targets[0]["area"], torch.tensor([2621.44]))
    assert out_targets[0]["img_scale"] == pytest.approx(0.4)
    assert targets[0]["img_scale"] == 0.5 and images[0].shape[-1] == 320  # inputs untouched


def test_resize_matches_torch_interpolate_on_constant_image():
    images = [torch.full((3, 4, 4), 0.25)]
    out, _ = resize_batch(images, [{"boxes": torch.zeros(0, 4)}], 8)
    # a constant image stays constant under bilinear resize
    torch.testing.assert_close(out[0], torch.full((3, 8, 8), 0.25))


def test_non_square_keeps_ratio():
    images = [torch.rand(3, 240, 320)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 30.0, 40.0]]), "img_scale": 1.0}]
    out, tgt = resize_batch(images, targets, 160)
    # factor 160 / 320 = 0.5 -> 120 x 160, boxes halved
    assert tuple(out[0].shape) == (3, 120, 160)
    torch.testing.assert_close(tgt[0]["boxes"], torch.tensor([[5.0, 10.0, 15.0, 20.0]]))


def test_choice_deterministic_given_generator():
    sizes = [256, 288, 320, 352, 384]
    draws_a = [choose_size(sizes, torch.Generator().manual_seed(3)) for _ in range(3)]
    g = torch.Generator().manual_seed(3)
    first = choose_size(sizes, g)
    assert draws_a == [first] * 3
    # reference: the same generator draw done by hand
    idx = torch.randint(len(sizes), (1,), generator=torch.Generator().manual_seed(3)).item()
    assert first == sizes[idx]
    images, targets = batch(n=1)
    out1, _ = random_resize_batch(images, targets, sizes, torch.Generator().manual_seed(9))
    out2, _ = random_resize_batch(images, targets, sizes, torch.Generator().manual_seed(9))
    assert out1[0].shape == out2[0].shape and torch.equal(out1[0], out2[0])


def test_resizer_every_and_resume():
    sizes = [256, 288, 320, 352, 384]
    r = MultiScaleResizer(sizes, seed=1, every=2)
    images, targets = batch(n=1)
    seen = [r(images, targets)[0][0].shape[-1] for _ in range(6)]
    # a new size every 2 batches
    assert seen[0] == seen[1] and seen[2] == seen[3] and seen[4] == seen[5]
    assert set(seen) <= set(sizes)
    r2 = MultiScaleResizer(sizes, seed=1, every=2)
    for _ in range(2):
        r2(images, targets)
    state = r2.state_dict()
    r3 = MultiScaleResizer(sizes, seed=123, every=2)
    r3.load_state_dict(state)
    assert [r3(images, targets)[0][0].shape[-1] for _ in range(4)] == seen[2:]
    with pytest.raises(ValueError):
        MultiScaleResizer([], seed=0)


@pytest.mark.parametrize("every", [1, 3])
def test_resizer_draws_a_new_size_every_n_batches(every):
    sizes = [8, 12, 16, 20]
    # reference: one draw of sizes[randint(4)] from the seeded generator per group of
    # `every` batches, each size used for `every` consecutive batches
    g = torch.Generator().manual_seed(5)
    draws = [sizes[int(torch.randint(4, (1,), generator=g))] for _ in range(12 // every)]
    expected = [d for d in draws for _ in range(every)]
    assert len(set(expected)) > 1  # the seed gives several sizes, so the check has teeth
    r = MultiScaleResizer(sizes, seed=5, every=every)
    images, targets = batch(size=16, n=1)
    seen = [r(images, targets)[0][0].shape[-1] for _ in range(12)]
    assert seen == expected


def test_resizer_writes_the_drawn_size_valid_range_into_the_targets():
    from detkit.models.targets import validate_targets

    # SNIP ranges per size: 256 -> [0, 48), 320 -> [48, inf). The box [32, 64, 160, 96] at
    # 320 is 128 x 32 (size sqrt(4096) = 64: valid); at 256 it is [25.6, 51.2, 128, 76.8],
    # 102.4 x 25.6 (size 51.2 >= 48: invalid there). The reference draws sizes[randint(2)]
    # from a generator seeded like the resizer (7).
    resizer = MultiScaleResizer([256, 320], seed=7, valid_ranges=[[0, 48], [48, float("inf")]])
    g = torch.Generator().manual_seed(7)
    draws = [[256, 320][int(torch.randint(2, (1,), generator=g))] for _ in range(6)]
    assert set(draws) == {256, 320}  # both sizes are exercised
    expected = {256: (0.0, 48.0), 320: (48.0, float("inf"))}
    for size in draws:
        images, targets = resizer(*batch())
        assert images[0].shape[-1] == size
        assert [t["valid_range"] for t in targets] == [expected[size]] * 2
        (checked,) = validate_targets(targets[:1], num_classes=1)
        if size == 256:
            assert checked["boxes"].shape == (0, 4)
            torch.testing.assert_close(checked["invalid_boxes"],
                                       torch.tensor([[25.6, 51.2, 128.0, 76.8]]))
        else:
            torch.testing.assert_close(checked["boxes"], torch.tensor([[32.0, 64, 160, 96]]))
            assert checked["invalid_boxes"].shape == (0, 4)
    # off: no valid_range entry at all (targets keep their keys)
    _, plain = MultiScaleResizer([256, 320], seed=7)(*batch())
    assert "valid_range" not in plain[0]


@pytest.mark.parametrize("sizes, ranges", [([256, 320], [[0, 64]]),
                                           ([256, 256], [[0, 9], [9, 99]]),
                                           ([256, 320], [[0, 64], [64, 64]])])
def test_resizer_refuses_mismatched_or_malformed_ranges(sizes, ranges):
    with pytest.raises(ValueError, match="valid"):
        MultiScaleResizer(sizes, valid_ranges=ranges)
