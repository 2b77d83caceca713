"""What ``--resume`` restores from a checkpoint, what it takes from the config, what it refuses.

A checkpoint restores the *state* of a run: weights, optimizer moments (momentum buffers,
Adam averages), the iteration count, EMA, sampler and RNG states. The *settings* come from
the config given now, so an override on the command line takes effect:

- the optimizer's hyper-parameters (``lr`` / ``initial_lr`` from ``optim.base_lr``,
  ``weight_decay``, ``momentum``, ``nesterov``, ``betas`` ...) are those of the optimizer
  built from the config, not the checkpoint's (``torch``'s ``load_state_dict`` would keep
  the checkpoint's silently);
- the schedule's shape comes from the config; its position (iteration) from the checkpoint.

Refused, with a :class:`ResumeError` naming the differing keys, before anything is
written: another optimizer type (its state does not fit), another number of parameter
groups, and weights that do not fit the model built from the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from detkit.config import config_diff

__all__ = [
    "ResumeError",
    "check_optimizer_type",
    "load_model_weights",
    "load_optimizer_keeping_settings",
]


_KIND_KEYS = {"momentum", "dampening", "betas", "amsgrad", "final_lr", "gamma"}


class ResumeError(ValueError):
    """The checkpoint cannot continue under the given config (the reason is in the message)."""


def _section(config: Mapping[str, Any] | None, name: str) -> Mapping[str, Any]:
    value = (config or {}).get(name)
    return value if isinstance(value, Mapping) else {}


def check_optimizer_type(ckpt_config: Mapping[str, Any] | None,
                         config: Mapping[str, Any] | None) -> None:
    """Refuse a resume whose config asks for another ``optim.type`` than the checkpoint's."""
    old = _section(ckpt_config, "optim").get("type")
    new = _section(config, "optim").get("type")
    if old is not None and new is not None and old != new:
        raise ResumeError(
            f"the checkpoint was trained with optim.type={old}, the config asks for "
            f"optim.type={new}: optimizer state does not carry across types. Resume with "
            f"optim.type={old}, or start a new run (another --work-dir) from its weights"
        )


def load_model_weights(model: nn.Module, state: Mapping[str, Any],
                       ckpt_config: Mapping[str, Any] | None,
                       config: Mapping[str, Any] | None) -> None:
    """``model.load_state_dict(state)``; a mismatch raises :class:`ResumeError` naming the
    ``model.*`` keys in which the configs differ."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        differs = [f"model.{k}" for k in config_diff(_section(ckpt_config, "model"),
                                                     _section(config, "model"))]
        hint = (f"the configs differ in {', '.join(differs)}" if differs
                else "the checkpoint comes from another architecture")
        first = str(err).strip().splitlines()[0]
        raise ResumeError(
            f"the checkpoint's weights do not fit the model built from the config ({hint}): "
            f"{first}. Resume with the checkpoint's model settings, or start a new run"
        ) from None


def load_optimizer_keeping_settings(optimizer: torch.optim.Optimizer,
                                    state: Mapping[str, Any]) -> list[str]:
    """Load the optimizer's state (moments, step counts) but keep the config's settings.

    Returns the settings whose checkpoint value was replaced, as ``"name: old -> new"``
    (first group that differs), for the resume message.
    """
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    saved = state.get("param_groups", [])
    if len(saved) != len(fresh):
        raise ResumeError(
            f"the checkpoint's optimizer has {len(saved)} parameter groups, the config builds "
            f"{len(fresh)} (optim.no_decay_norm_bias or the trainable parameters changed); "
            f"resume with the checkpoint's settings, or start a new run"
        )
    for old, new in zip(saved, fresh, strict=True):
        # settings that only one optimizer family has (torch versions add others freely)
        old_kind, new_kind = set(old) & _KIND_KEYS, set(new) & _KIND_KEYS
        if old_kind != new_kind:
            raise ResumeError(
                f"the checkpoint's optimizer has the settings {', '.join(sorted(old_kind))}, "
                f"the configured one {', '.join(sorted(new_kind))}: it was trained with "
                f"another optim.type. Resume with that type, or start a new run"
            )
    try:
        optimizer.load_state_dict(dict(state))
    except (ValueError, KeyError) as err:
        raise ResumeError(f"the checkpoint's optimizer state does not fit: {err}") from None
    replaced: list[str] = []
    for group, settings in zip(optimizer.param_groups, fresh, strict=True):
        for key, value in settings.items():
            if key != "lr" and group.get(key) != value and not any(
                    r.startswith(f"{key}:") for r in replaced):
                replaced.append(f"{key}: {group.get(key)} -> {value}")
            group[key] = value
    return replaced
