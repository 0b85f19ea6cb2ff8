"""Figure builders for the study dashboard: DataFrame -> plotly Figure, nothing else.

Each plot follows Optuna's ``visualization/_slice.py`` split (STYLE.md): a pure
``_<plot>_info(...) -> NamedTuple`` that validates its input and drops
non-finite values, a ``_draw_<plot>(info) -> go.Figure``, and a two-line
public ``plot_<plot>(...)``. Tests compare the info objects exactly; the HTML
writer only composes figures.

Inputs are the frames of :class:`hpstudy.analyze.StudyData` (``histories``:
long per-epoch records with a ``trial`` column) and the table of
:func:`hpstudy.analyze.diagnose_trials` (``number``, ``state``, ``value``,
``verdict``...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analyze import VERDICTS
from ..analyze.fmt import finite as _finite

VERDICT_COLORS: dict[str, str] = {
    "good_fit": "#2ca02c",
    "overfit": "#d62728",
    "underfit": "#1f77b4",
    "unstable": "#ff7f0e",
    "diverged": "#444444",
    "not_learning": "#9467bd",
    "not_converged": "#17becf",
    "pruned": "#8c8c8c",
}
NO_VERDICT_COLOR = "#bbbbbb"
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf")


def _verdict(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


# ----------------------------------------------------------------- selection
class SelectionInfo(NamedTuple):
    """Which trials get learning curves: the best few, and one per verdict."""

    top: tuple[int, ...]
    by_verdict: tuple[tuple[str, int], ...]  # (verdict, trial number) in VERDICTS order


def _selection_info(table: pd.DataFrame, direction: str, top_k: int = 3) -> SelectionInfo:
    """Top ``top_k`` COMPLETE trials by value, and the best-valued trial of each verdict.

    Within a verdict, trials with a finite value come first (best first), then
    the rest by trial number, so a verdict held only by failed trials still
    gets its example.
    """
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be maximize or minimize, got {direction!r}")
    sign = -1.0 if direction == "maximize" else 1.0

    def key(r: dict[str, Any]) -> tuple[int, float, int]:
        v = r["value"]
        return (0, sign * float(v), r["number"]) if _finite(v) else (1, 0.0, r["number"])

    rows = sorted(table.to_dict("records"), key=key)
    top = tuple(int(r["number"]) for r in rows
                if r["state"] == "COMPLETE" and _finite(r["value"]))[:top_k]
    by_verdict = []
    for v in VERDICTS:
        match = [r for r in rows if _verdict(r["verdict"]) == v]
        if match:
            by_verdict.append((v, int(match[0]["number"])))
    return SelectionInfo(top, tuple(by_verdict))


# ----------------------------------------------------------------- learning curves
class Series(NamedTuple):
    epochs: tuple[int, ...]
    values: tuple[float, ...]


class TrialCurves(NamedTuple):
    number: int
    label: str
    train_loss: Series
    val_loss: Series
    train_acc: Series
    val_acc: Series


class LearningCurvesInfo(NamedTuple):
    title: str
    curves: tuple[TrialCurves, ...]
    loss_range: tuple[float, float] | None = None  # log10 units; None: every point fits


def _series(rows: pd.DataFrame, key: str) -> Series:
    pairs = [(int(e), float(v)) for e, v in zip(rows["epoch"], rows[key], strict=True)
             if _finite(v) and _finite(e)]
    return Series(tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))


def _learning_curves_info(histories: pd.DataFrame, numbers: list[int] | tuple[int, ...],
                          labels: dict[int, str] | None = None,
                          title: str = "Learning curves") -> LearningCurvesInfo:
    """Train and validation loss/accuracy per epoch for the given trials (in order).

    Trials without any recorded epoch are left out; non-finite points are dropped.
    The loss axis (log scale) is :func:`robust_range` of the losses' log10, fenced
    above only: a diverged trial's 1e25 does not squash the other curves into one
    line, and a training loss falling to 1e-4 stays in view.
    """
    missing = {"trial", "epoch", "train_loss", "val_loss", "train_acc", "val_acc"} - set(
        histories.columns)
    if missing:
        raise ValueError(f"histories lacks column(s) {', '.join(sorted(missing))}")
    labels = labels or {}
    curves = []
    for n in dict.fromkeys(int(x) for x in numbers):  # unique, order kept
        rows = histories[histories["trial"] == n].sort_values("epoch")
        if rows.empty:
            continue
        curves.append(TrialCurves(
            n, labels.get(n, f"trial {n}"),
            *(_series(rows, k) for k in ("train_loss", "val_loss", "train_acc", "val_acc")),
        ))
    logs = [math.log10(v) for c in curves for s in (c.train_loss, c.val_loss) for v in s.values
            if v > 0]
    return LearningCurvesInfo(title, tuple(curves),
                              robust_range(logs, include_zero=False, side="upper"))


def _draw_learning_curves(info: LearningCurvesInfo) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"),
                        horizontal_spacing=0.08)
    for i, c in enumerate(info.curves):
        color = _PALETTE[i % len(_PALETTE)]
        for col, (train, val) in enumerate(((c.train_loss, c.val_loss),
                                            (c.train_acc, c.val_acc)), start=1):
            for s, stage, dash in ((train, "train", "solid"), (val, "val", "dash")):
                fig.add_trace(go.Scatter(
                    x=s.epochs, y=s.values, mode="lines+markers", name=f"{c.label} ({stage})",
                    legendgroup=c.label, showlegend=col == 1, line={"color": color, "dash": dash},
                    marker={"size": 4},
                    hovertemplate=f"{c.label} {stage}<br>epoch %{{x}}<br>%{{y:.4f}}<extra></extra>",
                ), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="loss", type="log", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", row=1, col=2)
    if info.loss_range is not None:
        lo, hi = info.loss_range
        fig.update_yaxes(range=[lo, hi], row=1, col=1)
        out = [(c.label, e, v) for c in info.curves for s in (c.train_loss, c.val_loss)
               for e, v in zip(s.epochs, s.values, strict=True)
               if v > 0 and not lo <= math.log10(v) <= hi]
        if out:
            _edge_markers(fig, out, lo, hi, log=True)
    fig.update_layout(title=f"{info.title} (solid: train, dashed: validation)", height=420,
                      margin={"t": 70})
    return fig


def _edge_markers(fig: go.Figure, points: list[tuple[Any, int, float]], lo: float, hi: float,
                  *, log: bool = False, col: int = 1) -> None:
    """Points beyond an axis range: a triangle at the edge, the value on hover."""
    def pos(v: float) -> float:
        return math.log10(v) if log else v

    edge = [(10 ** hi if log else hi) if pos(v) > hi else (10 ** lo if log else lo)
            for *_, v in points]
    fig.add_trace(go.Scatter(
        x=[e for _, e, _ in points], y=edge, mode="markers", name="beyond the axis",
        showlegend=not any(t.name == "beyond the axis" for t in fig.data), cliponaxis=False, customdata=[[who, v] for who, _, v in points],
        marker={"symbol": ["triangle-up" if pos(v) > hi else "triangle-down"
                           for *_, v in points], "size": 10, "color": "#000"},
        hovertemplate="%{customdata[0]}, epoch %{x}: %{customdata[1]:.4g} (beyond the axis)"
                      "<extra></extra>"), row=1, col=col)


def plot_learning_curves(histories: pd.DataFrame, numbers: list[int] | tuple[int, ...],
                         labels: dict[int, str] | None = None,
                         title: str = "Learning curves") -> go.Figure:
    """Train vs validation loss (log scale) and accuracy per epoch, one colour per trial."""
    return _draw_learning_curves(_learning_curves_info(histories, numbers, labels, title))


# ----------------------------------------------------------------- generalization gap
class GapLine(NamedTuple):
    number: int
    verdict: str | None
    epochs: tuple[int, ...]
    acc_gap: tuple[float, ...]  # train_acc - val_acc
    loss_gap: tuple[float, ...]  # val_loss - train_loss


class GapInfo(NamedTuple):
    lines: tuple[GapLine, ...]
    acc_range: tuple[float, float] | None = None  # None: every point fits (autorange)
    loss_range: tuple[float, float] | None = None


FENCE_IQR = 3.0
"""Robust axes: a point more than this many interquartile ranges beyond the quartiles of
all points (Tukey's "far out" fence) does not stretch the axis."""


def robust_range(values: Sequence[float], k: float = FENCE_IQR, *,
                 include_zero: bool = True, side: str = "both") -> tuple[float, float] | None:
    """An axis range for the bulk of ``values`` (and 0), or None when none is far out.

    ``side`` says which tail may be left out: ``both``, ``upper`` (log losses: a loss
    falling towards 0 is a run memorizing its training set, worth seeing; only an
    explosion is left out) or ``lower`` (gaps: a large positive gap is overfitting,
    the point of the plot; a large negative one is an epoch-1 artifact).

    Points beyond ``[q1 - k * iqr, q3 + k * iqr]`` (quartiles of every value) are
    left outside: one epoch-1 loss gap of -16 would otherwise flatten lines that
    move by tenths. The range is padded by 5% of its span.
    """
    v = np.asarray([x for x in values if _finite(x)], dtype=float)
    if len(v) < 4:
        return None
    q1, q3 = np.percentile(v, [25, 75])
    iqr = q3 - q1
    lo_f = -math.inf if side == "upper" else q1 - k * iqr
    hi_f = math.inf if side == "lower" else q3 + k * iqr
    if iqr <= 0 or (v.min() >= lo_f and v.max() <= hi_f):
        return None
    inside = v[(v >= lo_f) & (v <= hi_f)]
    lo, hi = float(inside.min()), float(inside.max())
    if include_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    pad = 0.05 * (hi - lo)
    return (lo - pad, hi + pad)


def _gap_info(histories: pd.DataFrame, table: pd.DataFrame) -> GapInfo:
    """Per trial and epoch: accuracy gap (train - val) and loss gap (val - train).

    Epochs where either gap is non-finite are dropped; trials are ordered by
    number. Diverged trials are left out: their losses (1e6 and up) would
    flatten every other line, and their gap means nothing. Each panel's axis
    range is :func:`robust_range` of its points, fenced below only (None:
    plotly's autorange): an epoch-1 gap of -16 is left off the axis, overfitting
    never is.
    """
    verdicts = {int(n): _verdict(v) for n, v in zip(table["number"], table["verdict"],
                                                      strict=True)}
    lines = []
    for n, rows in histories.sort_values(["trial", "epoch"]).groupby("trial", sort=True):
        if verdicts.get(int(n)) == "diverged":
            continue
        pts = [(int(e), ta - va, vl - tl) for e, ta, va, tl, vl in zip(
            rows["epoch"], rows["train_acc"], rows["val_acc"], rows["train_loss"],
            rows["val_loss"], strict=True)
            if all(_finite(x) for x in (ta, va, tl, vl))]
        if pts:
            lines.append(GapLine(int(n), verdicts.get(int(n)), tuple(p[0] for p in pts),
                                 tuple(float(p[1]) for p in pts),
                                 tuple(float(p[2]) for p in pts)))
    return GapInfo(tuple(lines),
                   robust_range([v for ln in lines for v in ln.acc_gap], side="lower"),
                   robust_range([v for ln in lines for v in ln.loss_gap], side="lower"))


def _draw_gap(info: GapInfo) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=(
        "accuracy gap (train - validation)", "loss gap (validation - train)"))
    shown: set[str] = set()
    for line in info.lines:
        name = line.verdict or "no verdict"
        color = VERDICT_COLORS.get(line.verdict or "", NO_VERDICT_COLOR)
        for col, ys in ((1, line.acc_gap), (2, line.loss_gap)):
            fig.add_trace(go.Scatter(
                x=line.epochs, y=ys, mode="lines", name=name, legendgroup=name,
                showlegend=col == 1 and name not in shown, line={"color": color, "width": 1.5},
                opacity=0.8,
                hovertemplate=f"trial {line.number} ({name})<br>epoch %{{x}}<br>%{{y:.4f}}"
                              "<extra></extra>",
            ), row=1, col=col)
        shown.add(name)
    fig.add_hline(y=0, line={"color": "#999", "width": 1, "dash": "dot"})
    for col, rng, key in ((1, info.acc_range, "acc_gap"), (2, info.loss_range, "loss_gap")):
        if rng is None:
            continue
        fig.update_yaxes(range=list(rng), row=1, col=col)
        out = [(f"trial {ln.number}", e, y) for ln in info.lines
               for e, y in zip(ln.epochs, getattr(ln, key), strict=True)
               if not rng[0] <= y <= rng[1]]
        if out:
            _edge_markers(fig, out, *rng, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title="Generalization gap: a line per trial by verdict (diverged left "
                            "out; triangles: beyond the axis)", height=420, margin={"t": 70})
    return fig


