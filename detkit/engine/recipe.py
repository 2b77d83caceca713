"""The training recipe: one small object whose ``build_*`` methods assemble a run.

:class:`Recipe` turns a resolved config into a :class:`~detkit.engine.trainer.Trainer`. Each
part has its own method, so a user changes one part by overriding one method, with no
registry (compare detectron2's ``DefaultTrainer.build_*`` and YOLOX's ``Exp.get_*``)::

    class FrozenBackboneRecipe(Recipe):
        def build_optimizer(self, model):
            for p in model.backbone.parameters():
                p.requires_grad_(False)
            return super().build_optimizer(model)

    trainer = FrozenBackboneRecipe(cfg, "work_dirs/frozen", info).build_trainer()
    trainer.train()

The seams, in the order :meth:`Recipe.build_trainer` calls them (the order fixes the random
streams, so a run is reproducible from the config's seed):

* :meth:`~Recipe.build_datasets` -> (train, val), with :meth:`~Recipe.build_transforms`
  (augmentations, copy-paste, letterbox) and the mosaic / mixup wrappers;
* :meth:`~Recipe.build_model` (K from the training set), then the train loader;
* :meth:`~Recipe.build_optimizer` (linear LR scaling), :meth:`~Recipe.build_schedule`;
* :meth:`~Recipe.build_loss` (the model's own losses, wrapped for distillation);
* :meth:`~Recipe.build_evaluator` (periodic COCO evaluation of the val set);
* :meth:`~Recipe.build_hooks` (EMA, time budget, logging, checkpoints, evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detkit.engine import build as glue
from detkit.engine import distributed as du
from detkit.engine.budget import TimeBudget
from detkit.engine.distill import DistillationLoss, ModelLoss
from detkit.engine.ema import ModelEMA
from detkit.engine.evaluate import make_evaluator
from detkit.engine.hooks import Hook, default_hooks
from detkit.engine.optim import build_optimizer
from detkit.engine.schedules import IterationScheduler, ScheduleSpec, check_warmup, scaled_lr
from detkit.engine.trainer import Evaluator, Trainer, TrainerOptions

__all__ = ["Recipe"]


class Recipe:
    """Builds every part of a training run from ``cfg`` (see the module docstring).

    Args:
        cfg: a resolved config (:func:`detkit.config.load_config`).
        work_dir: where checkpoints and logs go.
        info: this process's rank, world size and device
            (:func:`detkit.engine.distributed.init_distributed`).
        use_tqdm: show a progress bar on rank 0.
    """

    def __init__(self, cfg: dict[str, Any], work_dir: str | Path, info: du.DistInfo,
                 use_tqdm: bool = True) -> None:
        self.cfg = cfg
        self.work_dir = Path(work_dir)
        self.info = info
        self.use_tqdm = use_tqdm

    # ----------------------------------------------------------------- data
    def build_transforms(self, train_set: Any = None) -> tuple[Any, Any]:
        """(train, val) transforms: ``data.transforms`` + copy-paste + letterbox, and the
        letterbox alone. ``train_set`` (with ``load_raw``) feeds a copy-paste bank."""
        from detkit.data.copy_paste import build_copy_paste
        from detkit.data.transforms import build_transforms

        data, seed = self.cfg["data"], self.cfg["seed"]
        size = data["img_size"]
        after = []
        if data["copy_paste"]["enabled"]:
            after.append(build_copy_paste(data["copy_paste"]["options"], seed, train_set, size))
        train_tf = build_transforms(data["transforms"], size, train=True, seed=seed, after=after)
        return train_tf, build_transforms(None, size, train=False)

    def build_datasets(self) -> tuple[Any, Any | None]:
        """Train and (optional) val ``CocoDetection``, with transforms, mosaic and mixup."""
        from detkit.data.coco import CocoDetection

        cfg = self.cfg
        data = glue.prepare_synthetic(cfg) if cfg["data"]["synthetic"]["enabled"] else cfg["data"]
        if not data["train"]["ann_file"]:
            raise ValueError("config key 'data.train.ann_file' is required "
                             "(or set data.synthetic.enabled=true)")
        full = cfg["data"]["full_decode"]
        train = CocoDetection(data["train"]["ann_file"], data["train"]["img_dir"], None,
                              full_decode=full, skip_unreadable=True)
        train.transforms, val_tf = self.build_transforms(train)
        train = glue.wrap_mixing(train, cfg)
        val = None
        if data["val"]["ann_file"]:
            val = CocoDetection(data["val"]["ann_file"], data["val"]["img_dir"], val_tf,
                                full_decode=full)
        return train, val

    # ----------------------------------------------------------------- model and optimization
    def build_model(self, num_classes: int | None) -> nn.Module:
        """The ``model`` section's detector for ``num_classes`` (from the training set),
        started from the weights of ``model.load_from`` when set (fine-tuning,
        :mod:`detkit.engine.finetune`; every key that did not load is printed)."""
        model = glue.build_model_from_cfg(self.cfg["model"], num_classes,
                                          self.cfg["train"]["label_smoothing"])
        load_from = self.cfg["model"].get("load_from")
        if load_from:
            from detkit.engine.finetune import load_detector_weights

            report = load_detector_weights(model, load_from)
            if self.info.is_main:
                print("\n".join(report.lines()), flush=True)
        return model

    def learning_rate(self) -> float:
        """``optim.base_lr``, linearly scaled to the total batch when ``optim.scale_lr``."""
        oc = self.cfg["optim"]
        total_batch = self.cfg["data"]["batch_size"] * self.info.world_size
        lr = oc["base_lr"]
        if oc["scale_lr"]:
            lr = scaled_lr(oc["base_lr"], total_batch, oc["base_batch_size"])
        if self.info.is_main:
            print(f"linear scaling rule: lr = {oc['base_lr']:g} x {total_batch} / "
                  f"{oc['base_batch_size']} = {lr:g}" if oc["scale_lr"] else
                  f"lr = {lr:g} (linear scaling off; total batch {total_batch})", flush=True)
        return lr

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The ``optim`` section's optimizer over ``model``'s parameters."""
        return build_optimizer(model, self.cfg["optim"], self.learning_rate())

    def build_schedule(self, optimizer: torch.optim.Optimizer, iters_per_epoch: int
                       ) -> tuple[IterationScheduler, ScheduleSpec, TimeBudget | None]:
        """(per-iteration LR scheduler, its spec, the time budget or None)."""
        spec = glue.schedule_spec(self.cfg, iters_per_epoch)
        minutes = self.cfg["schedule"].get("time_budget")
        # calibrate before the provisional length could end the run
        budget = (TimeBudget(minutes, calibrate_iters=max(1, min(20, spec.max_iters - 1)))
                  if minutes is not None else None)
        if budget is None and self.info.is_main:
            check_warmup(spec)
        return IterationScheduler(optimizer, spec), spec, budget

    def build_loss(self, model: nn.Module, num_classes: int | None) -> ModelLoss:
        """The training loss: the model's own, plus distillation when ``train.distill``."""
        dc = self.cfg["train"]["distill"]
        if not dc["enabled"]:
            return ModelLoss()
        teacher = glue.load_teacher(self.cfg, num_classes, self.info.device)
        return DistillationLoss(model, teacher, dc["weight"], dc["temperature"])

    # ----------------------------------------------------------------- evaluation and hooks
    def build_evaluator(self, val_set: Any | None) -> Evaluator | None:
        """``evaluate(model) -> metrics`` on ``val_set`` (None without a val split)."""
        return make_evaluator(val_set, self.cfg, self.info) if val_set is not None else None

    def build_ema(self, model: nn.Module) -> ModelEMA | None:
        """The weight average of ``train.ema`` (built after the DDP wrap), or None."""
        ec = self.cfg["train"]["ema"]
        return ModelEMA(model, ec["decay"], ec["tau"]) if ec["enabled"] else None

    def build_hooks(self, ema: ModelEMA | None, budget: TimeBudget | None) -> list[Hook]:
        """EMA, time budget, logging, checkpoint and evaluation hooks, in that order."""
        tc = self.cfg["train"]
        return default_hooks(ema, budget, tc["log_interval"], tc["checkpoint_interval"],
                             self.cfg["eval"]["interval"], tc["early_stop"]["patience"],
                             tc["early_stop"]["metric"])

    def build_batch_transform(self) -> Any:
        """The multi-scale resizer of ``data.multiscale`` (applied per batch), or None; with
        SNIP's ``valid_ranges`` when the config sets them."""
        ms = self.cfg["data"]["multiscale"]
        if not ms["enabled"]:
            return None
        from detkit.data.multiscale import MultiScaleResizer

        return MultiScaleResizer(ms["sizes"], seed=self.cfg["seed"], every=ms["every"],
                                 valid_ranges=ms.get("valid_ranges") or None)

    # ----------------------------------------------------------------- assembly
    def build_trainer(self, model: nn.Module | None = None,
                      datasets: Sequence[Any] | None = None) -> Trainer:
        """Assemble the run. ``model`` / ``datasets`` (train, val) may be passed in (e.g. a
        torchvision detector); otherwise they come from the seams above."""
        cfg, info = self.cfg, self.info
        if model is None:
            glue.check_model_keys(cfg["model"])
            load_from = cfg["model"].get("load_from")
            if load_from and not Path(load_from).is_file():  # before any data is prepared
                raise FileNotFoundError(f"model.load_from: checkpoint {load_from} not found")
        train_set, val_set = datasets if datasets is not None else self.build_datasets()
        num_classes = getattr(glue.base_dataset(train_set), "num_classes", None)
        if model is None:
            model = self.build_model(num_classes)
        model = model.to(info.device)
        if cfg["train"]["sync_bn"] and info.world_size > 1:
            model = du.convert_sync_bn(model, info.device)
        loader = glue.build_train_loader(train_set, cfg, info)
        iters_per_epoch = len(loader.batch_sampler)
        optimizer = self.build_optimizer(model)
        scheduler, spec, budget = self.build_schedule(optimizer, iters_per_epoch)
        loss = self.build_loss(model, num_classes)
        model = du.wrap_ddp(model, info, cfg["train"]["find_unused_parameters"])
        # after the DDP wrap, which broadcast rank 0's weights: every rank's EMA starts equal
        ema = self.build_ema(model)
        evaluator = self.build_evaluator(val_set)
        batch_transform = self.build_batch_transform()
        tc = cfg["train"]
        if tc["amp"] and info.device.type != "cuda" and info.is_main:
            print("train.amp=true: mixed precision runs on CUDA only; this CPU run uses "
                  "float32", flush=True)
        options = TrainerOptions(
            max_iters=spec.max_iters, iters_per_epoch=iters_per_epoch, amp=tc["amp"],
            clip_grad_norm=cfg["optim"]["clip_grad_norm"], max_nonfinite=tc["max_nonfinite"],
            use_tqdm=self.use_tqdm, seed=cfg["seed"], time_budget=budget)
        return Trainer(model, optimizer, scheduler, loader, options, self.work_dir, config=cfg,
                       device=info.device, ema=ema, evaluator=evaluator, loss=loss,
                       batch_transform=batch_transform, hooks=self.build_hooks(ema, budget))
