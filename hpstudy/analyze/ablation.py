"""Ablation statistics: which change helps, alone and combined, with how much certainty.

An ablation trains a set of *cells* (one level of every factor) several times
with different seeds. :class:`Design` names the factors, their levels, the
baseline level of each and (for ``one_at_a_time``) the level that goes into the
full configuration; :meth:`Design.cells` lists the cells to train.

Statistics read a *runs* frame, one row per run: ``cell`` (a cell id such as
``dropout=on,schedule=step``), ``seed``, ``state`` (``COMPLETE`` counts; any
other state, e.g. ``FAIL`` for a diverged run, is excluded with a note),
``value`` (the chosen metric; a non-finite value is excluded with a note) and
optionally ``reason`` (why a run failed).

- Per cell: mean, sample standard deviation (n - 1) and a confidence interval of
  the mean that respects the metric's range (:func:`mean_ci`):

  * accuracies (``*_acc``, in [0, 1]): the t interval intersected with [0, 1],
    widened where needed to the Wilson score interval of the pooled count
    (``k = sum round(p_i * n_val)`` correct of ``N = n * n_val`` images):
    ``(k + z^2/2) / (N + z^2) +- z / (N + z^2) * sqrt(k (N - k) / N + z^2/4)``,
    ``z = 1.96``. The t part carries the seeds' spread, the Wilson part the
    validation set's resolution, which a few runs can understate (two runs
    often land on the same count). Without ``n_val`` only the t part is
    known. Simulated coverage (``benchmarks/ablation_intervals.py``: logit-
    normal seed effects, 287 validation images, medians 0.8-0.995, 2-5 runs)
    is 0.96-1.0 for this interval, 0.77-0.96 for the t interval alone (worst at
    2 runs near 100%, where both runs often land on the same count) and
    0.77-0.96 for a t interval on the logit scale, which is also up to 20x
    wider at 2 runs (a run at 100% is an outlier on that scale).
  * a cell whose runs all gave the same accuracy (std 0): the seeds may not
    change anything, so its runs count once: the Wilson interval of one run's
    count of ``n_val`` images (zero width without ``n_val``). It is flagged.
  * losses: the t interval ``mean +- t(0.975, n - 1) * std / sqrt(n)``, its lower
    end clipped at 0 (a loss is never negative).

  A cell with fewer than 3 runs is flagged: its std rests on one degree of
  freedom and ``t(0.975, 1) = 12.7`` makes its interval very wide.

- Effects, each a difference of two groups of runs with Welch's interval
  ``diff +- t(0.975, df) * sqrt(s1^2/n1 + s2^2/n2)`` (Welch-Satterthwaite df)
  and Welch's t-test p-value (:func:`scipy.stats.ttest_ind`, ``equal_var=False``):

  * ``one_at_a_time``: ``alone`` = (the factor's level alone on the baseline)
    - baseline, for every non-baseline level; ``in_full`` = full - (full with
    the factor back at its baseline level), for the factor's full level.
  * ``full_factorial``: ``main`` = mean of every run at a level - mean of every
    run at the factor's baseline level (runs pooled over the other factors), for
    every non-baseline level. A factor with three or more levels therefore gets
    one main effect per non-baseline level, each against the baseline level.

- Interactions (``full_factorial`` only), for every pair of factors and every
  pair of their non-baseline levels ``a``, ``b``: the 2x2 contrast
  ``m(a, b) - m(a, B0) - m(A0, b) + m(A0, B0)`` of the pooled group means
  (``A0``, ``B0`` the baseline levels), i.e. how much more (or less) the two
  changes give together than the sum of each alone. Its standard error is
  ``sqrt(sum s_i^2 / n_i)`` with Welch-Satterthwaite degrees of freedom (the
  same test as Welch's, for a four-group contrast).
- Effects and interactions on accuracies: a difference of accuracies lies in
  [-1, 1] (an interaction in [-2, 2]); the Welch interval is intersected with
  that range, which keeps its coverage.
- An effect is *distinguishable from noise* when its Welch p-value is below
  ``alpha`` = 0.05 (its interval excludes 0). Each test stands alone: with m
  comparisons about ``0.05 m`` pass by chance; the summary says so.
- The smallest effect the design could detect (the minimum detectable effect,
  two-sided level ``alpha`` = 0.05, power 0.8) for two groups of ``n1`` and ``n2``
  runs: ``MDE = (t(1 - alpha/2, df) + t(power, df)) * s * sqrt(1/n1 + 1/n2)``
  with ``df = n1 + n2 - 2`` and ``s`` the pooled within-cell std over every cell
  with two or more runs, ``sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1))``. For two
  cells of ``n`` runs that is ``(t(0.975, 2n - 2) + t(0.8, 2n - 2)) * s * sqrt(2/n)``,
  the design's figure (``AblationStats.mde``, ``n`` the most common runs per cell);
  each effect also gets its own (main effects pool many runs per side).
- Cells still improving at their last epoch (the mean curves' verdict is
  ``not_converged``, or their validation loss is lowest at the last epoch,
  :func:`diagnose_cells`) are flagged ``train longer``: an effect involving
  them compares unfinished runs and may change with more epochs.

A statistic that cannot be computed (a group with fewer than two runs) is NaN
and a note says why; a run that failed never stops the analysis.

:func:`collect_ablation` reads the runs of an ablation back from MLflow (tags
``hpstudy.kind=ablation``, ``hpstudy.ablation``, ``hpstudy.cell``,
``hpstudy.seed``), with their per-epoch histories.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as _st

from .._urls import absolute_url
from .collect import HISTORY_COLUMNS, read_history
from .diagnose import diagnose
from .fmt import finite, interval, number, p_value

DESIGNS = ("one_at_a_time", "full_factorial")
METRICS = ("best_val_acc", "best_val_loss", "test_acc", "test_loss")
CONFIDENCE = 0.95


def higher_is_better(metric: str) -> bool:
    """Accuracies are maximized, losses minimized."""
    return not metric.endswith("loss")


# ------------------------------------------------------------------ design
def cell_id(levels: dict[str, str], order: Sequence[str]) -> str:
    """``dropout=on,schedule=step``: every factor's level, in factor order."""
    return ",".join(f"{f}={levels[f]}" for f in order)