def plot_gap(histories: pd.DataFrame, table: pd.DataFrame) -> go.Figure:
    """The train-validation gap per epoch for every trial, coloured by verdict."""
    return _draw_gap(_gap_info(histories, table))


# ----------------------------------------------------------------- verdict counts
class VerdictCountsInfo(NamedTuple):
    verdicts: tuple[str, ...]
    counts: tuple[int, ...]


def _verdict_counts_info(table: pd.DataFrame) -> VerdictCountsInfo:
    """Trials per verdict, every verdict listed (zeros included), then 'no verdict' if any."""
    vs = [_verdict(v) for v in table["verdict"]]
    names = list(VERDICTS)
    counts = [sum(1 for v in vs if v == name) for name in names]
    none = sum(1 for v in vs if v is None)
    if none:
        names.append("no verdict")
        counts.append(none)
    return VerdictCountsInfo(tuple(names), tuple(counts))


def _draw_verdict_counts(info: VerdictCountsInfo) -> go.Figure:
    colors = [VERDICT_COLORS.get(v, NO_VERDICT_COLOR) for v in info.verdicts]
    fig = go.Figure(go.Bar(x=info.verdicts, y=info.counts, marker={"color": colors},
                           text=info.counts, textposition="auto"))
    fig.update_layout(title="Trials per verdict", yaxis={"title": "trials"}, height=320,
                      margin={"t": 60})
    return fig


def plot_verdict_counts(table: pd.DataFrame) -> go.Figure:
    """A bar per verdict: how many trials got it."""
    return _draw_verdict_counts(_verdict_counts_info(table))


# ----------------------------------------------------------------- Optuna's plots
def contour_params(param_names: list[str], importances: list[str] | None = None
                   ) -> tuple[str, str] | None:
    """The two parameters of the contour plot: lr x batch size when both were searched,
    else the two most important searched parameters (``importances`` best first)."""
    if "train.lr" in param_names and "data.batch_size" in param_names:
        return ("train.lr", "data.batch_size")
    ranked = [p for p in (importances or []) if p in param_names] or sorted(param_names)
    return (ranked[0], ranked[1]) if len(ranked) >= 2 else None
