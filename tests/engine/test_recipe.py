"""Recipe seams: one overridden method changes one part; hooks see every step and epoch."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from detkit.engine import distributed as du
from detkit.engine.hooks import CheckpointHook, EMAHook, EvaluationHook, Hook, LoggingHook
from detkit.engine.recipe import Recipe

from ._tiny import TinyDataset, TinyDetector, tiny_config


class FrozenConvRecipe(Recipe):
    """The user trainer of docs/architecture.md: freeze the first layer, count the steps."""

    def build_optimizer(self, model):
        model.conv.requires_grad_(False)
        return super().build_optimizer(model)

    def build_hooks(self, ema, budget):
        self.counter = StepCounter()
        return [*super().build_hooks(ema, budget), self.counter]


class StepCounter(Hook):
    """Records the points at which the trainer called it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def before_epoch(self, trainer) -> None:
        self.calls.append(("before_epoch", trainer.state.epoch))

    def after_step(self, trainer, losses) -> None:
        self.calls.append(("after_step", trainer.state.global_iter))

    def after_epoch(self, trainer, advance) -> None:
        self.calls.append(("after_epoch", trainer.state.epoch))


def _build(recipe_cls: type[Recipe], work_dir: Path, cfg: dict) -> tuple[Recipe, object]:
    info = du.init_distributed("cpu")
    random.seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    recipe = recipe_cls(cfg, work_dir, info, use_tqdm=False)
    return recipe, recipe.build_trainer(model=TinyDetector(), datasets=(TinyDataset(16), None))


def test_a_user_recipe_overrides_one_seam(tmp_path: Path) -> None:
    # 16 images / batch 4 = 4 iterations per epoch; max_iters 6 stops 2 steps into epoch 1
    cfg = tiny_config(schedule={"max_iters": 6, "warmup_iters": 0})
    recipe, trainer = _build(FrozenConvRecipe, tmp_path, cfg)
    conv_before = trainer.model.conv.weight.detach().clone()
    fc_before = trainer.model.fc.weight.detach().clone()
    trainer.train()
    assert torch.equal(trainer.model.conv.weight, conv_before)  # frozen by the override
    assert not torch.equal(trainer.model.fc.weight, fc_before)  # the rest still trains
    calls = recipe.counter.calls
    assert calls == [("before_epoch", 0), *[("after_step", i) for i in (1, 2, 3, 4)],
                     ("after_epoch", 1), ("before_epoch", 1), ("after_step", 5),
                     ("after_step", 6), ("after_epoch", 1)]  # stopped inside epoch 1


def test_default_hooks_follow_the_config(tmp_path: Path) -> None:
    cfg = tiny_config(train={"log_interval": 3, "checkpoint_interval": 2,
                             "ema": {"enabled": True}}, eval={"interval": 5})
    _, trainer = _build(Recipe, tmp_path, cfg)
    kinds = [type(h) for h in trainer.hooks]
    assert kinds == [EMAHook, LoggingHook, CheckpointHook, EvaluationHook]
    assert trainer.hooks[0].ema is trainer.ema
    assert (trainer.hooks[1].interval, trainer.hooks[2].interval,
            trainer.hooks[3].interval) == (3, 2, 5)


def test_overriding_build_model_replaces_only_the_model(tmp_path: Path) -> None:
    class WideHeadRecipe(Recipe):
        def build_model(self, num_classes):
            return TinyDetector(num_classes=5)

    cfg = tiny_config()
    recipe = WideHeadRecipe(cfg, tmp_path, du.init_distributed("cpu"), use_tqdm=False)
    trainer = recipe.build_trainer(datasets=(TinyDataset(8), None))
    assert trainer.model.fc.out_features == 4 + 5
    assert isinstance(trainer.optimizer, torch.optim.SGD)  # the config's optimizer