class Cell(NamedTuple):
    """One configuration of the ablation.

    Attributes:
        id: ``factor=level,...`` over every factor (the ``hpstudy.cell`` tag).
        levels: factor -> level.
        roles: why the cell is in the design (``baseline``, ``only dropout=on``,
            ``full``, ``full without dropout``, or ``factorial``).
        label: a short display name.
    """

    id: str
    levels: dict[str, str]
    roles: tuple[str, ...]
    label: str


@dataclass(frozen=True)
class Design:
    """Factors, levels and the design that picks the cells.

    Attributes:
        kind: ``one_at_a_time`` or ``full_factorial``.
        factors: factor -> its level names, in order.
        baseline: factor -> its baseline level.
        full: factor -> the level it takes in the full configuration
            (``one_at_a_time``; ignored by ``full_factorial``).
    """

    kind: str
    factors: dict[str, tuple[str, ...]]
    baseline: dict[str, str]
    full: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in DESIGNS:
            raise ValueError(f"design must be one of {', '.join(DESIGNS)}, got {self.kind!r}")
        if not self.factors:
            raise ValueError("an ablation needs at least one factor")
        for f, levels in self.factors.items():
            if len(levels) < 2 or len(set(levels)) != len(levels):
                raise ValueError(f"factor {f!r} needs two or more distinct levels")
            if self.baseline.get(f) not in levels:
                raise ValueError(f"factor {f!r}: baseline level not among its levels")
            if self.kind == "one_at_a_time" and (
                    self.full.get(f) not in levels or self.full[f] == self.baseline[f]):
                raise ValueError(f"factor {f!r}: the full level must be a non-baseline level")

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(self.factors)

    def non_baseline(self, factor: str) -> tuple[str, ...]:
        return tuple(lv for lv in self.factors[factor] if lv != self.baseline[factor])

    def _changed(self, levels: dict[str, str]) -> str:
        diff = [f"{f}={levels[f]}" for f in self.order if levels[f] != self.baseline[f]]
        return ", ".join(diff) or "baseline"

    def cells(self) -> list[Cell]:
        """The cells to train, in display order (duplicates merged, roles kept)."""
        planned: list[tuple[dict[str, str], str, str]] = []  # levels, role, label
        base = dict(self.baseline)
        if self.kind == "full_factorial":
            for combo in itertools.product(*self.factors.values()):
                levels = dict(zip(self.order, combo, strict=True))
                role = "baseline" if levels == base else "factorial"
                planned.append((levels, role, self._changed(levels)))
        else:
            planned.append((base, "baseline", "baseline"))
            for f in self.order:
                for lv in self.non_baseline(f):
                    planned.append(({**base, f: lv}, f"only {f}={lv}", f"{f}={lv}"))
            full = dict(self.full)
            planned.append((full, "full", "full"))
            for f in self.order:
                planned.append(({**full, f: self.baseline[f]}, f"full without {f}",
                                f"full without {f}"))
        out: dict[str, Cell] = {}
        for levels, role, label in planned:
            cid = cell_id(levels, self.order)
            if cid in out:
                c = out[cid]
                out[cid] = c._replace(roles=(*c.roles, role))
            else:
                out[cid] = Cell(cid, levels, (role,), label)
        return list(out.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain data (kept as a tag on the ablation's MLflow summary run)."""
        return {"kind": self.kind, "factors": {k: list(v) for k, v in self.factors.items()},
                "baseline": dict(self.baseline), "full": dict(self.full)}


# ------------------------------------------------------------------ numbers
ALPHA = 0.05  # two-sided level of every test and of the minimum detectable effect
POWER = 0.8  # the minimum detectable effect is found with this probability


def is_accuracy(metric: str) -> bool:
    """Accuracies (``*_acc``) are fractions in [0, 1]; their intervals respect that."""
    return metric.endswith("_acc")


class MeanCI(NamedTuple):
    """A cell's mean, std and interval; ``method`` says how the interval was made."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    method: str = "t"


def wilson(k: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials."""
    z = float(_st.norm.ppf(0.5 + confidence / 2))
    centre = (k + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * math.sqrt(k * (n - k) / n + z * z / 4)
    return max(0.0, centre - half), min(1.0, centre + half)


def _proportion_ci(x: np.ndarray, mean: float, std: float, half: float,
                   n_val: int | None, confidence: float) -> MeanCI:
    n = len(x)
    if std == 0.0:
        if not n_val:
            return MeanCI(n, mean, 0.0, mean, mean, "none (identical runs)")
        lo, hi = wilson(round(mean * n_val), n_val, confidence)
        return MeanCI(n, mean, 0.0, lo, hi, "Wilson, one run's count")
    lo, hi = max(0.0, mean - half), min(1.0, mean + half)
    clipped = lo != mean - half or hi != mean + half
    method = "t, clipped to [0, 1]" if clipped else "t"
    if n_val:
        k = sum(round(v * n_val) for v in x)
        wlo, whi = wilson(k, n * n_val, confidence)
        if wlo < lo and whi > hi:
            method = "Wilson, pooled counts"
        elif wlo < lo or whi > hi:
            method = f"{method}, widened to Wilson"
        lo, hi = min(lo, wlo), max(hi, whi)
    return MeanCI(n, mean, std, lo, hi, method)


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE, *,
            scale: str = "linear", n_val: int | None = None) -> MeanCI:
    """Mean, sample std and an interval of the mean (NaN where n is too small).

    Args:
        values: the runs' values (non-finite ones are ignored).
        confidence: the interval's level.
        scale: ``linear`` (the t interval), ``proportion`` (accuracies: inside
            [0, 1], at least the pooled Wilson interval; see the module docstring)
            or ``positive`` (losses: the t interval clipped at 0).
        n_val: validation images behind each accuracy (``proportion`` only).
    """
    if scale not in ("linear", "proportion", "positive"):
        raise ValueError(f"scale must be linear, proportion or positive, got {scale!r}")
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return MeanCI(0, math.nan, math.nan, math.nan, math.nan, "")
    mean = float(x.mean())
    if n < 2:
        return MeanCI(1, mean, math.nan, math.nan, math.nan, "")
    std = float(x.std(ddof=1))
    half = float(_st.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    if scale == "proportion":
        return _proportion_ci(x, mean, std, half, n_val, confidence)
    if scale == "positive":
        return MeanCI(n, mean, std, max(0.0, mean - half), mean + half, "t, clipped at 0")
    return MeanCI(n, mean, std, mean - half, mean + half, "t")


def pooled_std(cells: pd.DataFrame) -> tuple[float, int]:
    """The within-cell std pooled over cells with two or more runs, and its degrees of
    freedom: ``sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1))`` (NaN, 0 without such a cell)."""
    ok = cells[(cells["n"] >= 2) & cells["std"].notna()]
    df = int((ok["n"] - 1).sum())
    if df == 0:
        return math.nan, 0
    return math.sqrt(float(((ok["n"] - 1) * ok["std"] ** 2).sum()) / df), df


def min_detectable(s: float, n1: int, n2: int, alpha: float = ALPHA,
                   power: float = POWER) -> float:
    """``(t(1 - alpha/2, df) + t(power, df)) * s * sqrt(1/n1 + 1/n2)``, ``df = n1 + n2 - 2``:
    the difference a two-sided t-test at level ``alpha`` finds with probability ``power``
    (NaN when it cannot be computed)."""
    df = n1 + n2 - 2
    if not (math.isfinite(s) and n1 >= 1 and n2 >= 1 and df >= 1):
        return math.nan
    q = float(_st.t.ppf(1 - alpha / 2, df) + _st.t.ppf(power, df))
    return q * s * math.sqrt(1 / n1 + 1 / n2)


class Contrast(NamedTuple):
    """A difference of group means with its interval and test."""

    estimate: float
    ci_low: float
    ci_high: float
    t: float
    df: float
    p_value: float
    note: str = ""


def contrast(groups: Sequence[Sequence[float]], weights: Sequence[float],
             confidence: float = CONFIDENCE) -> Contrast:
    """``sum w_i * mean_i`` with a Welch-Satterthwaite t interval and two-sided p-value.

    With weights ``(1, -1)`` this is Welch's two-sample test (and its p-value is
    taken from :func:`scipy.stats.ttest_ind` with ``equal_var=False``).
    """
    xs = [np.asarray([v for v in g if math.isfinite(v)], dtype=float) for g in groups]
    w = np.asarray(weights, dtype=float)
    if any(len(x) == 0 for x in xs):
        return Contrast(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan,
                        "a compared cell has no successful run")
    est = float(sum(wi * x.mean() for wi, x in zip(w, xs, strict=True)))
    if any(len(x) < 2 for x in xs):
        return Contrast(est, math.nan, math.nan, math.nan, math.nan, math.nan,
                        "needs two or more runs on each side for an interval")
    parts = [wi * wi * x.var(ddof=1) / len(x) for wi, x in zip(w, xs, strict=True)]
    se2 = float(sum(parts))
    if se2 == 0.0:
        return Contrast(est, est, est, math.nan, math.nan, math.nan,
                        "no variation across seeds: no test possible")
    df = se2 ** 2 / float(sum(p * p / (len(x) - 1) for p, x in zip(parts, xs, strict=True)))
    se = math.sqrt(se2)
    t = est / se
    if len(xs) == 2 and list(w) == [1.0, -1.0]:
        with warnings.catch_warnings():
            # scipy warns when one side's runs are (nearly) identical, e.g. the same
            # validation accuracy on every seed; a zero variance on one side is fine for Welch
            warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
            p = float(_st.ttest_ind(xs[0], xs[1], equal_var=False).pvalue)
    else:
        p = float(2 * _st.t.sf(abs(t), df))
    half = float(_st.t.ppf(0.5 + confidence / 2, df)) * se
    return Contrast(est, est - half, est + half, t, df, p)


# ------------------------------------------------------------------ statistics
@dataclass
class AblationStats:
    """Everything the ablation report and the CLI print.

    Attributes:
        metric: the metric compared (``best_val_acc``...).
        higher_is_better: the metric's direction.
        confidence: the interval level (0.95).
        cells: one row per planned cell: ``cell``, ``label``, ``roles``, one
            column per factor, ``n``, ``n_failed``, ``mean``, ``std``, ``ci_low``,
            ``ci_high``, ``ci_method`` (how the interval was made, see
            :func:`mean_ci`), ``flags`` (``n<3``, ``std 0``, ``train longer``,
            joined by ``, ``) and ``verdict`` (of the mean curves, when known).
        effects: ``factor``, ``level``, ``reference`` (level compared with),
            ``kind`` (alone/in_full/main), ``label``, ``cell``, ``reference_cell``
            (one_at_a_time), ``n``, ``n_ref``, ``mean``, ``mean_ref``, ``effect``,
            ``ci_low``, ``ci_high``, ``t``, ``df``, ``p_value``, ``mde`` (the smallest
            effect these group sizes could detect), ``distinguishable`` (p < alpha),
            ``note``.
        interactions: ``factor_a``, ``level_a``, ``factor_b``, ``level_b``,
            ``label``, ``interaction``, ``ci_low``, ``ci_high``, ``t``, ``df``,
            ``p_value``, ``distinguishable``, ``note`` (empty for one_at_a_time).
        group_means: pooled means per pair of factor levels (interaction plots):
            ``factor_a``, ``level_a``, ``factor_b``, ``level_b``, ``n``, ``mean``,
            ``std``, ``ci_low``, ``ci_high``.
        notes: excluded runs, missing cells, flagged cells, statistics that could
            not be computed.
        pooled_std: the within-cell std pooled over cells (NaN without two runs in a cell).
        pooled_df: its degrees of freedom.
        n_per_cell: the most common number of runs per cell (0 without runs).
        mde: the smallest difference between two cells of ``n_per_cell`` runs the
            design could detect (level ``alpha``, power ``power``; module docstring).
        alpha: the level of every test.
        power: the power the minimum detectable effect is computed for.
        train_longer: labels of the cells still improving at their last epoch.
        n_val: validation images behind each accuracy (None when unknown).
    """

    metric: str
    higher_is_better: bool
    confidence: float
    cells: pd.DataFrame
    effects: pd.DataFrame
    interactions: pd.DataFrame
    group_means: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    pooled_std: float = math.nan
    pooled_df: int = 0
    n_per_cell: int = 0
    mde: float = math.nan
    alpha: float = ALPHA
    power: float = POWER
    train_longer: list[str] = field(default_factory=list)
    n_val: int | None = None

    @property
    def is_accuracy(self) -> bool:
        return is_accuracy(self.metric)


EFFECT_COLUMNS = ("factor", "level", "reference", "kind", "label", "cell", "reference_cell",
                  "n", "n_ref", "mean", "mean_ref", "effect", "ci_low", "ci_high", "t", "df",
                  "p_value", "mde", "distinguishable", "note")
INTERACTION_COLUMNS = ("factor_a", "level_a", "factor_b", "level_b", "label", "interaction",
                       "ci_low", "ci_high", "t", "df", "p_value", "distinguishable", "note")
GROUP_COLUMNS = ("factor_a", "level_a", "factor_b", "level_b", "n", "mean", "std", "ci_low",
                 "ci_high")
CELL_FLAGS = ("n<3", "std 0", "train longer")


def _usable(runs: pd.DataFrame, design: Design) -> tuple[pd.DataFrame, list[str]]:
    """Successful runs of planned cells (with factor-level columns), and notes on the rest."""
    missing = {"cell", "seed", "state", "value"} - set(runs.columns)
    if missing:
        raise ValueError(f"runs lacks column(s) {', '.join(sorted(missing))}")
    cells = {c.id: c for c in design.cells()}
    notes: list[str] = []
    rows = []
    for r in runs.to_dict("records"):
        where = f"cell {r['cell']} seed {r['seed']}"
        if r["cell"] not in cells:
            notes.append(f"{where}: not a cell of this design (ignored)")
            continue
        value = r["value"]
        finite = isinstance(value, int | float) and math.isfinite(value)
        if r["state"] != "COMPLETE" or not finite:
            why = r.get("reason") if isinstance(r.get("reason"), str) and r.get("reason") else (
                f"state {r['state']}" if r["state"] != "COMPLETE" else "no finite metric value")
            notes.append(f"{where} excluded from the statistics: {why}")
            continue
        rows.append({**cells[r["cell"]].levels, "cell": r["cell"], "seed": r["seed"],
                     "value": float(value)})
    cols = ["cell", "seed", "value", *design.order]
    return pd.DataFrame(rows, columns=cols), notes


def _values(ok: pd.DataFrame, **levels: str) -> list[float]:
    mask = np.ones(len(ok), dtype=bool)
    for f, lv in levels.items():
        mask &= (ok[f] == lv).to_numpy()
    return ok.loc[mask, "value"].tolist()


class _Scale(NamedTuple):
    """How a metric's numbers are bounded: the cell interval's scale and the range of a
    difference (None: unbounded)."""

    cell: str
    bound: float | None
    n_val: int | None


def _scale(metric: str, n_val: int | None) -> _Scale:
    if is_accuracy(metric):
        return _Scale("proportion", 1.0, n_val)
    if metric.endswith("loss"):
        return _Scale("positive", None, None)
    return _Scale("linear", None, None)


def _cell_table(ok: pd.DataFrame, runs: pd.DataFrame, design: Design, confidence: float,
                scale: _Scale, improving: dict[str, str]) -> tuple[pd.DataFrame, list[str]]:
    notes = []
    rows = []
    for c in design.cells():
        vals = ok.loc[ok["cell"] == c.id, "value"].tolist()
        m = mean_ci(vals, confidence, scale=scale.cell, n_val=scale.n_val)
        n_failed = int((runs["cell"] == c.id).sum()) - m.n  # every attempt that did not count
        flags = []
        if m.n == 0:
            notes.append(f"cell {c.id}: no successful run")
        elif m.n == 1:
            notes.append(f"cell {c.id}: one successful run, no interval")
        if 0 < m.n < 3:
            flags.append("n<3")
        if m.n >= 2 and m.std == 0.0:
            flags.append("std 0")
            notes.append(
                f"cell {c.label}: std 0: identical results on all {m.n} runs - the seeds may not "
                "change anything (data.seed and train.seed both set?)"
                + (f"; its interval is the Wilson interval of one run's {scale.n_val} images"
                   if m.method.startswith("Wilson") else "; its interval has zero width"))
        if c.id in improving:
            flags.append("train longer")
        rows.append({"cell": c.id, "label": c.label, "roles": ", ".join(c.roles), **c.levels,
                     "n": m.n, "n_failed": max(0, n_failed), "mean": m.mean, "std": m.std,
                     "ci_low": m.ci_low, "ci_high": m.ci_high, "ci_method": m.method,
                     "flags": ", ".join(flags)})
    cols = ["cell", "label", "roles", *design.order, "n", "n_failed", "mean", "std", "ci_low",
            "ci_high", "ci_method", "flags"]
    return pd.DataFrame(rows, columns=cols), notes


def _clip(c: Contrast, bound: float | None) -> Contrast:
    """The interval intersected with ``[-bound, bound]`` (the range the contrast can take)."""
    if bound is None or not (math.isfinite(c.ci_low) and math.isfinite(c.ci_high)):
        return c
    return c._replace(ci_low=max(c.ci_low, -bound), ci_high=min(c.ci_high, bound))


def _distinguishable(p: float, alpha: float) -> bool | None:
    return bool(p < alpha) if math.isfinite(p) else None


def _effect_row(factor: str, level: str, reference: str, kind: str, label: str,
                treat: list[float], ref: list[float], confidence: float, scale: _Scale,
                s_pooled: float, alpha: float, cell: str = "",
                reference_cell: str = "") -> dict[str, Any]:
    c = _clip(contrast([treat, ref], [1.0, -1.0], confidence), scale.bound)
    fin = [v for v in treat if math.isfinite(v)], [v for v in ref if math.isfinite(v)]
    return {"factor": factor, "level": level, "reference": reference, "kind": kind,
            "label": label, "cell": cell, "reference_cell": reference_cell,
            "n": len(fin[0]), "n_ref": len(fin[1]),
            "mean": float(np.mean(fin[0])) if fin[0] else math.nan,
            "mean_ref": float(np.mean(fin[1])) if fin[1] else math.nan,
            "effect": c.estimate, "ci_low": c.ci_low, "ci_high": c.ci_high, "t": c.t,
            "df": c.df, "p_value": c.p_value,
            "mde": min_detectable(s_pooled, len(fin[0]), len(fin[1]), alpha),
            "distinguishable": _distinguishable(c.p_value, alpha), "note": c.note}


def _effects(ok: pd.DataFrame, design: Design, confidence: float, scale: _Scale,
             s_pooled: float, alpha: float) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    order = design.order
    more = (confidence, scale, s_pooled, alpha)
    if design.kind == "one_at_a_time":
        base = dict(design.baseline)
        base_id = cell_id(base, order)
        seen: set[tuple[str, str]] = set()
        for f in order:
            for lv in design.non_baseline(f):
                cid = cell_id({**base, f: lv}, order)
                seen.add((cid, base_id))
                rows.append(_effect_row(
                    f, lv, design.baseline[f], "alone", f"{f}={lv} alone (vs baseline)",
                    _values(ok, **{**base, f: lv}), _values(ok, **base), *more, cid, base_id))
        full = dict(design.full)
        full_id = cell_id(full, order)
        for f in order:
            without = {**full, f: design.baseline[f]}
            wid = cell_id(without, order)
            if (full_id, wid) in seen:  # one factor: full vs without is the alone effect
                continue
            rows.append(_effect_row(
                f, full[f], design.baseline[f], "in_full",
                f"{f}={full[f]} in full (vs full without {f})",
                _values(ok, **full), _values(ok, **without), *more, full_id, wid))
    else:
        for f in order:
            b = design.baseline[f]
            for lv in design.non_baseline(f):
                rows.append(_effect_row(
                    f, lv, b, "main", f"{f}={lv} vs {b} (main effect)",
                    _values(ok, **{f: lv}), _values(ok, **{f: b}), *more))
    return pd.DataFrame(rows, columns=list(EFFECT_COLUMNS))


def _interactions(ok: pd.DataFrame, design: Design, confidence: float, scale: _Scale,
                  alpha: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    if design.kind != "full_factorial" or len(design.order) < 2:
        return (pd.DataFrame(columns=list(INTERACTION_COLUMNS)),
                pd.DataFrame(columns=list(GROUP_COLUMNS)))
    for fa, fb in itertools.combinations(design.order, 2):
        for la in design.factors[fa]:
            for lb in design.factors[fb]:
                m = mean_ci(_values(ok, **{fa: la, fb: lb}), confidence, scale=scale.cell,
                            n_val=scale.n_val)
                groups.append({"factor_a": fa, "level_a": la, "factor_b": fb, "level_b": lb,
                               "n": m.n, "mean": m.mean, "std": m.std, "ci_low": m.ci_low,
                               "ci_high": m.ci_high})
        a0, b0 = design.baseline[fa], design.baseline[fb]
        for la in design.non_baseline(fa):
            for lb in design.non_baseline(fb):
                g = [_values(ok, **{fa: x, fb: y}) for x, y in
                     ((la, lb), (la, b0), (a0, lb), (a0, b0))]
                # a sum of two accuracy differences lies in [-2, 2]
                c = _clip(contrast(g, [1.0, -1.0, -1.0, 1.0], confidence),
                          2 * scale.bound if scale.bound else None)
                rows.append({"factor_a": fa, "level_a": la, "factor_b": fb, "level_b": lb,
                             "label": f"{fa}={la} x {fb}={lb}", "interaction": c.estimate,
                             "ci_low": c.ci_low, "ci_high": c.ci_high, "t": c.t, "df": c.df,
                             "p_value": c.p_value,
                             "distinguishable": _distinguishable(c.p_value, alpha),
                             "note": c.note})
    return (pd.DataFrame(rows, columns=list(INTERACTION_COLUMNS)),
            pd.DataFrame(groups, columns=list(GROUP_COLUMNS)))


def _improving(diagnosis: pd.DataFrame | None) -> dict[str, str]:
    """cell id -> why it is still improving, from :func:`diagnose_cells`' table."""
    if diagnosis is None or not len(diagnosis) or "still_improving" not in diagnosis:
        return {}
    return {r["cell"]: r["improving_why"] for r in diagnosis.to_dict("records")
            if r["still_improving"]}


def analyze_ablation(runs: pd.DataFrame, design: Design, metric: str = "best_val_acc",
                     confidence: float = CONFIDENCE, *, n_val: int | None = None,
                     diagnosis: pd.DataFrame | None = None, alpha: float = ALPHA,
                     power: float = POWER) -> AblationStats:
    """Cell statistics, effects and interactions of an ablation's runs.

    Args:
        runs: one row per run (``cell``, ``seed``, ``state``, ``value``, optional
            ``reason``); see the module docstring.
        design: the ablation's :class:`Design`.
        metric: the metric in ``value`` (sets the direction, and for accuracies the
            bounded intervals).
        confidence: level of every interval.
        n_val: validation images behind each accuracy (the Wilson part of their intervals).
        diagnosis: :func:`diagnose_cells`' table: cells still improving at their
            last epoch are flagged ``train longer``.
        alpha: level of the tests and of the minimum detectable effect.
        power: power of the minimum detectable effect.

    Returns:
        The :class:`AblationStats`.
    """
    scale = _scale(metric, n_val)
    improving = _improving(diagnosis)
    ok, notes = _usable(runs, design)
    cells, cell_notes = _cell_table(ok, runs, design, confidence, scale, improving)
    if diagnosis is not None and len(diagnosis):
        verdicts = dict(zip(diagnosis["cell"], diagnosis["verdict"], strict=True))
        cells["verdict"] = [verdicts.get(c) for c in cells["cell"]]
    s_pooled, df_pooled = pooled_std(cells)
    effects = _effects(ok, design, confidence, scale, s_pooled, alpha)
    interactions, groups = _interactions(ok, design, confidence, scale, alpha)
    for frame, col in ((effects, "label"), (interactions, "label")):
        for r in frame.to_dict("records"):
            if r["note"]:
                notes.append(f"{r[col]}: {r['note']}")
    counts = Counter(int(n) for n in cells["n"] if n > 0)
    n_cell = counts.most_common(1)[0][0] if counts else 0
    mde = min_detectable(s_pooled, n_cell, n_cell, alpha, power)
    if 0 < n_cell < 3:
        t1 = float(_st.t.ppf(0.5 + confidence / 2, max(1, n_cell - 1)))
        cell_notes.append(
            f"{n_cell} run{'s' if n_cell > 1 else ''} per cell, fewer than 3 seeds: "
            + (f"each cell's std rests on one degree of freedom (t = {t1:.1f}), so its "
               "interval is wide and a single unlucky seed can decide an effect"
               if n_cell == 2 else "no cell has a spread to measure")
            + "; use 3 or more seeds")
    longer = [c.label for c in design.cells() if c.id in improving]
    for c in design.cells():
        if c.id in improving:
            cell_notes.append(f"cell {c.label}: train longer: {improving[c.id]}")
    return AblationStats(metric, higher_is_better(metric), confidence, cells, effects,
                         interactions, groups, [*notes, *cell_notes], s_pooled, df_pooled,
                         n_cell, mde, alpha, power, longer, n_val)


# ------------------------------------------------------------------ diagnosis per cell
CURVE_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")


def mean_history(histories: pd.DataFrame, cell: str) -> list[dict[str, Any]]:
    """The cell's learning curves averaged over its runs, epoch by epoch."""
    h = histories[histories["cell"] == cell]
    if h.empty:
        return []
    m = h.groupby("epoch", sort=True)[list(CURVE_KEYS)].mean().reset_index()
    return m.to_dict("records")


def diagnose_cells(runs: pd.DataFrame, histories: pd.DataFrame, design: Design,
                   num_classes: int | None, n_val: int | None = None) -> pd.DataFrame:
    """One row per cell: each seed's verdict and the verdict on the mean learning curves.

    Columns ``cell``, ``label``, ``verdicts`` (verdict -> count over the cell's
    runs), ``verdict``, ``reason`` and ``advice`` (the diagnosis of the mean curves;
    None without history or class count), ``still_improving`` and
    ``improving_why``: the mean curves are ``not_converged``, or their validation
    loss is lowest at the last epoch (falling still, if within noise). ``n_val``:
    validation images of the data set (the noise of the curves; averaged curves
    do not reveal it themselves).
    """
    rows = []
    for c in design.cells():
        mine = runs[runs["cell"] == c.id] if len(runs) else runs
        counts = Counter(v for v in (mine["diagnosis"] if "diagnosis" in mine else [])
                         if isinstance(v, str) and v)
        hist = mean_history(histories, c.id) if len(histories) else []
        verdict = reason = None
        advice: list[str] = []
        why = ""
        if hist and num_classes and num_classes >= 2:
            d = diagnose(hist, num_classes, n_val=n_val)
            verdict, reason, advice = d.verdict, d.reason, d.advice
            last, vmin = d.evidence.get("epochs"), d.evidence.get("val_loss_min_epoch")
            if verdict == "not_converged":
                why = f"its mean curves are not_converged: {reason}"
            elif verdict not in ("diverged", "not_learning") and last and last >= 2 \
                    and vmin == hist[-1]["epoch"]:
                why = f"its mean validation loss is lowest at the last epoch ({vmin} of {last}"
                fall, snr = d.evidence.get("val_loss_fall"), d.evidence.get("val_loss_fall_snr")
                if finite(fall) and finite(snr):
                    why += (f"; it fell {100 * fall:.1f}% of its descent over the last "
                            f"{d.evidence.get('last_third_epochs')} epochs, {snr:.1f}x its noise")
                why += "): still falling"
        rows.append({"cell": c.id, "label": c.label, "verdicts": dict(counts),
                     "verdict": verdict, "reason": reason, "advice": advice,
                     "still_improving": bool(why), "improving_why": why})
    return pd.DataFrame(rows, columns=["cell", "label", "verdicts", "verdict", "reason",
                                       "advice", "still_improving", "improving_why"])


# ------------------------------------------------------------------ collecting from MLflow
RUN_COLUMNS = ("run_id", "cell", "seed", "state", "value", "reason", "diagnosis",
               "config_hash", "num_classes", "start_time")


@dataclass
class AblationData:
    """An ablation's runs as read back from MLflow.

    Attributes:
        name: the ablation name.
        runs: one row per (cell, seed): :data:`RUN_COLUMNS` (the latest finished
            run, else the latest attempt).
        histories: per-epoch records, long format, with ``run_id``, ``cell``, ``seed``.
        stale: runs left out because they are not in the plan (another cell or seed,
            or a config hash that differs from the plan's).
        num_classes: class count of the data set (from the runs' params).
        n_val: validation images of the data set (from the runs' params).
    """

    name: str
    runs: pd.DataFrame
    histories: pd.DataFrame
    stale: int = 0
    num_classes: int | None = None
    n_val: int | None = None


def _run_state(run: Any) -> str:
    tag = run.data.tags.get("hpstudy.state")
    if run.info.status == "FINISHED":
        return tag if tag in ("COMPLETE", "PRUNED") else "COMPLETE"
    return tag if tag and tag != "RUNNING" else {"FAILED": "FAIL"}.get(run.info.status,
                                                                         run.info.status)


def search_ablation_runs(client: Any, experiment_id: str, ablation: str,
                         finished_only: bool = False) -> list[Any]:
    """The cell runs of an ablation (every attempt), newest first."""
    filt = f"tags.`hpstudy.kind` = 'ablation' and tags.`hpstudy.ablation` = '{ablation}'"
    if finished_only:
        filt += " and attributes.status = 'FINISHED'"
    out: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filt, max_results=1000,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def collect_ablation(tracking_uri: str, experiment_id: str, ablation: str, metric: str,
                     expected: dict[tuple[str, int], str] | None = None) -> AblationData:
    """Read an ablation's runs and histories from MLflow.

    Args:
        tracking_uri: the MLflow tracking URI.
        experiment_id: the ablation's experiment.
        ablation: the ablation name (tag ``hpstudy.ablation``).
        metric: the run metric to compare (``best_val_acc``...).
        expected: ``(cell, seed) -> config hash`` of the current plan; runs of
            other cells/seeds or with another hash (the config changed since)
            are left out and counted in ``stale``.

    Returns:
        The :class:`AblationData`.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=absolute_url(tracking_uri))
    chosen: dict[tuple[str, int], Any] = {}
    stale = 0
    for run in search_ablation_runs(client, experiment_id, ablation):
        tags = run.data.tags
        try:
            key = (tags["hpstudy.cell"], int(tags["hpstudy.seed"]))
        except (KeyError, ValueError):
            continue
        if expected is not None and expected.get(key) != tags.get("hpstudy.config_hash"):
            stale += 1
            continue
        prev = chosen.get(key)
        # newest first: keep the first finished run, else the newest attempt
        if prev is None or (prev.info.status != "FINISHED" and run.info.status == "FINISHED"):
            chosen[key] = run
    rows, parts, classes, n_vals = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="hpstudy-ablation-") as tmp:
        for (cell, seed), run in sorted(chosen.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            params = run.data.params
            nc = params.get("data.num_classes")
            if nc is not None and nc.isdigit():
                classes.append(int(nc))
            nv = params.get("data.n_val")
            if nv is not None and nv.isdigit():
                n_vals.append(int(nv))
            state = _run_state(run)
            value = run.data.metrics.get(metric, math.nan)
            rows.append({"run_id": run.info.run_id, "cell": cell, "seed": seed,
                         "state": state, "value": value,
                         "reason": run.data.tags.get("hpstudy.fail_reason"),
                         "diagnosis": run.data.tags.get("hpstudy.diagnosis"),
                         "config_hash": run.data.tags.get("hpstudy.config_hash"),
                         "num_classes": int(nc) if nc is not None and nc.isdigit() else None,
                         "start_time": run.info.start_time})
            try:
                h = read_history(client, run.info.run_id, Path(tmp) / run.info.run_id, run)
            except Exception:  # noqa: BLE001 - a run without history still has its metric
                continue
            if len(h):
                h = h.reindex(columns=list(HISTORY_COLUMNS))
                h.insert(0, "seed", seed)
                h.insert(0, "cell", cell)
                h.insert(0, "run_id", run.info.run_id)
                parts.append(h)
    runs = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    histories = (pd.concat(parts, ignore_index=True) if parts else
                 pd.DataFrame(columns=["run_id", "cell", "seed", *HISTORY_COLUMNS]))
    num_classes = Counter(classes).most_common(1)[0][0] if classes else None
    n_val = Counter(n_vals).most_common(1)[0][0] if n_vals else None
    return AblationData(ablation, runs, histories, stale, num_classes, n_val)


# ------------------------------------------------------------------ text
def _num(x: Any, signed: bool = False) -> str:
    return number(x, fixed=True, signed=signed)


def _ci(lo: Any, hi: Any, signed: bool = False) -> str:
    return interval(lo, hi, fixed=True, signed=signed)


def amount(s: AblationStats, x: Any, signed: bool = False) -> str:
    """A difference in the metric's words: accuracy points (``+1.2 points``) or the raw value."""
    if not finite(x):
        return "-"
    if s.is_accuracy:
        return f"{100 * x:{'+' if signed else ''}.1f} points"
    return number(x, signed=signed)


def _amount_ci(s: AblationStats, lo: Any, hi: Any) -> str:
    if not (finite(lo) and finite(hi)):
        return "no interval"
    if s.is_accuracy:
        return f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"
    return interval(lo, hi, signed=True)


def interval_words(s: AblationStats) -> str:
    """How the cells' intervals are made, in one line."""
    pct = int(round(100 * s.confidence))
    if s.is_accuracy:
        return (f"{pct}% t interval inside [0, 1], at least the Wilson interval of the pooled "
                "counts (of one run's count for identical runs)")
    if s.metric.endswith("loss"):
        return f"{pct}% t interval, clipped at 0"
    return f"{pct}% t interval"


def design_sentence(s: AblationStats) -> str:
    """The smallest difference the design could detect, in words (empty without runs)."""
    if not s.n_per_cell:
        return ""
    if not finite(s.mde):
        return (f"{s.n_per_cell} run(s) per cell: too few to measure the seeds' spread, so "
                "no difference can be told from noise")
    return (f"With {s.n_per_cell} runs per cell and a seed-to-seed std of "
            f"{amount(s, s.pooled_std)} (pooled over cells, {s.pooled_df} df), this design "
            f"detects a difference between two cells of about {amount(s, s.mde)} "
            f"({100 * s.power:.0f}% power, two-sided test at {s.alpha:g}); smaller true "
            "effects will mostly read as noise.")


def effect_sentences(s: AblationStats) -> list[str]:
    """Every effect and interaction in words: estimate, interval, and whether it stands out
    from the seeds' noise (``dropout=on alone (vs baseline): +1.2 points [+0.4, +2.0],
    distinguishable from noise (p=0.010)``)."""
    longer = {c for c, f in zip(s.cells["cell"], s.cells["flags"], strict=True)
              if "train longer" in str(f)}
    labels = dict(zip(s.cells["cell"], s.cells["label"], strict=True))
    out = []
    rows = [(r, "effect") for r in s.effects.to_dict("records")]
    rows += [(r, "interaction") for r in s.interactions.to_dict("records")]
    for r, col in rows:
        head = f"{r['label']}: "
        if not finite(r[col]):
            out.append(head + f"no estimate ({r['note'] or 'no successful run'})")
            continue
        text = head + f"{amount(s, r[col], True)} {_amount_ci(s, r['ci_low'], r['ci_high'])}"
        if r["distinguishable"] is True:
            text += f", distinguishable from noise (p={p_value(r['p_value'])})"
        elif r["distinguishable"] is False:
            text += f", not distinguishable from noise (p={p_value(r['p_value'])})"
            if finite(r.get("mde")):
                text += f"; these groups detect about {amount(s, r['mde'])}"
        else:
            text += f", no test ({r['note'] or 'too few runs'})"
        unfinished = [labels.get(c, c) for c in (r.get("cell"), r.get("reference_cell"))
                      if c and c in longer]
        if unfinished:
            text += (f"; read with care: {' and '.join(unfinished)} still improving at the "
                     "last epoch (train longer)")
        out.append(text)
    tested = [r for r, _ in rows if r["distinguishable"] is not None]
    if len(tested) > 1:
        out.append(f"Each test stands alone at {s.alpha:g}: of {len(tested)} comparisons, about "
                   f"{s.alpha * len(tested):.2g} would pass by chance even if nothing mattered.")
    return out


def format_ablation(s: AblationStats) -> str:
    """Cells, effects and interactions as plain-text tables (what ``hpstudy ablate`` prints),
    then the flagged cells, the effects in words and the design's detectable difference."""
    pct = int(round(100 * s.confidence))
    way = "higher" if s.higher_is_better else "lower"
    lines = [f"metric       {s.metric} ({way} is better); mean +- std over seeds, "
             f"{interval_words(s)}", ""]
    width = max([len("cell"), *(len(x) for x in s.cells["label"])]) + 2
    lines.append(f"{'cell':{width}s}{'n':>3s}  {'mean':>8s}  {'std':>8s}  {pct}% CI{'':12s}  "
                 "flags")
    for r in s.cells.to_dict("records"):
        fail = f"{r['n_failed']} failed" if r["n_failed"] else ""
        flags = ", ".join(x for x in (r["flags"], fail) if x)
        lines.append(f"{r['label']:{width}s}{r['n']:>3d}  {_num(r['mean']):>8s}  "
                     f"{_num(r['std']):>8s}  {_ci(r['ci_low'], r['ci_high']):18s}  "
                     f"{flags}".rstrip())
    if s.train_longer:
        lines += ["", "before reading the effects: still improving at the last epoch (train "
                      f"longer): {', '.join(s.train_longer)}"]
    for title, frame, col in (("effect", s.effects, "effect"),
                              ("interaction", s.interactions, "interaction")):
        if frame.empty:
            continue
        width = max([len(title), *(len(x) for x in frame["label"])]) + 2
        lines += ["", f"{title:{width}s}{'estimate':>9s}  {pct}% CI{'':14s}  p (Welch)"]
        for r in frame.to_dict("records"):
            lines.append(f"{r['label']:{width}s}{_num(r[col], True):>9s}  "
                         f"{_ci(r['ci_low'], r['ci_high'], True):22s}  {p_value(r['p_value'])}")
    words = effect_sentences(s)
    if words:
        lines += ["", "in words"] + [f"  - {w}" for w in words]
    design = design_sentence(s)
    if design:
        lines += ["", "design       " + design]
    if s.notes:
        lines += ["", "notes"] + [f"  - {n}" for n in s.notes]
    return "\n".join(lines)


def stats_json(s: AblationStats) -> str:
    """The statistics as JSON (cells, effects, interactions, notes, design), NaN as null."""
    def frame(df: pd.DataFrame) -> list[dict[str, Any]]:
        return json.loads(df.to_json(orient="records"))

    def num(x: float) -> float | None:
        return float(x) if finite(x) else None

    return json.dumps({"metric": s.metric, "higher_is_better": s.higher_is_better,
                       "confidence": s.confidence, "cells": frame(s.cells),
                       "effects": frame(s.effects), "interactions": frame(s.interactions),
                       "design": {"n_per_cell": s.n_per_cell, "pooled_std": num(s.pooled_std),
                                  "pooled_df": s.pooled_df, "mde": num(s.mde),
                                  "alpha": s.alpha, "power": s.power,
                                  "train_longer": s.train_longer},
                       "notes": s.notes}, indent=1)
