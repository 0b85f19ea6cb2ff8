"""The ablation report: cells with intervals, effects, interactions, curves and diagnoses.

Figures follow the house split (STYLE.md): a pure ``_<plot>_info(...) ->
NamedTuple`` that validates and drops non-finite values, a
``_draw_<plot>(info) -> go.Figure`` and a two-line public ``plot_<plot>``.
The page is written by :func:`hpstudy.report.html.render_html`, like the study
dashboard: one self-contained file, ``<out_dir>/<ablation>/index.html``.

Inputs are the frames of :class:`hpstudy.analyze.ablation.AblationStats`
(``cells``, ``effects``, ``interactions``, ``group_means``) and
:class:`hpstudy.analyze.ablation.AblationData` (``runs``, ``histories``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ..analyze.ablation import (
    AblationData,
    AblationStats,
    Design,
    design_sentence,
    diagnose_cells,
    effect_sentences,
    interval_words,
    is_accuracy,
)
from ..analyze.fmt import finite as _finite
from ..analyze.fmt import interval, number, p_value
from .page import (
    Section,
    badge,
    figure_section,
    kv_table,
    render_html,
    write_page,
)
from .page import table as html_table

_PALETTE = tuple(qualitative.Plotly)
_BASELINE_COLOR = "#7f7f7f"
_HELPS, _HURTS, _UNSURE = "#2ca02c", "#d62728", "#7f7f7f"


def _need(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = set(columns) - set(frame.columns)
    if missing:
        raise ValueError(f"{what} lacks column(s) {', '.join(sorted(missing))}")


# ----------------------------------------------------------------- cells
class CellBarsInfo(NamedTuple):
    """One bar per cell with a successful run: mean, interval, the runs' values."""

    metric: str
    cells: tuple[str, ...]
    labels: tuple[str, ...]
    means: tuple[float, ...]
    err_plus: tuple[float, ...]  # ci_high - mean (0 without an interval)
    err_minus: tuple[float, ...]  # mean - ci_low
    n: tuple[int, ...]
    is_baseline: tuple[bool, ...]
    points: tuple[tuple[float, ...], ...]  # each successful run's value
    flags: tuple[str, ...] = ()  # the cells' flags (n<3, std 0, train longer)
    y_range: tuple[float, float] | None = None  # the axis: the data, intervals cut (see below)


def _bars_range(means: list[float], points: list[float], lows: list[float], highs: list[float],
                bounded: bool) -> tuple[float, float] | None:
    """The value axis: every mean and run with a margin, intervals included up to 1.5x the
    data's spread beyond it (a wider interval runs off the axis, which reads as what it is:
    very wide), inside [0, 1] for an accuracy."""
    data = means + points
    if not data:
        return None
    lo, hi = min(data), max(data)
    span = max(hi - lo, 1e-3 * max(abs(hi), 1e-3))
    lo = max(min([lo, *lows]), lo - 1.5 * span)
    hi = min(max([hi, *highs]), hi + 1.5 * span)
    pad = 0.08 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    if bounded:
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    return (lo, hi)


def _cell_bars_info(cells: pd.DataFrame, runs: pd.DataFrame, metric: str) -> CellBarsInfo:
    """Cells in table order; cells without a finite mean are left out."""
    _need(cells, ("cell", "label", "roles", "mean", "ci_low", "ci_high", "n"), "cells")
    _need(runs, ("cell", "state", "value"), "runs")
    out: dict[str, list[Any]] = {k: [] for k in CellBarsInfo._fields[1:-1]}
    lows, highs = [], []
    for r in cells.to_dict("records"):
        if not _finite(r["mean"]):
            continue
        has_ci = _finite(r["ci_low"]) and _finite(r["ci_high"])
        mine = runs[(runs["cell"] == r["cell"]) & (runs["state"] == "COMPLETE")]
        out["cells"].append(r["cell"])
        out["labels"].append(r["label"])
        out["means"].append(float(r["mean"]))
        # a logit interval need not be centred on the arithmetic mean: never a negative bar
        out["err_plus"].append(max(0.0, float(r["ci_high"] - r["mean"])) if has_ci else 0.0)
        out["err_minus"].append(max(0.0, float(r["mean"] - r["ci_low"])) if has_ci else 0.0)
        if has_ci:
            lows.append(float(r["ci_low"]))
            highs.append(float(r["ci_high"]))
        out["n"].append(int(r["n"]))
        out["is_baseline"].append("baseline" in str(r["roles"]).split(", "))
        out["points"].append(tuple(float(v) for v in mine["value"] if _finite(v)))
        out["flags"].append(str(r.get("flags") or ""))
    y_range = _bars_range(out["means"], [v for p in out["points"] for v in p], lows, highs,
                          is_accuracy(metric))
    return CellBarsInfo(metric, *(tuple(v) for v in out.values()), y_range)


