"""Resumable batch sampler, evaluation shards and config -> schedule glue."""

from __future__ import annotations

import json

from torch.utils.data import DistributedSampler

from detkit.config import defaults, merge
from detkit.engine.build import (
    ResumableBatchSampler,
    ShardSampler,
    evaluation_split,
    prepare_synthetic,
    schedule_spec,
)


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


def test_schedule_spec_from_config() -> None:
    cfg = merge(defaults(), {"schedule": {"epochs": 12, "milestones": [8, 11],
                                          "decay": "step", "warmup_iters": 50}})
    spec = schedule_spec(cfg, iters_per_epoch=100)
    assert spec.max_iters == 1200  # 12 epochs * 100
    assert tuple(spec.milestones) == (800, 1100)
    cfg = merge(cfg, {"schedule": {"max_iters": 30}})
    assert schedule_spec(cfg, iters_per_epoch=100).max_iters == 30


def test_label_smoothing_switch_reaches_the_model() -> None:
    import pytest

    from detkit.engine.build import build_model_from_cfg

    pytest.importorskip("detkit.models.build")
    with pytest.raises(ValueError, match="not supported by model type 'dense_detector'"):
        build_model_from_cfg({"type": "dense_detector"}, 3, label_smoothing=0.1)
    with pytest.raises(ValueError, match="model.num_classes=5 but the training data has 3"):
        build_model_from_cfg({"type": "dense_detector", "num_classes": 5}, 3)


def test_evaluator_undoes_img_scale_oracle_gets_ap_one(tmp_path) -> None:
    import torch

    from detkit.data import generate_synthetic_coco
    from detkit.data.coco import CocoDetection
    from detkit.data.transforms import build_transforms
    from detkit.engine.build import make_evaluator
    from detkit.engine.distributed import DistInfo

    paths = generate_synthetic_coco(tmp_path, num_images=10, image_size=64, seed=1)
    # letterbox 64 -> 96: img_scale 1.5, so boxes must be divided by 1.5 for COCO results
    val = CocoDetection(paths["val"], tmp_path, build_transforms(None, 96, train=False))
    expected = [val[i][1] for i in range(len(val))]
    assert expected[0]["img_scale"] == 1.5

    class Oracle(torch.nn.Module):
        """Returns each val image's ground truth (loader order) with score 1."""

        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, images):
            out = []
            for _ in images:
                t = expected[self.calls]
                self.calls += 1
                out.append({"boxes": t["boxes"], "labels": t["labels"],
                            "scores": torch.ones(len(t["labels"]))})
            return out

    cfg = merge(defaults(), {"eval": {"batch_size": 2}, "data": {"num_workers": 0}})
    evaluate = make_evaluator(val, cfg, DistInfo(0, 1, 0, torch.device("cpu")))
    metrics = evaluate(Oracle())
    assert abs(metrics["AP"] - 1.0) < 1e-9  # perfect detections -> COCO AP 1


def test_shipped_model_sections_have_valid_keys() -> None:
    from pathlib import Path

    import pytest

    pytest.importorskip("detkit.models.build")
    from detkit.config import load_config
    from detkit.engine.build import check_model_keys

    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert len(configs) >= 7
    for path in configs:
        check_model_keys(load_config(path)["model"])
    with pytest.raises(ValueError, match="did you mean 'model.use_cem'"):
        check_model_keys({"type": "thundernet_lite", "use_cemm": True})


def test_synthetic_data_is_regenerated_when_its_settings_change(tmp_path) -> None:
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
    cfg["data"]["synthetic"]["classes"] = ["star"]
    cfg["data"]["synthetic"]["max_visible_loss"] = 0.2
    prepare_synthetic(cfg)  # other settings: regenerated
    train = json.loads((tmp_path / "syn" / "train.json").read_text())
    assert [c["name"] for c in train["categories"]] == ["star"]
    assert train["info"]["detkit_synthetic"]["max_visible_loss"] == 0.2
    assert evaluation_split(cfg) == ("val", str(tmp_path / "syn" / "val.json"),
                                     str(tmp_path / "syn"))
