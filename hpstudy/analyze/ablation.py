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

- Per cell: mean, sample standard deviation (n - 1) and the t-based confidence
  interval of the mean, ``mean +- t(0.975, n - 1) * std / sqrt(n)``.
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
from .fmt import interval, number, p_value

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
class MeanCI(NamedTuple):
    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE) -> MeanCI:
    """Mean, sample std and the t interval of the mean (NaN where n is too small)."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return MeanCI(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return MeanCI(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(_st.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return MeanCI(n, mean, std, mean - half, mean + half)


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
            ``ci_high``.
        effects: ``factor``, ``level``, ``reference`` (level compared with),
            ``kind`` (alone/in_full/main), ``label``, ``cell``, ``reference_cell``
            (one_at_a_time), ``n``, ``n_ref``, ``mean``, ``mean_ref``, ``effect``,
            ``ci_low``, ``ci_high``, ``t``, ``df``, ``p_value``, ``note``.
        interactions: ``factor_a``, ``level_a``, ``factor_b``, ``level_b``,
            ``label``, ``interaction``, ``ci_low``, ``ci_high``, ``t``, ``df``,
            ``p_value``, ``note`` (empty for one_at_a_time).
        group_means: pooled means per pair of factor levels (interaction plots):
            ``factor_a``, ``level_a``, ``factor_b``, ``level_b``, ``n``, ``mean``,
            ``std``, ``ci_low``, ``ci_high``.
        notes: excluded runs, missing cells, statistics that could not be computed.
    """

    metric: str
    higher_is_better: bool
    confidence: float
    cells: pd.DataFrame
    effects: pd.DataFrame
    interactions: pd.DataFrame
    group_means: pd.DataFrame
    notes: list[str] = field(default_factory=list)


EFFECT_COLUMNS = ("factor", "level", "reference", "kind", "label", "cell", "reference_cell",
                  "n", "n_ref", "mean", "mean_ref", "effect", "ci_low", "ci_high", "t", "df",
                  "p_value", "note")
INTERACTION_COLUMNS = ("factor_a", "level_a", "factor_b", "level_b", "label", "interaction",
                       "ci_low", "ci_high", "t", "df", "p_value", "note")
GROUP_COLUMNS = ("factor_a", "level_a", "factor_b", "level_b", "n", "mean", "std", "ci_low",
                 "ci_high")


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


def _cell_table(ok: pd.DataFrame, runs: pd.DataFrame, design: Design,
                confidence: float) -> tuple[pd.DataFrame, list[str]]:
    notes = []
    rows = []
    for c in design.cells():
        vals = ok.loc[ok["cell"] == c.id, "value"].tolist()
        m = mean_ci(vals, confidence)
        n_failed = int((runs["cell"] == c.id).sum()) - m.n  # every attempt that did not count
        if m.n == 0:
            notes.append(f"cell {c.id}: no successful run")
        elif m.n == 1:
            notes.append(f"cell {c.id}: one successful run, no interval")
        rows.append({"cell": c.id, "label": c.label, "roles": ", ".join(c.roles), **c.levels,
                     "n": m.n, "n_failed": max(0, n_failed), "mean": m.mean, "std": m.std,
                     "ci_low": m.ci_low, "ci_high": m.ci_high})
    cols = ["cell", "label", "roles", *design.order, "n", "n_failed", "mean", "std", "ci_low",
            "ci_high"]
    return pd.DataFrame(rows, columns=cols), notes


def _effect_row(factor: str, level: str, reference: str, kind: str, label: str,
                treat: list[float], ref: list[float], confidence: float,
                cell: str = "", reference_cell: str = "") -> dict[str, Any]:
    c = contrast([treat, ref], [1.0, -1.0], confidence)
    fin = [v for v in treat if math.isfinite(v)], [v for v in ref if math.isfinite(v)]
    return {"factor": factor, "level": level, "reference": reference, "kind": kind,
            "label": label, "cell": cell, "reference_cell": reference_cell,
            "n": len(fin[0]), "n_ref": len(fin[1]),
            "mean": float(np.mean(fin[0])) if fin[0] else math.nan,
            "mean_ref": float(np.mean(fin[1])) if fin[1] else math.nan,
            "effect": c.estimate, "ci_low": c.ci_low, "ci_high": c.ci_high, "t": c.t,
            "df": c.df, "p_value": c.p_value, "note": c.note}


def _effects(ok: pd.DataFrame, design: Design, confidence: float) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    order = design.order
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
                    _values(ok, **{**base, f: lv}), _values(ok, **base), confidence,
                    cid, base_id))
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
                _values(ok, **full), _values(ok, **without), confidence, full_id, wid))
    else:
        for f in order:
            b = design.baseline[f]
            for lv in design.non_baseline(f):
                rows.append(_effect_row(
                    f, lv, b, "main", f"{f}={lv} vs {b} (main effect)",
                    _values(ok, **{f: lv}), _values(ok, **{f: b}), confidence))
    return pd.DataFrame(rows, columns=list(EFFECT_COLUMNS))


