"""The study dashboard: one self-contained HTML file (plotly.js embedded once, works offline).

``write_report(data, out_dir)`` composes the figures of :mod:`hpstudy.report.figures`
and Optuna's own plots into ``<out_dir>/<study>/index.html``.
``report_study(name, storage, tracking_uri)`` collects the study first and logs
the file as an artifact of the study's parent MLflow run.
"""

from __future__ import annotations

import html
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..analyze import StudyData, StudyDiagnosis, collect, diagnose_trials, summarize
from ..analyze.fmt import number as fmt_number
from ..track import Tracker
from .figures import (
    _selection_info,
    contour_params,
    plot_gap,
    plot_learning_curves,
    plot_verdict_counts,
)
from .page import (
    ARTIFACT_DIR,
    Section,
    badge,
    figure_section,
    kv_table,
    render_html,
    write_page,
)

_log = logging.getLogger("hpstudy")


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
        figure_section("history", "Optimization history",
                        lambda: ov.plot_optimization_history(study)),
        figure_section("importances", "Hyperparameter importances",
                        lambda: ov.plot_param_importances(study)),
        figure_section("parallel", "Parallel coordinates",
                        lambda: ov.plot_parallel_coordinate(study)),
        figure_section("slice", "Slice plots", lambda: ov.plot_slice(study), height=420),
        figure_section(
            "contour", "Contour: " + (" x ".join(pair) if pair else "lr x batch size"),
            (lambda: ov.plot_contour(study, params=list(pair))) if pair else
            _raise("needs two searched hyperparameters"), height=520),
        figure_section("intermediate", "Intermediate values (the objective per epoch)",
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


def _params_text(trials: pd.DataFrame, number: int, names: list[str]) -> str:
    row = trials[trials["number"] == number]
    if row.empty:
        return ""
    r = row.iloc[0]
    parts = [f"{n}={fmt_number(r[n])}" for n in names if n in r and not pd.isna(r[n])]
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
            str(r["number"]), html.escape(str(r["state"])), fmt_number(r["value"]),
            badge(r["verdict"]), fmt_number(r["epochs"]), fmt_number(r["best_epoch"]),
            fmt_number(r["val_loss_min_epoch"]),
            fmt_number(r["final_train_acc"], pct=True), fmt_number(r["best_val_acc"], pct=True),
            fmt_number(r["gap"], pct=True, signed=True), fmt_number(r["val_loss_rise"], pct=True),
            fmt_number(r["train_loss_slope"], pct=True, signed=True),
            fmt_number(r["noise"], pct=True),
            f'{html.escape(str(r["reason"]))}<ul>{advice}</ul>',
            html.escape(_params_text(data.trials, int(r["number"]), data.param_names)),
        ]
        out.append(f'<tr id="trial-{r["number"]}">' + "".join(f"<td>{c}</td>" for c in cells)
                   + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def summary_html(summary: StudyDiagnosis) -> str:
    """Verdict counts in words and the overfit vs good_fit comparison table."""
    counts = ", ".join(f"{badge(v)} {n}" for v, n in summary.counts.items() if n) or "none"
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
                         f"<td>{html.escape(fmt_number(d['overfit']))}</td>"
                         f"<td>{html.escape(fmt_number(d['good_fit']))}</td>"
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
        rows.append(("best trial", f'<a href="#trial-{n}">{n}</a>: value {fmt_number(best["value"])} '
                                   f'{badge(verdict.iloc[0] if len(verdict) else None)}'))
        rows.append(("best hyperparameters",
                     html.escape(_params_text(data.trials, n, data.param_names)) or "-"))
    if data.parent_run_id:
        rows.append(("MLflow study run", html.escape(data.parent_run_id)))
    return kv_table(rows)


def build_sections(data: StudyData, table: pd.DataFrame, summary: StudyDiagnosis,
                   top_k: int = 3) -> list[Section]:
    """Every block of the dashboard, in page order."""
    sel = _selection_info(table, data.direction, top_k)
    verdicts = dict(zip(table["number"], table["verdict"], strict=True))
    values = dict(zip(table["number"], table["value"], strict=True))
    top_labels = {n: f"#{i + 1} trial {n} ({fmt_number(values.get(n))}, "
                     f"{verdicts.get(n) or 'no verdict'})" for i, n in enumerate(sel.top)}
    verdict_labels = {n: f"{v}: trial {n}" for v, n in sel.by_verdict}
    h = data.histories
    sections = [Section("overview", "Study", body=_overview_html(data, table))]
    sections += _optuna_sections(data)
    sections += [
        figure_section("curves-top", f"Learning curves of the top {len(sel.top)} trials",
                        lambda: plot_learning_curves(h, sel.top, top_labels,
                                                     "Top trials")),
        figure_section("curves-verdict", "Learning curves: one trial of each verdict",
                        lambda: plot_learning_curves(h, [n for _, n in sel.by_verdict],
                                                     verdict_labels, "One trial per verdict")),
        figure_section("gap", "Generalization gap over epochs", lambda: plot_gap(h, table)),
        figure_section("verdicts", "Diagnosis summary", lambda: plot_verdict_counts(table),
                       height=320, body=summary_html(summary)),
        Section("diagnosis", "Diagnosis of every trial", body=diagnosis_table_html(table, data)),
    ]
    return sections


def write_report(data: StudyData, out_dir: str | Path = "dashboards", *,
                 table: pd.DataFrame | None = None, summary: StudyDiagnosis | None = None,
                 top_k: int = 3, extra: Sequence[Section] = ()) -> Path:
    """Write ``<out_dir>/<study>/index.html`` and return its path.

    Args:
        data: from :func:`hpstudy.analyze.collect`.
        out_dir: the dashboards folder (the study's ``report.dir``).
        table: from :func:`hpstudy.analyze.diagnose_trials` (computed if omitted).
        summary: from :func:`hpstudy.analyze.summarize` (computed if omitted).
        top_k: how many of the best trials get learning curves.
        extra: sections appended at the end (the best trial's inspection).
    """
    table = diagnose_trials(data) if table is None else table
    summary = summarize(table, data) if summary is None else summary
    sections = build_sections(data, table, summary, top_k) + list(extra)
    page = render_html(f"hpstudy report: {data.name}", sections)
    return write_page(page, out_dir, data.name)


def report_study(study_name: str, storage_url: str, tracking_uri: str | None,
                 out_dir: str | Path = "dashboards", *, log_artifact: bool = True,
                 top_k: int = 3, tracker: Tracker | None = None,
                 extra: Sequence[Section] = ()) -> Path:
    """Collect a study, write its dashboard, and log it to the study's parent MLflow run.

    Args:
        study_name: the Optuna study name.
        storage_url: Optuna storage URL.
        tracking_uri: MLflow tracking URI (``None``: no histories, nothing logged).
        out_dir: the dashboards folder.
        log_artifact: log ``index.html`` under ``dashboard/`` of the parent run.
        top_k: how many of the best trials get learning curves.
        tracker: the study's tracker when the caller has one (it is reused);
            otherwise one is opened on ``tracking_uri`` to log the page.
        extra: sections appended at the end (the composition adds the best
            trial's inspection, :func:`hpstudy.inspection.best_trial_sections`).

    Returns:
        The path of the written ``index.html``.

    Raises:
        StudyNotFoundError: no study of that name in the storage (a KeyError).
    """
    data = collect(study_name, storage_url, tracking_uri)
    path = write_report(data, out_dir, top_k=top_k, extra=extra)
    if log_artifact and tracking_uri is not None and data.parent_run_id:
        tracker = tracker or Tracker.for_run(tracking_uri, data.parent_run_id)
        tracker.log_artifact(data.parent_run_id, path, ARTIFACT_DIR)
    return path
