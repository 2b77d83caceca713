"""Glue from a resolved config to data, loaders, model, teacher, schedule and evaluator.

The functions the :class:`~detkit.engine.recipe.Recipe` seams call; :func:`build_trainer` is
the default recipe's one-call form.

The heavy modules (data, models, evaluation) are imported inside the functions, so that
``detkit.engine`` stays importable on its own and ``tools/train.py`` rejects a bad config
before importing anything large.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from detkit.data.sampling import ResumableBatchSampler
from detkit.engine import distributed as du
from detkit.engine.schedules import ScheduleSpec, warmup_iterations


def prepare_synthetic(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Generate the synthetic COCO data set of ``data.synthetic`` (rank 0; others wait).

    A set already in ``out_dir`` is reused only when it is the one asked for (image
    count, size, seed and the recorded style settings); otherwise ValueError says what is
    there and what was asked, and nothing is overwritten. Returns the ``data`` section with
    ``train``/``val`` pointing at the generated files.
    """
    import json

    from detkit.data.synthetic import (
        CLASSES,
        SyntheticStyle,
        generate_synthetic_coco,
        synthetic_set_mismatch,
        synthetic_settings,
    )

    syn = cfg["data"]["synthetic"]
    out = Path(syn["out_dir"])
    side = syn.get("side_range") or None
    if side is not None and len(side) != 2:
        raise ValueError(f"data.synthetic.side_range must be [min, max] pixels, got {side}")
    style = SyntheticStyle(classes=tuple(syn.get("classes") or CLASSES),
                           max_objects=syn.get("max_objects", 10),
                           side_range=None if side is None else (float(side[0]), float(side[1])),
                           clutter=syn.get("clutter", True),
                           textures=syn.get("textures", True),
                           max_visible_loss=syn.get("max_visible_loss", 0.5))
    wanted = synthetic_settings(syn["num_images"], syn["image_size"], cfg["seed"], style)
    train_json = out / "train.json"
    if du.is_main_process() and not train_json.is_file():
        generate_synthetic_coco(out, num_images=syn["num_images"],
                                image_size=syn["image_size"], seed=cfg["seed"], style=style,
                                workers=2 if syn["num_images"] >= 200 else 1)
    du.barrier()
    problem = synthetic_set_mismatch(out, syn["num_images"], syn["image_size"], cfg["seed"])
    found = json.loads(train_json.read_text()).get("info", {}).get("detkit_synthetic")
    if problem is None and found != wanted:
        changed = sorted(k for k in wanted if (found or {}).get(k) != wanted[k])
        problem = (f"{out} already holds a synthetic set made with other settings "
                   f"({', '.join(changed)} differ from the config's)")
    if problem:  # reusing it would train on other data than the config says
        raise ValueError(f"{problem}. Use another data.synthetic.out_dir, or delete {out} "
                         f"to generate the requested set there")
    data = dict(cfg["data"])
    data["train"] = {"ann_file": str(out / "train.json"), "img_dir": str(out)}
    data["val"] = {"ann_file": str(out / "val.json"), "img_dir": str(out)}
    return data


def evaluation_split(cfg: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """(split name, annotation file, image folder) a checkpoint is evaluated on:
    ``test.ann_file`` if set, else ``data.val`` (generated first for synthetic data)."""
    test = cfg.get("test") or {}
    if test.get("ann_file"):
        return "test", test["ann_file"], test.get("img_dir")
    data = cfg["data"]
    if data["synthetic"]["enabled"]:
        data = prepare_synthetic(cfg)
    if not data["val"]["ann_file"]:
        raise ValueError("nothing to evaluate: set test.ann_file or data.val.ann_file")
    return "val", data["val"]["ann_file"], data["val"]["img_dir"]


def wrap_mixing(dataset: Any, cfg: Mapping[str, Any]) -> Any:
    """Mosaic and/or visually coherent mixup wrappers, as switched on in ``data``."""
    data = cfg["data"]
    if data["mosaic"]["enabled"]:
        from detkit.data.mosaic import MosaicDataset

        dataset = MosaicDataset(dataset, output_size=data["img_size"],
                                p=data["mosaic"]["prob"], beta=data["mosaic"]["beta"],
                                seed=cfg["seed"])
    if data["mixup"]["enabled"]:
        from detkit.data.mixup import MixupDataset

        dataset = MixupDataset(dataset, p=data["mixup"]["prob"], alpha=data["mixup"]["alpha"],
                               seed=cfg["seed"] + 1)
    return dataset


def base_dataset(dataset: Any) -> Any:
    """The dataset inside the mosaic / mixup wrappers (their ``dataset`` chain)."""
    while hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return dataset


def build_train_sampler(dataset: Any, cfg: Mapping[str, Any], info: du.DistInfo) -> Sampler:
    """Seeded ``DistributedSampler``, or the small-object oversampler when enabled."""
    over = cfg["data"]["oversample"]
    if over["enabled"]:
        from detkit.data.sampling import SmallObjectOversampler, small_object_counts_from_coco

        base = base_dataset(dataset)
        counts = small_object_counts_from_coco(base.coco.dataset, base.ids,
                                               cfg["data"]["img_size"], over["max_area"])
        return SmallObjectOversampler(counts, repeat=over["repeat"], seed=cfg["seed"],
                                      num_replicas=info.world_size, rank=info.rank)
    return DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                              shuffle=True, seed=cfg["seed"], drop_last=False)


