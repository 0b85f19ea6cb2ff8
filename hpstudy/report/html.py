"""The study dashboard: one self-contained HTML file (plotly.js embedded once, works offline).

``write_report(data, out_dir)`` composes the figures of :mod:`hpstudy.report.figures`
and Optuna's own plots into ``<out_dir>/<study>/index.html``.
``report_study(name, storage, tracking_uri)`` collects the study first and logs
the file as an artifact of the study's parent MLflow run.
"""

from __future__ import annotations

import datetime as _dt
import html
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from ..analyze import StudyData, StudyDiagnosis, collect, diagnose_trials, summarize
from .figures import (
    VERDICT_COLORS,
    _selection_info,
    contour_params,
    plot_gap,
    plot_learning_curves,
    plot_verdict_counts,
)

ARTIFACT_DIR = "dashboard"  # where the report lands among the parent run's artifacts
_PLOT_CONFIG = {"displaylogo": False, "responsive": True}
_log = logging.getLogger("hpstudy")


class Section(NamedTuple):
    """One block of the page: a figure, or HTML, or a note saying why neither could be drawn."""

    key: str
    title: str
    figure: go.Figure | None = None
    body: str = ""  # trusted HTML built here (escaped already)
    note: str = ""


def _figure_section(key: str, title: str, build: Callable[[], go.Figure],
                    height: int = 450) -> Section:
    """Build a figure; a study too small for it (e.g. importances of one trial) gets a note."""
    try:
        fig = build()
    except Exception as e:  # noqa: BLE001 - one plot must not sink the report
        return Section(key, title, note=f"not drawn: {e}")
    if not fig.data:
        return Section(key, title, note="nothing to draw yet (no completed trial has this data)")
    if fig.layout.height is None:
        fig.update_layout(height=height)
    return Section(key, title, figure=fig)


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna warns on stderr for every plot of a study without completed trials; the
    report already says so in a note under the plot."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "too few trials to compute importances"
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _optuna_sections(data: StudyData) -> list[Section]:
    with _quiet_optuna():
        return _optuna_sections_loud(data)


def _optuna_sections_loud(data: StudyData) -> list[Section]:
    import optuna.visualization as ov

    study = data.study
    imp: list[str] = []
    if not {"train.lr", "data.batch_size"} <= set(data.param_names):
        try:  # only needed to pick the contour's two parameters
            imp = list(optuna_importances(study))
        except Exception:  # noqa: BLE001 - too few completed trials to rank
            imp = []
    pair = contour_params(data.param_names, imp)
    return [
        _figure_section("history", "Optimization history",
                        lambda: ov.plot_optimization_history(study)),
        _figure_section("importances", "Hyperparameter importances",
                        lambda: ov.plot_param_importances(study)),
        _figure_section("parallel", "Parallel coordinates",
                        lambda: ov.plot_parallel_coordinate(study)),
        _figure_section("slice", "Slice plots", lambda: ov.plot_slice(study), height=420),
        _figure_section(
            "contour", "Contour: " + (" x ".join(pair) if pair else "lr x batch size"),
            (lambda: ov.plot_contour(study, params=list(pair))) if pair else
            _raise("needs two searched hyperparameters"), height=520),
        _figure_section("intermediate", "Intermediate values (the objective per epoch)",
                        lambda: ov.plot_intermediate_values(study)),
    ]


def optuna_importances(study: Any) -> dict[str, float]:
    """Optuna's hyperparameter importances, most important first."""
    import optuna

    return optuna.importance.get_param_importances(study)


def _raise(msg: str) -> Callable[[], go.Figure]:
    def build() -> go.Figure:
        raise ValueError(msg)

    return build


