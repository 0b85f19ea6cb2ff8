"""Hyperparameter figures of the study dashboard: slices, parallel coordinates, importances.

Optuna's own versions of these plots read the study's search coordinates, so an
``allow_zero`` weight decay that trained as 0 appears as ``1.57e-07``; they
quote categorical values (``'he_normal'``), and the slice plot is one wide
figure that overflows a narrow page. These read the collected trials frame
instead (:class:`hpstudy.analyze.StudyData`: the values each trial trained
with) and the study's :class:`~hpstudy.analyze.collect.ParamSpec` per
parameter, and the slices are one small figure per parameter, laid out by the
page in a grid that wraps.

Each plot follows the house split (STYLE.md): ``_<plot>_info(...) ->
NamedTuple`` (pure, validates, drops non-finite values), ``_draw_<plot>(info)``
and a short public ``plot_<plot>``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import pandas as pd
import plotly.graph_objects as go

from ..analyze.collect import ParamSpec
from ..analyze.fmt import finite as _finite

IMPORTANCE_SEEDS = 5
"""fANOVA forests per importance plot (seeds 0..4): the bars show their spread."""

IMPORTANCE_MIN_TRIALS = 20
"""Below this many completed trials, importances get a warning. fANOVA fits a random
forest to the completed trials and splits its variance among the hyperparameters; with
fewer than about 3 trials per hyperparameter (the course space has 6) the forest's
splits rest on one or two trials each. Measured on the quickstart study at 12 completed
trials: forest seeds 0-4 gave 4 different orders of the 6 hyperparameters, and Optuna's
unseeded default ranked weight decay first where every seeded forest ranked dropout
first."""

_ACCENT = "#d62728"
_DOT = "#1f77b4"


def _label(v: Any) -> str:
    """A value as a person writes it: no quotes, 0 as 0, floats to 4 significant digits."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "0" if v == 0 else f"{v:.4g}"
    return str(v)


def _best_numbers(trials: pd.DataFrame, direction: str) -> tuple[int, ...]:
    done = trials[(trials["state"] == "COMPLETE") & trials["value"].map(_finite)]
    if done.empty:
        return ()
    best = done["value"].max() if direction == "maximize" else done["value"].min()
    return tuple(int(n) for n in done.loc[done["value"] == best, "number"])


# ----------------------------------------------------------------- slices
class SlicePanel(NamedTuple):
    """One parameter's slice: every completed trial's value of it against the objective.

    ``x`` holds the values as plotted: numbers (0 drawn at ``zero_at`` on a log
    axis) or category labels; ``ticks`` are (position, label) pairs for numeric
    axes and ``categories`` the category order.
    """

    name: str
    kind: str  # numeric | categorical
    log: bool
    x: tuple[Any, ...]
    y: tuple[float, ...]
    numbers: tuple[int, ...]
    labels: tuple[str, ...]  # each point's value as text (hover)
    best: tuple[bool, ...]
    categories: tuple[str, ...] = ()
    ticks: tuple[tuple[float, str], ...] = ()
    zero_at: float | None = None


class SliceInfo(NamedTuple):
    metric: str
    panels: tuple[SlicePanel, ...]


def _log_ticks(lo: float, hi: float, zero_at: float | None) -> tuple[tuple[float, str], ...]:
    """Decade ticks between ``lo`` and ``hi``, and ``0`` where zeros are drawn."""
    out = [(zero_at, "0")] if zero_at is not None else []
    k0, k1 = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    step = max(1, math.ceil((k1 - k0 + 1) / 6))  # at most about six decade labels
    out += [(10.0 ** k, f"{10.0 ** k:g}") for k in range(k0, k1 + 1, step)]
    return tuple(out)