def _wrap(label: str, width: int = 12) -> str:
    """A tick label broken into lines of about ``width`` characters (at spaces)."""
    lines: list[str] = []
    words = []
    for word in label.split(" "):  # a long factor=level breaks after its "="
        k = word.find("=")
        words += [word[:k + 1], word[k + 1:]] if len(word) > width and 0 < k < len(word) - 1 \
            else [word]
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += ("" if lines[-1].endswith("=") else " ") + word
        else:
            lines.append(word)
    return "<br>".join(lines)


def _draw_cell_bars(info: CellBarsInfo) -> go.Figure:
    colors = [_BASELINE_COLOR if b else _PALETTE[0] for b in info.is_baseline]
    flags = info.flags or ("",) * len(info.n)
    # runs and flags under each cell's name: inside a zoomed bar they would be cut off
    ticks = [_wrap(lab) + f"<br>n={n}" + "".join(f"<br><i>{x}</i>" for x in f.split(", ") if x)
             for lab, n, f in zip(info.labels, info.n, flags, strict=True)]
    fig = go.Figure(go.Bar(
        x=info.labels, y=info.means, marker={"color": colors}, name="mean",
        error_y={"type": "data", "array": info.err_plus, "arrayminus": info.err_minus,
                 "visible": True, "color": "#333"},
        customdata=[[c, n, f or "-"] for c, n, f in zip(info.cells, info.n, flags,
                                                        strict=True)],
        hovertemplate="%{customdata[0]}<br>mean %{y:.4f}<br>n=%{customdata[1]}<br>"
                      "flags: %{customdata[2]}<extra></extra>",
    ))
    fig.update_xaxes(tickmode="array", tickvals=list(info.labels), ticktext=ticks,
                     tickangle=0, automargin=True)
    xs = [lab for lab, pts in zip(info.labels, info.points, strict=True) for _ in pts]
    ys = [v for pts in info.points for v in pts]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name="runs (seeds)", cliponaxis=False,
                             marker={"color": "#111", "size": 6, "symbol": "circle-open"},
                             hovertemplate="%{x}<br>%{y:.4f}<extra>run</extra>"))
    if info.y_range is not None:
        # zoom on the data: differences of a few tenths of a percent are the point, and
        # bars from zero would hide them; intervals wider than the view run off the axis
        fig.update_yaxes(range=list(info.y_range))
    fig.update_layout(title=f"{info.metric} per cell: mean, 95% CI, runs<br><sub>axis "
                            "zoomed: an interval cut by the axis is wider; grey = "
                            "baseline</sub>",
                      yaxis={"title": info.metric}, height=440, margin={"t": 60},
                      showlegend=True, bargap=0.35)
    return fig


def plot_cell_bars(cells: pd.DataFrame, runs: pd.DataFrame, metric: str) -> go.Figure:
    """A bar per cell (mean) with its confidence interval and each seed's value."""
    return _draw_cell_bars(_cell_bars_info(cells, runs, metric))


# ----------------------------------------------------------------- effects (forest plot)
class EffectsInfo(NamedTuple):
    """Rows of the forest plot, top to bottom: effects, then interactions."""

    metric: str
    higher_is_better: bool
    labels: tuple[str, ...]
    kinds: tuple[str, ...]
    estimates: tuple[float, ...]
    ci_low: tuple[float, ...]  # = estimate where no interval exists
    ci_high: tuple[float, ...]
    p_values: tuple[float | None, ...]
    verdicts: tuple[str, ...]  # helps / hurts / unclear, by the interval
    mde: float | None = None  # the design's detectable difference (shaded around 0)


