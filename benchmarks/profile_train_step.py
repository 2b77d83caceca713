"""Where a training step's time goes: loader wait, network forward, loss, backward, optimizer.

Builds the trainer of a row's config (default: the suite's ``thundernet_full``, batch 8 at
320, ``data.num_workers`` workers) with ``detkit.engine.build.build_trainer`` and runs the
phases of ``Trainer.train_step`` in its order with a timer between them: waiting for the
loader, moving the batch, the network modules' forward (``latency_parts.network_modules``
hooked), the rest of the forward (anchor / proposal targets, sampling, losses), the loss sum
and its ``isfinite(...).item()``, backward, gradient clipping (its norm read back with
``float``), the optimizer step, the per-loss ``float`` read-backs, the scheduler. Nothing
of the trainer is changed; the median per phase over ``--steps`` steps is printed as ms
and share of the step, followed by torch.profiler's busiest operators of one more step.

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/profile_train_step.py --config
work_dirs/bench/bccd/k3_2min/thundernet_full_s0_f0/config.yaml [--data-root DIR] [--steps 8]
[--json PATH]``; ``--data-root`` is the folder the config's data paths are relative to
(default: the current one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP waits
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency_parts import (  # noqa: E402
    network_modules,
    timed_modules,
    write_json,  # noqa: E402
)

PHASES = ("loader wait", "to device", "network forward", "targets + losses",
          "loss sum + isfinite().item()", "zero_grad", "backward", "clip grad norm (float)",
          "optimizer step", "loss read-back (float)", "scheduler")


def timed_step(trainer: Any, batches: Any) -> list[float]:
    """Milliseconds of each of :data:`PHASES` for one step (the order of ``train_step``)."""
    from detkit.engine.optim import clip_gradients
    from detkit.engine.trainer import _to_device

    marks = [time.perf_counter()]
    images, targets = next(batches)
    marks.append(time.perf_counter())
    trainer.model.train()
    if trainer.batch_transform is not None:
        images, targets = trainer.batch_transform(images, targets)
    images, targets = _to_device(images, targets, trainer.device)
    marks.append(time.perf_counter())
    with timed_modules(network_modules(trainer.model)) as network:
        loss_dict = trainer.loss(trainer.model, images, targets)
    marks.append(time.perf_counter())
    loss = sum(v.float() for v in loss_dict.values())
    bool(torch.isfinite(loss).item())
    marks.append(time.perf_counter())
    trainer.optimizer.zero_grad(set_to_none=True)
    marks.append(time.perf_counter())
    trainer.scaler.scale(loss).backward()
    marks.append(time.perf_counter())
    trainer.scaler.unscale_(trainer.optimizer)
    clip_gradients([p for g in trainer.optimizer.param_groups for p in g["params"]],
                   trainer.options.clip_grad_norm)
    marks.append(time.perf_counter())
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    marks.append(time.perf_counter())
    {k: float(v.detach()) for k, v in loss_dict.items()}
    marks.append(time.perf_counter())
    trainer.scheduler.step()
    marks.append(time.perf_counter())
    ms = [1000.0 * (b - a) for a, b in zip(marks, marks[1:], strict=False)]
    forward = ms[2]
    return [ms[0], ms[1], 1000.0 * network[0], forward - 1000.0 * network[0], *ms[3:]]


def main() -> None:
    """Build the trainer, time the steps, print the breakdown and the top operators."""
    from torch.profiler import ProfilerActivity, profile

    from detkit.config import load_config
    from detkit.engine import distributed as du
    from detkit.engine.build import build_trainer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ops", type=int, default=12, help="profiler rows (0: none)")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.config, args.json = args.config.resolve(), args.json and args.json.resolve()
    if args.data_root is not None:
        os.chdir(args.data_root)
    cfg = load_config(args.config)
    cfg["eval"]["interval"] = 0
    info = du.DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    with tempfile.TemporaryDirectory() as work_dir:
        trainer = build_trainer(cfg, work_dir, info, use_tqdm=False)
        trainer._start_epoch()
        batches = iter(trainer.loader)
        rows = [timed_step(trainer, batches) for _ in range(args.warmup + args.steps)]
        rows = rows[args.warmup:]
        median = {name: statistics.median(r[k] for r in rows) for k, name in enumerate(PHASES)}
        total = statistics.median(sum(r) for r in rows)
        data = cfg["data"]
        print(f"\n{cfg['model']['type']} training step, batch {data['batch_size']} at "
              f"{data['img_size']}, {data['num_workers']} loader workers, {args.threads} "
              f"threads, median of {args.steps} steps (load average {os.getloadavg()[0]:.2f})")
        for name, value in median.items():
            print(f"{name:30s} {value:8.1f} ms {100.0 * value / total:5.1f} %")
        print(f"{'step':30s} {total:8.1f} ms")
        if args.ops:
            images, targets = next(batches)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                loss = sum(trainer.loss(trainer.model, images, targets).values())
                trainer.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                trainer.optimizer.step()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.ops))
    if args.json:
        write_json(args.json, {"config": str(args.config), "steps": args.steps,
                               "phase_ms": median, "step_ms": total})


if __name__ == "__main__":
    main()
