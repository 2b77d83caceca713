"""Tests for detkit.data.sampling (repeat-factor / small-object oversampling, DDP split)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from detkit.data.sampling import (
    RepeatFactorSampler,
    ResumableBatchSampler,
    ShardSampler,
    SmallObjectOversampler,
    small_object_counts_from_coco,
)

COUNTS = [0, 2, 0, 1, 5, 0, 0]


def test_repeat_counts_exact_fixed_repeat():
    sampler = SmallObjectOversampler(COUNTS, repeat=3, seed=0)
    # images 1, 3, 4 have small objects: 3 copies each; 0, 2, 5, 6 once -> 3 * 3 + 4 = 13
    got = Counter(iter(sampler))
    assert got == {0: 1, 1: 3, 2: 1, 3: 3, 4: 3, 5: 1, 6: 1}
    assert len(sampler) == 13


def test_repeat_rule_on_count():
    sampler = SmallObjectOversampler(COUNTS, repeat=lambda n: min(1 + n, 4), shuffle=False)
    # factors: 1, 3, 1, 2, min(6, 4) = 4, 1, 1 -> in order, repeats adjacent
    assert list(sampler) == [0, 1, 1, 1, 2, 3, 3, 4, 4, 4, 4, 5, 6]


def test_fractional_factors_are_floor_or_ceil():
    sampler = RepeatFactorSampler([1.5] * 200 + [2.0], seed=1)
    got = Counter(iter(sampler))
    assert set(got[i] for i in range(200)) == {1, 2} and got[200] == 2


def test_fractional_draws_and_shuffle_are_successive_streams():
    # Reference: one torch generator seeded seed * 1_000_003 + epoch draws the 4 fractional
    # copies first and then the permutation of the repeated list (plain numpy repeat).
    factors = [1.5, 1.25, 2.0, 1.75]
    sampler = RepeatFactorSampler(factors, seed=3)
    sampler.set_epoch(2)
    g = torch.Generator().manual_seed(3 * 1_000_003 + 2)
    draws = torch.rand(4, generator=g, dtype=torch.float64).numpy()
    counts = np.floor(factors).astype(int) + (draws < np.array(factors) % 1)
    repeated = np.repeat(np.arange(4), counts)
    expected = repeated[torch.randperm(len(repeated), generator=g).numpy()]
    assert sampler.epoch_indices().tolist() == expected.tolist()


@pytest.mark.parametrize("world", [2, 3, 4])
def test_rank_partition_no_overlap_nothing_lost(world):
    ranks = [
        list(SmallObjectOversampler(COUNTS, 3, seed=7, num_replicas=world, rank=r))
        for r in range(world)
    ]
    # 13 repeated indices; padded to ceil(13 / world) * world
    per_rank = -(-13 // world)
    assert all(len(r) == per_rank for r in ranks)
    full = SmallObjectOversampler(COUNTS, 3, seed=7, num_replicas=world, rank=0).epoch_indices()
    # positions are split by striding: rank r holds positions r, r + world, ...
    for r in range(world):
        assert ranks[r] == full[r::world].tolist()
    union = Counter(i for r in ranks for i in r)
    expected = Counter({0: 1, 1: 3, 2: 1, 3: 3, 4: 3, 5: 1, 6: 1})
    pad = per_rank * world - 13
    # the union is the repeated multiset plus exactly `pad` wrapped-around entries from the start
    assert union - expected == Counter(full[:pad].tolist())
    assert expected - union == Counter()


def test_same_seed_same_order_different_epoch_differs():
    a = SmallObjectOversampler(COUNTS, 3, seed=4)
    b = SmallObjectOversampler(COUNTS, 3, seed=4)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b) != first
    assert sorted(list(a)) == sorted(first)


def test_resume_mid_epoch():
    sampler = SmallObjectOversampler(COUNTS, 3, seed=2, num_replicas=2, rank=1)
    sampler.set_epoch(3)
    order = list(sampler)
    state = dict(sampler.state_dict(), start_index=4)
    resumed = SmallObjectOversampler(COUNTS, 3, seed=2, num_replicas=2, rank=1)
    resumed.load_state_dict(state)
    assert resumed.epoch == 3 and list(resumed) == order[4:] and len(resumed) == len(order) - 4
    resumed.set_epoch(4)
    assert resumed.start_index == 0
    with pytest.raises(ValueError):
        resumed.load_state_dict({"epoch": 0, "start_index": 0, "seed": 99})


def test_invalid_inputs():
    with pytest.raises(ValueError):
        SmallObjectOversampler([1, -1])
    with pytest.raises(ValueError):
        SmallObjectOversampler([1, 2], repeat=0)
    with pytest.raises(ValueError):
        RepeatFactorSampler([1.0], num_replicas=2, rank=2)


def test_counts_from_coco_scaled_to_training_resolution():
    coco = {
        "images": [
            {"id": 10, "height": 480, "width": 640},
            {"id": 11, "height": 100, "width": 100},
        ],
        "annotations": [
            # image 10 at input 320: s = 320 / 640 = 0.5, areas scale by 0.25
            {"image_id": 10, "bbox": [0, 0, 60, 60], "area": 3600, "iscrowd": 0},  # 900 small
            {"image_id": 10, "bbox": [0, 0, 64, 64], "area": 4096, "iscrowd": 0},  # 1024 no
            {"image_id": 10, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 1},  # crowd
            {"image_id": 10, "bbox": [5, 5, 0, 0], "area": 0, "iscrowd": 0},  # zero area
            # image 11: s = 320 / 100 = 3.2; 100 * 10.24 = 1024 not small, 90 * 10.24 = 921.6
            {"image_id": 11, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"image_id": 11, "bbox": [0, 0, 10, 9], "area": 90, "iscrowd": 0},
        ],
    }
    assert small_object_counts_from_coco(coco, [11, 10], input_size=320) == [1, 1]
    # at the raw resolution: image 10 has 3600 (no), 4096 (no); image 11 has 100 and 90
    assert small_object_counts_from_coco(coco, [10, 11]) == [0, 2]


def test_from_coco_dataset_uses_ids_order():
    class FakeCoco:
        dataset = {
            "images": [{"id": 5, "height": 64, "width": 64}, {"id": 9, "height": 64, "width": 64}],
            # image 9 holds one 10 x 10 = 100 px^2 object (small); image 5 one 40 x 40 = 1600
            "annotations": [
                {"image_id": 9, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
                {"image_id": 5, "bbox": [0, 0, 40, 40], "area": 1600, "iscrowd": 0},
            ],
        }

    class FakeDataset:
        coco = FakeCoco()
        ids = [9, 5]

    sampler = SmallObjectOversampler.from_coco_dataset(FakeDataset(), repeat=4, shuffle=False)
    # dataset index 0 is image 9 (small object): 4 copies; index 1 once
    assert sampler.small_counts == [1, 0] and list(sampler) == [0, 0, 0, 0, 1]


def test_defaults_seed_zero_and_repeat_two():
    # defaults: repeat 2, seed 0, shuffle on; the order is the (seed 0, epoch 0) reference:
    # factors 1, 2, 1 -> [0, 1, 1, 2] permuted by a generator seeded 0 * 1_000_003 + 0
    sampler = SmallObjectOversampler([0, 3, 0])
    g = torch.Generator().manual_seed(0)
    expected = np.array([0, 1, 1, 2])[torch.randperm(4, generator=g).numpy()]
    assert list(sampler) == expected.tolist()
    assert list(RepeatFactorSampler([1.0, 2.0, 1.0])) == expected.tolist()


def test_integer_factors_draw_nothing_before_the_shuffle():
    # all-integer factors: the permutation is the generator's first draw
    sampler = RepeatFactorSampler([1.0, 3.0, 0.0, 2.0], seed=4)
    g = torch.Generator().manual_seed(4 * 1_000_003)
    repeated = np.array([0, 1, 1, 1, 3, 3])
    assert sampler.epoch_indices().tolist() == repeated[torch.randperm(6, generator=g)].tolist()


def test_repeated_indices_without_a_generator_use_the_epoch_seed():
    factors = [1.5, 0.5, 2.25]
    sampler = RepeatFactorSampler(factors, seed=6)
    sampler.set_epoch(1)
    g = torch.Generator().manual_seed(6 * 1_000_003 + 1)
    draws = torch.rand(3, generator=g, dtype=torch.float64).numpy()
    counts = np.floor(factors).astype(int) + (draws < np.array(factors) % 1)
    torch.manual_seed(123)  # the global stream must play no part
    assert sampler.repeated_indices().tolist() == np.repeat(np.arange(3), counts).tolist()


def test_factor_validation_and_single_image():
    assert list(RepeatFactorSampler([1.0], shuffle=False)) == [0]  # one image is fine
    assert list(RepeatFactorSampler([[2.0], [0.0]], shuffle=False)) == [0, 0]  # flattened
    assert list(RepeatFactorSampler([0.0, 1.0], shuffle=False)) == [1]  # 0 drops an image
    for bad in ([], [1.0, -0.5], [1.0, float("inf")], [float("nan")]):
        with pytest.raises(ValueError, match="finite values >= 0"):
            RepeatFactorSampler(bad)
    with pytest.raises(ValueError, match="nothing to sample"):
        RepeatFactorSampler([0.0, 0.0]).epoch_indices()
    assert list(SmallObjectOversampler([0, 1], repeat=1, shuffle=False)) == [0, 1]
    with pytest.raises(ValueError, match="counts must be >= 0"):
        SmallObjectOversampler([0, -1])
    with pytest.raises(ValueError, match="repeat must be >= 1"):
        SmallObjectOversampler([0, 1], repeat=0)


def test_state_dict_keys_defaults_and_start_bounds():
    sampler = RepeatFactorSampler([1.0, 2.0, 1.0], seed=5, num_replicas=2, rank=0)
    sampler.set_epoch(2)
    sampler.set_start_index(1)
    assert sampler.state_dict() == {"epoch": 2, "start_index": 1, "seed": 5}
    other = RepeatFactorSampler([1.0, 2.0, 1.0], seed=5, num_replicas=2, rank=0)
    other.load_state_dict({"epoch": 2})  # seed and start_index may be left out
    assert (other.epoch, other.start_index) == (2, 0)
    other.load_state_dict({"epoch": 2, "start_index": 1})
    assert list(other) == list(sampler)
    # per rank 4 / 2 = 2 indices: start 0 and 2 (the end) are valid, 3 is not
    sampler.set_start_index(0)
    sampler.set_start_index(2)
    assert list(sampler) == [] and len(sampler) == 0
    with pytest.raises(ValueError, match="outside this rank's epoch"):
        sampler.set_start_index(3)
    with pytest.raises(ValueError, match="state seed 9 != sampler seed 5"):
        other.load_state_dict({"epoch": 0, "seed": 9})


def test_padding_only_when_the_list_does_not_divide():
    # 4 indices over 2 ranks: no padding; 5 over 2: one index wraps around
    even = RepeatFactorSampler([1.0, 1.0, 2.0], shuffle=False, num_replicas=2, rank=0)
    assert even.epoch_indices().tolist() == [0, 1, 2, 2]
    odd = RepeatFactorSampler([1.0, 1.0, 3.0], shuffle=False, num_replicas=2, rank=0)
    assert odd.epoch_indices().tolist() == [0, 1, 2, 2, 2, 0]


def test_counts_from_a_json_path_with_missing_fields(tmp_path):
    # no "area" -> bbox w * h (5 x 20 = 100, not 20 x 20); no "iscrowd" -> not crowd;
    # area 0.5 (in (0, 1)) still counts; at input 64 an image of 128 px scales areas by 1/4
    # and one of 10 px by 6.4^2 = 40.96 (0.5 -> 20.48)
    coco = {
        "images": [{"id": 1, "height": 128, "width": 128}, {"id": 2, "height": 10, "width": 10}],
        "annotations": [
            {"image_id": 1, "bbox": [0, 0, 5, 20]},  # 100 -> 25 at s = 0.5
            {"image_id": 1, "bbox": [0, 0, 64, 64], "area": 4096.0},  # 1024 at s = 0.5: no
            {"image_id": 2, "bbox": [0, 0, 1, 1], "area": 0.5},
            {"image_id": 2, "bbox": [0, 0, 9, 9], "area": 81.0, "iscrowd": 1},
        ],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco), encoding="utf-8")
    assert small_object_counts_from_coco(str(path), [1, 2], max_area=30.0) == [0, 1]
    assert small_object_counts_from_coco(path, [1, 2], input_size=64, max_area=30.0) == [1, 1]
    # raw resolution, max_area 101: the 5 x 20 box (100) and the 0.5 one count
    assert small_object_counts_from_coco(coco, [1, 2], max_area=101.0) == [1, 1]
    assert small_object_counts_from_coco({"images": coco["images"]}, [2, 1]) == [0, 0]


def test_from_coco_dataset_passes_input_size_and_max_area():
    class FakeDataset:
        coco = type("C", (), {"dataset": {
            "images": [{"id": 1, "height": 100, "width": 100}],
            "annotations": [{"image_id": 1, "bbox": [0, 0, 10, 10], "area": 100.0}]}})()
        ids = [1]

    # at input 50 (s = 0.5) the area is 25: small for max_area 30; raw 100 is not
    s = SmallObjectOversampler.from_coco_dataset(FakeDataset(), input_size=50, max_area=30.0)
    assert s.small_counts == [1]
    raw = SmallObjectOversampler.from_coco_dataset(FakeDataset(), max_area=30.0)
    assert raw.small_counts == [0]


def test_resumable_batches_skip_consumed_prefix() -> None:
    data = list(range(10))
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=7)
    batches = ResumableBatchSampler(sampler, batch_size=3, drop_last=True)
    assert len(batches) == 3  # 10 // 3
    batches.set_epoch(2)
    full = list(batches)
    batches.set_epoch(2, start_batch=2)
    assert list(batches) == full[2:]
    batches.set_epoch(3)
    assert list(batches) != full  # a new epoch, a new order
    assert sorted(i for b in full for i in b) == sorted(set(i for b in full for i in b))


def test_shard_sampler_covers_each_index_once() -> None:
    shards = [list(ShardSampler(7, r, 3)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
