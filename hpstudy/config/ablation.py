"""Ablation files: the schema (the planner and runner are in :mod:`hpstudy.search.ablation`).

An ablation file names a base study config, the factors to vary (each with two
or more named levels), a design and the seeds::

    name: mnist_dropout_schedule
    base: ../thesis/mnist_baseline.yaml     # a study file (relative to this file) or inline
    overrides: {train.max_epochs: 30}       # applied to the base for every cell
    factors:
      dropout: {off: 0.0, on: 0.5}          # shorthand: the factor name is a config key/alias
      batch_norm:                           # one config key, a value per level
        key: model.norm_layer
        levels: {off: none, on: batch}
      schedule:                             # several keys per level
        levels:
          constant: {train.scheduler: constant}
          step: {train.scheduler: {name: multistep, milestones: [20], gamma: 0.1}}
        baseline: constant                  # default: the first level
        full: step                          # one_at_a_time's full level; default: the last
    design: one_at_a_time                   # or full_factorial
    seeds: [0, 1, 2]
    metric: best_val_acc                    # best_val_loss, test_acc, test_loss

It is read by the same YAML loader, strict base model and error mapping as a
study file (:mod:`hpstudy.config._base`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..names import ABLATION_DESIGNS, ABLATION_METRICS
from ._base import Strict, read_yaml, validate
from .space import resolve_key
from .study import ReportConfig

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$"  # no '=' or ',': names build cell ids
SEED_KEYS = ("train.seed", "data.seed")  # set per run from `seeds:`
ABLATION_SET_KEYS = ("seeds", "design", "metric")  # --set keys that change the ablation itself


def _level_name(k: Any) -> str:
    return str(k).lower() if isinstance(k, bool) else str(k)


class Factor(Strict):
    """One factor: level name -> a value of ``key``, or a mapping of dotted keys to values.

    Attributes:
        key: the config key (dotted or an alias) every level sets; None when each
            level is a mapping ``{dotted.key: value}``.
        levels: level name -> value (or mapping), in order.
        baseline: the baseline level (default: the first).
        full: the level in one_at_a_time's full configuration (default: the last
            non-baseline level).
        description: free text (what the factor tests).
    """

    key: str | None = None
    levels: dict[str, Any]
    baseline: str | None = None
    full: str | None = None
    description: str = ""

    @field_validator("levels", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        return {_level_name(k): x for k, x in v.items()} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _consistent(self) -> Factor:
        if len(self.levels) < 2:
            raise ValueError("a factor needs two or more levels")
        for name in self.levels:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"level name {name!r} must be letters, digits, _ . + - "
                                 "(no '=' or ',')")
        if self.baseline is None:
            self.baseline = next(iter(self.levels))
        elif self.baseline not in self.levels:
            raise ValueError(f"baseline {self.baseline!r} is not a level "
                             f"(levels: {', '.join(self.levels)})")
        if self.full is None:
            self.full = [lv for lv in self.levels if lv != self.baseline][-1]
        elif self.full not in self.levels or self.full == self.baseline:
            raise ValueError(f"full {self.full!r} must be a level other than the baseline")
        for name in self.levels:
            for key in self.overrides(name):  # raises for a malformed level
                if key in SEED_KEYS or key == "name":
                    raise ValueError(f"level {name!r} sets {key}: seeds come from `seeds:` "
                                     "and the run name from the ablation")
        return self

    def overrides(self, level: str) -> dict[str, Any]:
        """The level's dotted-key overrides (aliases resolved)."""
        value = self.levels[level]
        if self.key is not None:
            return {resolve_key(self.key): value}
        if not isinstance(value, dict) or not value:
            raise ValueError(f"level {level!r} must map config keys to values "
                             "({model.arch: nin, ...}) unless the factor names its `key:`")
        return {resolve_key(str(k)): v for k, v in value.items()}


class AblationTracking(Strict):
    """``tracking:`` where the ablation's runs go."""

    uri: str | None = None  # None: the base config's, $MLFLOW_TRACKING_URI, or the default
    experiment: str | None = None  # None: the ablation name
    artifact_location: str | None = None


class AblationFile(Strict):
    """A whole ablation file (see the module docstring)."""

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    description: str = ""
    base: str | dict[str, Any]
    overrides: dict[str, Any] = Field(default_factory=dict)
    factors: dict[str, Factor] = Field(min_length=1)
    design: Literal[ABLATION_DESIGNS] = "one_at_a_time"  # type: ignore[valid-type]
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    metric: Literal[ABLATION_METRICS] = "best_val_acc"  # type: ignore[valid-type]
    tracking: AblationTracking = Field(default_factory=AblationTracking)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @field_validator("factors", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        """``dropout: {off: 0.0, on: 0.5}`` -> ``{key: dropout, levels: {...}}``;
        ``arch: {nin: {model.arch: nin}, ...}`` -> ``{levels: {...}}``."""
        if not isinstance(v, dict):
            return v
        out: dict[str, Any] = {}
        for name, spec in v.items():
            name = str(name)
            if isinstance(spec, dict) and "levels" not in spec:
                values = list(spec.values())
                if all(isinstance(x, dict) for x in values):
                    spec = {"levels": spec}
                elif not any(isinstance(x, dict) for x in values):
                    if "." not in resolve_key(name):
                        raise ValueError(
                            f"factor {name!r}: its levels are plain values, so its name must be "
                            "a config key or alias (dropout, lr, augmentation, scheduler...) or "
                            "it needs `key:` and `levels:`")
                    spec = {"key": name, "levels": spec}
                else:
                    raise ValueError(f"factor {name!r}: levels mix plain values and mappings; "
                                     "use `key:` + `levels:` or a mapping for every level")
            out[name] = spec
        return out

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        if any(s < 0 for s in v):
            raise ValueError("seeds must be >= 0")
        return v

    @field_validator("factors")
    @classmethod
    def _no_conflicts(cls, factors: dict[str, Factor]) -> dict[str, Factor]:
        owner: dict[str, str] = {}
        for fname, f in factors.items():
            if not re.match(NAME_PATTERN, fname):
                raise ValueError(f"factor name {fname!r} must be letters, digits, _ . + - "
                                 "(no '=' or ',')")
            keys = {k for lv in f.levels for k in f.overrides(lv)}
            for k in keys:
                other = next((o for ok, o in owner.items() if _overlap(k, ok) and o != fname),
                             None)
                if other:
                    raise ValueError(f"factors {other!r} and {fname!r} both set {k}: "
                                     "a cell's config would depend on their order")
                owner[k] = fname
        return factors

    def factor_keys(self) -> dict[str, str]:
        """Every config key a factor sets -> the factor."""
        return {k: n for n, f in self.factors.items() for lv in f.levels
                for k in f.overrides(lv)}


def _overlap(a: str, b: str) -> bool:
    """``train.scheduler`` and ``train.scheduler.name`` touch the same setting."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def read_ablation(path: str | Path) -> dict[str, Any]:
    """Load an ablation file (YAML 1.2 booleans), raising ConfigError naming it."""
    return read_yaml(path, "ablation file")


def parse_ablation(raw: dict[str, Any], source: str) -> AblationFile:
    """Validate a parsed ablation file, raising ConfigError naming ``source`` and the field."""
    return validate(AblationFile, raw, source)
