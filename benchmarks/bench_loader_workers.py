"""Training-loader images/s against DataLoader workers: detkit's loader next to a plain one.

Both loaders read the same BCCD training JPEGs (converted to COCO JSON as ``bench_data.py``
does) at batch ``--batch`` and 320 pixels, with a random horizontal flip:

- detkit: the loader training builds (``CocoDetection`` with its reduced-size JPEG
  decoding, ``build_transforms`` of the suite's ``HorizontalFlip`` pipeline, and
  ``detkit.engine.build.build_train_loader``'s seeded sampler and resumable batches);
- peer: :class:`PlainDetection`, the loop one writes by hand (``cv2.imread`` of the whole
  JPEG, letterbox with ``cv2.resize``, flip, tensor) in a plain ``torch.utils.data.DataLoader``.

For each worker count the two take turns run by run; each run times ``--images`` images
after a warm-up batch (``bench_data.time_per_image``: wall and CPU seconds, workers' CPU
included). Printed: median images/s per wall second and per CPU second, detkit x peer, and
the 1-minute load average; ``--plot`` draws wall images/s against workers.

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_loader_workers.py [--workers 0 1 2 4]
[--runs 3] [--images 96] [--plot docs/img/loader_workers.png] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP waits
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_data import BASE_CFG, INPUT_SIZE, bccd_root, time_per_image  # noqa: E402
from latency_parts import plot_curves, write_json  # noqa: E402

from detkit.data.collate import collate_detection  # noqa: E402

PEER = "plain DataLoader (peer)"
DETKIT = "detkit training loader"


class PlainDetection(Dataset):
    """Hand-written detection dataset: whole-JPEG decode, letterbox, flip, float tensor.

    ``records`` are (image path, xyxy boxes ``[N, 4]`` in the image's pixels, labels ``[N]``).
    Items are ``(Tensor[3, size, size] in [0, 1], {"boxes", "labels"})``, the image resized
    by ``min(size / h, size / w)`` and padded right / bottom with zeros.
    """

    def __init__(self, records: list[tuple[Path, np.ndarray, np.ndarray]], size: int,
                 flip_p: float = 0.5) -> None:
        self.records, self.size, self.flip_p = records, int(size), float(flip_p)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        path, boxes, labels = self.records[index]
        image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        h, w = image.shape[:2]
        scale = min(self.size / h, self.size / w)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h),
                                            interpolation=cv2.INTER_LINEAR)
        out = boxes.astype(np.float32) * np.float32(scale)
        if random.random() < self.flip_p:  # flip the content, which starts at x = 0
            canvas[:, :new_w] = canvas[:, :new_w][:, ::-1]
            out = out.copy()
            out[:, [0, 2]] = new_w - out[:, [2, 0]]
        tensor = torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1))).float() / 255
        return tensor, {"boxes": torch.from_numpy(out), "labels": torch.from_numpy(labels)}


def records_of(dataset: Any) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """(path, boxes, labels) of every image of a detkit ``CocoDetection``, in its order."""
    out = []
    for i in range(len(dataset)):
        target = dataset.raw_target(i)
        out.append((dataset.img_dir / dataset.image_info(i)["file_name"], target["boxes"],
                    target["labels"]))
    return out


def loaders(json_path: Path, workers: int, batch: int) -> dict[str, DataLoader]:
    """detkit's training loader and the plain peer over the images of ``json_path``."""
    from detkit.data.coco import CocoDetection
    from detkit.data.transforms import build_transforms
    from detkit.engine.build import build_train_loader
    from detkit.engine.distributed import DistInfo

    dataset = CocoDetection(json_path, None, None, full_decode=False, skip_unreadable=True)
    dataset.transforms = build_transforms(BASE_CFG, INPUT_SIZE, train=True, seed=0)
    cfg = {"seed": 0, "data": {"batch_size": batch, "num_workers": workers,
                               "oversample": {"enabled": False}}}
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    plain = PlainDetection(records_of(dataset), INPUT_SIZE)
    return {DETKIT: build_train_loader(dataset, cfg, info),
            PEER: DataLoader(plain, batch_size=batch, shuffle=True, num_workers=workers,
                             collate_fn=collate_detection)}


def sweep(json_path: Path, args: argparse.Namespace) -> dict[str, dict[str, dict[int, float]]]:
    """{"wall" | "cpu": {loader: {workers: images per second}}}, medians over ``args.runs``."""
    out: dict[str, dict[str, dict[int, float]]] = {"wall": {}, "cpu": {}}
    for workers in args.workers:
        times: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.runs):
            for name, loader in loaders(json_path, workers, args.batch).items():
                times.setdefault(name, []).append(time_per_image(loader, args.images))
        for name, values in times.items():
            for k, metric in enumerate(("wall", "cpu")):
                out[metric].setdefault(name, {})[workers] = (
                    1.0 / statistics.median(v[k] for v in values))
        print(f"{workers} workers: " + ", ".join(
            f"{n} {out['wall'][n][workers]:.1f} img/s" for n in times), flush=True)
    return out


def report(out: dict[str, dict[str, dict[int, float]]], args: argparse.Namespace) -> None:
    """Print images/s per wall and per CPU second with detkit x peer per worker count."""
    print(f"\nLoader images/s, BCCD train at {INPUT_SIZE}, batch {args.batch}, median of "
          f"{args.runs} runs of {args.images} images (load average {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} cores)")
    print(f"{'workers':>7s} {'time':>4s} {DETKIT:>24s} {PEER:>24s} {'detkit x peer':>13s}")
    for metric in ("wall", "cpu"):
        for workers in args.workers:
            ours, peer = out[metric][DETKIT][workers], out[metric][PEER][workers]
            print(f"{workers:7d} {metric:>4s} {ours:24.1f} {peer:24.1f} {ours / peer:13.2f}")
    print("cpu rows: images per CPU-second of the main process and its workers")


def main() -> int:
    """Parse arguments, convert BCCD, sweep the worker counts, print / plot / write."""
    from detkit.data.voc import convert_voc_to_coco

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--images", type=int, default=96, help="images timed per run")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the main process")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    root = bccd_root()
    if not (root / "Annotations").is_dir():
        print(f"BCCD not found at {root} (set DETKIT_BCCD)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        convert_voc_to_coco(root, tmp)
        out = sweep(Path(tmp) / "train.json", args)
    report(out, args)
    if args.plot:
        plot_curves(out["wall"], args.plot, "DataLoader workers", "images / s (wall, median)",
                    f"Training loader throughput vs workers ({os.cpu_count()} cores)",
                    logx=False, logy=False)
    if args.json:
        write_json(args.json, {"batch": args.batch, "runs": args.runs, "images": args.images,
                               "images_per_s": out})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