def _slice_panel(trials: pd.DataFrame, spec: ParamSpec, best: set[int]) -> SlicePanel | None:
    rows = [r for r in trials.to_dict("records") if r["state"] == "COMPLETE"
            and _finite(r["value"]) and spec.name in r and r[spec.name] is not None
            and not (isinstance(r[spec.name], float) and math.isnan(r[spec.name]))]
    if not rows:
        return None
    vals = [r[spec.name] for r in rows]
    common = dict(y=tuple(float(r["value"]) for r in rows),
                  numbers=tuple(int(r["number"]) for r in rows),
                  labels=tuple(_label(v) for v in vals),
                  best=tuple(int(r["number"]) in best for r in rows))
    if spec.kind == "categorical" or not all(_finite(v) for v in vals):
        order = [_label(c) for c in spec.choices] or sorted({_label(v) for v in vals})
        order += sorted({_label(v) for v in vals} - set(order))
        return SlicePanel(spec.name, "categorical", False, tuple(_label(v) for v in vals),
                          categories=tuple(order), **common)
    if not spec.log:
        return SlicePanel(spec.name, "numeric", False, tuple(float(v) for v in vals), **common)
    positive = [float(v) for v in vals if v > 0]
    lo = min([*positive, *([spec.low] if spec.low else [])])
    hi = max([*positive, *([spec.high] if spec.high else [])])
    zero_at = None
    if any(v == 0 for v in vals) or spec.zero_below is not None:
        zero_at = lo / 10 ** 0.5  # half a decade below the smallest non-zero value
    x = tuple(zero_at if v == 0 else float(v) for v in vals)
    return SlicePanel(spec.name, "numeric", True, x, ticks=_log_ticks(lo, hi, zero_at),
                      zero_at=zero_at, **common)


def _slice_info(trials: pd.DataFrame, space: dict[str, ParamSpec], param_names: Sequence[str],
                direction: str, metric: str = "objective") -> SliceInfo:
    """One panel per searched parameter (in ``param_names`` order) with a completed trial.

    Values are the ones each trial trained with (the trials frame of
    :func:`hpstudy.analyze.collect`); a parameter missing from ``space`` is
    treated as categorical if any value is not a number.
    """
    missing = {"number", "state", "value"} - set(trials.columns)
    if missing:
        raise ValueError(f"trials lacks column(s) {', '.join(sorted(missing))}")
    best = set(_best_numbers(trials, direction))
    panels = []
    for name in param_names:
        spec = space.get(name) or ParamSpec(name, "float")
        panel = _slice_panel(trials, spec, best)
        if panel is not None:
            panels.append(panel)
    return SliceInfo(metric, tuple(panels))


def _draw_slice_panel(panel: SlicePanel, metric: str) -> go.Figure:
    idx = {True: [i for i, b in enumerate(panel.best) if b],
           False: [i for i, b in enumerate(panel.best) if not b]}
    fig = go.Figure()
    for is_best in (False, True):
        ii = idx[is_best]
        if not ii:
            continue
        fig.add_trace(go.Scatter(
            x=[panel.x[i] for i in ii], y=[panel.y[i] for i in ii], mode="markers",
            name="best" if is_best else "trials", showlegend=False, cliponaxis=False,
            marker={"color": _ACCENT if is_best else _DOT, "size": 11 if is_best else 8,
                    "symbol": "star" if is_best else "circle", "opacity": 1 if is_best else 0.6,
                    "line": {"width": 0.5, "color": "#fff"}},
            customdata=[[panel.numbers[i], panel.labels[i]] for i in ii],
            hovertemplate=(f"trial %{{customdata[0]}}<br>{panel.name} = %{{customdata[1]}}"
                           f"<br>{metric} %{{y:.4f}}<extra></extra>"),
        ))
    if panel.kind == "categorical":
        fig.update_xaxes(type="category", categoryorder="array",
                         categoryarray=list(panel.categories))
    elif panel.log:
        fig.update_xaxes(type="log", tickmode="array", tickvals=[t[0] for t in panel.ticks],
                         ticktext=[t[1] for t in panel.ticks])
    fig.update_layout(title={"text": panel.name, "font": {"size": 14}}, height=300,
                      margin={"l": 50, "r": 10, "t": 40, "b": 40},
                      yaxis={"title": metric}, xaxis={"title": None})
    return fig


