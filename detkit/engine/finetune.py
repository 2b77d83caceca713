"""Fine-tuning: start a run from a whole-detector checkpoint (``model.load_from``).

Every tensor of the checkpoint whose name and shape match the new model is copied into it;
a tensor whose shape differs (the class-count-sized layers of a head when the new data has
another number of classes) keeps the new model's initialisation, i.e. is re-initialised.
Every key that did not load is named in the :class:`WeightLoadReport`: re-initialised
(with both shapes), missing from the checkpoint, or present only in the checkpoint. The
optimizer, schedule and iteration start afresh (that is what distinguishes fine-tuning from
``--resume``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from detkit.engine.checkpoint import load_checkpoint

__all__ = ["WeightLoadReport", "load_detector_weights"]


@dataclass(frozen=True)
class WeightLoadReport:
    """What :func:`load_detector_weights` took from a checkpoint and what it left."""

    source: str
    weights: str  # "ema" or "model": which weights of the checkpoint were read
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)  # "key: checkpoint [..] vs model [..]"
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable summary naming every key that did not load."""
        total = len(self.loaded) + len(self.reinitialised) + len(self.missing)
        out = [f"model.load_from {self.source} ({self.weights} weights): loaded "
               f"{len(self.loaded)} of the model's {total} tensors"]
        out += [f"  re-initialised (shape differs) {k}" for k in self.reinitialised]
        out += [f"  not in the checkpoint, left as initialised: {k}" for k in self.missing]
        out += [f"  in the checkpoint only, unused: {k}" for k in self.unexpected]
        return out


def load_detector_weights(model: nn.Module, path: str | Path, prefer_ema: bool = True
                          ) -> WeightLoadReport:
    """Copy the matching tensors of the detector checkpoint ``path`` into ``model`` in place.

    Args:
        model: the freshly built detector (its own initialisation is kept where the
            checkpoint has no tensor of the same name and shape).
        path: a detkit checkpoint (``last.pth`` / ``best.pth``) of any detector.
        prefer_ema: read the EMA weights when the checkpoint holds them (what evaluation
            uses), else the raw model weights.
    """
    from detkit.engine.inference import state_dict_from_checkpoint

    state, which = state_dict_from_checkpoint(load_checkpoint(path), prefer_ema)
    own = model.state_dict()
    merged = dict(own)
    loaded, reinit, unexpected = [], [], []
    for key, tensor in state.items():
        if key not in own:
            unexpected.append(key)
        elif tuple(tensor.shape) != tuple(own[key].shape):
            reinit.append(f"{key}: checkpoint {list(tensor.shape)} vs model "
                          f"{list(own[key].shape)}")
        else:
            merged[key] = tensor.to(dtype=own[key].dtype)
            loaded.append(key)
    model.load_state_dict(merged, strict=True)
    missing = [k for k in own if k not in state]
    return WeightLoadReport(str(path), which, loaded, reinit, missing, unexpected)