def build_train_loader(dataset: Any, cfg: Mapping[str, Any], info: du.DistInfo,
                       collate_fn: Any = None) -> DataLoader:
    """Loader with a seeded (distributed) sampler, resumable batches and its own generator."""
    if collate_fn is None:
        from detkit.data.collate import collate_detection as collate_fn
    sampler = build_train_sampler(dataset, cfg, info)
    batches = ResumableBatchSampler(sampler, cfg["data"]["batch_size"], drop_last=True)
    if len(batches) == 0:
        raise ValueError(f"{len(dataset)} training images give no full batch of "
                         f"{cfg['data']['batch_size']} per process; lower data.batch_size")
    generator = torch.Generator()
    generator.manual_seed(cfg["seed"])
    workers = cfg["data"]["num_workers"]
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn,
                      num_workers=workers, generator=generator,
                      pin_memory=info.device.type == "cuda")


def build_model_from_cfg(model_cfg: Mapping[str, Any], num_classes: int,
                         label_smoothing: float = 0.0) -> nn.Module:
    """``build_model`` on the model section, with ``num_classes`` filled from the data.
    ``model.load_from`` (fine-tuning weights) is not a builder argument: only
    :meth:`detkit.engine.recipe.Recipe.build_model` applies it (:mod:`detkit.engine.finetune`)."""
    from detkit.models.build import build_model

    mcfg = dict(model_cfg)
    mcfg.pop("load_from", None)
    if mcfg.setdefault("num_classes", num_classes) != num_classes:
        raise ValueError(f"model.num_classes={mcfg['num_classes']} but the training data has "
                         f"{num_classes} classes")
    if label_smoothing > 0:
        import inspect

        from detkit.models.build import model_builder

        if "label_smoothing" not in inspect.signature(model_builder(mcfg["type"])).parameters:
            raise ValueError(f"train.label_smoothing={label_smoothing} is not supported by model "
                             f"type {mcfg['type']!r} (it has no softmax classification loss); "
                             f"set train.label_smoothing=0")
        mcfg["label_smoothing"] = label_smoothing
    return build_model(mcfg)


def check_model_keys(model_cfg: Mapping[str, Any]) -> None:
    """Reject unknown model keys before any data is prepared (``build_model`` checks again)."""
    from detkit.models.build import unknown_model_key

    # model.load_from (fine-tuning weights) is the recipe's, not a builder argument
    unknown = unknown_model_key({k: v for k, v in model_cfg.items() if k != "load_from"})
    if unknown is not None:
        key, near = unknown
        hint = f"; did you mean 'model.{near}'?" if near else ""
        raise ValueError(f"unknown config key 'model.{key}' for model type "
                         f"{model_cfg['type']!r}{hint}")


def load_teacher(cfg: Mapping[str, Any], num_classes: int, device: torch.device) -> nn.Module:
    """Teacher for distillation: its own config's model section and checkpoint weights."""
    from detkit.config import load_config
    from detkit.engine.checkpoint import load_checkpoint
    from detkit.engine.inference import state_dict_from_checkpoint

    dcfg = cfg["train"]["distill"]
    if not dcfg["teacher_config"] or not dcfg["teacher_checkpoint"]:
        raise ValueError("train.distill.enabled needs train.distill.teacher_config and "
                         "train.distill.teacher_checkpoint")
    tcfg = load_config(dcfg["teacher_config"])
    teacher = build_model_from_cfg(tcfg["model"], num_classes)
    state, _ = state_dict_from_checkpoint(load_checkpoint(dcfg["teacher_checkpoint"]))
    teacher.load_state_dict(state)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.to(device).eval()


def schedule_spec(cfg: Mapping[str, Any], iters_per_epoch: int) -> ScheduleSpec:
    """ScheduleSpec in iterations (milestones and ``warmup_epochs`` given in epochs are
    converted). With ``schedule.time_budget`` this is the provisional length until the
    trainer has timed its first iterations (:mod:`detkit.engine.budget`)."""
    sch = cfg["schedule"]
    max_iters = sch["max_iters"] or sch["epochs"] * iters_per_epoch
    warmup = warmup_iterations(sch["warmup_iters"], sch.get("warmup_epochs"), iters_per_epoch,
                               sch.get("warmup_fraction"), max_iters)
    return ScheduleSpec(max_iters=max_iters, warmup=sch["warmup"],
                        warmup_iters=warmup, warmup_factor=sch["warmup_factor"],
                        decay=sch["decay"],
                        milestones=tuple(m * iters_per_epoch for m in sch["milestones"]),
                        gamma=sch["gamma"], min_lr_ratio=sch["min_lr_ratio"])


def build_trainer(cfg: dict[str, Any], work_dir: str | Path, info: du.DistInfo,
                  model: nn.Module | None = None, datasets: Sequence[Any] | None = None,
                  use_tqdm: bool = True) -> Any:
    """The :class:`~detkit.engine.trainer.Trainer` of ``cfg``, assembled by the default
    :class:`~detkit.engine.recipe.Recipe`. ``model`` / ``datasets`` (train, val) may be
    passed in (e.g. a torchvision detector); otherwise they are built from the config."""
    from detkit.engine.recipe import Recipe

    return Recipe(cfg, work_dir, info, use_tqdm).build_trainer(model, datasets)
