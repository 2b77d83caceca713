"""Numeric ranges of the config keys, checked when a config is loaded.

A value of the right type can still be meaningless or harmful (a negative ``gamma`` gives
a negative learning rate, ``log_interval=0`` divides by zero after the first step); such
values are refused with a ``config error:`` naming the key and the valid range, before any
work starts. Every entry is ``key: (low, high, low_open, high_open)``: the value must lie
in ``[low, high]``, with ``(`` / ``)`` ends where ``low_open`` / ``high_open`` is true
(``None``: unbounded). Lists (``optim.betas``, ``data.multiscale.sizes``) are checked item
by item. SNIP's ``data.multiscale.valid_ranges`` and ``test.valid_ranges`` are checked by
:func:`valid_range_problems`: one ``[min, max]`` with ``0 <= min < max`` per size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["RANGES", "check_ranges", "format_range", "valid_range_problems"]

Bound = tuple[float | None, float | None, bool, bool]

_POSITIVE: Bound = (0, None, True, False)
_NON_NEGATIVE: Bound = (0, None, False, False)
_AT_LEAST_ONE: Bound = (1, None, False, False)
_UNIT: Bound = (0, 1, False, False)
_UNIT_OPEN_TOP: Bound = (0, 1, False, True)

# 32 px is the coarsest stride of detkit's detectors: smaller inputs leave no feature map
_IMAGE_SIDE: Bound = (32, 8192, False, False)

RANGES: dict[str, Bound] = {
    "seed": (0, 2**32 - 1, False, False),  # numpy's seed range
    "threads": _AT_LEAST_ONE,
    "data.img_size": _IMAGE_SIDE,
    "data.batch_size": _AT_LEAST_ONE,
    "data.num_workers": _NON_NEGATIVE,
    "data.synthetic.num_images": _AT_LEAST_ONE,
    "data.synthetic.image_size": _IMAGE_SIDE,
    "data.multiscale.sizes": _IMAGE_SIDE,
    "data.multiscale.every": _AT_LEAST_ONE,
    "data.mixup.prob": _UNIT,
    "data.mixup.alpha": _POSITIVE,
    "data.mosaic.prob": _UNIT,
    "data.mosaic.beta": _POSITIVE,
    "data.oversample.repeat": _AT_LEAST_ONE,
    "data.oversample.max_area": _POSITIVE,
    "optim.base_lr": _POSITIVE,
    "optim.base_batch_size": _AT_LEAST_ONE,
    "optim.momentum": _UNIT_OPEN_TOP,
    "optim.betas": _UNIT_OPEN_TOP,
    "optim.final_lr": _POSITIVE,
    "optim.weight_decay": _NON_NEGATIVE,
    "optim.clip_grad_norm": _NON_NEGATIVE,
    "schedule.epochs": _AT_LEAST_ONE,
    "schedule.max_iters": _NON_NEGATIVE,
    "schedule.warmup_iters": _NON_NEGATIVE,
    "schedule.warmup_factor": (0, 1, True, False),
    "schedule.milestones": _AT_LEAST_ONE,
    "schedule.gamma": (0, 1, True, False),
    "schedule.min_lr_ratio": _UNIT,
    "train.label_smoothing": _UNIT_OPEN_TOP,
    "train.ema.decay": _UNIT_OPEN_TOP,
    "train.ema.tau": _NON_NEGATIVE,
    "train.max_nonfinite": _AT_LEAST_ONE,
    "train.log_interval": _AT_LEAST_ONE,
    "train.checkpoint_interval": _NON_NEGATIVE,  # 0: only at epoch ends and the last step
    "train.early_stop.patience": _NON_NEGATIVE,  # 0: no early stopping
    "train.distill.weight": _NON_NEGATIVE,
    "train.distill.temperature": _POSITIVE,
    "eval.interval": _NON_NEGATIVE,  # 0: never
    "eval.batch_size": _AT_LEAST_ONE,
    "test.img_size": _IMAGE_SIDE,
    "test.scales": _IMAGE_SIDE,
    "test.iou_threshold": _UNIT,
    "test.score_threshold": _UNIT,
    "test.max_detections": _AT_LEAST_ONE,
    "test.tile": _IMAGE_SIDE,
    "test.tile_overlap": _UNIT_OPEN_TOP,
    "test.max_dets": _AT_LEAST_ONE,
}


def format_range(bound: Bound) -> str:
    """``(0, 1]``-style text of a bound."""
    low, high, low_open, high_open = bound
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    return f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"


def _inside(value: float, bound: Bound) -> bool:
    low, high, low_open, high_open = bound
    if not math.isfinite(value):
        return False
    if low is not None and (value < low or (low_open and value == low)):
        return False
    return not (high is not None and (value > high or (high_open and value == high)))


def _lookup(cfg: Mapping[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


# SNIP valid ranges: (key, the sizes they belong to, the switch they need)
_VALID_RANGE_KEYS = (
    ("data.multiscale.valid_ranges", "data.multiscale.sizes", "data.multiscale.enabled"),
    ("test.valid_ranges", "test.scales", None),
)


def valid_range_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Problems of the SNIP valid ranges of ``cfg`` (a resolved config or a part of one):
    one ``[min, max]`` with ``0 <= min < max`` (``max`` may be ``.inf``) per size, distinct
    sizes, multi-scale training switched on, and a detkit detector (torchvision models do
    not read the ranges). Empty when the ranges are unset or valid."""
    from detkit.models.snip import valid_range_of

    problems = []
    for key, sizes_key, switch in _VALID_RANGE_KEYS:
        ranges = _lookup(cfg, key)
        if not ranges:
            continue
        sizes = _lookup(cfg, sizes_key) or []
        if len(ranges) != len(sizes):
            problems.append(f"config key '{key}' needs one [min, max] per entry of "
                            f"'{sizes_key}' ({len(sizes)} sizes {list(sizes)}), got "
                            f"{len(ranges)}")
        elif len(set(sizes)) != len(sizes):
            problems.append(f"config key '{key}' needs distinct '{sizes_key}', got "
                            f"{list(sizes)}")
        for i, item in enumerate(ranges):
            try:
                valid_range_of(item)
            except ValueError as err:
                problems.append(f"config key '{key}[{i}]': {err} (sizes in pixels; use .inf "
                                f"for no upper limit)")
        if switch is not None and _lookup(cfg, switch) is False:
            problems.append(f"config key '{key}' needs '{switch}: true' (the ranges belong "
                            f"to the multi-scale sizes)")
        if switch is not None and _lookup(cfg, "model.type") == "torchvision":
            problems.append(f"config key '{key}' is read by detkit's detectors only; "
                            f"model.type torchvision would train on every box")
    return problems


def check_ranges(cfg: Mapping[str, Any]) -> list[str]:
    """Problems of a resolved config, one ``config key 'k' must be in [a, b], got v`` line
    each (empty when every value is in range). ``None`` values (optional keys) pass. Also
    the SNIP valid ranges (:func:`valid_range_problems`)."""
    problems = valid_range_problems(cfg)
    for key, bound in RANGES.items():
        value = _lookup(cfg, key)
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if item is None or isinstance(item, bool) or not isinstance(item, int | float):
                continue
            if not _inside(float(item), bound):
                problems.append(f"config key '{key}' must be in {format_range(bound)}, "
                                f"got {item!r}")
    return problems