def _interactions(ok: pd.DataFrame, design: Design, confidence: float
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    if design.kind != "full_factorial" or len(design.order) < 2:
        return (pd.DataFrame(columns=list(INTERACTION_COLUMNS)),
                pd.DataFrame(columns=list(GROUP_COLUMNS)))
    for fa, fb in itertools.combinations(design.order, 2):
        for la in design.factors[fa]:
            for lb in design.factors[fb]:
                m = mean_ci(_values(ok, **{fa: la, fb: lb}), confidence)
                groups.append({"factor_a": fa, "level_a": la, "factor_b": fb, "level_b": lb,
                               "n": m.n, "mean": m.mean, "std": m.std, "ci_low": m.ci_low,
                               "ci_high": m.ci_high})
        a0, b0 = design.baseline[fa], design.baseline[fb]
        for la in design.non_baseline(fa):
            for lb in design.non_baseline(fb):
                g = [_values(ok, **{fa: x, fb: y}) for x, y in
                     ((la, lb), (la, b0), (a0, lb), (a0, b0))]
                c = contrast(g, [1.0, -1.0, -1.0, 1.0], confidence)
                rows.append({"factor_a": fa, "level_a": la, "factor_b": fb, "level_b": lb,
                             "label": f"{fa}={la} x {fb}={lb}", "interaction": c.estimate,
                             "ci_low": c.ci_low, "ci_high": c.ci_high, "t": c.t, "df": c.df,
                             "p_value": c.p_value, "note": c.note})
    return (pd.DataFrame(rows, columns=list(INTERACTION_COLUMNS)),
            pd.DataFrame(groups, columns=list(GROUP_COLUMNS)))


def analyze_ablation(runs: pd.DataFrame, design: Design, metric: str = "best_val_acc",
                     confidence: float = CONFIDENCE) -> AblationStats:
    """Cell statistics, effects and interactions of an ablation's runs.

    Args:
        runs: one row per run (``cell``, ``seed``, ``state``, ``value``, optional
            ``reason``); see the module docstring.
        design: the ablation's :class:`Design`.
        metric: the metric in ``value`` (sets the direction in reports).
        confidence: level of every interval.

    Returns:
        The :class:`AblationStats`.
    """
    ok, notes = _usable(runs, design)
    cells, cell_notes = _cell_table(ok, runs, design, confidence)
    effects = _effects(ok, design, confidence)
    interactions, groups = _interactions(ok, design, confidence)
    for frame, col in ((effects, "label"), (interactions, "label")):
        for r in frame.to_dict("records"):
            if r["note"]:
                notes.append(f"{r[col]}: {r['note']}")
    return AblationStats(metric, higher_is_better(metric), confidence, cells, effects,
                         interactions, groups, [*notes, *cell_notes])


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
    None without history or class count). ``n_val``: validation images of the data
    set (the noise of the curves; averaged curves do not reveal it themselves).
    """
    rows = []
    for c in design.cells():
        mine = runs[runs["cell"] == c.id] if len(runs) else runs
        counts = Counter(v for v in (mine["diagnosis"] if "diagnosis" in mine else [])
                         if isinstance(v, str) and v)
        hist = mean_history(histories, c.id) if len(histories) else []
        verdict = reason = None
        advice: list[str] = []
        if hist and num_classes and num_classes >= 2:
            d = diagnose(hist, num_classes, n_val=n_val)
            verdict, reason, advice = d.verdict, d.reason, d.advice
        rows.append({"cell": c.id, "label": c.label, "verdicts": dict(counts),
                     "verdict": verdict, "reason": reason, "advice": advice})
    return pd.DataFrame(rows, columns=["cell", "label", "verdicts", "verdict", "reason",
                                       "advice"])


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


def format_ablation(s: AblationStats) -> str:
    """Cells, effects and interactions as plain-text tables (what ``hpstudy ablate`` prints)."""
    pct = int(round(100 * s.confidence))
    way = "higher" if s.higher_is_better else "lower"
    lines = [f"metric       {s.metric} ({way} is better); mean +- std over seeds, "
             f"{pct}% t interval", ""]
    width = max([len("cell"), *(len(x) for x in s.cells["label"])]) + 2
    lines.append(f"{'cell':{width}s}{'n':>3s}  {'mean':>8s}  {'std':>8s}  {pct}% CI")
    for r in s.cells.to_dict("records"):
        fail = f"  ({r['n_failed']} failed)" if r["n_failed"] else ""
        lines.append(f"{r['label']:{width}s}{r['n']:>3d}  {_num(r['mean']):>8s}  "
                     f"{_num(r['std']):>8s}  {_ci(r['ci_low'], r['ci_high'])}{fail}")
    for title, frame, col in (("effect", s.effects, "effect"),
                              ("interaction", s.interactions, "interaction")):
        if frame.empty:
            continue
        width = max([len(title), *(len(x) for x in frame["label"])]) + 2
        lines += ["", f"{title:{width}s}{'estimate':>9s}  {pct}% CI{'':14s}  p (Welch)"]
        for r in frame.to_dict("records"):
            lines.append(f"{r['label']:{width}s}{_num(r[col], True):>9s}  "
                         f"{_ci(r['ci_low'], r['ci_high'], True):22s}  {p_value(r['p_value'])}")
    if s.notes:
        lines += ["", "notes"] + [f"  - {n}" for n in s.notes]
    return "\n".join(lines)


def stats_json(s: AblationStats) -> str:
    """The statistics as JSON (cells, effects, interactions, notes), NaN as null."""
    def frame(df: pd.DataFrame) -> list[dict[str, Any]]:
        return json.loads(df.to_json(orient="records"))

    return json.dumps({"metric": s.metric, "higher_is_better": s.higher_is_better,
                       "confidence": s.confidence, "cells": frame(s.cells),
                       "effects": frame(s.effects), "interactions": frame(s.interactions),
                       "notes": s.notes}, indent=1)