def _effects_info(effects: pd.DataFrame, interactions: pd.DataFrame, metric: str,
                  higher_is_better: bool, mde: float | None = None) -> EffectsInfo:
    """Effects and interactions with a finite estimate; a missing interval is zero-width
    and ``unclear``."""
    _need(effects, ("label", "kind", "effect", "ci_low", "ci_high", "p_value"), "effects")
    rows = [(r["label"], r["kind"], r["effect"], r["ci_low"], r["ci_high"], r["p_value"])
            for r in effects.to_dict("records")]
    if len(interactions):
        _need(interactions, ("label", "interaction", "ci_low", "ci_high", "p_value"),
              "interactions")
        rows += [(r["label"], "interaction", r["interaction"], r["ci_low"], r["ci_high"],
                  r["p_value"]) for r in interactions.to_dict("records")]
    out: dict[str, list[Any]] = {k: [] for k in EffectsInfo._fields[2:-1]}
    for label, kind, est, lo, hi, p in rows:
        if not _finite(est):
            continue
        has_ci = _finite(lo) and _finite(hi)
        lo, hi = (float(lo), float(hi)) if has_ci else (float(est), float(est))
        good = (lo > 0) if higher_is_better else (hi < 0)
        bad = (hi < 0) if higher_is_better else (lo > 0)
        out["labels"].append(str(label))
        out["kinds"].append(str(kind))
        out["estimates"].append(float(est))
        out["ci_low"].append(lo)
        out["ci_high"].append(hi)
        out["p_values"].append(float(p) if _finite(p) else None)
        out["verdicts"].append("helps" if has_ci and good else
                               "hurts" if has_ci and bad else "unclear")
    return EffectsInfo(metric, higher_is_better, *(tuple(v) for v in out.values()),
                       float(mde) if _finite(mde) else None)


def _p_label(p: float | None) -> str:
    return "p n/a" if p is None else f"p {p_value(p)}" if p < 0.001 else f"p={p:.3f}"


def _draw_effects(info: EffectsInfo) -> go.Figure:
    fig = go.Figure()
    colors = {"helps": _HELPS, "hurts": _HURTS, "unclear": _UNSURE}
    if info.mde is not None:
        fig.add_vrect(x0=-info.mde, x1=info.mde, fillcolor="#9e9e9e", opacity=0.15,
                      line_width=0, layer="below")
        fig.add_trace(go.Scatter(  # the band's legend entry
            x=[None], y=[None], mode="markers", name=f"\u00b1{info.mde:.4f}: below what this "
                                                     "design detects",
            marker={"color": "rgba(158,158,158,0.4)", "size": 12, "symbol": "square"}))
    for verdict in ("helps", "hurts", "unclear"):
        idx = [i for i, v in enumerate(info.verdicts) if v == verdict]
        if not idx:
            continue
        fig.add_trace(go.Scatter(
            x=[info.estimates[i] for i in idx], y=[info.labels[i] for i in idx],
            mode="markers", name=verdict,
            marker={"color": colors[verdict], "size": 10, "symbol": "diamond"},
            error_x={"type": "data", "visible": True, "color": colors[verdict],
                     "array": [info.ci_high[i] - info.estimates[i] for i in idx],
                     "arrayminus": [info.estimates[i] - info.ci_low[i] for i in idx]},
            customdata=[[info.kinds[i], info.ci_low[i], info.ci_high[i],
                         _p_label(info.p_values[i])] for i in idx],
            hovertemplate="%{y}<br>%{customdata[0]}: %{x:+.4f}<br>95% CI [%{customdata[1]:+.4f},"
                          " %{customdata[2]:+.4f}]<br>%{customdata[3]}<extra></extra>",
        ))
    fig.add_vline(x=0, line={"color": "#555", "width": 1, "dash": "dot"})
    way = "higher" if info.higher_is_better else "lower"
    # the p-value sits in the row's label, left of the plot: never on a marker or its bar
    ticks = [f"{lab}  ({_p_label(p)})" for lab, p in zip(info.labels, info.p_values,
                                                          strict=True)]
    fig.update_yaxes(type="category", autorange="reversed", categoryorder="array",
                     categoryarray=info.labels,
                     tickmode="array", tickvals=list(info.labels), ticktext=ticks,
                     automargin=True)
    fig.update_layout(title=f"Effects on {info.metric} with 95% CI ({way} is better; "
                            "Welch t-test p in each label)",
                      xaxis={"title": f"difference in {info.metric}", "zeroline": False},
                      height=max(320, 110 + 42 * len(info.labels)),
                      margin={"t": 60, "l": 20}, legend={"orientation": "h", "y": -0.2})
    return fig


