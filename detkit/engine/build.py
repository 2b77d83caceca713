"""Glue from a resolved config to dataset, loaders, model, optimizer, scheduler and trainer.

The heavy modules (data, models, evaluation) are imported inside the functions, so that
``detkit.engine`` stays importable on its own and ``tools/train.py`` rejects a bad config
before importing anything large.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from detkit.engine import distributed as du
from detkit.engine.budget import TimeBudget
from detkit.engine.ema import ModelEMA
from detkit.engine.optim import build_optimizer
from detkit.engine.schedules import (
    IterationScheduler,
    ScheduleSpec,
    check_warmup,
    scaled_lr,
    warmup_iterations,
)
from detkit.engine.trainer import Trainer, TrainerOptions


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of a per-epoch deterministic sampler, able to start at batch ``start_batch``.

    ``set_epoch(epoch, start_batch)`` forwards the epoch to the inner sampler (whose order must
    depend only on its seed and the epoch, like ``DistributedSampler``) and skips the first
    ``start_batch`` batches without loading them: the resume path of a mid-epoch checkpoint.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool = True) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order and the first batch to yield."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[list[int]]:
        indices = list(iter(self.sampler))
        n = len(self)
        for b in range(self.start_batch, n):
            yield indices[b * self.batch_size:(b + 1) * self.batch_size]

    def __len__(self) -> int:
        size = len(self.sampler)
        return size // self.batch_size if self.drop_last else math.ceil(size / self.batch_size)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` of ``range(size)``: each image exactly once overall."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, size, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _transform_list(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    steps = [dict(s) for s in cfg["data"]["transforms"]]
    cp = cfg["data"]["copy_paste"]
    if cp["enabled"]:
        steps.append({"type": "SmallObjectCopyPaste", **cp["options"]})
    return steps


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


def _wrap_mixing(dataset: Any, cfg: Mapping[str, Any]) -> Any:
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


def build_datasets(cfg: Mapping[str, Any]) -> tuple[Any, Any | None]:
    """Train and (optional) val ``CocoDetection`` with transforms, mosaic and mixup."""
    from detkit.data.coco import CocoDetection
    from detkit.data.transforms import build_transforms

    data = prepare_synthetic(cfg) if cfg["data"]["synthetic"]["enabled"] else cfg["data"]
    if not data["train"]["ann_file"]:
        raise ValueError("config key 'data.train.ann_file' is required "
                         "(or set data.synthetic.enabled=true)")
    size = cfg["data"]["img_size"]
    train_tf = build_transforms(_transform_list(cfg), size, train=True, seed=cfg["seed"])
    full = cfg["data"]["full_decode"]
    train = CocoDetection(data["train"]["ann_file"], data["train"]["img_dir"], train_tf,
                          full_decode=full, skip_unreadable=True)
    train = _wrap_mixing(train, cfg)
    val = None
    if data["val"]["ann_file"]:
        val_tf = build_transforms(None, size, train=False)
        val = CocoDetection(data["val"]["ann_file"], data["val"]["img_dir"], val_tf,
                            full_decode=full)
    return train, val


def _base_dataset(dataset: Any) -> Any:
    while hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return dataset


def build_train_sampler(dataset: Any, cfg: Mapping[str, Any], info: du.DistInfo) -> Sampler:
    """Seeded ``DistributedSampler``, or the small-object oversampler when enabled."""
    over = cfg["data"]["oversample"]
    if over["enabled"]:
        from detkit.data.sampling import SmallObjectOversampler, small_object_counts_from_coco

        base = _base_dataset(dataset)
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
    :func:`build_trainer` applies it (:mod:`detkit.engine.finetune`)."""
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
    import difflib
    import inspect

    from detkit.models.build import model_builder

    params = inspect.signature(model_builder(model_cfg["type"])).parameters
    for key in model_cfg:
        if key not in ("type", "load_from") and key not in params:
            near = difflib.get_close_matches(key, list(params), n=1, cutoff=0.5)
            hint = f"; did you mean 'model.{near[0]}'?" if near else ""
            raise ValueError(f"unknown config key 'model.{key}' for model type "
                             f"{model_cfg['type']!r}{hint}")


def make_evaluator(dataset: Any, cfg: Mapping[str, Any], info: du.DistInfo,
                   collate_fn: Any = None) -> Any:
    """Return ``evaluate(model) -> metrics``: sharded inference, gathered results, COCO AP."""
    from detkit.evaluation import (
        all_gather_results,
        detections_to_coco_results,
        evaluate_detections,
    )

    if collate_fn is None:
        from detkit.data.collate import collate_detection as collate_fn
    sampler = ShardSampler(len(dataset), info.rank, info.world_size)
    loader = DataLoader(dataset, batch_size=cfg["eval"]["batch_size"], sampler=sampler,
                        collate_fn=collate_fn, num_workers=cfg["data"]["num_workers"])

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        results: list[dict[str, Any]] = []
        for images, targets in loader:
            outputs = model([im.to(info.device) for im in images])
            outputs = [{k: v.cpu() for k, v in o.items()} for o in outputs]
            results.extend(detections_to_coco_results(outputs, targets,
                                                      dataset.label_to_cat_id))
        results = all_gather_results(results)
        payload: list[Any] = [None]
        if du.is_main_process():
            res = evaluate_detections(dataset.coco.dataset, results)
            payload = [{k: float(v) for k, v in res.metrics.items()}]
        if du.is_dist():
            dist.broadcast_object_list(payload, src=0)
        model.train(was_training)
        return payload[0]

    return evaluate


