"""The training loop: AMP, clipping, non-finite guard, hooks, exact resume.

The loop body is forward (through the step's loss, :mod:`detkit.engine.distill`), backward,
clip, optimizer and scheduler step; everything around it (EMA, logging, checkpoints,
evaluation, the time budget) is a :class:`~detkit.engine.hooks.Hook` called before/after each
step and epoch.

The trainer accepts any model that follows torchvision's detection convention
(``model(images, targets) -> dict of scalar losses`` in train mode), torchvision's own
detectors included. Resume restores model, optimizer, scheduler, GradScaler, EMA, the data
position (epoch and batch inside it), the multi-scale resizer and RNG states (python, numpy,
torch, the loader generator, and the dataset's own generators when it offers
``state_dict``), so a killed run continues with the same losses step for step.

What holds: exact with ``num_workers=0`` on CPU in deterministic mode when every random
draw comes from those generators. A dataset whose augmentations own a private generator
without ``state_dict`` restarts that stream on resume (the batches are the same, their random
augmentation differs). With ``num_workers > 0`` the batch order and each epoch's worker
seeds are the same, and resuming at an epoch boundary is exact; resuming mid-epoch changes
the augmentation draws, because a worker's stream depends on the batches it has processed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from detkit.engine import distributed as du
from detkit.engine.budget import TimeBudget
from detkit.engine.checkpoint import (
    atomic_save,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
)
from detkit.engine.distill import ModelLoss
from detkit.engine.ema import ModelEMA, unwrap
from detkit.engine.hooks import Hook, default_hooks
from detkit.engine.logging import TrainLogger, plot_curves, truncate_jsonl
from detkit.engine.optim import clip_gradients
from detkit.engine.resume import (
    check_optimizer_type,
    load_model_weights,
    load_optimizer_keeping_settings,
)
from detkit.engine.schedules import IterationScheduler

Evaluator = Callable[[nn.Module], Mapping[str, float]]


class NonFiniteLossError(RuntimeError):
    """Raised after ``max_nonfinite`` consecutive non-finite losses."""


@dataclass
class TrainerOptions:
    """Loop settings (from the config's ``train``/``schedule``/``eval`` sections)."""

    max_iters: int
    iters_per_epoch: int
    amp: bool = False
    clip_grad_norm: float = 0.0
    max_nonfinite: int = 5
    use_tqdm: bool = True
    seed: int = 0
    # schedule.time_budget: the run's length follows the measured time (engine/budget.py)
    time_budget: TimeBudget | None = None


@dataclass
class TrainState:
    """Position and counters saved in checkpoints (primitives only)."""

    epoch: int = 0
    iter_in_epoch: int = 0
    global_iter: int = 0
    best_ap: float = -1.0
    nonfinite_total: int = 0
    nonfinite_streak: int = 0
    # training-loop seconds so far (evaluation and checkpoint writes excluded)
    train_seconds: float = 0.0
    # evaluations since best_ap (the best value of train.early_stop.metric) last improved
    evals_since_best: int = 0


def _to_device(images: list[torch.Tensor], targets: list[dict[str, Any]],
               device: torch.device) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    imgs = [im.to(device, non_blocking=True) for im in images]
    tgts = [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
             for k, v in t.items()} for t in targets]
    return imgs, tgts


