"""Model size and cost: ``detkit info CONFIG|PRESET|CKPT [--img-size N] [--num-classes K]``.

:func:`model_info` counts parameters, multiply-accumulates of one eval-mode forward pass at a
square input (``torch.utils.flop_counter.FlopCounterMode``; MACs = FLOPs / 2, convolutions and
matrix products, post-processing not counted) and the median latency of batch-1 inference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ModelInfo", "main", "model_info"]


@dataclass(frozen=True)
class ModelInfo:
    """Parameters (all / trainable), MACs at ``img_size`` and median latency in ms."""

    params: int
    trainable: int
    macs: int
    img_size: int
    latency_ms: float
    threads: int

    def lines(self) -> list[str]:
        """Human-readable report."""
        return [f"parameters   {self.params / 1e6:.3f} M ({self.trainable / 1e6:.3f} M trainable)",
                f"MACs         {self.macs / 1e9:.3f} G at {self.img_size}x{self.img_size} "
                f"(FlopCounterMode FLOPs / 2, one image)",
                f"latency      {self.latency_ms:.1f} ms median, batch 1, {self.threads} threads, "
                f"CPU, post-processing included"]


def model_info(model: nn.Module, img_size: int, runs: int = 10, warmup: int = 2) -> ModelInfo:
    """Measure ``model`` (a detector following the ``model(list of [3, H, W])`` contract).

    The model is put in eval mode; the input is a seeded random image in [0, 1].
    """
    if img_size < 32 or runs < 1:
        raise ValueError(f"img_size must be >= 32 and runs >= 1, got {img_size}, {runs}")
    from torch.utils.flop_counter import FlopCounterMode

    model = model.eval()
    image = torch.rand(3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            model([image])
        for _ in range(warmup):
            model([image])
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model([image])
            times.append((time.perf_counter() - start) * 1000.0)
    return ModelInfo(params, trainable, counter.get_total_flops() // 2, img_size,
                     statistics.median(times), torch.get_num_threads())


def main(argv: list[str] | None = None) -> int:
    """``detkit info``: build the model of a config, preset or checkpoint and report it."""
    parser = argparse.ArgumentParser(prog="detkit info", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="YAML config, preset name or .pth checkpoint")
    parser.add_argument("--img-size", type=int, default=None,
                        help="square input size (default: test.img_size or data.img_size)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classes (default: from the config's annotation files)")
    parser.add_argument("--runs", type=int, default=10, help="timed forward passes")
    args = parser.parse_args(argv)
    from detkit.config import ConfigError
    from detkit.engine.build import build_model_from_cfg
    from detkit.engine.inference import class_names_from_config, read_test_options
    from detkit.presets import config_for_checkpoint, resolve_config_path

    try:
        if args.source.endswith((".pth", ".pt")):
            cfg = config_for_checkpoint(args.source)
        else:
            from detkit.config import load_config

            cfg = load_config(resolve_config_path(args.source))
        num_classes = args.num_classes or len(class_names_from_config(cfg))
        size = args.img_size or read_test_options(cfg).img_size
        model = build_model_from_cfg(cfg["model"], num_classes)
        if args.source.endswith((".pth", ".pt")):
            from detkit.engine.inference import load_detector

            model = load_detector(cfg, args.source, num_classes).model
        info = model_info(model, size, runs=args.runs)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err} (for a config without annotation files, pass --num-classes)",
              file=sys.stderr)
        return 2
    print(f"{cfg['model']['type']} ({cfg['model'].get('backbone', '')}), {num_classes} classes")
    print("\n".join(info.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
