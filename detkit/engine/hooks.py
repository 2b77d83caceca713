"""Trainer hooks: what happens around the steps and epochs of the loop, outside its body.

A :class:`Hook` sees the trainer at six points: ``before_train``, ``before_epoch``,
``before_step``, ``after_step`` (losses of the step, None when it was skipped as non-finite),
``after_epoch`` and ``after_train``. The trainer calls its hooks in list order; the order of
:meth:`detkit.engine.recipe.Recipe.build_hooks` is the order of the former in-loop code, so
the random streams, checkpoints and logs of a run are the same as before hooks existed:

1. :class:`EMAHook` (model average after each optimizer step),
2. :class:`TimeBudgetHook` (``schedule.time_budget``: re-estimate the length, stop when spent),
3. :class:`LoggingHook` (a train record every ``log_interval`` steps),
4. :class:`CheckpointHook` (``last.pth`` every ``checkpoint_interval`` steps),
5. :class:`EvaluationHook` (evaluate at epoch ends when due and at the end; ``last`` /
   ``best`` checkpoints).

Distillation changes the loss, not the loop, so it is a loss wrapper
(:mod:`detkit.engine.distill`), not a hook.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from detkit.engine import distributed as du
from detkit.engine.budget import TimeBudget
from detkit.engine.ema import ModelEMA

if TYPE_CHECKING:
    from detkit.engine.trainer import Trainer

__all__ = ["CheckpointHook", "EMAHook", "EvaluationHook", "Hook", "LoggingHook",
           "TimeBudgetHook"]


class Hook:
    """Base class: every method does nothing; override the points you need."""

    def before_train(self, trainer: Trainer) -> None:
        """Once, before the first step (after a resume, if any)."""

    def before_epoch(self, trainer: Trainer) -> None:
        """At the start of each pass over the loader (also a resumed partial epoch)."""

    def before_step(self, trainer: Trainer) -> None:
        """Before each iteration's forward pass."""

    def after_step(self, trainer: Trainer, losses: dict[str, float] | None) -> None:
        """After each iteration: optimizer and scheduler stepped, counters advanced."""

    def after_epoch(self, trainer: Trainer, advance: bool) -> None:
        """When a pass ends; ``advance`` is False when training stopped inside the epoch."""

    def after_train(self, trainer: Trainer) -> None:
        """Once, after the last step (not after an exception)."""


class EMAHook(Hook):
    """Update the :class:`ModelEMA` after every optimizer step that was taken."""

    def __init__(self, ema: ModelEMA) -> None:
        self.ema = ema

    def after_step(self, trainer: Trainer, losses: dict[str, float] | None) -> None:
        """One EMA update per finite step (a skipped step leaves the weights unchanged)."""
        if losses is not None:
            self.ema.update(trainer.model)


class TimeBudgetHook(Hook):
    """``schedule.time_budget``: the run's length follows the measured training time."""

    def __init__(self, budget: TimeBudget) -> None:
        self.budget = budget

    def after_step(self, trainer: Trainer, losses: dict[str, float] | None) -> None:
        """Re-estimate when due inside an epoch, stop once the budget is spent."""
        self._follow(trainer, epoch_end=False)

    def after_epoch(self, trainer: Trainer, advance: bool) -> None:
        """Re-estimate when the loader ran out (before the epoch's evaluation)."""
        if trainer.epoch_complete:
            self._follow(trainer, epoch_end=True)

    def _follow(self, trainer: Trainer, epoch_end: bool) -> None:
        budget, st = self.budget, trainer.state
        if st.global_iter == 0:
            return
        if budget.spent(st.train_seconds):
            new = st.global_iter
        elif budget.due(st.global_iter, epoch_end):
            new = budget.estimate(st.train_seconds, st.global_iter)
        else:
            return
        new = budget.apply(trainer.scheduler, new)
        if new != trainer.options.max_iters and trainer.is_main:
            print(f"time budget {budget.seconds / 60:g} min: {st.train_seconds:.1f} s for "
                  f"{st.global_iter} iterations, run length {trainer.options.max_iters} -> "
                  f"{new} iterations", flush=True)
        trainer.options.max_iters = new
        if trainer.logger is not None:
            trainer.logger.total_iters = new


