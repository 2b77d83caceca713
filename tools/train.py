"""Train a detector: ``tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [key=value ...]``.

A work dir that holds a run (checkpoints, a log) is never overwritten unasked: continue it
with ``--resume``, pick another ``--work-dir``, or replace it with ``--overwrite``.

Multi-process: ``torchrun --nproc_per_node N tools/train.py CONFIG ...`` (gloo on CPU, NCCL on
GPU). Overrides are dotted config keys, e.g. ``optim.base_lr=0.02 data.batch_size=4``; unknown
keys and wrong types are rejected before any work starts.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's detkit

from detkit.cli import help_text  # noqa: E402
from detkit.config import dump_config, load_cli_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; ``--resume`` alone means ``<work_dir>/last.pth``."""
    parser = argparse.ArgumentParser(description=help_text(__doc__))
    parser.add_argument("config", help="YAML config file (see configs/)")
    parser.add_argument("--work-dir", default=None,
                        help="output folder (default: work_dirs/<config name>)")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                        help="resume from CKPT, or from <work_dir>/last.pth when CKPT is omitted")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in the work dir (its checkpoints and "
                             "log are deleted first)")
    parser.add_argument("--no-progress", action="store_true", help="disable the tqdm bar")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted config overrides, e.g. optim.base_lr=0.02")
    args = parser.parse_intermixed_args(argv)
    if args.resume and "=" in args.resume and not Path(args.resume).exists():
        # "--resume key=value": the override was taken as the checkpoint path.
        args.overrides.insert(0, args.resume)
        args.resume = "auto"
    return args


def seed_everything(seed: int, deterministic: bool, threads: int | None = None) -> None:
    """Seed python, numpy and torch; optionally force deterministic algorithms and set the
    number of torch intra-op threads (``None`` keeps torch's default)."""
    import numpy as np
    import torch

    if threads is not None:
        torch.set_num_threads(threads)

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    cfg = load_cli_config(args.config, args.overrides)
    if cfg is None:
        return 2
    from detkit.engine import distributed as du
    from detkit.engine.build import build_trainer, check_model_keys

    try:
        check_model_keys(cfg["model"])
    except ValueError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    from detkit.engine.checkpoint import CheckpointWriteError
    from detkit.engine.trainer import NonFiniteLossError
    from detkit.engine.workdir import WorkDirInUseError, check_work_dir, prepare_work_dir

    work_dir = Path(args.work_dir or Path("work_dirs") / Path(args.config).stem)
    try:
        check_work_dir(work_dir, bool(args.resume), args.overwrite)
    except WorkDirInUseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        info = du.init_distributed(cfg["device"])
    except RuntimeError as err:  # device=cuda without CUDA
        print(f"config error: {err}; use device=cpu or device=auto", file=sys.stderr)
        return 2
    seed_everything(cfg["seed"] + info.rank, cfg["deterministic"], cfg["threads"])
    try:
        if info.is_main:
            for notice in prepare_work_dir(work_dir, bool(args.resume), args.overwrite):
                print(notice, flush=True)
        try:
            trainer = build_trainer(cfg, work_dir, info, use_tqdm=not args.no_progress)
            if args.resume:
                ckpt = work_dir / "last.pth" if args.resume == "auto" else Path(args.resume)
                trainer.resume(ckpt)
        except (ValueError, FileNotFoundError) as err:
            print(f"error while building the run: {err}", file=sys.stderr)
            return 2
        if info.is_main:  # written once the run is known to start: the config it runs with
            dump_config(cfg, work_dir / "config.yaml")
            print(f"work dir: {work_dir}  (resolved config: {work_dir / 'config.yaml'}); "
                  f"world size {info.world_size} on {info.device}", flush=True)
        state = trainer.train()
        if info.is_main:
            best = f"best AP {state.best_ap:.4f}" if state.best_ap >= 0 else "no evaluation"
            print(f"done: {state.global_iter} iterations, {best}, "
                  f"{state.nonfinite_total} non-finite steps skipped", flush=True)
    except (NonFiniteLossError, CheckpointWriteError) as err:
        print(str(err), file=sys.stderr)
        return 1
    finally:
        du.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