class Trainer:
    """Runs training for ``options.max_iters`` iterations over ``loader``.

    ``loader.batch_sampler`` must offer ``set_epoch(epoch, start_batch)`` (see
    :class:`detkit.data.sampling.ResumableBatchSampler`) and ``loader.generator`` must be a
    dedicated ``torch.Generator`` so the data order is a pure function of (seed, epoch).

    ``loss`` computes a step's losses (default: the model's own, :class:`ModelLoss`);
    ``hooks`` run around steps and epochs (default: :func:`detkit.engine.hooks.default_hooks`
    with logging every 10 steps, no step checkpoints, evaluation every epoch). ``ema`` is
    the weight average evaluated and checkpointed; its updates come from an
    :class:`~detkit.engine.hooks.EMAHook`.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: IterationScheduler, loader: DataLoader, options: TrainerOptions,
                 work_dir: str | Path, config: Mapping[str, Any] | None = None,
                 device: torch.device | str = "cpu", ema: ModelEMA | None = None,
                 evaluator: Evaluator | None = None, loss: ModelLoss | None = None,
                 batch_transform: Any = None, hooks: list[Hook] | None = None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loader = loader
        self.options = options
        self.work_dir = Path(work_dir)
        self.config = dict(config or {})
        self.device = torch.device(device)
        self.ema = ema
        self.evaluator = evaluator
        self.loss = loss if loss is not None else ModelLoss()
        self.hooks = list(hooks) if hooks is not None else default_hooks(ema, None, 10, 0, 1)
        # Optional stateful batch transform (multi-scale resizer) with state_dict().
        self.batch_transform = batch_transform
        self.state = TrainState()
        self.amp = options.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.is_main = du.is_main_process()
        self._epoch_loader_state: torch.Tensor | None = None
        self.logger: TrainLogger | None = None
        self.last_lr = 0.0  # the learning rate of the latest step (read by the logging hook)
        self.images_per_s = 0.0  # throughput of the latest step, all ranks together
        self.epoch_complete = False  # True in after_epoch hooks when the loader ran out

    # ----------------------------------------------------------------- checkpoints
    def checkpoint_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as tensors and primitives (weights_only-loadable)."""
        rng = capture_rng_state(self._epoch_loader_state)
        if du.is_dist():
            gathered: list[Any] = [None] * du.get_world_size()
            dist.all_gather_object(gathered, rng)
            rng_list = gathered
        else:
            rng_list = [rng]
        sampler = getattr(self.loader.batch_sampler, "sampler", None)
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "trainer": asdict(self.state),
            "sampler": sampler.state_dict() if hasattr(sampler, "state_dict") else None,
            # Random state of the dataset's own augmentation generators, when it exposes one.
            "dataset": (self.loader.dataset.state_dict()
                        if hasattr(self.loader.dataset, "state_dict") else None),
            "batch_transform": (self.batch_transform.state_dict()
                                if hasattr(self.batch_transform, "state_dict") else None),
            "rng": rng_list,
            "config": self.config,
            # label k -> class_names[k - 1], so that a checkpoint moved away from its
            # annotation files still names its classes (None: the data set has no names)
            "class_names": self._class_names(),
            "torch_version": str(torch.__version__),
        }

    def _class_names(self) -> list[str] | None:
        from detkit.engine.build import base_dataset

        names = getattr(base_dataset(self.loader.dataset), "class_names", None)
        return None if names is None else [str(n) for n in names]

    def save(self, name: str = "last.pth") -> Path | None:
        """Write ``work_dir/name`` atomically on rank 0 (all ranks must call it)."""
        ckpt = self.checkpoint_dict()
        path = None
        if self.is_main:
            path = atomic_save(ckpt, self.work_dir / name)
        du.barrier()
        return path

    def resume(self, path: str | Path) -> None:
        """Restore the full training state from a checkpoint written by :meth:`save`."""
        # On CPU: RNG states must stay CPU tensors; load_state_dict moves weights to the device.
        ckpt = load_checkpoint(path, map_location="cpu")
        # settings come from the config, state from the checkpoint (detkit.engine.resume)
        check_optimizer_type(ckpt.get("config"), self.config)
        load_model_weights(unwrap(self.model), ckpt["model"], ckpt.get("config"), self.config)
        replaced = load_optimizer_keeping_settings(self.optimizer, ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        elif self.ema is not None:
            # the checkpoint has no EMA (trained without it): start the EMA from the resumed
            # weights, not from the freshly initialised model the EMA was built from
            self.ema.module.load_state_dict(unwrap(self.model).state_dict())
            self.ema.updates = 0
        self.state = TrainState(**ckpt["trainer"])
        budget = self.options.time_budget
        if budget is not None and self.state.global_iter >= budget.calibrate_iters:
            # the stretched length is not in the config: estimate it again from the saved time
            self.options.max_iters = budget.apply(self.scheduler, budget.estimate(
                self.state.train_seconds, self.state.global_iter))
        sampler = getattr(self.loader.batch_sampler, "sampler", None)
        if ckpt.get("sampler") is not None and hasattr(sampler, "load_state_dict"):
            sampler.load_state_dict(ckpt["sampler"])
        if ckpt.get("dataset") is not None and hasattr(self.loader.dataset, "load_state_dict"):
            self.loader.dataset.load_state_dict(ckpt["dataset"])
        if ckpt.get("batch_transform") is not None and self.batch_transform is not None:
            self.batch_transform.load_state_dict(ckpt["batch_transform"])
        rngs = ckpt["rng"]
        rank = du.get_rank()
        rng = rngs[rank] if len(rngs) == du.get_world_size() else rngs[0]
        restore_rng_state(rng)
        self._epoch_loader_state = rng.get("loader")
        if self.is_main and ckpt.get("config") and self.config:
            from detkit.config import config_diff

            changed = config_diff(ckpt["config"], self.config)
            if changed:
                print(f"resume: config differs from the checkpoint's in {', '.join(changed)}; "
                      f"the config's values apply from here on"
                      + (f" (optimizer: {'; '.join(replaced)})" if replaced else ""), flush=True)
        if self.is_main:
            dropped = truncate_jsonl(self.work_dir / "log.jsonl", self.state.global_iter)
            print(f"resumed from {path} at iteration {self.state.global_iter} "
                  f"(epoch {self.state.epoch}, batch {self.state.iter_in_epoch}); "
                  f"{dropped} log records after it dropped", flush=True)

    # ----------------------------------------------------------------- one step
    def train_step(self, images: list[torch.Tensor], targets: list[dict[str, Any]]
                   ) -> dict[str, float] | None:
        """Forward, backward, clip, step. Returns the losses, or None for a skipped step."""
        self.model.train()
        if self.batch_transform is not None:
            images, targets = self.batch_transform(images, targets)
        images, targets = _to_device(images, targets, self.device)
        with torch.autocast(device_type=self.device.type, enabled=self.amp):
            loss_dict = self.loss(self.model, images, targets)
        loss = sum(v.float() for v in loss_dict.values())
        finite = du.all_reduce_min_flag(bool(torch.isfinite(loss).item()), self.device)
        self.optimizer.zero_grad(set_to_none=True)
        if finite or du.is_dist():
            # Under DDP every rank runs backward so the gradient all-reduce stays matched.
            self.scaler.scale(loss).backward()
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = clip_gradients(params, self.options.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        out = {k: float(v.detach()) for k, v in loss_dict.items()}
        out["loss"] = float(loss.detach())
        out["grad_norm"] = grad_norm
        return out

    # ----------------------------------------------------------------- loop
    def _handle_nonfinite(self) -> None:
        st = self.state
        st.nonfinite_total += 1
        st.nonfinite_streak += 1
        msg = (f"non-finite loss at iteration {st.global_iter} (epoch {st.epoch}): step skipped "
               f"({st.nonfinite_streak} in a row, {st.nonfinite_total} in total)")
        if self.logger is not None:
            self.logger.notice(msg)
        if st.nonfinite_streak >= self.options.max_nonfinite:
            self.save("last.pth")
            raise NonFiniteLossError(
                f"stopping: {st.nonfinite_streak} non-finite losses in a row, the last at "
                f"iteration {st.global_iter} (epoch {st.epoch}); checkpoint saved to "
                f"{self.work_dir / 'last.pth'}. Lower optim.base_lr or set "
                f"optim.clip_grad_norm.")

    def evaluate(self) -> dict[str, float]:
        """Run the evaluator on the EMA weights (or the model) and log the metrics."""
        if self.evaluator is None:
            return {}
        net = self.ema.module if self.ema is not None else unwrap(self.model)
        net.eval()
        metrics = {k: float(v) for k, v in self.evaluator(net).items()}
        if self.logger is not None:
            self.logger.write({"kind": "eval", "iter": self.state.global_iter,
                               "epoch": self.state.epoch,
                               "train_seconds": round(self.state.train_seconds, 3), **metrics})
            self.logger.notice(f"eval @ iter {self.state.global_iter}: " + ", ".join(
                f"{k}={v:.4f}" for k, v in metrics.items()))
        return metrics

    def after_step(self, losses: dict[str, float] | None) -> None:
        """Called after each iteration, after the hooks (bookkeeping done, checkpoint
        written); override it, or add a :class:`~detkit.engine.hooks.Hook`."""

    def _call(self, point: str, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, point)(self, *args)

    def _start_epoch(self) -> None:
        """Seed (or restore) the loader generator and position the batch sampler."""
        st, generator = self.state, self.loader.generator
        if st.iter_in_epoch == 0 or self._epoch_loader_state is None:
            # Loader seed of an epoch is a function of (seed, epoch) only.
            generator.manual_seed(self.options.seed * 100_003 + st.epoch)
            self._epoch_loader_state = generator.get_state()
        else:
            generator.set_state(self._epoch_loader_state)
        self.loader.batch_sampler.set_epoch(st.epoch, st.iter_in_epoch)

    def _run_step(self, images: list[torch.Tensor], targets: list[dict[str, Any]],
                  t_last: float) -> float:
        """One iteration with its bookkeeping and hooks; returns the time it ended."""
        st = self.state
        self._call("before_step")
        losses = self.train_step(images, targets)
        self.last_lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        st.global_iter += 1
        st.iter_in_epoch += 1
        if losses is None:
            self._handle_nonfinite()
        else:
            st.nonfinite_streak = 0
        now = time.perf_counter()
        self.images_per_s = len(images) * du.get_world_size() / max(now - t_last, 1e-9)
        st.train_seconds += now - t_last
        self._call("after_step", losses)
        self.after_step(losses)
        return now

    def train(self) -> TrainState:
        """Train until ``max_iters``, calling the hooks around every step and epoch."""
        opt = self.options
        st = self.state
        self.logger = TrainLogger(self.work_dir, opt.max_iters, st.global_iter,
                                  enabled=self.is_main, use_tqdm=opt.use_tqdm)
        try:
            self._call("before_train")
            while st.global_iter < opt.max_iters:
                self._start_epoch()
                self._call("before_epoch")
                t_last = time.perf_counter()
                for images, targets in self.loader:
                    t_last = self._run_step(images, targets, t_last)
                    if st.global_iter >= opt.max_iters:
                        break
                else:
                    if st.iter_in_epoch == 0:
                        raise RuntimeError(f"the training loader yielded no batch in epoch "
                                           f"{st.epoch}; check data and batch size")
                    self._end_epoch(advance=True, complete=True)
                    continue
                self._end_epoch(advance=st.iter_in_epoch >= opt.iters_per_epoch, complete=False)
            self._call("after_train")
        finally:
            self.logger.close()
        if self.is_main:
            written = plot_curves(self.logger.jsonl_path, self.work_dir)
            print("plots: " + ", ".join(str(p) for p in written), flush=True)
        return st

    def _end_epoch(self, advance: bool, complete: bool) -> None:
        """Move to the next epoch when ``advance`` (False when training stops mid-epoch, so a
        later resume with more iterations continues inside it), then the epoch hooks;
        ``complete``: the loader ran out (the time budget re-estimates only then)."""
        self.epoch_complete = complete
        if advance:
            self.state.epoch += 1
            self.state.iter_in_epoch = 0
        self._call("after_epoch", advance)
        self.epoch_complete = False