def plot_effects(effects: pd.DataFrame, interactions: pd.DataFrame, metric: str,
                 higher_is_better: bool = True, mde: float | None = None) -> go.Figure:
    """Forest plot: each effect (and interaction) with its interval, coloured by the verdict;
    ``mde`` shades the differences smaller than the design could detect."""
    return _draw_effects(_effects_info(effects, interactions, metric, higher_is_better, mde))


# ----------------------------------------------------------------- interactions
class InteractionLine(NamedTuple):
    level_b: str
    levels_a: tuple[str, ...]  # x positions with a finite mean
    means: tuple[float, ...]
    err_plus: tuple[float, ...]
    err_minus: tuple[float, ...]


class InteractionPanel(NamedTuple):
    factor_a: str
    factor_b: str
    levels_a: tuple[str, ...]  # every level of A, in order (the x axis)
    lines: tuple[InteractionLine, ...]


class InteractionInfo(NamedTuple):
    metric: str
    panels: tuple[InteractionPanel, ...]


def _interaction_info(group_means: pd.DataFrame, metric: str) -> InteractionInfo:
    """One panel per factor pair: x = levels of the first factor, a line per level of the
    second; points are pooled means with their intervals (non-finite means dropped)."""
    _need(group_means, ("factor_a", "level_a", "factor_b", "level_b", "mean", "ci_low",
                        "ci_high"), "group_means")
    panels = []
    pairs = dict.fromkeys(zip(group_means["factor_a"], group_means["factor_b"], strict=True))
    for fa, fb in pairs:
        g = group_means[(group_means["factor_a"] == fa) & (group_means["factor_b"] == fb)]
        levels_a = tuple(dict.fromkeys(str(x) for x in g["level_a"]))
        lines = []
        for lb in dict.fromkeys(str(x) for x in g["level_b"]):
            pts = [r for r in g[g["level_b"] == lb].to_dict("records") if _finite(r["mean"])]
            has = [_finite(r["ci_low"]) and _finite(r["ci_high"]) for r in pts]
            lines.append(InteractionLine(
                lb, tuple(str(r["level_a"]) for r in pts), tuple(float(r["mean"]) for r in pts),
                tuple(float(r["ci_high"] - r["mean"]) if h else 0.0 for r, h in zip(pts, has,
                                                                                    strict=True)),
                tuple(float(r["mean"] - r["ci_low"]) if h else 0.0 for r, h in zip(pts, has,
                                                                                   strict=True)),
            ))
        panels.append(InteractionPanel(str(fa), str(fb), levels_a, tuple(lines)))
    return InteractionInfo(metric, tuple(panels))


def _draw_interaction(info: InteractionInfo) -> go.Figure:
    n = len(info.panels)
    cols = min(3, max(1, n))
    rows = max(1, math.ceil(n / cols))
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.1, vertical_spacing=0.18,
                        subplot_titles=[f"{p.factor_a} x {p.factor_b}" for p in info.panels])
    for k, p in enumerate(info.panels):
        row, col = k // cols + 1, k % cols + 1
        for j, line in enumerate(p.lines):
            color = _PALETTE[j % len(_PALETTE)]
            fig.add_trace(go.Scatter(
                x=line.levels_a, y=line.means, mode="lines+markers",
                name=f"{p.factor_b}={line.level_b}", legendgroup=f"{k}-{line.level_b}",
                line={"color": color}, marker={"size": 8},
                error_y={"type": "data", "array": line.err_plus, "arrayminus": line.err_minus,
                         "visible": True, "color": color},
                hovertemplate=(f"{p.factor_a}=%{{x}}, {p.factor_b}={line.level_b}<br>"
                               "mean %{y:.4f}<extra></extra>"),
            ), row=row, col=col)
        fig.update_xaxes(title_text=p.factor_a, categoryorder="array",
                         categoryarray=list(p.levels_a), row=row, col=col)
        fig.update_yaxes(title_text=info.metric, row=row, col=col)
    fig.update_layout(title="Interactions: pooled means with 95% CI (parallel lines = no "
                            "interaction)", height=380 * rows + 40, margin={"t": 80})
    return fig


