"""Checkpoints written atomically and read with ``torch.load(weights_only=True)``.

A save writes to a temporary file in the target's directory, flushes and fsyncs it, then
renames it over the target (``os.replace`` is atomic on POSIX) and fsyncs the directory. A
crash at any point leaves either the old file or the new one, never a torn file. Contents
must be tensors, containers and primitive types only, so that loading needs no pickle trust.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (the previous file is left in place)."""


class CheckpointLoadError(ValueError):
    """A file is not a loadable checkpoint (unreadable, or refused by ``weights_only``)."""


def _remove_quietly(name: str) -> None:
    if os.path.exists(name):
        os.unlink(name)


def atomic_save(obj: Mapping[str, Any], path: str | Path) -> Path:
    """Save ``obj`` to ``path`` atomically (temp file, fsync, rename, fsync dir)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(dict(obj), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except (OSError, RuntimeError) as err:
        # torch reports a failed write (a full disk) as "unexpected pos ..." RuntimeError
        _remove_quietly(tmp_name)
        raise CheckpointWriteError(
            f"could not write the checkpoint {path} ({type(err).__name__}: {err}); the "
            f"previous {path.name}, if any, is unchanged. Is the disk full or read-only?"
        ) from err
    except BaseException:
        _remove_quietly(tmp_name)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no pickled code is ever run).

    Raises FileNotFoundError naming the path, and :class:`CheckpointLoadError` (a
    ValueError) for a file that is not a checkpoint or holds objects other than tensors,
    containers and primitives (the loader refuses those rather than executing them).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointLoadError(
            f"refused to load {path}: it is not a plain checkpoint (tensors, containers and "
            f"numbers only; detkit never runs pickled code): {first}"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointLoadError(f"cannot read the checkpoint {path}: {err}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointLoadError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def as_checkpoint(checkpoint: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    """A loaded checkpoint dict as it is, a path through :func:`load_checkpoint`."""
    return checkpoint if isinstance(checkpoint, Mapping) else load_checkpoint(checkpoint)


def capture_rng_state(loader_state: torch.Tensor | None = None) -> dict[str, Any]:
    """RNG states of python, numpy, torch (CPU and CUDA), plus a DataLoader generator state.

    ``loader_state`` is the generator state to restore (the trainer passes the state taken at
    the start of the current epoch, so a resumed epoch re-creates the same loader seeds).
    Stored as tensors / ints so ``weights_only`` loading accepts them.
    """
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(py_state), "gauss": gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss),
                  "cached_gaussian": float(np_cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if loader_state is not None:
        state["loader"] = loader_state.clone()
    return state


def restore_rng_state(state: Mapping[str, Any],
                      loader_generator: torch.Generator | None = None) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])
