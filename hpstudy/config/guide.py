"""The ``guide:`` section of a study file: ``hpstudy guide``'s three stages.

Every field has a default that works for any image classification study, so
the section is optional. The schema checks types and ranges when the study
file loads (for every verb); what needs the architecture or the dataset
(capacity knobs, the stage-3 space, batch sizes against the study's space) is
checked by :func:`hpstudy.guide.plan_guide` before ``hpstudy guide`` writes
anything, with errors naming ``guide.<field>``.

Units: epochs are full passes over the stage's training images; an lr range
test counts its steps as the fraction of an epoch they are.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from ._base import Strict

ADAM_FAMILY = ("adam", "adamw", "nadam")
"""Optimizers stage 2 may search ("Adam to explore")."""
SGD_FAMILY = ("momentum", "nesterov")
"""Optimizers of stage 3's refinement ("momentum SGD for a narrower final selection")."""


def _powers_of_two(v: list[int] | None) -> list[int] | None:
    if v is None:
        return v
    if not v:
        raise ValueError("needs at least one batch size")
    bad = [b for b in v if b < 1 or b & (b - 1)]
    if bad:
        raise ValueError(f"batch sizes are powers of 2 (the course's advice); not {bad}")
    return sorted(set(v))


class LrRangeConfig(Strict):
    """``guide.lr_range:`` the lr range test before stage 1 (an exponential sweep)."""

    steps: int = Field(60, ge=10)  # batches of the sweep (it stops early once the loss explodes)
    min_lr: float = Field(1e-6, gt=0, lt=1)  # first lr of the sweep
    max_lr: float = Field(1.0, gt=0, le=1)  # last lr: the course keeps lr below 1
    # orders of magnitude searched below the lr where the loss bottoms out
    decades: float = Field(2.0, gt=0, le=6)

    @model_validator(mode="after")
    def _ordered(self) -> LrRangeConfig:
        if self.min_lr >= self.max_lr:
            raise ValueError(f"min_lr ({self.min_lr:g}) must be below max_lr ({self.max_lr:g})")
        return self


class AnythingConfig(Strict):
    """``guide.anything:`` stage 1, learn anything (beat chance on the training set)."""

    weight: float = Field(0.1, gt=0)  # share of the budget (weights are normalized)
    trials: int = Field(6, ge=1)  # a short search: lr, batch size, init
    # per trial; null: a third of train.max_epochs, at least 3 (a rough setup needs few,
    # but enough batches to show learning on a hard set)
    epochs: int | None = Field(None, ge=1)
    # training images per trial: a count (>= 1) or a fraction (< 1) of the training split;
    # null trains on all. 5000: small sets train whole, large ones on a stratified 5000.
    # Validation shrinks with it (see data.subset).
    subset: float | None = Field(5000, gt=0)
    # accepted when training accuracy >= chance + chance_margin x (1 - chance): 0.1 ->
    # 19% for 10 classes, 14.5% for 20, 55% for 2 (the diagnosis's not_learning bar)
    chance_margin: float = Field(0.1, gt=0, lt=1)
    batch_sizes: list[int] | None = None  # powers of 2; null: the study space's choices
    inits: list[str] | None = None  # null: the study space's model.init choices, else the file's

    @field_validator("batch_sizes")
    @classmethod
    def _batch(cls, v: list[int] | None) -> list[int] | None:
        return _powers_of_two(v)

    @field_validator("subset")
    @classmethod
    def _subset(cls, v: float | None) -> float | None:
        if v is not None and v >= 1 and v != int(v):
            raise ValueError("a fraction of the training images must be below 1, a count a "
                             "whole number")
        return v


