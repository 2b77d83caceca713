"""Resumable batch sampler, evaluation shards and config -> schedule glue."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from detkit.config import defaults, merge
from detkit.engine.build import (
    build_train_loader,
    evaluation_split,
    prepare_synthetic,
    schedule_spec,
    wrap_mixing,
)
from detkit.engine.distributed import DistInfo
from detkit.engine.recipe import Recipe

from ._tiny import TinyDataset, tiny_config, tiny_trainer


def test_schedule_spec_from_config() -> None:
    cfg = merge(defaults(), {"schedule": {"epochs": 12, "milestones": [8, 11],
                                          "decay": "step", "warmup_iters": 50}})
    spec = schedule_spec(cfg, iters_per_epoch=100)
    assert spec.max_iters == 1200  # 12 epochs * 100
    assert tuple(spec.milestones) == (800, 1100)
    cfg = merge(cfg, {"schedule": {"max_iters": 30}})
    assert schedule_spec(cfg, iters_per_epoch=100).max_iters == 30


def test_label_smoothing_switch_reaches_the_model() -> None:
    import math

    from detkit.engine.build import build_model_from_cfg
    from detkit.models.heads.rcnn import SampledRoIs

    # train.label_smoothing reaches the R-CNN loss: one RoI of label 1 with logits
    # [0, 2, 0, 0], log Z = ln(e^2 + 3); loss = log Z - 2 (1 - e) (see
    # tests/models/detectors/test_thundernet.py): e = 0 -> 0.34078, e = 0.2 -> 0.74078
    box = torch.tensor([[0.0, 0.0, 32.0, 32.0]])
    samples = [SampledRoIs(box, torch.tensor([1]), box.clone(), torch.ones(1))]
    logits = torch.tensor([[0.0, 2.0, 0.0, 0.0]])
    log_z = math.log(math.exp(2) + 3)
    for epsilon in (0.0, 0.2):
        model = build_model_from_cfg({"type": "thundernet_lite", "box_loss": "smooth_l1"}, 3,
                                     label_smoothing=epsilon)
        loss = model.rcnn.compute_losses(logits, torch.zeros(1, 4), samples)["rcnn_cls"]
        assert float(loss) == pytest.approx(log_z - 2 * (1 - epsilon), rel=1e-6)
    with pytest.raises(ValueError, match="not supported by model type 'dense_detector'"):
        build_model_from_cfg({"type": "dense_detector"}, 3, label_smoothing=0.1)
    with pytest.raises(ValueError, match="model.num_classes=5 but the training data has 3"):
        build_model_from_cfg({"type": "dense_detector", "num_classes": 5}, 3)


def test_shipped_model_sections_have_valid_keys() -> None:
    from pathlib import Path

    from detkit.config import load_config
    from detkit.engine.build import check_model_keys

    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert len(configs) >= 7
    for path in configs:
        check_model_keys(load_config(path)["model"])
    with pytest.raises(ValueError, match="did you mean 'model.use_cem'"):
        check_model_keys({"type": "thundernet_lite", "use_cemm": True})


class _CocoTiny(TinyDataset):
    """TinyDataset with the ``coco.dataset`` / ``ids`` the small-object oversampler reads:
    images 1 and 4 (indices 0 and 3) hold a small box (area 100 < 1024), the rest none."""

    def __init__(self, n: int) -> None:
        super().__init__(n, noise=False)
        self.ids = list(range(1, n + 1))
        annotations = [{"id": k, "image_id": k, "bbox": [0, 0, 10, 10], "area": 100.0,
                        "category_id": 1, "iscrowd": 0} for k in (1, 4)]
        images = [{"id": i, "height": 16, "width": 16} for i in self.ids]
        self.coco = SimpleNamespace(dataset={"images": images, "annotations": annotations})


def _epoch_ids(loader, epoch: int) -> list[list[int]]:
    loader.batch_sampler.set_epoch(epoch)
    return [[int(t["image_id"]) for t in targets] for _, targets in loader]


@pytest.mark.parametrize(("world", "workers"), [(1, 0), (2, 0), (1, 2)])
def test_loader_batches_per_epoch_each_index_once(world: int, workers: int) -> None:
    cfg = tiny_config(data={"batch_size": 4, "num_workers": workers})
    dataset = TinyDataset(16, noise=False)
    orders = []
    for epoch in (0, 1):
        ids = []
        for rank in range(world):
            info = DistInfo(rank, world, rank, torch.device("cpu"))
            loader = build_train_loader(dataset, cfg, info)
            # 16 images over `world` ranks in batches of 4: 16 / world / 4 batches each
            assert len(loader.batch_sampler) == 16 // world // 4
            batches = _epoch_ids(loader, epoch)
            assert len(batches) == 16 // world // 4 and all(len(b) == 4 for b in batches)
            ids += sum(batches, [])
        assert sorted(ids) == list(range(1, 17))  # every image exactly once per epoch
        orders.append(ids)
    assert orders[0] != orders[1]  # reshuffled per epoch


def test_loader_drop_last_counts_full_batches_only() -> None:
    loader = build_train_loader(TinyDataset(18, noise=False), tiny_config(),
                                DistInfo(0, 1, 0, torch.device("cpu")))
    batches = _epoch_ids(loader, 0)
    # 18 images in batches of 4: 4 full batches, the 2 left over wait for another epoch
    assert [len(b) for b in batches] == [4, 4, 4, 4]
    assert len(set(sum(batches, []))) == 16


@pytest.mark.parametrize("world", [1, 2])
def test_oversampled_loader_repeats_small_object_images(world: int) -> None:
    # 8 images, images 1 and 4 with a small object, repeat 2: 10 indices per epoch
    # (1 and 4 twice, the others once); batch 1 so nothing is dropped; 10 / world per rank
    cfg = tiny_config(data={"batch_size": 1, "num_workers": 0, "img_size": 16,
                            "oversample": {"enabled": True, "repeat": 2, "max_area": 1024.0}})
    dataset = _CocoTiny(8)
    for epoch in (0, 1):
        ids = []
        for rank in range(world):
            loader = build_train_loader(dataset, cfg, DistInfo(rank, world, rank,
                                                               torch.device("cpu")))
            batches = _epoch_ids(loader, epoch)
            assert len(batches) == 10 // world
            ids += sum(batches, [])
        assert sorted(ids) == [1, 1, 2, 3, 4, 4, 5, 6, 7, 8]


def _lr_warmup_step(it: int) -> float:
    """Linear warmup 0.1 -> 1 over 3 iterations, then x0.1 at epoch 1 = iteration 4."""
    return 0.5 * ((0.1 + 0.9 * it / 3) if it < 3 else (1.0 if it < 4 else 0.1))


def _lr_constant_cosine(it: int) -> float:
    """Constant warmup factor 0.1 for 3 iterations, then cosine over the 7 left."""
    return 0.05 if it < 3 else 0.25 * (1 + math.cos(math.pi * (it - 3) / 7))


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ({"warmup": "linear", "decay": "step", "milestones": [1], "gamma": 0.1},
         _lr_warmup_step),
        ({"warmup": "constant", "decay": "cosine"}, _lr_constant_cosine),
        # no warmup: cosine from 1 at iteration 0 over all 10
        ({"warmup": "none", "decay": "cosine"},
         lambda it: 0.25 * (1 + math.cos(math.pi * it / 10))),
        ({"warmup": "none", "decay": "none"}, lambda it: 0.5),
    ],
    ids=["linear-step", "constant-cosine", "none-cosine", "none-none"],
)
def test_schedule_switches_set_the_optimizer_lr(tmp_path, schedule, expected) -> None:
    # base lr 0.5 (x 4 / 4 by linear scaling), 16 images in batches of 4 = 4 iterations per
    # epoch (milestones are in epochs), 10 iterations, warmup 3 with factor 0.1
    cfg = tiny_config(schedule={"max_iters": 10, "warmup_iters": 3, "warmup_factor": 0.1,
                                "min_lr_ratio": 0.0, **schedule})
    trainer = tiny_trainer(tmp_path, cfg, n=16)
    seen = []
    for _ in range(10):
        seen.append([g["lr"] for g in trainer.optimizer.param_groups])
        trainer.scheduler.step()
    for it, lrs in enumerate(seen):
        assert lrs == pytest.approx([expected(it)] * len(lrs), rel=1e-9), it


def test_multiscale_switch_resizes_training_batches(tmp_path) -> None:
    cfg = tiny_config(data={"multiscale": {"enabled": True, "sizes": [8, 12, 16], "every": 2}})
    trainer = tiny_trainer(tmp_path, cfg, n=8)
    images, targets = next(iter(trainer.loader))
    # reference: the resizer's generator is seeded with the config seed (3); one draw of
    # sizes[randint(3)] per 2 batches
    g = torch.Generator().manual_seed(3)
    draws = [[8, 12, 16][int(torch.randint(3, (1,), generator=g))] for _ in range(3)]
    seen = [trainer.batch_transform(images, targets)[0][0].shape[-1] for _ in range(6)]
    assert seen == [d for d in draws for _ in range(2)]
    assert tiny_trainer(tmp_path / "off", tiny_config(), n=8).batch_transform is None


class _Flat:
    """Raw images of constant value per index (10, 80, 160, 250), 16 x 16, one box each."""

    values = (10, 80, 160, 250)
    transforms = None

    def __len__(self) -> int:
        return len(self.values)

    def load_raw(self, index: int) -> tuple[np.ndarray, dict]:
        image = np.full((16, 16, 3), self.values[index], np.uint8)
        return image, {"boxes": np.array([[2.0, 2.0, 14.0, 14.0]], np.float32),
                       "labels": np.array([index + 1]), "weights": np.ones(1, np.float32),
                       "image_id": index + 1}


def test_mixup_switch_blends_two_images() -> None:
    cfg = tiny_config(data={"mixup": {"enabled": True, "prob": 1.0, "alpha": 1.5}})
    image, target = wrap_mixing(_Flat(), cfg).load_raw(0)
    # partner: one of the other three; weights lam and 1 - lam; every pixel is
    # rint(lam * 10 + (1 - lam) * partner's value)
    lam = float(target["weights"][0])
    partner = int(target["labels"][1]) - 1
    assert 0 < lam < 1 and float(target["weights"].sum()) == pytest.approx(1.0)
    assert (image == np.rint(lam * 10 + (1 - lam) * _Flat.values[partner])).all()
    plain, _ = wrap_mixing(_Flat(), tiny_config()).load_raw(0)
    assert (plain == 10).all()  # switched off: the image itself


@pytest.mark.filterwarnings("ignore:mosaic dropped")
def test_mosaic_switch_patches_four_images() -> None:
    # beta 50: the cut point ~ 16 * Beta(50, 50) lies near the centre (8, 8)
    cfg = tiny_config(data={"img_size": 16, "mosaic": {"enabled": True, "prob": 1.0,
                                                       "beta": 50.0}})
    image, target = wrap_mixing(_Flat(), cfg).load_raw(2)
    # four constant patches: image 2 (value 160) top-left, drawn images elsewhere; each
    # box kept (boxes cut too much are dropped) carries the label of a patch's source
    assert image.shape == (16, 16, 3) and image[0, 0, 0] == 160
    bw = int(np.argmax(image[0, :, 0] != 160)) or 16
    bh = int(np.argmax(image[:, 0, 0] != 160)) or 16
    assert 4 <= bw <= 12 and 4 <= bh <= 12
    patches = (image[:bh, :bw], image[:bh, bw:], image[bh:, :bw], image[bh:, bw:])
    values = [int(np.unique(p)[0]) for p in patches]
    assert all(len(np.unique(p)) == 1 for p in patches)
    assert len(set(values)) > 1  # not the plain image 2
    labels = {int(v) for v in target["labels"]}
    assert labels and labels <= {_Flat.values.index(v) + 1 for v in values}
    assert type(wrap_mixing(_Flat(), tiny_config())) is _Flat  # switched off: unwrapped


def _recipe(cfg: dict, work_dir: str = "unused") -> Recipe:
    return Recipe(cfg, work_dir, DistInfo(0, 1, 0, torch.device("cpu")), use_tqdm=False)


def test_copy_paste_options_reach_the_training_transforms() -> None:
    # background 40, one 6 x 4 object of value 200; the config's options (one copy, no
    # jitter, feather 1) reach the pasted pixels: border ring rint(0.5 * 40 + 0.5 * 200)
    # = 120, inside 200 (edge_alpha arithmetic in tests/data/test_copy_paste.py)
    options = {"num_copies": 1, "scale_jitter": 0.0, "feather": 1, "seed": 0}
    cfg = tiny_config(data={"img_size": 32,
                            "copy_paste": {"enabled": True, "options": options}})
    pipeline, _ = _recipe(cfg).build_transforms()
    pipeline.to_tensor = False
    image = np.full((32, 32, 3), 40, np.uint8)
    image[4:8, 4:10] = 200
    target = {"boxes": np.array([[4, 4, 10, 8]], np.float32), "labels": np.array([1])}
    out_img, out = pipeline(image, target)
    assert len(out["boxes"]) == 2
    x1, y1, x2, y2 = np.asarray(out["boxes"][1]).astype(int)
    expected = np.full((4, 6, 3), 120, np.uint8)
    expected[1:3, 1:5] = 200
    np.testing.assert_array_equal(out_img[y1:y2, x1:x2], expected)
    off, _ = _recipe(tiny_config()).build_transforms()
    assert off.steps_after == []  # switched off: no paste step


def test_copy_paste_is_seeded_from_the_config_seed() -> None:
    def paste_step(seed: int):
        cfg = tiny_config(seed=seed, data={"copy_paste": {"enabled": True, "options": {}}})
        (step,) = _recipe(cfg).build_transforms()[0].steps_after
        return step

    # the config seed + 2 (the albumentations step has the seed itself)
    assert paste_step(5).rng.seed == 7 and paste_step(6).rng.seed == 8
    draws = [paste_step(5).rng.get().integers(0, 2**31, 4).tolist() for _ in range(2)]
    assert draws[0] == draws[1]  # the same config gives the same stream


def test_copy_paste_bank_source_is_collected_from_the_training_set(tmp_path) -> None:
    # every synthetic object is 10-14 px (area < 196 < max_area 400): all are bank material
    cfg = tiny_config(data={
        "synthetic": {"enabled": True, "out_dir": str(tmp_path / "syn"), "num_images": 6,
                      "image_size": 64, "side_range": [10, 14], "max_objects": 3},
        "img_size": 64, "copy_paste": {"enabled": True, "options": {
            "source": "bank", "max_area": 400.0, "bank_items": 4, "num_copies": 1}}})
    train, _ = _recipe(cfg).build_datasets()
    (step,) = train.transforms.steps_after
    assert step.source == "bank" and len(step.bank) == 4  # capped by bank_items
    assert all(max(p.pixels.shape[:2]) <= 15 for p in step.bank.patches)
    image, target = train[0]
    assert image.shape == (3, 64, 64) and step.pasted >= 1


@pytest.mark.faults
def test_a_different_synthetic_set_in_out_dir_is_refused(tmp_path) -> None:
    """Issue 13: asked for 400 images at 256 px, trained silently on an old 32 at 128."""
    from detkit.config import defaults, merge
    from detkit.engine.build import prepare_synthetic

    def cfg(n: int, size: int) -> dict:
        return merge(defaults(), {"data": {"synthetic": {
            "enabled": True, "out_dir": str(tmp_path / "syn"), "num_images": n,
            "image_size": size}}})

    data = prepare_synthetic(cfg(10, 64))  # generates: 8 train + 2 val images
    assert Path(data["train"]["ann_file"]).is_file()
    prepare_synthetic(cfg(10, 64))  # the same request reuses it
    with pytest.raises(ValueError, match="holds a synthetic set of 10 images at 64 px .*asks "
                                         "for 12 images at 96 px"):
        prepare_synthetic(cfg(12, 96))


def test_synthetic_data_is_reused_only_with_the_same_settings(tmp_path) -> None:
    syn = {"enabled": True, "out_dir": str(tmp_path / "syn"), "num_images": 5,
           "image_size": 48, "classes": ["circle", "square"], "max_objects": 2}
    cfg = merge(defaults(), {"data": {"synthetic": syn}})
    data = prepare_synthetic(cfg)
    train = json.loads((tmp_path / "syn" / "train.json").read_text())
    assert data["val"]["ann_file"] == str(tmp_path / "syn" / "val.json")
    assert [c["name"] for c in train["categories"]] == ["circle", "square"]
    stamp = (tmp_path / "syn" / "train.json").stat().st_mtime_ns
    prepare_synthetic(cfg)  # same settings: reused, not rewritten
    assert (tmp_path / "syn" / "train.json").stat().st_mtime_ns == stamp
    other = merge(cfg, {"data": {"synthetic": {"classes": ["star"], "max_visible_loss": 0.2}}})
    # other style settings: refused and named, the existing set is left as it is
    with pytest.raises(ValueError, match="classes, max_visible_loss differ"):
        prepare_synthetic(other)
    assert (tmp_path / "syn" / "train.json").stat().st_mtime_ns == stamp
    assert evaluation_split(cfg) == ("val", str(tmp_path / "syn" / "val.json"),
                                     str(tmp_path / "syn"))
