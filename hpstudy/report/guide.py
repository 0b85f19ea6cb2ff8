"""The guide's dashboard: the three stages side by side, in one self-contained page.

``report_guide(study, storage, tracking_uri)`` collects the guide
(:func:`hpstudy.analyze.collect_guide`) and writes
``<out_dir>/<study>/guide/index.html``: each stage's goal, rule, target,
outcome and evidence, what it changed (a config diff) and the epochs it
spent; the lr range test's loss-vs-lr curve; training vs validation accuracy
of each stage's winner; epochs per stage against the planned split; and every
stage's trials. Figures follow the ``_info`` / ``_draw`` / ``plot_`` split.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analyze import GuideData, collect_guide
from ..analyze.fmt import finite
from ..analyze.fmt import number as fmt_number
from ..analyze.guide import STAGE_GOALS as GOALS
from ..analyze.guide import STAGE_TITLES as TITLES
from ..names import GUIDE_STAGES
from ..track import Tracker
from .page import (
    ARTIFACT_DIR,
    Section,
    badge,
    figure_section,
    kv_table,
    render_html,
    table,
    write_page,
)

STAGE_COLORS = {"1-anything": "#1f77b4", "2-everything": "#ff7f0e", "3-right-thing": "#2ca02c"}
OUTCOME_COLORS = {"accepted": "#2ca02c", "failed": "#d62728"}


# ----------------------------------------------------------------- lr range test
class LrRangeInfo(NamedTuple):
    lrs: tuple[float, ...]
    losses: tuple[float, ...]  # raw, per batch (non-finite points dropped)
    smooth_lrs: tuple[float, ...]
    smoothed: tuple[float, ...]
    low: float | None
    high: float | None
    lr_min_loss: float | None
    lr_steepest: float | None
    batch_size: int | None
    note: str


def _lr_range_info(lr_range: Mapping[str, Any]) -> LrRangeInfo:
    """The sweep's points (finite, positive lr) and the range it handed to stage 1."""
    lrs, losses = list(lr_range.get("lrs") or []), list(lr_range.get("losses") or [])
    smoothed = list(lr_range.get("smoothed") or [])
    if len(lrs) != len(losses):
        raise ValueError(f"{len(lrs)} lrs but {len(losses)} losses")
    raw = [(float(a), float(b)) for a, b in zip(lrs, losses, strict=True)
           if finite(a) and a > 0 and finite(b)]
    sm = [(float(a), float(b)) for a, b in zip(lrs, smoothed, strict=False)
          if finite(a) and a > 0 and finite(b)]

    def opt(key: str) -> float | None:
        v = lr_range.get(key)
        return float(v) if finite(v) else None

    batch = lr_range.get("batch_size")
    return LrRangeInfo(tuple(p[0] for p in raw), tuple(p[1] for p in raw),
                       tuple(p[0] for p in sm), tuple(p[1] for p in sm), opt("low"), opt("high"),
                       opt("lr_min_loss"), opt("lr_steepest"),
                       int(batch) if isinstance(batch, int) else None,
                       str(lr_range.get("note") or ""))


def _draw_lr_range(info: LrRangeInfo) -> go.Figure:
    # shapes carry no legend entry and their annotations need log10 positions on a log
    # axis: each marker gets a legend-only trace that names it and its value
    fig = go.Figure()
    if info.low is not None and info.high is not None:
        fig.add_vrect(x0=info.low, x1=info.high, fillcolor="#2ca02c", opacity=0.12, line_width=0)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", hoverinfo="skip",
                                 marker={"symbol": "square", "size": 12, "color": "#2ca02c",
                                         "opacity": 0.3},
                                 name=f"searched in stage 1: {info.low:.3g}..{info.high:.3g}"))
    fig.add_trace(go.Scatter(x=info.lrs, y=info.losses, mode="markers", name="loss (per batch)",
                             marker={"size": 4, "color": "#9e9e9e"},
                             hovertemplate="lr %{x:.3g}<br>loss %{y:.4f}<extra></extra>"))
    if info.smoothed:
        fig.add_trace(go.Scatter(x=info.smooth_lrs, y=info.smoothed, mode="lines",
                                 name="loss (smoothed)", line={"color": "#1f77b4"},
                                 hovertemplate="lr %{x:.3g}<br>smoothed %{y:.4f}<extra></extra>"))
    for x, name, color in ((info.lr_min_loss, "lowest loss", "#d62728"),
                           (info.lr_steepest, "steepest fall", "#ff7f0e")):
        if x is not None:
            fig.add_vline(x=x, line={"color": color, "dash": "dot"})
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", hoverinfo="skip",
                                     line={"color": color, "dash": "dot"},
                                     name=f"{name}: lr {x:.3g}"))
    finite_losses = [v for v in info.losses if math.isfinite(v)]
    top = None
    if finite_losses:  # the exploded tail would flatten the useful part of the curve
        lo = min(finite_losses)
        first = info.smoothed[0] if info.smoothed else finite_losses[0]
        top = max(first, lo) * 1.6
    at = f" at batch {info.batch_size}" if info.batch_size else ""
    fig.update_layout(title=f"LR range test{at}: training loss as the lr grows", height=420,
                      xaxis={"title": "learning rate", "type": "log"},
                      yaxis={"title": "training loss",
                             **({"range": [0, top]} if top else {})},
                      margin={"t": 60})
    return fig