def _fmt(v: Any, pct: bool = False, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        if pct:
            return f"{100 * v:+.1f}%" if signed else f"{100 * v:.1f}%"
        return f"{v:.4g}"
    return str(v)


def _badge(verdict: Any) -> str:
    if not isinstance(verdict, str) or not verdict:
        return '<span class="badge none">no verdict</span>'
    color = VERDICT_COLORS.get(verdict, "#bbb")
    return f'<span class="badge" style="background:{color}">{html.escape(verdict)}</span>'


def _params_text(trials: pd.DataFrame, number: int, names: list[str]) -> str:
    row = trials[trials["number"] == number]
    if row.empty:
        return ""
    r = row.iloc[0]
    parts = [f"{n}={_fmt(r[n])}" for n in names if n in r and not pd.isna(r[n])]
    return ", ".join(parts)


def diagnosis_table_html(table: pd.DataFrame, data: StudyData) -> str:
    """The per-trial diagnosis as an HTML table (verdict, evidence, advice, params)."""
    head = ("trial", "state", "value", "verdict", "epochs", "best epoch", "val loss min",
            "train acc",
            "val acc", "gap", "val loss rise", "loss slope", "noise", "why and what to try",
            "hyperparameters")
    out = ['<table class="diag"><thead><tr>', *(f"<th>{h}</th>" for h in head),
           "</tr></thead><tbody>"]
    for r in table.to_dict("records"):
        advice = "".join(f"<li>{html.escape(a)}</li>" for a in r["advice"])
        cells = [
            str(r["number"]), html.escape(str(r["state"])), _fmt(r["value"]),
            _badge(r["verdict"]), _fmt(r["epochs"]), _fmt(r["best_epoch"]),
            _fmt(r["val_loss_min_epoch"]),
            _fmt(r["final_train_acc"], pct=True), _fmt(r["best_val_acc"], pct=True),
            _fmt(r["gap"], pct=True, signed=True), _fmt(r["val_loss_rise"], pct=True),
            _fmt(r["train_loss_slope"], pct=True, signed=True), _fmt(r["noise"], pct=True),
            f'{html.escape(str(r["reason"]))}<ul>{advice}</ul>',
            html.escape(_params_text(data.trials, int(r["number"]), data.param_names)),
        ]
        out.append(f'<tr id="trial-{r["number"]}">' + "".join(f"<td>{c}</td>" for c in cells)
                   + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def summary_html(summary: StudyDiagnosis) -> str:
    """Verdict counts in words and the overfit vs good_fit comparison table."""
    counts = ", ".join(f"{_badge(v)} {n}" for v, n in summary.counts.items() if n) or "none"
    parts = [f"<p>Trials per verdict: {counts}"
             + (f", {summary.undiagnosed} without a verdict" if summary.undiagnosed else "")
             + "</p>"]
    if summary.n_overfit and summary.n_good_fit and len(summary.differences):
        parts.append(f"<p>What sets the {summary.n_overfit} overfit trial(s) apart from the "
                     f"{summary.n_good_fit} good fit(s), largest difference first (effect: "
                     "0 = same, 1 = no overlap):</p>")
        parts.append('<table class="diff"><thead><tr><th>hyperparameter</th><th>overfit</th>'
                     "<th>good_fit</th><th>effect</th><th>reading</th></tr></thead><tbody>")
        for d in summary.differences.to_dict("records"):
            parts.append(f"<tr><td>{html.escape(str(d['param']))}</td>"
                         f"<td>{html.escape(_fmt(d['overfit']))}</td>"
                         f"<td>{html.escape(_fmt(d['good_fit']))}</td>"
                         f"<td>{d['effect']:.2f}</td><td>{html.escape(d['note'])}</td></tr>")
        parts.append("</tbody></table>")
    else:
        parts.append(f"<p>Comparing overfit and good_fit trials needs at least one of each "
                     f"(this study has {summary.n_overfit} overfit, {summary.n_good_fit} "
                     "good_fit).</p>")
    return "".join(parts)


def _overview_html(data: StudyData, table: pd.DataFrame) -> str:
    states = data.trials["state"].value_counts().to_dict()
    state_txt = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "none"
    rows = [("study", html.escape(data.name)), ("direction", data.direction),
            ("trials", f"{len(data.trials)} ({state_txt})")]
    done = data.trials[(data.trials["state"] == "COMPLETE") & data.trials["value"].notna()]
    if len(done):
        # stable sort with ties to the lowest number, as Optuna's best_trial
        best = done.sort_values(["value", "number"],
                                ascending=[data.direction == "minimize", True]).iloc[0]
        n = int(best["number"])
        verdict = table.loc[table["number"] == n, "verdict"]
        rows.append(("best trial", f'<a href="#trial-{n}">{n}</a>: value {_fmt(best["value"])} '
                                   f'{_badge(verdict.iloc[0] if len(verdict) else None)}'))
        rows.append(("best hyperparameters",
                     html.escape(_params_text(data.trials, n, data.param_names)) or "-"))
    if data.parent_run_id:
        rows.append(("MLflow study run", html.escape(data.parent_run_id)))
    rows.append(("generated", _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")))
    return '<table class="kv">' + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>"
                                          for k, v in rows) + "</table>"


def build_sections(data: StudyData, table: pd.DataFrame, summary: StudyDiagnosis,
                   top_k: int = 3) -> list[Section]:
    """Every block of the dashboard, in page order."""
    sel = _selection_info(table, data.direction, top_k)
    verdicts = dict(zip(table["number"], table["verdict"], strict=True))
    values = dict(zip(table["number"], table["value"], strict=True))
    top_labels = {n: f"#{i + 1} trial {n} ({_fmt(values.get(n))}, "
                     f"{verdicts.get(n) or 'no verdict'})" for i, n in enumerate(sel.top)}
    verdict_labels = {n: f"{v}: trial {n}" for v, n in sel.by_verdict}
    h = data.histories
    sections = [Section("overview", "Study", body=_overview_html(data, table))]
    sections += _optuna_sections(data)
    sections += [
        _figure_section("curves-top", f"Learning curves of the top {len(sel.top)} trials",
                        lambda: plot_learning_curves(h, sel.top, top_labels,
                                                     "Top trials")),
        _figure_section("curves-verdict", "Learning curves: one trial of each verdict",
                        lambda: plot_learning_curves(h, [n for _, n in sel.by_verdict],
                                                     verdict_labels, "One trial per verdict")),
        _figure_section("gap", "Generalization gap over epochs", lambda: plot_gap(h, table)),
        _figure_section("verdicts", "Diagnosis summary", lambda: plot_verdict_counts(table),
                        height=320)._replace(body=summary_html(summary)),
        Section("diagnosis", "Diagnosis of every trial", body=diagnosis_table_html(table, data)),
    ]
    return sections


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;
background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}header h1{margin:0;font-size:22px}
nav{padding:6px 24px;background:#eceff1;font-size:14px}nav a{margin-right:14px;color:#1565c0}
main{padding:8px 24px 40px}section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;
margin:14px 0;padding:10px 16px}h2{font-size:18px;margin:6px 0 8px}
.note{color:#777;font-style:italic}table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #e6e6e6;padding:4px 8px;text-align:left;vertical-align:top}
table.diag td ul{margin:4px 0 0 16px;padding:0}table.kv th{width:180px;color:#555}
.badge{color:#fff;border-radius:10px;padding:1px 8px;font-size:12px;white-space:nowrap}
.badge.none{background:#bbb}
"""


def render_html(title: str, sections: list[Section]) -> str:
    """The page: plotly.js once in <head>, then each section's figure div and HTML."""
    nav = "".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    blocks = []
    for s in sections:
        parts = [f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>']
        if s.figure is not None:
            parts.append(pio.to_html(s.figure, full_html=False, include_plotlyjs=False,
                                     div_id=f"fig-{s.key}", config=_PLOT_CONFIG,
                                     default_height=f"{s.figure.layout.height}px"))
        if s.note:
            parts.append(f'<p class="note">{html.escape(s.note)}</p>')
        parts.append(s.body)
        parts.append("</section>")
        blocks.append("".join(parts))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<header><h1>{html.escape(title)}</h1></header><nav>{nav}</nav><main>"
        + "".join(blocks) + "</main></body></html>\n"
    )


def write_report(data: StudyData, out_dir: str | Path = "dashboards", *,
                 table: pd.DataFrame | None = None, summary: StudyDiagnosis | None = None,
                 top_k: int = 3) -> Path:
    """Write ``<out_dir>/<study>/index.html`` and return its path.

    Args:
        data: from :func:`hpstudy.analyze.collect`.
        out_dir: the dashboards folder (the study's ``report.dir``).
        table: from :func:`hpstudy.analyze.diagnose_trials` (computed if omitted).
        summary: from :func:`hpstudy.analyze.summarize` (computed if omitted).
        top_k: how many of the best trials get learning curves.
    """
    table = diagnose_trials(data) if table is None else table
    summary = summarize(table, data) if summary is None else summary
    page = render_html(f"hpstudy report: {data.name}", build_sections(data, table, summary, top_k))
    return write_page(page, out_dir, data.name)


def write_page(page: str, out_dir: str | Path, name: str) -> Path:
    """Write ``<out_dir>/<name>/index.html`` atomically and return its path."""
    path = Path(out_dir) / name / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)  # a browser open on the old report never sees half a file
    return path


def report_study(study_name: str, storage_url: str, tracking_uri: str | None,
                 out_dir: str | Path = "dashboards", *, log_artifact: bool = True,
                 top_k: int = 3) -> Path:
    """Collect a study, write its dashboard, and log it to the study's parent MLflow run.

    Args:
        study_name: the Optuna study name.
        storage_url: Optuna storage URL.
        tracking_uri: MLflow tracking URI (``None``: no histories, nothing logged).
        out_dir: the dashboards folder.
        log_artifact: log ``index.html`` under ``dashboard/`` of the parent run.
        top_k: how many of the best trials get learning curves.

    Returns:
        The path of the written ``index.html``.

    Raises:
        StudyNotFoundError: no study of that name in the storage (a KeyError).
    """
    data = collect(study_name, storage_url, tracking_uri)
    path = write_report(data, out_dir, top_k=top_k)
    if log_artifact and tracking_uri is not None and data.parent_run_id:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=tracking_uri).log_artifact(
            data.parent_run_id, str(path), ARTIFACT_DIR)
    return path