class LoggingHook(Hook):
    """A ``train`` record (mean over ranks) every ``interval`` steps and at the last one."""

    def __init__(self, interval: int) -> None:
        self.interval = interval

    def after_step(self, trainer: Trainer, losses: dict[str, float] | None) -> None:
        """Write the step's losses, learning rate and throughput when due."""
        st = trainer.state
        if losses is None or trainer.logger is None:
            return
        if st.global_iter % self.interval == 0 or st.global_iter == trainer.options.max_iters:
            reduced = du.reduce_mean(losses, trainer.device)
            trainer.logger.train_step(st.global_iter, st.epoch, reduced, trainer.last_lr,
                                      trainer.images_per_s,
                                      {"nonfinite_total": st.nonfinite_total,
                                       "train_seconds": round(st.train_seconds, 3)})


class CheckpointHook(Hook):
    """``last.pth`` every ``interval`` steps (0: only where the evaluation hook saves)."""

    def __init__(self, interval: int) -> None:
        self.interval = interval

    def after_step(self, trainer: Trainer, losses: dict[str, float] | None) -> None:
        """Save when the step count is a multiple of the interval."""
        if self.interval and trainer.state.global_iter % self.interval == 0:
            trainer.save("last.pth")


class EvaluationHook(Hook):
    """At each epoch end: evaluate when due (every ``interval`` epochs and at the end of
    training), keep ``best.pth`` by ``metric`` (AP), and always write ``last.pth``. With
    ``patience`` > 0 (``train.early_stop``), training ends after that many evaluations in a
    row without a better ``metric``; the stop is saved as a normal checkpoint."""

    def __init__(self, interval: int, patience: int = 0, metric: str = "AP") -> None:
        self.interval, self.patience, self.metric = interval, patience, metric

    def after_epoch(self, trainer: Trainer, advance: bool) -> None:
        """Evaluate and checkpoint the epoch that just ended (see the class docstring)."""
        st = trainer.state
        finished_epoch = st.epoch - 1 if advance else st.epoch
        last = st.global_iter >= trainer.options.max_iters
        due = trainer.evaluator is not None and self.interval > 0 and (
            (advance and (finished_epoch + 1) % self.interval == 0) or last)
        if not due:
            trainer.save("last.pth")
            return
        metrics = trainer.evaluate()
        if self.patience and self.metric not in metrics:
            raise ValueError(f"train.early_stop.metric {self.metric!r} is not an evaluation "
                             f"metric; valid: {', '.join(metrics)}")
        ap = metrics.get(self.metric, float("nan"))
        improved = math.isfinite(ap) and ap > st.best_ap
        if improved:
            st.best_ap = ap
        st.evals_since_best = 0 if improved else st.evals_since_best + 1
        if self.patience and st.evals_since_best >= self.patience and not last:
            print(f"early stop: no better val {self.metric} than {st.best_ap:.4f} in "
                  f"{self.patience} evaluations", flush=trainer.is_main)
            trainer.options.max_iters = st.global_iter  # the loop ends after this save
        trainer.save("last.pth")
        if improved:
            trainer.save("best.pth")


def default_hooks(ema: ModelEMA | None, budget: TimeBudget | None, log_interval: int,
                  checkpoint_interval: int, eval_interval: int, early_stop_patience: int = 0,
                  best_metric: str = "AP") -> list[Hook]:
    """The standard hooks in the order described in the module docstring."""
    hooks: list[Hook] = []
    if ema is not None:
        hooks.append(EMAHook(ema))
    if budget is not None:
        hooks.append(TimeBudgetHook(budget))
    hooks += [LoggingHook(log_interval), CheckpointHook(checkpoint_interval),
              EvaluationHook(eval_interval, early_stop_patience, best_metric)]
    return hooks


def hook_of(hooks: list[Hook], kind: type[Any]) -> Any:
    """The first hook of type ``kind`` in ``hooks``, or None."""
    return next((h for h in hooks if isinstance(h, kind)), None)