def plot_interaction(group_means: pd.DataFrame, metric: str) -> go.Figure:
    """Interaction plots of every factor pair (full factorial designs)."""
    return _draw_interaction(_interaction_info(group_means, metric))


# ----------------------------------------------------------------- learning curves per cell
class CellCurve(NamedTuple):
    cell: str
    label: str
    n_runs: int
    epochs: tuple[int, ...]
    val_acc: tuple[float, ...]  # mean over the cell's runs
    val_acc_std: tuple[float, ...]  # sample std (0 where one run has the epoch)
    val_loss: tuple[float, ...]
    val_loss_std: tuple[float, ...]
    train_acc: tuple[float, ...]
    train_loss: tuple[float, ...]


class CellCurvesInfo(NamedTuple):
    curves: tuple[CellCurve, ...]


def _cell_curves_info(histories: pd.DataFrame, cells: Sequence[tuple[str, str]]
                      ) -> CellCurvesInfo:
    """Per cell (in the given order) and epoch: mean and std over the runs that reached it.

    Epochs where any of the four curves is non-finite are dropped (a diverged
    run is excluded from the statistics anyway); cells without history are left out.
    """
    keys = ("val_acc", "val_loss", "train_acc", "train_loss")
    _need(histories, ("run_id", "cell", "epoch", *keys), "histories")
    curves = []
    for cid, label in cells:
        h = histories[histories["cell"] == cid]
        h = h[[all(_finite(v) for v in vals) for vals in
               zip(*(h[k] for k in keys), strict=True)]] if len(h) else h
        if h.empty:
            continue
        g = h.groupby("epoch", sort=True)
        mean, std = g[list(keys)].mean(), g[list(keys)].std(ddof=1).fillna(0.0)
        curves.append(CellCurve(
            cid, label, int(h["run_id"].nunique()), tuple(int(e) for e in mean.index),
            tuple(float(v) for v in mean["val_acc"]), tuple(float(v) for v in std["val_acc"]),
            tuple(float(v) for v in mean["val_loss"]), tuple(float(v) for v in std["val_loss"]),
            tuple(float(v) for v in mean["train_acc"]),
            tuple(float(v) for v in mean["train_loss"]),
        ))
    return CellCurvesInfo(tuple(curves))


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _draw_cell_curves(info: CellCurvesInfo) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=("loss", "accuracy"))
    for i, c in enumerate(info.curves):
        color = _PALETTE[i % len(_PALETTE)]
        name = f"{c.label} (n={c.n_runs})"
        for col, (mean, std, train) in enumerate(((c.val_loss, c.val_loss_std, c.train_loss),
                                                  (c.val_acc, c.val_acc_std, c.train_acc)),
                                                 start=1):
            upper = [m + s for m, s in zip(mean, std, strict=True)]
            lower = [m - s for m, s in zip(mean, std, strict=True)]
            if col == 1:  # log axis: keep the band's lower edge positive
                lower = [max(lo, m * 0.05) for lo, m in zip(lower, mean, strict=True)]
            fig.add_trace(go.Scatter(
                x=[*c.epochs, *reversed(c.epochs)], y=[*upper, *reversed(lower)],
                fill="toself", fillcolor=_rgba(color, 0.18), line={"width": 0},
                hoverinfo="skip", showlegend=False, legendgroup=c.cell), row=1, col=col)
            fig.add_trace(go.Scatter(
                x=c.epochs, y=mean, mode="lines", name=name, legendgroup=c.cell,
                showlegend=col == 1, line={"color": color, "width": 2},
                hovertemplate=f"{c.label} val<br>epoch %{{x}}<br>%{{y:.4f}}<extra></extra>",
            ), row=1, col=col)
            fig.add_trace(go.Scatter(
                x=c.epochs, y=train, mode="lines", name=f"{name} train", legendgroup=c.cell,
                showlegend=False, line={"color": color, "width": 1, "dash": "dash"},
                hovertemplate=f"{c.label} train<br>epoch %{{x}}<br>%{{y:.4f}}<extra></extra>",
            ), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="loss", type="log", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", row=1, col=2)
    fig.update_layout(title="Learning curves per cell: validation mean +- std over seeds "
                            "(band), training mean (dashed)", height=460, margin={"t": 70})
    return fig


def plot_cell_curves(histories: pd.DataFrame, cells: Sequence[tuple[str, str]]) -> go.Figure:
    """Validation loss/accuracy per cell, mean with a +-std band over seeds; training dashed."""
    return _draw_cell_curves(_cell_curves_info(histories, cells))


# ----------------------------------------------------------------- HTML blocks
def cells_table_html(stats: AblationStats, design: Design) -> str:
    """Cells: levels, runs, mean, std, interval (with how it was made), flags."""
    pct = int(round(100 * stats.confidence))
    head = ["cell", "roles", *design.order, "runs", "failed", "mean", "std", f"{pct}% CI",
            "flags"]
    rows = []
    for r in stats.cells.to_dict("records"):
        ci = interval(r["ci_low"], r["ci_high"], fixed=True)
        method = r.get("ci_method") or ""
        if method and ci != "-":
            ci += f' <span class="note">{html.escape(method)}</span>'
        rows.append([html.escape(r["label"]), html.escape(r["roles"]),
                     *(html.escape(str(r[f])) for f in design.order), str(r["n"]),
                     str(r["n_failed"]), number(r["mean"], fixed=True),
                     number(r["std"], fixed=True), ci,
                     html.escape(str(r.get("flags") or ""))])
    return html_table(head, rows)


def effects_table_html(frame: pd.DataFrame, column: str, confidence: float) -> str:
    """Effects or interactions: estimate, interval, t, df, Welch p-value, detectable
    difference (effects), note."""
    pct = int(round(100 * confidence))
    has_mde = "mde" in frame.columns
    head = ["comparison", "estimate", f"{pct}% CI", "t", "df", "p (Welch)",
            *(["detectable"] if has_mde else []), "note"]
    rows = []
    for r in frame.to_dict("records"):
        ci = interval(r["ci_low"], r["ci_high"], fixed=True, signed=True)
        rows.append([html.escape(r["label"]), number(r[column], fixed=True, signed=True), ci,
                     f"{r['t']:.2f}" if _finite(r["t"]) else "-",
                     f"{r['df']:.1f}" if _finite(r["df"]) else "-",
                     html.escape(p_value(r["p_value"])),
                     *([number(r["mde"], fixed=True)] if has_mde else []),
                     html.escape(r["note"] or "")])
    return html_table(head, rows)


def reading_html(stats: AblationStats) -> str:
    """Before the effects: unfinished cells, then each effect in words, then what the design
    could detect at all."""
    parts = []
    if stats.train_longer:
        parts.append('<p class="warn"><b>Train longer first.</b> Still improving at the last '
                     f"epoch: {html.escape(', '.join(stats.train_longer))}. An effect involving "
                     "them compares unfinished runs and may change with more epochs.</p>")
    design = design_sentence(stats)
    if design:
        parts.append(f"<p>{html.escape(design)}</p>")
    words = effect_sentences(stats)
    if words:
        parts.append("<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in words) + "</ul>")
    parts.append(f'<p class="note">Cell intervals: {html.escape(interval_words(stats))}; '
                 "effects: Welch t intervals"
                 + (", within [-1, 1] for accuracies" if stats.is_accuracy else "") + ".</p>")
    return "".join(parts)


def _shared_advice(lists: Sequence[Sequence[str]]) -> list[str]:
    """Advice lines given to two or more cells (shown once), in first-seen order."""
    seen: dict[str, int] = {}
    for advice in lists:
        for a in dict.fromkeys(advice):
            seen[a] = seen.get(a, 0) + 1
    return [a for a, k in seen.items() if k >= 2]


def diagnosis_html(table: pd.DataFrame) -> str:
    """Per cell: the verdict on the mean curves with reason and advice, and each seed's;
    advice shared by several cells is listed once above the table."""
    shared = _shared_advice([r["advice"] for r in table.to_dict("records")])
    rows = []
    for r in table.to_dict("records"):
        seeds = ", ".join(f"{badge(v)} x{n}" for v, n in sorted(r["verdicts"].items())) or "-"
        own = [a for a in r["advice"] if a not in shared]
        advice = "".join(f"<li>{html.escape(a)}</li>" for a in own)
        why = html.escape(r["reason"] or "no history recorded")
        if r.get("still_improving"):
            why = "<b>train longer</b>: " + (why if r["verdict"] == "not_converged" else
                                             f"{html.escape(r['improving_why'])}<br>{why}")
        rows.append([html.escape(r["label"]), badge(r["verdict"]), seeds,
                     f"{why}<ul>{advice}</ul>" if advice else why])
    top = ""
    if shared:
        top = ("<p>Advice for several cells (shown once):</p><ul>"
               + "".join(f"<li>{html.escape(a)}</li>" for a in shared) + "</ul>")
    return top + html_table(["cell", "mean curves", "per seed", "why and what to try"], rows)


def _overview_html(data: AblationData, stats: AblationStats, design: Design, seeds: list[int],
                   extra: dict[str, str]) -> str:
    runs = data.runs
    ok = int((runs["state"] == "COMPLETE").sum()) if len(runs) else 0
    factors = "<br>".join(
        html.escape(f"{f}: {', '.join(levels)} (baseline {design.baseline[f]}"
                    + (f", full {design.full[f]})" if design.kind == "one_at_a_time" else ")"))
        for f, levels in design.factors.items())
    way = "higher" if stats.higher_is_better else "lower"
    kv = [("ablation", html.escape(data.name)), ("design", design.kind),
          ("factors", factors), ("seeds", html.escape(", ".join(map(str, seeds)))),
          ("metric", f"{html.escape(stats.metric)} ({way} is better)"),
          ("runs", f"{len(runs)} recorded, {ok} in the statistics, {len(runs) - ok} excluded"),
          *((k, html.escape(v)) for k, v in extra.items() if v)]
    return kv_table(kv)


def _ablation_figure(key: str, title: str, build: Any, body: str = "") -> Section:
    return figure_section(key, title, build, height=None, body=body,
                          empty="nothing to draw (no successful run yet)")


def build_ablation_sections(data: AblationData, stats: AblationStats, design: Design,
                            seeds: list[int], overview: dict[str, str] | None = None
                            ) -> list[Section]:
    """Every block of the ablation report, in page order (the Notes only when there are any)."""
    order = [(c.id, c.label) for c in design.cells()]
    diag = diagnose_cells(data.runs, data.histories, design, data.num_classes, data.n_val)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in stats.notes)
    mde = stats.mde if design.kind == "one_at_a_time" else None  # cell vs cell comparisons
    sections = [
        Section("overview", "Ablation",
                body=_overview_html(data, stats, design, seeds, overview or {})),
        _ablation_figure("cells", "Cells", lambda: plot_cell_bars(stats.cells, data.runs, stats.metric),
                body=cells_table_html(stats, design)),
        Section("reading", "Reading the effects", body=reading_html(stats)),
        _ablation_figure("effects", "Effects (forest plot)",
                lambda: plot_effects(stats.effects, stats.interactions, stats.metric,
                                     stats.higher_is_better, mde),
                body=effects_table_html(stats.effects, "effect", stats.confidence)),
    ]
    if design.kind == "full_factorial" and len(design.order) >= 2:
        sections.append(_ablation_figure(
            "interactions", "Interactions",
            lambda: plot_interaction(stats.group_means, stats.metric),
            body=effects_table_html(stats.interactions, "interaction", stats.confidence)))
    else:
        sections.append(Section("interactions", "Interactions", note=(
            "interactions need a full_factorial design with two or more factors; "
            "one_at_a_time compares each factor alone and removed from the full configuration")))
    sections += [
        _ablation_figure("curves", "Learning curves per cell", lambda: plot_cell_curves(
            data.histories, order)),
        Section("diagnosis", "Diagnosis of each cell", body=diagnosis_html(diag)),
    ]
    if notes:
        sections.append(Section("notes", "Notes", body=f"<ul>{notes}</ul>"))
    return sections


def write_ablation_report(data: AblationData, stats: AblationStats, design: Design,
                          seeds: list[int], out_dir: str | Path = "dashboards", *,
                          overview: dict[str, str] | None = None) -> Path:
    """Write ``<out_dir>/<ablation>/index.html`` and return its path.

    Args:
        data: the ablation's runs and histories (:func:`hpstudy.analyze.collect_ablation`).
        stats: from :func:`hpstudy.analyze.analyze_ablation`.
        design: the ablation's design.
        seeds: the planned seeds (shown in the overview).
        out_dir: the dashboards folder.
        overview: extra key -> text rows for the overview table.
    """
    sections = build_ablation_sections(data, stats, design, seeds, overview)
    return write_page(render_html(f"hpstudy ablation: {data.name}", sections), out_dir,
                      data.name)
