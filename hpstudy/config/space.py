"""Search spaces as data: the entry schema, the course's presets, and their expansion.

A space maps canonical dotted config keys (``train.lr``) to :class:`SearchParam`
entries. This module knows nothing of Optuna: sampling lives in
:mod:`hpstudy.search.space`; checking that every value of a space makes a
valid config happens once per study, in :func:`hpstudy.config.from_dict`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ValidationError, model_validator

from ..models import INITS
from ._base import OPTIMIZERS, ConfigError, Strict

# Short names accepted by --set and in search spaces.
ALIASES: dict[str, str] = {
    "lr": "train.lr",
    "learning_rate": "train.lr",
    "batch_size": "data.batch_size",
    "weight_decay": "train.weight_decay",
    "momentum": "train.momentum",
    "optimizer": "train.optimizer",
    "max_epochs": "train.max_epochs",
    "epochs": "train.max_epochs",
    "scheduler": "train.scheduler.name",
    "seed": "train.seed",
    "dropout": "model.drop_rate",
    "drop_rate": "model.drop_rate",
    "init": "model.init",
    "activation": "model.act_layer",
    "act_layer": "model.act_layer",
    "normalization": "model.norm_layer",
    "norm_layer": "model.norm_layer",
    "arch": "model.arch",
    "augmentation": "data.augmentation",
    "dataset": "data.dataset",
    "init_from": "model.init_from",
    "finetune": "train.finetune",
    "max_norm": "train.max_norm",
    "l1": "train.l1",
    "tta": "train.tta",
}


def resolve_key(key: str) -> str:
    """Canonical dotted key (``lr`` -> ``train.lr``)."""
    return ALIASES.get(key, key)


class SearchParam(Strict):
    """One search-space entry: ``{type: float|int|categorical, low, high, log, step, choices}``.

    ``allow_zero`` on a log-scale float searches one extra decade below ``low``
    whose values are mapped to exactly 0 (weight decay "0 allowed").
    """

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    allow_zero: bool = False

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, list):  # [a, b, c] -> categorical
            return {"type": "categorical", "choices": v}
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical entries need a non-empty 'choices' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} entries need 'low' and 'high'")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log-scale entries need low > 0 (use allow_zero for 0)")
        if self.log and self.step is not None:
            raise ValueError("'step' and 'log' cannot be combined")
        if self.allow_zero and not (self.type == "float" and self.log):
            raise ValueError("allow_zero is for log-scale float entries")
        return self

    def probe_values(self) -> list[Any]:
        """Values to try against the schema: every choice, or the bounds (and 0)."""
        if self.type == "categorical":
            return list(self.choices or [])
        if self.type == "int":
            return [int(self.low), int(self.high)]  # type: ignore[arg-type]
        return [self.low, self.high] + ([0.0] if self.allow_zero else [])


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


def resolve_space(space: str | dict[str, Any], source: str = "search.space"
                  ) -> dict[str, SearchParam]:
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