class EverythingConfig(Strict):
    """``guide.everything:`` stage 2, learn everything (grow capacity until the training set is fit).

    Regularization is off (dropout 0, weight decay 0, no augmentation, no early
    stopping). ``capacity`` lists search entries like ``search.space``
    (``model.widths: [[16, 32], [32, 64]]``, ``model.hidden: [64, 128, 256]``,
    ``model.arch: [mlp, baseline_cnn]``); when it is null, every width-like
    argument of the architecture (widths, hidden, filters, width_mult...) is
    scaled together by one factor from ``width_scales``.
    """

    weight: float = Field(0.3, gt=0)
    trials: int | None = Field(None, ge=1)  # null: until a trial fits, or the share is spent
    epochs: int | None = Field(None, ge=1)  # per trial; null: train.max_epochs
    train_acc: float = Field(0.99, gt=0, le=1)  # target training accuracy (fraction)
    capacity: dict[str, Any] | None = None  # search entries; null: scale the width knobs
    width_scales: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])
    # the Adam family ("Adam to explore"); adamw equals adam without weight decay
    optimizers: list[str] = Field(default_factory=lambda: ["adam", "nadam"])
    # stage 1's lr, searched again within this factor (one order of magnitude, centred)
    lr_span: float = Field(10.0, ge=1)

    @field_validator("width_scales")
    @classmethod
    def _scales(cls, v: list[float]) -> list[float]:
        if not v or any(s <= 0 for s in v):
            raise ValueError("needs positive scale factors, e.g. [0.5, 1, 2, 4]")
        return sorted({float(s) for s in v})

    @field_validator("optimizers")
    @classmethod
    def _adam(cls, v: list[str]) -> list[str]:
        bad = [o for o in v if o not in ADAM_FAMILY]
        if not v or bad:
            raise ValueError(f"stage 2 explores with the Adam family ({', '.join(ADAM_FAMILY)}); "
                             f"not {bad or 'an empty list'}")
        return list(dict.fromkeys(v))


class RightThingConfig(Strict):
    """``guide.right_thing:`` stage 3, learn the right thing (regularize until validation follows).

    ``space`` adds to or replaces the regularizers searched on stage 2's
    winner (dropout, weight decay, augmentation presets safe for the dataset,
    batch norm, early stopping); ``key: null`` drops one. Then ``sgd_trials``
    trials of momentum SGD refine the winner.
    """

    weight: float = Field(0.6, gt=0)
    trials: int | None = Field(None, ge=1)  # null: until the share is spent
    # per trial; null: stage 2's (the training length at which its winner fit)
    epochs: int | None = Field(None, ge=1)
    space: dict[str, Any] | None = None
    sgd_trials: int = Field(3, ge=0)  # momentum/nesterov trials around the winner
    # SGD's lr = the Adam winner's lr x this (Adam's lr is typically 10-100x smaller)
    sgd_lr_ratio: float = Field(30.0, gt=0)
    sgd_lr_band: list[float] = Field(default_factory=lambda: [0.3, 3.0])  # x the mapped lr

    @field_validator("sgd_lr_band")
    @classmethod
    def _band(cls, v: list[float]) -> list[float]:
        if len(v) != 2 or not 0 < v[0] <= v[1]:
            raise ValueError("needs [low, high] factors with 0 < low <= high, e.g. [0.3, 3]")
        return v


class GuideConfig(Strict):
    """``guide:`` settings of ``hpstudy guide`` (see README, "Guided tuning")."""

    # total training epochs of all stages; null: search.n_trials x train.max_epochs,
    # the budget a plain search of the study would spend
    budget_epochs: float | None = Field(None, gt=0)
    # the batch size the lr is given for: lr = lr_base x batch / batch_ref ("when one
    # doubles, double the other"); null: data.batch_size
    batch_ref: int | None = Field(None, ge=1)
    lr_range: LrRangeConfig = Field(default_factory=LrRangeConfig)
    anything: AnythingConfig = Field(default_factory=AnythingConfig)
    everything: EverythingConfig = Field(default_factory=EverythingConfig)
    right_thing: RightThingConfig = Field(default_factory=RightThingConfig)

    @field_validator("batch_ref")
    @classmethod
    def _ref(cls, v: int | None) -> int | None:
        return None if v is None else _powers_of_two([v])[0]  # type: ignore[index]
