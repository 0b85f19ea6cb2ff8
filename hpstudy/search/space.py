"""Search spaces: the course's advice as presets, explicit entries from study files.

A space maps canonical dotted config keys (``train.lr``) to :class:`SearchParam`
entries. Sampling asks Optuna for every entry, maps ``allow_zero`` values and
returns the dict of overrides that turns the study's base config into the
trial's concrete config.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from pydantic import ValidationError

from ..config import (
    OPTIMIZERS,
    ConfigError,
    SearchParam,
    StudyConfig,
    resolve_key,
)
from ..models import INITS

# The course's tuning advice (shared/reference/RECIPES.md, "Tuning advice").
COURSE: dict[str, dict[str, Any]] = {
    # lr below 1, searched by orders of magnitude
    "train.lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
    # batch size in powers of 2
    "data.batch_size": {"type": "categorical", "choices": [16, 32, 64, 128, 256]},
    # weight decay log-uniform, 0 allowed (one extra decade below low maps to 0)
    "train.weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True,
                           "allow_zero": True},
    # dropout 0-0.5
    "model.drop_rate": {"type": "float", "low": 0.0, "high": 0.5},
    "model.init": {"type": "categorical", "choices": [i for i in INITS if i != "default"]},
    "train.optimizer": {"type": "categorical", "choices": list(OPTIMIZERS)},
}

# Everything the course lists, including the optional knobs.
COURSE_FULL: dict[str, dict[str, Any]] = {
    **COURSE,
    "model.act_layer": {"type": "categorical",
                        "choices": ["relu", "leaky_relu", "prelu", "elu", "selu", "gelu"]},
    "model.norm_layer": {"type": "categorical", "choices": ["batch", "none"]},
    "train.scheduler.name": {"type": "categorical",
                             "choices": ["constant", "step", "cosine", "onecycle"]},
    "data.augmentation": {"type": "categorical", "choices": ["none", "standard", "strong"]},
    "train.early_stopping.enabled": {"type": "categorical", "choices": [False, True]},
}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "course": COURSE,
    "course_full": COURSE_FULL,
    "none": {},
}


def resolve_space(space: str | dict[str, Any], source: str = "search.space") -> dict[str, SearchParam]:
    """Expand a preset name or a dict (with optional ``preset`` key) into entries."""
    if isinstance(space, str):
        if space not in PRESETS:
            raise ConfigError(source, "search.space",
                              f"unknown preset '{space}' (presets: {', '.join(PRESETS)})")
        entries: dict[str, Any] = dict(PRESETS[space])
    else:
        entries = {}
        preset = space.get("preset")
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(source, "search.space.preset",
                                  f"unknown preset '{preset}' (presets: {', '.join(PRESETS)})")
            entries.update(PRESETS[preset])
        for key, spec in space.items():
            if key == "preset":
                continue
            canon = resolve_key(key)
            if spec is None:  # `key: null` removes a preset entry
                entries.pop(canon, None)
            else:
                entries[canon] = spec
    out: dict[str, SearchParam] = {}
    for key, spec in entries.items():
        try:
            out[key] = SearchParam.model_validate(spec)
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            msg = err.get("msg", "invalid").removeprefix("Value error, ")
            loc = ".".join(str(p) for p in err.get("loc", ()))
            field = f"search.space.{key}" + (f".{loc}" if loc else "")
            raise ConfigError(source, field, msg) from None
    return out


def _probe_values(p: SearchParam) -> list[Any]:
    """Values to try against the schema: every choice, or the bounds."""
    if p.type == "categorical":
        return list(p.choices or [])
    lo, hi = p.low, p.high
    if p.type == "int":
        return [int(lo), int(hi)]
    vals = [lo, hi]
    if p.allow_zero:
        vals.append(0.0)
    return vals


def validate_space(cfg: StudyConfig, source: str) -> None:
    """Check that every entry names a config key and every value it can take is valid."""
    space = resolve_space(cfg.search.space, source)
    base = cfg.to_dict()
    from ..config import apply_overrides  # local: avoids a cycle at import time

    for key, p in space.items():
        for value in _probe_values(p):
            try:
                apply_overrides(base | {"search": {**base["search"], "space": "none",
                                                   "enqueue": []}},
                                {key: value}, source=source)
            except ConfigError as e:
                raise ConfigError(
                    source, f"search.space.{key}",
                    f"value {value!r} is not valid for {e.field or key}: {e.message}",
                ) from None
    for i, params in enumerate(cfg.search.enqueue):
        for key in params:
            canon = resolve_key(key)
            if canon not in space:
                raise ConfigError(source, f"search.enqueue[{i}].{key}",
                                  f"not a key of the search space ({', '.join(space)})")


def suggest(trial: optuna.Trial, space: dict[str, SearchParam]) -> dict[str, Any]:
    """Sample every entry of ``space`` on ``trial``; returns concrete overrides."""
    out: dict[str, Any] = {}
    for key, p in space.items():
        if p.type == "categorical":
            out[key] = trial.suggest_categorical(key, p.choices)
        elif p.type == "int":
            out[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1),
                                         log=p.log)
        elif p.allow_zero:
            low = p.low / 10.0  # one extra decade whose values mean "off"
            v = trial.suggest_float(key, low, p.high, log=True)
            out[key] = 0.0 if v < p.low else v
        else:
            out[key] = trial.suggest_float(key, p.low, p.high, log=p.log, step=p.step)
    return out


def grid(space: dict[str, SearchParam]) -> dict[str, list[Any]]:
    """The grid sampler's search space: choices, or stepped ranges."""
    out: dict[str, list[Any]] = {}
    for key, p in space.items():
        if p.type == "categorical":
            out[key] = list(p.choices or [])
        elif p.step is not None:
            n = int(math.floor((p.high - p.low) / p.step + 1e-9)) + 1
            vals = [p.low + i * p.step for i in range(n)]
            out[key] = [int(v) for v in vals] if p.type == "int" else vals
        elif p.type == "int" and not p.log:
            out[key] = list(range(int(p.low), int(p.high) + 1))
        else:
            raise ConfigError(
                "search.space", f"search.space.{key}",
                "the grid sampler needs 'choices' or a 'step' for every entry",
            )
    return out


def enqueue_values(params: dict[str, Any], space: dict[str, SearchParam]) -> dict[str, Any]:
    """Study-file enqueue entries -> Optuna param values (zero maps into the 'off' decade)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        canon = resolve_key(key)
        p = space[canon]
        if p.allow_zero and value == 0:
            value = p.low / 10.0  # the bottom of the 'off' decade samples as 0
        out[canon] = value
    return out
