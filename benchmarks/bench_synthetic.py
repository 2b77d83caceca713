"""Synthetic COCO generation speed (``detkit.data.synthetic.generate_synthetic_coco``).

Generates ``--images`` images of ``--size`` pixels into a temporary folder and reports images
per CPU second (CPU time, not wall time: a shared machine's wall time follows the other jobs'
load). About 280-330 images per CPU second were measured at 320 px; the exit status is 1 when
the rate is under ``--min-rate`` (120 by default, room for slower machines).

    python benchmarks/bench_synthetic.py [--images 100] [--size 320] [--min-rate 120]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from detkit.data.synthetic import generate_synthetic_coco


def images_per_cpu_second(images: int, size: int, seed: int = 0) -> float:
    """Generate ``images`` synthetic images of ``size`` px; images per CPU second."""
    with tempfile.TemporaryDirectory() as out:
        start = time.process_time()
        generate_synthetic_coco(out, num_images=images, image_size=size, seed=seed)
        return images / max(time.process_time() - start, 1e-9)


def main(argv: list[str] | None = None) -> int:
    """Print the rate; 1 when it is below ``--min-rate``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--min-rate", type=float, default=120.0)
    args = parser.parse_args(argv)
    rate = images_per_cpu_second(args.images, args.size)
    print(f"synthetic generation: {rate:.0f} images per CPU second at {args.size} px "
          f"(minimum {args.min_rate:g})")
    return 0 if rate >= args.min_rate else 1


if __name__ == "__main__":
    raise SystemExit(main())