def plot_lr_range(lr_range: Mapping[str, Any]) -> go.Figure:
    """Loss vs lr (log axis) of the lr range test, with the range stage 1 searched."""
    return _draw_lr_range(_lr_range_info(lr_range))


# ----------------------------------------------------------------- stage fits
class StageCurve(NamedTuple):
    stage: str
    label: str
    epochs: tuple[int, ...]
    train_acc: tuple[float, ...]
    val_acc: tuple[float, ...]


class StageFitsInfo(NamedTuple):
    curves: tuple[StageCurve, ...]


def _stage_fits_info(histories: Mapping[str, Sequence[Mapping[str, Any]]],
                     labels: Mapping[str, str] | None = None) -> StageFitsInfo:
    """Training and validation accuracy per epoch of each stage's trial, in stage order.

    Epochs where either accuracy is non-finite are dropped; stages without
    records are left out.
    """
    labels = labels or {}
    curves = []
    for stage in [s for s in GUIDE_STAGES if s in histories] + [
            s for s in histories if s not in GUIDE_STAGES]:
        pts = [(int(r["epoch"]), float(r["train_acc"]), float(r["val_acc"]))
               for r in histories[stage]
               if finite(r.get("epoch")) and finite(r.get("train_acc"))
               and finite(r.get("val_acc"))]
        if pts:
            curves.append(StageCurve(stage, labels.get(stage, stage), tuple(p[0] for p in pts),
                                     tuple(p[1] for p in pts), tuple(p[2] for p in pts)))
    return StageFitsInfo(tuple(curves))


def _draw_stage_fits(info: StageFitsInfo) -> go.Figure:
    n = max(1, len(info.curves))
    fig = make_subplots(rows=1, cols=n, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[c.label for c in info.curves] or None)
    for i, c in enumerate(info.curves, start=1):
        color = STAGE_COLORS.get(c.stage, "#555")
        for ys, name, dash in ((c.train_acc, "train", "solid"), (c.val_acc, "validation", "dash")):
            fig.add_trace(go.Scatter(
                x=c.epochs, y=ys, mode="lines+markers", name=f"{c.stage} {name}",
                line={"color": color, "dash": dash}, marker={"size": 4},
                hovertemplate=f"{c.stage} {name}<br>epoch %{{x}}<br>%{{y:.4f}}<extra></extra>",
            ), row=1, col=i)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="accuracy", row=1, col=1)
    fig.update_layout(title="Training vs validation accuracy of each stage's winner "
                            "(solid: train, dashed: validation)", height=400, margin={"t": 80})
    return fig


def plot_stage_fits(histories: Mapping[str, Sequence[Mapping[str, Any]]],
                    labels: Mapping[str, str] | None = None) -> go.Figure:
    """One panel per stage: its winner's training and validation accuracy per epoch."""
    return _draw_stage_fits(_stage_fits_info(histories, labels))


# ----------------------------------------------------------------- epochs per stage
class StageEpochsInfo(NamedTuple):
    stages: tuple[str, ...]
    spent: tuple[float, ...]
    planned: tuple[float | None, ...]
    total: float | None


def _stage_epochs_info(spent: Mapping[str, float], planned: Mapping[str, float] | None,
                       total: float | None = None) -> StageEpochsInfo:
    """Epochs spent per stage (every stage of the guide, 0 where it has not run) and the
    split planned up front."""
    planned = planned or {}
    stages = tuple(s for s in GUIDE_STAGES if s in spent or s in planned)
    return StageEpochsInfo(
        stages, tuple(float(spent.get(s, 0.0)) for s in stages),
        tuple(float(planned[s]) if finite(planned.get(s)) else None for s in stages),
        float(total) if finite(total) else None)


