"""Training logs: tqdm progress, JSON-lines records, optional TensorBoard, PNG curves.

Every record is one JSON object per line in ``<work_dir>/log.jsonl`` with at least
``{"kind": "train"|"eval", "iter": int, "epoch": int, ...}``. TensorBoard scalars are written
when the optional ``tensorboard`` package is installed; otherwise a one-line notice is printed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

# Fields of a train record that are not losses (everything else is plotted in loss.png).
NON_LOSS_KEYS = frozenset({"kind", "iter", "epoch", "lr", "images_per_s", "grad_norm",
                           "nonfinite_total", "train_seconds"})


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read every record of a JSON-lines file (a torn last line is ignored)."""
    records = []
    path = Path(path)
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_jsonl(path: str | Path, max_iter: int) -> int:
    """Keep only records with ``iter <= max_iter`` (used on resume); return how many dropped."""
    path = Path(path)
    records = read_jsonl(path)
    kept = [r for r in records if int(r.get("iter", 0)) <= max_iter]
    if path.is_file():
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return len(records) - len(kept)


def format_eta(seconds: float) -> str:
    """``h:mm:ss`` for a duration in seconds."""
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class TrainLogger:
    """Rank-0 logger: progress bar, JSON-lines file and TensorBoard scalars.

    Non-main ranks construct it with ``enabled=False`` and every method is a no-op.
    """

    def __init__(self, work_dir: str | Path, total_iters: int, start_iter: int = 0,
                 enabled: bool = True, use_tqdm: bool = True) -> None:
        self.enabled = enabled
        self.work_dir = Path(work_dir)
        self.jsonl_path = self.work_dir / "log.jsonl"
        self.total_iters = total_iters
        self._bar = None
        self._tb = None
        self._t0 = time.perf_counter()
        self._start_iter = start_iter
        if not enabled:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if use_tqdm:
            # disable=None: no bar when stderr is not a terminal (a log file would get one
            # line per refresh); the JSON-lines log and the printed records remain
            self._bar = tqdm(total=total_iters, initial=start_iter, dynamic_ncols=True,
                             desc="train", disable=None)
        if importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.work_dir / "tb"))
        else:
            self.notice("tensorboard not installed: TensorBoard scalars skipped "
                        "(pip install tensorboard to enable)")

    def notice(self, message: str) -> None:
        """Print a message without breaking the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one JSON record (flushed so it survives a killed process)."""
        if not self.enabled:
            return
        clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v
                 for k, v in record.items()}  # NaN (e.g. APl without large objects) -> null
        with self.jsonl_path.open("a") as handle:
            handle.write(json.dumps(clean) + "\n")
            handle.flush()
        if self._tb is not None:
            step = int(record.get("iter", 0))
            prefix = record.get("kind", "train")
            for key, value in record.items():
                if (key not in ("iter", "epoch") and isinstance(value, int | float)
                        and math.isfinite(value)):
                    self._tb.add_scalar(f"{prefix}/{key}", value, step)

    def train_step(self, it: int, epoch: int, losses: Mapping[str, float], lr: float,
                   images_per_s: float, extra: Mapping[str, Any] | None = None,
                   write: bool = True) -> None:
        """Advance the bar to ``it`` with losses, lr, img/s and ETA; log a JSON record."""
        if not self.enabled:
            return
        done = it - self._start_iter
        elapsed = time.perf_counter() - self._t0
        eta = elapsed / max(done, 1) * (self.total_iters - it)
        if self._bar is not None:
            self._bar.n = it
            post = {k: f"{v:.4f}" for k, v in losses.items()}
            post.update(lr=f"{lr:.2e}", img_s=f"{images_per_s:.1f}", eta=format_eta(eta))
            self._bar.set_postfix(post, refresh=True)
        if write:
            record = {"kind": "train", "iter": it, "epoch": epoch, "lr": lr,
                      "images_per_s": images_per_s, **losses, **(extra or {})}
            self.write(record)

    def close(self) -> None:
        """Close the bar and the TensorBoard writer."""
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()


def plot_curves(jsonl_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``loss.png`` (train losses vs iteration) and ``ap.png`` (eval AP vs iteration)."""
    from matplotlib.figure import Figure

    records = read_jsonl(jsonl_path)
    out_dir = Path(out_dir)
    written: list[Path] = []
    train = [r for r in records if r.get("kind") == "train"]
    if train:
        keys = sorted({k for r in train for k in r if k not in NON_LOSS_KEYS})
        fig = Figure(figsize=(7, 4))
        ax = fig.subplots()
        for key in keys:
            pts = [(r["iter"], r[key]) for r in train
                   if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=key, linewidth=1)
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        written.append(out_dir / "loss.png")
        fig.savefig(written[-1], dpi=100)
    evals = [r for r in records if r.get("kind") == "eval" and "AP" in r]
    if evals:
        fig = Figure(figsize=(7, 4))
        ax = fig.subplots()
        for key in ("AP", "AP50", "AP75", "APs"):
            pts = [(r["iter"], r[key]) for r in evals if isinstance(r.get(key), int | float)]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=key)
        ax.set_xlabel("iteration")
        ax.set_ylabel("AP")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        written.append(out_dir / "ap.png")
        fig.savefig(written[-1], dpi=100)
    return written