def load_teacher(cfg: Mapping[str, Any], num_classes: int, device: torch.device) -> nn.Module:
    """Teacher for distillation: its own config's model section and checkpoint weights."""
    from detkit.config import load_config
    from detkit.engine.checkpoint import load_checkpoint

    dcfg = cfg["train"]["distill"]
    if not dcfg["teacher_config"] or not dcfg["teacher_checkpoint"]:
        raise ValueError("train.distill.enabled needs train.distill.teacher_config and "
                         "train.distill.teacher_checkpoint")
    tcfg = load_config(dcfg["teacher_config"])
    teacher = build_model_from_cfg(tcfg["model"], num_classes)
    ckpt = load_checkpoint(dcfg["teacher_checkpoint"])
    state = ckpt["ema"]["module"] if ckpt.get("ema") else ckpt["model"]
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


def build_trainer(cfg: Mapping[str, Any], work_dir: str | Path, info: du.DistInfo,
                  model: nn.Module | None = None, datasets: Sequence[Any] | None = None,
                  use_tqdm: bool = True) -> Trainer:
    """Assemble everything for :class:`Trainer` from a resolved config.

    ``model`` / ``datasets`` (train, val) may be passed in (e.g. a torchvision detector);
    otherwise they are built from the config.
    """
    load_from = cfg["model"].get("load_from")
    if model is None:
        check_model_keys(cfg["model"])
        if load_from and not Path(load_from).is_file():  # before any data is prepared
            raise FileNotFoundError(f"model.load_from: checkpoint {load_from} not found")
    train_set, val_set = datasets if datasets is not None else build_datasets(cfg)
    num_classes = getattr(_base_dataset(train_set), "num_classes", None)
    if model is None:
        model = build_model_from_cfg(cfg["model"], num_classes, cfg["train"]["label_smoothing"])
        if load_from:
            from detkit.engine.finetune import load_detector_weights

            report = load_detector_weights(model, load_from)
            if info.is_main:
                print("\n".join(report.lines()), flush=True)
    model = model.to(info.device)
    if cfg["train"]["sync_bn"] and info.world_size > 1:
        model = du.convert_sync_bn(model, info.device)
    loader = build_train_loader(train_set, cfg, info)
    total_batch = cfg["data"]["batch_size"] * info.world_size
    oc = cfg["optim"]
    lr = oc["base_lr"]
    if oc["scale_lr"]:
        lr = scaled_lr(oc["base_lr"], total_batch, oc["base_batch_size"])
    if info.is_main:
        print(f"linear scaling rule: lr = {oc['base_lr']:g} x {total_batch} / "
              f"{oc['base_batch_size']} = {lr:g}" if oc["scale_lr"] else
              f"lr = {lr:g} (linear scaling off; total batch {total_batch})", flush=True)
    optimizer = build_optimizer(model, oc, lr)
    spec = schedule_spec(cfg, len(loader.batch_sampler))
    budget_min = cfg["schedule"].get("time_budget")
    # calibrate before the provisional length could end the run
    budget = (TimeBudget(budget_min, calibrate_iters=max(1, min(20, spec.max_iters - 1)))
              if budget_min is not None else None)
    if budget is None and info.is_main:
        check_warmup(spec)
    scheduler = IterationScheduler(optimizer, spec)
    teacher = None
    if cfg["train"]["distill"]["enabled"]:
        teacher = load_teacher(cfg, num_classes, info.device)
    model = du.wrap_ddp(model, info, cfg["train"]["find_unused_parameters"])
    ema = None
    if cfg["train"]["ema"]["enabled"]:
        # After the DDP wrap, which broadcast rank 0's weights: every rank's EMA starts equal.
        ema = ModelEMA(model, cfg["train"]["ema"]["decay"], cfg["train"]["ema"]["tau"])
    evaluator = make_evaluator(val_set, cfg, info) if val_set is not None else None
    batch_transform = None
    if cfg["data"]["multiscale"]["enabled"]:
        from detkit.data.multiscale import MultiScaleResizer

        ms = cfg["data"]["multiscale"]
        batch_transform = MultiScaleResizer(ms["sizes"], seed=cfg["seed"], every=ms["every"])
    tc = cfg["train"]
    if tc["amp"] and info.device.type != "cuda" and info.is_main:
        print("train.amp=true: mixed precision runs on CUDA only; this CPU run uses float32",
              flush=True)
    options = TrainerOptions(
        max_iters=spec.max_iters, iters_per_epoch=len(loader.batch_sampler), amp=tc["amp"],
        clip_grad_norm=oc["clip_grad_norm"], max_nonfinite=tc["max_nonfinite"],
        log_interval=tc["log_interval"], checkpoint_interval=tc["checkpoint_interval"],
        eval_interval=cfg["eval"]["interval"], distill_weight=tc["distill"]["weight"],
        distill_temperature=tc["distill"]["temperature"], use_tqdm=use_tqdm, seed=cfg["seed"],
        time_budget=budget, early_stop_patience=tc["early_stop"]["patience"],
        best_metric=tc["early_stop"]["metric"])
    return Trainer(model, optimizer, scheduler, loader, options, work_dir, config=cfg,
                   device=info.device, ema=ema, evaluator=evaluator, teacher=teacher,
                   batch_transform=batch_transform)