def _draw_stage_epochs(info: StageEpochsInfo) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Bar(x=info.stages, y=info.planned, name="planned split",
                         marker={"color": "#cfd8dc"}))
    fig.add_trace(go.Bar(x=info.stages, y=info.spent, name="spent",
                         marker={"color": [STAGE_COLORS.get(s, "#555") for s in info.stages]},
                         text=[fmt_number(v, digits=3) for v in info.spent], textposition="auto"))
    used = sum(info.spent)
    budget = f" of a budget of {fmt_number(info.total, digits=4)}" if info.total else ""
    fig.update_layout(barmode="group", height=340, margin={"t": 60}, yaxis={"title": "epochs"},
                      title=f"Epochs per stage: {fmt_number(used, digits=4)} spent{budget}")
    return fig


def plot_stage_epochs(spent: Mapping[str, float], planned: Mapping[str, float] | None,
                      total: float | None = None) -> go.Figure:
    """Epochs each stage spent, next to the split planned up front."""
    return _draw_stage_epochs(_stage_epochs_info(spent, planned, total))


# ----------------------------------------------------------------- tables
def _outcome(o: str | None) -> str:
    text = o or "not finished"
    color = OUTCOME_COLORS.get(o or "", "#9e9e9e")
    return f'<span class="badge" style="background:{color}">{html.escape(text)}</span>'


def _val(v: Any) -> str:
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_val(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_val(x)}" for k, x in v.items()) + "}"
    return fmt_number(v)


def stages_html(guide: GuideData) -> str:
    """The stages side by side: one column per stage, one row per fact."""
    cols = [s for s in GUIDE_STAGES if s in guide.stages]

    def cell(stage: str, fn: Any) -> str:
        return fn(guide.stages[stage])

    def changes(s: Any) -> str:
        rows = guide.changes(s.stage)
        if not rows:
            return "-"
        return "<br>".join(f"<code>{html.escape(k)}</code>: {html.escape(_val(a))} &rarr; "
                           f"<b>{html.escape(_val(b))}</b>" for k, a, b in rows)

    def winner(s: Any) -> str:
        n = s.winner
        if n is None:
            return "-"
        t = s.data.trials
        row = t[t["number"] == n]
        verdict = row.iloc[0]["diagnosis"] if len(row) else None
        return f"trial {n}: {fmt_number(s.result.get('value'))} {badge(verdict)}"

    def counts(s: Any) -> str:
        st = s.data.trials["state"].value_counts().to_dict()
        return ", ".join(f"{n} {k.lower()}" for k, n in sorted(st.items())) or "none"

    def epochs(s: Any) -> str:
        share = s.result.get("share")
        return fmt_number(s.epochs, digits=4) + (f" (share {fmt_number(share, digits=4)})"
                                                 if finite(share) else "")

    def advice(s: Any) -> str:
        lines = s.result.get("advice") or []
        diag = s.result.get("diagnosis")
        if s.outcome == "accepted" or not (lines or diag):
            return "-"
        return ((f"<p>{html.escape(diag)}</p>" if diag else "")
                + "<ul>" + "".join(f"<li>{html.escape(a)}</li>" for a in lines) + "</ul>")

    facts = [
        ("goal", lambda s: html.escape(f"{TITLES.get(s.stage, s.stage)}: {GOALS.get(s.stage, '')}")),
        ("study", lambda s: f"<code>{html.escape(s.name)}</code>"),
        ("rule", lambda s: html.escape(str(s.result.get("rule", "-")))),
        ("target", lambda s: html.escape(str(s.result.get("target", "-")))),
        ("outcome", lambda s: _outcome(s.outcome) + " " + html.escape(str(s.result.get("line",
                                                                                           "")))),
        ("winner", winner),
        ("changed", changes),
        ("epochs", epochs),
        ("trials", counts),
        ("diagnosis and advice", advice),
    ]
    head = '<table class="diag stages"><thead><tr><th></th>' + "".join(
        f"<th>{html.escape(s)}</th>" for s in cols) + "</tr></thead><tbody>"
    body = "".join("<tr><th>" + html.escape(name) + "</th>"
                   + "".join(f"<td>{cell(s, fn)}</td>" for s in cols) + "</tr>"
                   for name, fn in facts)
    return head + body + "</tbody></table>"


