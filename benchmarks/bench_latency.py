"""Batch-1 inference latency on trained BCCD checkpoints: eager, folded, onnxruntime, the limit.

Every figure is printed against SSDlite measured in the same run (models take turns call by
call, so load from other processes hits them alike), with the 1-minute load average:

- ThunderNet-lite (``thundernet_full``, ``tn_no_cem``), torchvision Faster R-CNN
  (``fasterrcnn_mbv3``), SSDlite (``ssdlite``, ``ssdlite320_mobilenet_v3_large``) and the
  dense detector (``dense_anchors_off``, SNet49 + FPN) load their trained BCCD checkpoints
  (``--ckpt-dir``, ``<row>_s0_f0/last.pth``). SSDlite's NMS gets 100 candidates per class
  (torchvision's ``topk_candidates``, 300 by default) so that its NMS input is in line with
  the other models'. A row without a checkpoint falls back to random weights (SSDlite: 100
  candidates per class; dense: SNet49 + SSH of ``configs/bench/dense_ssh.yaml``, 100 per
  level), so random-weight candidates do not flood NMS. Each call runs on the next of
  ``--images`` BCCD test images, letterboxed to 320.
- Each row splits the call into network (backbone, neck, heads, RoI pooling) and the
  rest (proposal / final NMS, decoding, thresholds, Python), see ``latency_parts.py``.
- Runtimes: eager PyTorch, BatchNorm folded (``detkit.models.fuse``), onnxruntime (the
  folded model exported with plain NMS, ``detkit.engine.ort_runtime``).
- The limit: MACs (FlopCounterMode) over the measured float32 GEMM rate.

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_latency.py [--threads 2] [--runs 20]``.
``--json PATH`` also writes the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP waits
from typing import Any

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency_parts import (  # noqa: E402
    BCCD_TEST,
    SUITE_CHECKPOINTS,
    count_macs,
    gemm_gflops,
    split_times,
    write_json,  # noqa: E402
)

CKPT_DIR = SUITE_CHECKPOINTS
ANN_FILE = BCCD_TEST
TRAINED_ROWS = ("thundernet_full", "tn_no_cem", "fasterrcnn_mbv3")
PEER = "SSDlite320 (peer)"
SSDLITE_CANDIDATES = 100


def bccd_images(ann_file: Path, count: int, size: int) -> list[torch.Tensor]:
    """The first ``count`` images of ``ann_file``, letterboxed to ``size`` ([3, S, S] in [0, 1])."""
    from detkit.data.coco import CocoDetection
    from detkit.engine.inference import keep_raw, letterbox_image

    dataset = CocoDetection(str(ann_file), str(ann_file.parent), transforms=keep_raw)
    return [letterbox_image(dataset[i][0], size)[0] for i in range(min(count, len(dataset)))]


def load_row(ckpt_dir: Path, row: str, num_classes: int = 3) -> torch.nn.Module:
    """The trained model of ``row`` (seed 0, fold 0) in eval mode on CPU."""
    import yaml

    from detkit.engine.inference import TestOptions, load_detector

    folder = ckpt_dir / f"{row}_s0_f0"
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    return load_detector(cfg, folder / "last.pth", num_classes, "cpu",
                         TestOptions(img_size=320)).model


def has_row(ckpt_dir: Path, row: str) -> bool:
    """Whether ``ckpt_dir`` holds the trained checkpoint of ``row`` (seed 0, fold 0)."""
    return (ckpt_dir / f"{row}_s0_f0" / "last.pth").is_file()


def ssdlite(num_classes: int = 3, candidates: int = SSDLITE_CANDIDATES,
            ckpt_dir: Path | None = None) -> torch.nn.Module:
    """SSDlite320 with ``candidates`` per class into its NMS: the trained ``ssdlite`` row of
    ``ckpt_dir`` when there is one, else random weights."""
    if ckpt_dir is not None and has_row(ckpt_dir, "ssdlite"):
        model = load_row(ckpt_dir, "ssdlite", num_classes)
    else:
        print("SSDlite: no trained checkpoint, random weights")
        model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=num_classes + 1)
    model.topk_candidates = candidates
    return model.eval()


def dense(num_classes: int = 3, candidates: int = 100,
          ckpt_dir: Path | None = None) -> torch.nn.Module:
    """The trained dense detector (``dense_anchors_off``: SNet49 + FPN, its own
    post-processing) when ``ckpt_dir`` has it, else the SNet49 + SSH detector of
    ``configs/bench/dense_ssh.yaml`` with random weights and ``candidates`` per level."""
    import dataclasses

    import yaml

    from detkit.engine.build import build_model_from_cfg

    if ckpt_dir is not None and has_row(ckpt_dir, "dense_anchors_off"):
        return load_row(ckpt_dir, "dense_anchors_off", num_classes)
    print("dense detector: no trained checkpoint, random-weight SNet49 + SSH")
    path = Path(__file__).resolve().parents[1] / "configs" / "bench" / "dense_ssh.yaml"
    model = build_model_from_cfg(yaml.safe_load(path.read_text())["model"], num_classes).eval()
    model.postprocess_config = dataclasses.replace(model.postprocess_config,
                                                   topk_candidates=candidates)
    return model


def build_models(args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    """Eager and folded models (and the onnxruntime one) keyed by row name."""
    from detkit.models.fuse import fold_batchnorm

    eager: dict[str, torch.nn.Module] = {PEER: ssdlite(ckpt_dir=args.ckpt_dir)}
    for row in TRAINED_ROWS:
        if has_row(args.ckpt_dir, row):
            eager[row] = load_row(args.ckpt_dir, row)
        else:
            print(f"{row}: no checkpoint under {args.ckpt_dir}, skipped")
    eager["dense detector"] = dense(ckpt_dir=args.ckpt_dir)
    models = {}
    for name, model in eager.items():
        models[f"{name} eager"] = model
        models[f"{name} folded"] = fold_batchnorm(model)
    if "thundernet_full" in eager and not args.no_ort:
        try:
            from detkit.engine.ort_runtime import prepare_runtime

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                models["thundernet_full onnxruntime"] = prepare_runtime(
                    eager["thundernet_full"], "onnxruntime", 320, threads=args.threads)
        except ImportError as err:
            print(f"onnxruntime row skipped: {err}")
    return models


def macs_at(model: torch.nn.Module, image: torch.Tensor) -> float:
    """Million MACs of one eval call on ``image`` (the model's own candidates)."""
    with torch.no_grad():
        return count_macs(lambda: model([image]))


def latency_table(args: argparse.Namespace) -> dict[str, Any]:
    """Print and return the latency rows (ms) and the compute-bound estimate."""
    images = bccd_images(args.ann_file, args.images, 320)
    models = build_models(args)
    fns = {name: (m, (lambda i, m=m: m([images[i % len(images)]]))) for name, m in models.items()}
    with torch.no_grad():
        ms = split_times(fns, args.runs)
    rate = gemm_gflops()
    macs = {name.rsplit(" ", 1)[0]: macs_at(m, images[0])
            for name, m in models.items() if name.endswith(" eager")}
    peer = ms[f"{PEER} eager"]["total"]
    load = os.getloadavg()[0]
    print(f"\nLatency at 320, batch 1, {args.threads} threads, median of {args.runs} calls on "
          f"{len(images)} BCCD test images (load average {load:.2f})")
    print(f"{'model / runtime':36s} {'total':>7s} {'network':>8s} {'post':>6s} {'x SSDlite':>9s}")
    for name, row in ms.items():
        # the onnxruntime session has no torch modules to hook: no network / post split
        split = (f"{row['network']:8.1f} {row['post']:6.1f}" if row["network"] > 0
                 else f"{'-':>8s} {'-':>6s}")
        print(f"{name:36s} {row['total']:7.1f} {split} {row['total'] / peer:9.2f}")
    print(f"\nGEMM 1024^3 float32: {rate:.1f} GFLOP/s; compute-bound limit = 2 x MACs / rate")
    print(f"{'model':24s} {'M MACs':>8s} {'limit ms':>9s} {'MAC ratio':>10s}")
    for name, value in macs.items():
        print(f"{name:24s} {value:8.1f} {2.0 * value / rate:9.2f} "
              f"{value / macs[PEER]:10.2f}")
    return {"threads": args.threads, "runs": args.runs, "load_avg": load, "gemm_gflops": rate,
            "latency_ms": ms, "macs_m": macs}


def verdicts(result: dict[str, Any]) -> None:
    """The issue's goals, met or missed, from one run's figures. The ratio to SSDlite is
    taken runtime for runtime (eager / eager, folded / folded); onnxruntime, which SSDlite
    does not get here, is compared with SSDlite's faster PyTorch runtime and labelled so."""
    ms, macs = result["latency_ms"], result["macs_m"]
    if "thundernet_full eager" not in ms:
        return
    best = min(ms[k]["total"] for k in ms if k.startswith("thundernet_full"))
    mac_ratio = macs["thundernet_full"] / macs[PEER]
    print(f"\ngoal ThunderNet-lite <= 8 ms: best runtime {best:.1f} ms "
          f"({'met' if best <= 8 else 'MISSED'})")
    peer_best = min(ms[f"{PEER} eager"]["total"], ms[f"{PEER} folded"]["total"])
    pairs = [(runtime, ms[f"thundernet_full {runtime}"]["total"], ms[f"{PEER} {runtime}"]["total"])
             for runtime in ("eager", "folded")]
    if "thundernet_full onnxruntime" in ms:
        pairs.append(("onnxruntime vs SSDlite's best PyTorch runtime",
                      ms["thundernet_full onnxruntime"]["total"], peer_best))
    for label, ours, peer in pairs:
        print(f"goal ratio to SSDlite <= MAC ratio {mac_ratio:.2f}x, {label}: {ours / peer:.2f}x "
              f"({'met' if ours / peer <= mac_ratio else 'MISSED'})")
    for runtime in ("eager", "folded"):
        ratio = ms[f"dense detector {runtime}"]["total"] / ms[f"{PEER} {runtime}"]["total"]
        print(f"goal dense <= 1x SSDlite, {runtime}: {ratio:.2f}x "
              f"({'met' if ratio <= 1 else 'MISSED'})")


def main() -> None:
    """Parse arguments, run, print (and optionally write JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--images", type=int, default=8, help="BCCD test images cycled")
    parser.add_argument("--ckpt-dir", type=Path, default=CKPT_DIR)
    parser.add_argument("--ann-file", type=Path, default=ANN_FILE)
    parser.add_argument("--no-ort", action="store_true", help="skip the onnxruntime row")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    result = latency_table(args)
    verdicts(result)
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
