"""Sampling a search space with Optuna.

The space itself is data (:mod:`hpstudy.config.space`: the entry schema, the
course's presets, :func:`resolve_space`). Sampling asks Optuna for every
entry, maps ``allow_zero`` values and returns the dict of overrides that turns
the study's base config into the trial's concrete config
(:meth:`hpstudy.config.StudyConfig.concrete`).
"""

from __future__ import annotations

import math
from typing import Any

import optuna

from ..config import ConfigError, SearchParam, resolve_key
from ..config.space import COURSE, COURSE_FULL, PRESETS, resolve_space

__all__ = ["COURSE", "COURSE_FULL", "PRESETS", "check_resumable", "distribution",
           "enqueue_values", "grid", "resolve_space", "suggest"]


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


def distribution(p: SearchParam) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution :func:`suggest` samples ``p`` from."""
    if p.type == "categorical":
        return optuna.distributions.CategoricalDistribution(p.choices)
    if p.type == "int":
        return optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log,
                                                    step=int(p.step or 1))
    low = p.low / 10.0 if p.allow_zero else p.low
    return optuna.distributions.FloatDistribution(low, p.high, log=p.log or p.allow_zero,
                                                  step=None if p.allow_zero else p.step)


def _describe(d: optuna.distributions.BaseDistribution) -> str:
    if isinstance(d, optuna.distributions.CategoricalDistribution):
        return f"categorical {list(d.choices)}"
    kind = "int" if isinstance(d, optuna.distributions.IntDistribution) else "float"
    extra = ", log" if getattr(d, "log", False) else ""
    return f"{kind} [{d.low:g}, {d.high:g}{extra}]"


def check_resumable(study: optuna.Study, space: dict[str, SearchParam], source: str) -> None:
    """Refuse to resume a study whose stored trials sampled a parameter differently.

    Optuna would fail every new trial with "Cannot set different distribution
    kind to the same parameter name"; this says so before any trial runs.

    Raises:
        ConfigError: naming the parameter, both distributions and two ways out.
    """
    seen: dict[str, optuna.distributions.BaseDistribution] = {}
    for t in study.get_trials(deepcopy=False):
        for name, d in t.distributions.items():
            seen.setdefault(name, d)
    for key, p in space.items():
        old = seen.get(key)
        if old is None:
            continue
        new = distribution(p)
        try:
            optuna.distributions.check_distribution_compatibility(old, new)
        except ValueError:
            raise ConfigError(
                source, f"search.space.{key}",
                f"study '{study.study_name}' already sampled {key} as {_describe(old)}, now it "
                f"is {_describe(new)}; Optuna cannot mix the two in one study. Start a new "
                f"study (--set name=<new name>) or restore the old entry for {key}") from None