def trials_html(guide: GuideData, stage: str) -> str:
    """One stage's trials: state, value, verdict, training accuracy, overrides applied."""
    s = guide.stages[stage]
    t = s.data.trials.sort_values("number")
    diags = s.data.diagnoses
    rows = []
    for r in t.to_dict("records"):
        n = int(r["number"])
        ev = (diags.get(n) or {}).get("evidence", {})
        mark = " &#9733;" if n == s.winner else ""
        params = ", ".join(f"{k}={fmt_number(r[k])}" for k in s.data.param_names
                           if k in r and r[k] is not None and r[k] == r[k])
        rows.append([f"{n}{mark}", html.escape(str(r["state"])), fmt_number(r["value"]),
                     badge(r.get("diagnosis")), fmt_number(ev.get("final_train_acc"), pct=True),
                     fmt_number(ev.get("epochs")), html.escape(params)])
    return table(("trial", "state", "value", "verdict", "train acc", "epochs", "sampled"), rows)


def _overview(guide: GuideData) -> str:
    b = guide.budget or {}
    plan = b.get("plan") or {}
    total = b.get("total")
    spent = guide.spent
    rows = [("study", html.escape(guide.name)),
            ("stages", ", ".join(f"{_outcome(s.outcome)} <code>{html.escape(s.name)}</code>"
                                 for s in guide.stages.values())),
            ("budget", f"{fmt_number(total, digits=5)} epochs; planned "
                       + ", ".join(f"{k} {fmt_number(v, digits=4)}" for k, v in plan.items())),
            ("spent", f"{fmt_number(sum(spent.values()), digits=5)} epochs: "
                      + ", ".join(f"{k} {fmt_number(v, digits=4)}" for k, v in spent.items()))]
    if guide.stopped:
        rows.append(("stopped at", _outcome("failed") + f" {html.escape(guide.stopped)} "
                     "(rerun the same command to resume there)"))
    last = [s for s in guide.stages.values() if s.outcome == "accepted"]
    if last:
        s = last[-1]
        rows.append(("best so far", f"{html.escape(s.stage)} trial {s.winner}: "
                                    f"{fmt_number(s.result.get('value'))}"))
        carry = s.result.get("carry") or {}
        rows.append(("recommended", html.escape(", ".join(f"{k}={_val(v)}"
                                                          for k, v in carry.items()))))
    return kv_table(rows)


def build_guide_sections(guide: GuideData) -> list[Section]:
    """Every block of the guide's page, in order."""
    labels = {k: f"{k}: trial {s.focus()}" + (" (winner)" if s.winner is not None else " (best)")
              for k, s in guide.stages.items() if s.focus() is not None}
    histories = {k: s.history() for k, s in guide.stages.items()}
    lr = guide.lr_range
    sections = [
        Section("overview", "Guided study", body=_overview(guide)),
        Section("stages", "The three stages side by side", body=stages_html(guide)),
        figure_section("lr-range", "LR range test (stage 1)",
                       (lambda: plot_lr_range(lr)) if lr else _fail("no lr range test recorded"),
                       body=f"<p>{html.escape(str((lr or {}).get('note', '')))}</p>"),
        figure_section("fits", "Training vs validation accuracy of each stage's winner",
                       lambda: plot_stage_fits(histories, labels)),
        figure_section("epochs", "Epochs per stage",
                       lambda: plot_stage_epochs(guide.spent, (guide.budget or {}).get("plan"),
                                                 (guide.budget or {}).get("total")), height=340),
    ]
    for k in guide.stages:
        sections.append(Section(f"trials-{k}", f"Trials of {k}", body=trials_html(guide, k)))
    return sections


def _fail(msg: str) -> Any:
    def build() -> go.Figure:
        raise ValueError(msg)

    return build


def write_guide_report(guide: GuideData, out_dir: str | Path = "dashboards") -> Path:
    """Write ``<out_dir>/<study>/guide/index.html`` and return its path."""
    page = render_html(f"hpstudy guide: {guide.name}", build_guide_sections(guide))
    return write_page(page, out_dir, f"{guide.name}/guide")


def report_guide(study_name: str, storage_url: str, tracking_uri: str | None,
                 out_dir: str | Path = "dashboards", *, log_artifact: bool = True,
                 tracker: Tracker | None = None) -> Path:
    """Collect a guided study, write its page, and log it to its last stage's parent run.

    Raises:
        StudyNotFoundError: the storage holds no stage of ``study_name``.
    """
    guide = collect_guide(study_name, storage_url, tracking_uri)
    path = write_guide_report(guide, out_dir)
    last = list(guide.stages.values())[-1]
    if log_artifact and tracking_uri is not None and last.data.parent_run_id:
        tracker = tracker or Tracker.for_run(tracking_uri, last.data.parent_run_id)
        tracker.log_artifact(last.data.parent_run_id, path, ARTIFACT_DIR)
    return path