def plot_slices(data: Any) -> list[go.Figure]:
    """One small figure per searched hyperparameter: its value against the objective for
    every completed trial, the best (and tied) trials as red stars. ``data`` is a
    :class:`hpstudy.analyze.StudyData`."""
    info = _slice_info(data.trials, data.space, data.param_names, data.direction, data.metric)
    return [_draw_slice_panel(p, info.metric) for p in info.panels]


# ----------------------------------------------------------------- parallel coordinates
class ParallelAxis(NamedTuple):
    name: str
    values: tuple[float, ...]  # as plotted (log10 for log axes, codes for categories)
    tickvals: tuple[float, ...]
    ticktext: tuple[str, ...]
    range: tuple[float, float]


class ParallelInfo(NamedTuple):
    metric: str
    values: tuple[float, ...]  # the objective (line colour)
    axes: tuple[ParallelAxis, ...]


def _parallel_axis(panel: SlicePanel) -> ParallelAxis:
    if panel.kind == "categorical":
        codes = {c: i for i, c in enumerate(panel.categories)}
        n = len(panel.categories)
        return ParallelAxis(panel.name, tuple(float(codes[x]) for x in panel.x),
                            tuple(float(i) for i in range(n)), panel.categories,
                            (-0.25, n - 0.75) if n > 1 else (-0.5, 0.5))
    if panel.log:
        vals = tuple(math.log10(x) for x in panel.x)
        ticks = tuple((math.log10(p), t) for p, t in panel.ticks)
        lo, hi = min(vals + tuple(t[0] for t in ticks)), max(vals + tuple(t[0] for t in ticks))
        return ParallelAxis(panel.name, vals, tuple(t[0] for t in ticks),
                            tuple(t[1] for t in ticks), (lo, hi))
    vals = tuple(float(x) for x in panel.x)
    lo, hi = min(vals), max(vals)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    ticks = tuple(lo + (hi - lo) * k / 4 for k in range(5))
    return ParallelAxis(panel.name, vals, ticks, tuple(_label(float(f"{t:.3g}")) for t in ticks),
                        (lo, hi))


def _parallel_info(trials: pd.DataFrame, space: dict[str, ParamSpec],
                   param_names: Sequence[str], direction: str,
                   metric: str = "objective") -> ParallelInfo:
    """Completed trials that have every plotted parameter: one axis per parameter."""
    done = trials[(trials["state"] == "COMPLETE") & trials["value"].map(_finite)]
    names = [n for n in param_names if n in done.columns]
    keep = done.dropna(subset=names) if names else done.iloc[0:0]
    info = _slice_info(keep, space, names, direction, metric)
    return ParallelInfo(metric, tuple(float(v) for v in keep["value"]),
                        tuple(_parallel_axis(p) for p in info.panels))


def _draw_parallel(info: ParallelInfo) -> go.Figure:
    if not info.values:
        return go.Figure()
    lo, hi = min(info.values), max(info.values)
    dims = [{"label": info.metric, "values": list(info.values),
             "range": [lo, hi] if hi > lo else [lo - 0.5, hi + 0.5]}]
    dims += [{"label": a.name, "values": list(a.values), "tickvals": list(a.tickvals),
              "ticktext": list(a.ticktext), "range": list(a.range)} for a in info.axes]
    fig = go.Figure(go.Parcoords(
        line={"color": list(info.values), "colorscale": "Blues", "showscale": True,
              "colorbar": {"title": {"text": info.metric}}},
        dimensions=dims, labelangle=-20, labelside="bottom"))
    fig.update_layout(title=f"Parallel coordinates: {len(info.values)} completed trials "
                            "(values as trained: an allow_zero value of 0 shows as 0)",
                      height=460, margin={"l": 60, "r": 40, "t": 70, "b": 90})
    return fig


