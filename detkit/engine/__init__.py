"""Training engine: schedules, optimizers, EMA, checkpoints, distributed helpers, the trainer.

Modules (import what you need; nothing heavy is imported here):

- :mod:`detkit.engine.schedules`: warmup + cosine/step LR multipliers, linear scaling rule.
- :mod:`detkit.engine.optim`: SGD / AdamW / AdaBound, no-decay groups, gradient clipping.
- :mod:`detkit.engine.ema`: exponential moving average of weights.
- :mod:`detkit.engine.checkpoint`: atomic save, weights-only load, RNG state capture.
- :mod:`detkit.engine.distributed`: torchrun init, SyncBN, rank-0 helpers.
- :mod:`detkit.engine.logging`: tqdm / JSON-lines / TensorBoard logs, loss and AP plots.
- :mod:`detkit.engine.recipe`: the training recipe, one overridable ``build_*`` per part.
- :mod:`detkit.engine.trainer`: the training loop; :mod:`detkit.engine.hooks`: what runs
  around its steps and epochs; :mod:`detkit.engine.distill`: the step's loss (distillation).
- :mod:`detkit.engine.build`: config glue the recipe calls.
"""
