"""NMS time against box count, each kind next to torchvision NMS; DIoU-NMS per BCCD image.

1. For 1k-20k boxes (jittered around objects, so that suppression has work to do) the
   median milliseconds of ``torchvision.ops.nms`` (the peer) and of detkit's ``nms``,
   ``diou_nms``, ``cluster_nms`` and ``soft_nms`` (Soft-NMS only up to ``--soft-max``
   boxes: its decay loop is O(N x kept)), printed as ms and x torchvision; with
   ``--plot PNG`` drawn on log-log axes.
2. ``--bccd``: the trained ThunderNet-lite's final NMS on BCCD's 72 test images, plain NMS
   against DIoU-NMS, mean and median ms per image (the kernel is warmed when the model is
   built).

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_nms_scaling.py [--plot P] [--bccd]
[--skip-scaling] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP waits

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency_parts import BCCD_TEST, SUITE_CHECKPOINTS, plot_curves, write_json  # noqa: E402  # noqa: E402

from detkit.ops import cluster_nms, diou_nms, nms, soft_nms  # noqa: E402

COUNTS = (1000, 2000, 5000, 10000, 20000)


def jittered(n: int, seed: int = 0, image: float = 1000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` xyxy boxes around n/20 objects in an ``image``-pixel square, random scores."""
    g = torch.Generator().manual_seed(seed)
    objects = max(n // 20, 1)
    centre = torch.rand(objects, 2, generator=g) * image
    side = torch.rand(objects, 2, generator=g) * 60 + 10
    pick = torch.randint(0, objects, (n,), generator=g)
    c = centre[pick] + 0.15 * side[pick] * torch.randn(n, 2, generator=g)
    wh = side[pick] * (1 + 0.2 * torch.randn(n, 2, generator=g)).clamp(min=0.5)
    return torch.cat([c - wh / 2, c + wh / 2], 1), torch.rand(n, generator=g)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


def scaling(args: argparse.Namespace) -> dict[str, dict[int, float]]:
    """ms per kind and box count (printed against torchvision NMS)."""
    kinds: dict[str, Callable[[torch.Tensor, torch.Tensor], object]] = {
        "torchvision nms (peer)": lambda b, s: torchvision.ops.nms(b, s, 0.5),
        "nms": lambda b, s: nms(b, s, 0.5),
        "diou_nms": lambda b, s: diou_nms(b, s, 0.5),
        "cluster_nms": lambda b, s: cluster_nms(b, s, 0.5),
        "soft_nms": lambda b, s: soft_nms(b, s),
    }
    out: dict[str, dict[int, float]] = {k: {} for k in kinds}
    print(f"\nNMS ms vs boxes ({torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.2f}); in brackets x torchvision nms")
    print(f"{'boxes':>6s} " + " ".join(f"{k.split(' (')[0]:>22s}" for k in kinds))
    for n in args.counts:
        boxes, scores = jittered(n)
        row = []
        for name, fn in kinds.items():
            if name == "soft_nms" and n > args.soft_max:
                row.append(f"{'-':>22s}")
                continue
            out[name][n] = median_ms(lambda fn=fn, b=boxes, s=scores: fn(b, s), args.repeats)
            peer = out["torchvision nms (peer)"][n]
            row.append(f"{out[name][n]:12.2f} ({out[name][n] / peer:6.2f}x)")
        print(f"{n:6d} " + " ".join(row))
    return out


def bccd_per_image(ckpt_dir: Path, ann_file: Path) -> dict[str, dict[str, float]]:
    """Mean and median ms per BCCD test image in the final NMS, plain NMS vs DIoU-NMS,
    alternating image by image; returns {kind: {"mean", "median"}}."""
    import yaml
    from suite_measure import timed_nms

    from detkit.data.coco import CocoDetection
    from detkit.engine.inference import Predictor, TestOptions, keep_raw, load_detector

    folder = ckpt_dir / "thundernet_full_s0_f0"
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    dataset = CocoDetection(str(ann_file), str(ann_file.parent), transforms=keep_raw)
    predictors = {kind: Predictor(load_detector(cfg, folder / "last.pth", 3, "cpu",
                                                TestOptions(img_size=320, nms=kind)).model, [320])
                  for kind in ("nms", "diou_nms")}
    spent: dict[str, list[float]] = {k: [] for k in predictors}
    images = [dataset[i][0] for i in range(len(dataset))]
    for image in images:
        for kind, predictor in predictors.items():
            with timed_nms() as seconds:
                predictor.predict([image])
            spent[kind].append(1000.0 * sum(seconds))
    plain, diou = (statistics.mean(spent[k]) for k in ("nms", "diou_nms"))
    plain_med, diou_med = (statistics.median(spent[k]) for k in ("nms", "diou_nms"))
    print(f"\nfinal NMS on {len(images)} BCCD test images (load average "
          f"{os.getloadavg()[0]:.2f}), ms per image, goal DIoU-NMS <= 1x plain NMS")
    for label, a, b in (("mean", plain, diou), ("median", plain_med, diou_med)):
        print(f"  {label:6s}: nms {a:.3f}, diou_nms {b:.3f} = {b / a:.2f}x "
              f"({'met' if b <= a else 'MISSED'})")
    return {k: {"mean": statistics.mean(v), "median": statistics.median(v), "images": len(v)}
            for k, v in spent.items()}


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--counts", type=int, nargs="+", default=list(COUNTS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--soft-max", type=int, default=5000)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--bccd", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true", help="only the --bccd part")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--ckpt-dir", type=Path,
                        default=SUITE_CHECKPOINTS)
    parser.add_argument("--ann-file", type=Path, default=BCCD_TEST)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    record: dict[str, object] = {"threads": args.threads}
    if not args.skip_scaling:
        results = scaling(args)
        record["scaling_ms"] = results
        if args.plot:
            plot_curves(results, args.plot, "boxes", "ms per call (median)",
                        "NMS time vs box count (CPU)")
    if args.bccd:
        record["bccd_final_nms_ms"] = bccd_per_image(args.ckpt_dir, args.ann_file)
    if args.json:
        write_json(args.json, record)


if __name__ == "__main__":
    main()