def plot_parallel(data: Any) -> go.Figure:
    """Parallel coordinates of the completed trials, the objective first; unquoted
    categories, log axes in decades, an allow_zero value of 0 at its own tick."""
    return _draw_parallel(_parallel_info(data.trials, data.space, data.param_names,
                                         data.direction, data.metric))


# ----------------------------------------------------------------- importances
class ImportanceInfo(NamedTuple):
    """fANOVA importances over several forest seeds, most important first."""

    params: tuple[str, ...]
    mean: tuple[float, ...]
    low: tuple[float, ...]  # the smallest over the seeds
    high: tuple[float, ...]
    n_trials: int  # completed trials the forests were fitted on
    seeds: int


def importance_runs(study: Any, seeds: int = IMPORTANCE_SEEDS) -> list[dict[str, float]]:
    """Optuna's fANOVA importances with forest seeds 0..seeds-1 (deterministic)."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    return [dict(get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=s)))
            for s in range(seeds)]


def _importance_info(runs: Sequence[dict[str, float]], n_trials: int) -> ImportanceInfo:
    """Mean and range of each parameter's importance over the runs, by mean, largest first."""
    names = sorted({k for r in runs for k in r})
    rows = []
    for n in names:
        vals = [float(r.get(n, 0.0)) for r in runs]
        rows.append((n, sum(vals) / len(vals), min(vals), max(vals)))
    rows.sort(key=lambda r: (-r[1], r[0]))
    return ImportanceInfo(tuple(r[0] for r in rows), tuple(r[1] for r in rows),
                          tuple(r[2] for r in rows), tuple(r[3] for r in rows), n_trials,
                          len(runs))


def _draw_importances(info: ImportanceInfo) -> go.Figure:
    fig = go.Figure(go.Bar(
        x=list(info.mean), y=list(info.params), orientation="h", marker={"color": _DOT},
        error_x={"type": "data", "visible": True, "color": "#333",
                 "array": [h - m for h, m in zip(info.high, info.mean, strict=True)],
                 "arrayminus": [m - lo for m, lo in zip(info.mean, info.low, strict=True)]},
        customdata=[[lo, h] for lo, h in zip(info.low, info.high, strict=True)],
        hovertemplate="%{y}: %{x:.3f} (mean of the seeds; %{customdata[0]:.3f}-"
                      "%{customdata[1]:.3f})<extra></extra>"))
    # the value in the row's label: text by the bar would sit on its error bar
    fig.update_yaxes(autorange="reversed", automargin=True, tickmode="array",
                     tickvals=list(info.params),
                     ticktext=[f"{p} ({m:.2f})" for p, m in zip(info.params, info.mean,
                                                                strict=True)])
    fig.update_layout(title=f"Importances (fANOVA) from {info.n_trials} completed trials; "
                            f"bars: range over {info.seeds} forest seeds",
                      xaxis={"title": "share of the objective's variance", "rangemode": "tozero"},
                      height=max(260, 90 + 34 * len(info.params)), margin={"t": 60, "r": 40})
    return fig


def plot_importances(data: Any) -> go.Figure:
    """Hyperparameter importances with their spread over forest seeds."""
    n = int(((data.trials["state"] == "COMPLETE") & data.trials["value"].map(_finite)).sum())
    return _draw_importances(_importance_info(importance_runs(data.study), n))


def importance_caveat(n_trials: int, n_params: int) -> str:
    """The sample size under the importances, with a warning below the stated threshold."""
    text = (f"From {n_trials} completed trial{'s' if n_trials != 1 else ''} and "
            f"{n_params} hyperparameter{'s' if n_params != 1 else ''}.")
    if n_trials < IMPORTANCE_MIN_TRIALS:
        text += (f" Fewer than {IMPORTANCE_MIN_TRIALS} completed trials makes importances "
                 "unreliable: the random forest behind them splits on one or two trials at a "
                 "time, so another forest seed (the bars' range) or a few more trials can "
                 "reorder the ranking. Read it as a hint, not a result.")
    return text
