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
from ..analyze.summary import comparison_caveat
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
    grid_section,
    kv_table,
    render_html,
    write_page,
)
from .params import (
    IMPORTANCE_MIN_TRIALS,
    importance_caveat,
    plot_importances,
    plot_parallel,
    plot_slices,
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
    # Optuna's contour reads search coordinates and quotes categories: past lr x batch
    # size, it is drawn for numeric entries only, never an allow_zero one (0 would show as
    # a tiny number)
    plain = [p for p in data.param_names if p not in data.space or (
        data.space[p].kind != "categorical" and data.space[p].zero_below is None)]
    lr_batch = {"train.lr", "data.batch_size"} <= set(data.param_names)
    pair = contour_params(data.param_names if lr_batch else plain, imp)
    n_done = int(((data.trials["state"] == "COMPLETE") & data.trials["value"].notna()).sum())
    caveat = importance_caveat(n_done, len(data.param_names))
    warn = ' class="warn"' if n_done < IMPORTANCE_MIN_TRIALS else ""
    return [
        figure_section("history", "Optimization history",
                        lambda: ov.plot_optimization_history(study)),
        # hpstudy's own: sample size and seed spread (importances), values as trained
        # (parallel, slices), one card per parameter in a wrapping grid (slices)
        figure_section("importances", "Hyperparameter importances",
                       lambda: plot_importances(data),
                       head=f"<p{warn}>{html.escape(caveat)}</p>"),
        figure_section("parallel", "Parallel coordinates", lambda: plot_parallel(data)),
        grid_section("slice", "Slice plots", lambda: plot_slices(data),
                     head='<p class="caption">One panel per hyperparameter: every completed '
                          "trial's value (as trained) against the objective; red stars: the "
                          "best trial and any tied with it.</p>"),
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


def shared_advice(table: pd.DataFrame) -> dict[str, list[int]]:
    """Advice lines given to two or more trials -> those trials, in first-seen order."""
    seen: dict[str, list[int]] = {}
    for r in table.to_dict("records"):
        for a in dict.fromkeys(r["advice"]):
            seen.setdefault(a, []).append(int(r["number"]))
    return {a: ns for a, ns in seen.items() if len(ns) >= 2}


def _numbers(ns: list[int]) -> str:
    return ", ".join(f"#{n}" for n in ns[:12]) + (f" and {len(ns) - 12} more" if len(ns) > 12
                                                   else "")


def diagnosis_table_html(table: pd.DataFrame, data: StudyData) -> str:
    """The per-trial diagnosis: advice shared by several trials listed once, then every
    trial's verdict, evidence, own advice and hyperparameters, collapsed by default."""
    shared = shared_advice(table)
    tag = {a: f"A{i + 1}" for i, a in enumerate(shared)}
    out = []
    if shared:
        out.append("<p>Advice given to several trials (once here; the table names it by "
                   "number):</p><ul>")
        out += [f"<li><b>{tag[a]}</b> ({len(ns)} trials: {_numbers(ns)}): {html.escape(a)}</li>"
                for a, ns in shared.items()]
        out.append("</ul>")
    head = ("trial", "state", "value", "verdict", "epochs", "best epoch", "val loss min",
            "train acc",
            "val acc", "gap", "val loss rise", "loss slope", "noise", "why and what to try",
            "hyperparameters")
    out += [f"<details><summary>Per-trial details: {len(table)} trials (verdict, evidence, "
            "advice, hyperparameters)</summary>",
            '<div class="wide"><table class="diag"><thead><tr>',
            *(f"<th>{h}</th>" for h in head), "</tr></thead><tbody>"]
    for r in table.to_dict("records"):
        own = [a for a in dict.fromkeys(r["advice"]) if a not in shared]
        refs = [tag[a] for a in dict.fromkeys(r["advice"]) if a in shared]
        advice = "".join(f"<li>{html.escape(a)}</li>" for a in own)
        if refs:
            advice += f"<li>shared advice {', '.join(refs)}</li>"
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
    out.append("</tbody></table></div></details>")
    return "".join(out)


def summary_html(summary: StudyDiagnosis) -> str:
    """Verdict counts in words and the overfit vs good_fit comparison table, with each
    group's size and a caveat when a group is small."""
    counts = ", ".join(f"{badge(v)} {n}" for v, n in summary.counts.items() if n) or "none"
    parts = [f"<p>Trials per verdict: {counts}"
             + (f", {summary.undiagnosed} without a verdict" if summary.undiagnosed else "")
             + "</p>"]
    if summary.n_overfit and summary.n_good_fit and len(summary.differences):
        parts.append(f"<p>What sets the overfit trials (n={summary.n_overfit}) apart from the "
                     f"good fits (n={summary.n_good_fit}), largest difference first (effect: "
                     "0 = same, 1 = no overlap; hyperparameters with one value in both groups "
                     "left out):</p>")
        caveat = comparison_caveat(summary.n_overfit, summary.n_good_fit)
        if caveat:
            parts.append(f'<p class="warn">{html.escape(caveat[0].upper() + caveat[1:])}.</p>')
        parts.append('<table class="diff"><thead><tr><th>hyperparameter</th>'
                     f"<th>overfit (n={summary.n_overfit})</th>"
                     f"<th>good_fit (n={summary.n_good_fit})</th><th>effect</th>"
                     "<th>reading</th></tr></thead><tbody>")
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


def _best_and_ties(data: StudyData) -> tuple[int | None, list[int]]:
    """The best trial (ties to the lowest number, as Optuna's best_trial) and the trials
    tied with its value."""
    done = data.trials[(data.trials["state"] == "COMPLETE") & data.trials["value"].notna()]
    if done.empty:
        return None, []
    best = done["value"].max() if data.direction == "maximize" else done["value"].min()
    tied = sorted(int(n) for n in done.loc[done["value"] == best, "number"])
    return tied[0], tied[1:]


def _overview_html(data: StudyData, table: pd.DataFrame) -> str:
    states = data.trials["state"].value_counts().to_dict()
    state_txt = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "none"
    rows = [("study", html.escape(data.name)), ("direction", data.direction),
            ("trials", f"{len(data.trials)} ({state_txt})")]
    n, ties = _best_and_ties(data)
    if n is not None:
        value = data.trials.loc[data.trials["number"] == n, "value"].iloc[0]
        verdict = table.loc[table["number"] == n, "verdict"]
        rows.append(("best trial", f'<a href="#trial-{n}">{n}</a>: value {fmt_number(value)} '
                                   f'{badge(verdict.iloc[0] if len(verdict) else None)}'))
        rows.append(("best hyperparameters",
                     html.escape(_params_text(data.trials, n, data.param_names)) or "-"))
        if ties:
            rows.append((f"tied at {fmt_number(value)}", "<br>".join(
                f'<a href="#trial-{t}">{t}</a>: '
                + html.escape(_params_text(data.trials, t, data.param_names))
                for t in ties)))
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
                 top_k: int = 3,
                 extra: Sequence[Section] | Callable[[], Sequence[Section]] = ()) -> Path:
    """Write ``<out_dir>/<study>/index.html`` and return its path.

    Args:
        data: from :func:`hpstudy.analyze.collect`.
        out_dir: the dashboards folder (the study's ``report.dir``).
        table: from :func:`hpstudy.analyze.diagnose_trials` (computed if omitted).
        summary: from :func:`hpstudy.analyze.summarize` (computed if omitted).
        top_k: how many of the best trials get learning curves.
        extra: sections appended at the end (the best trial's inspection), or a
            function that makes them, called once the figures are drawn (work
            they wait for, such as registering the best model, runs meanwhile).
    """
    table = diagnose_trials(data) if table is None else table
    summary = summarize(table, data) if summary is None else summary
    sections = build_sections(data, table, summary, top_k)
    sections += list(extra() if callable(extra) else extra)
    page = render_html(f"hpstudy report: {data.name}", sections)
    return write_page(page, out_dir, data.name)


def report_study(study_name: str, storage_url: str, tracking_uri: str | None,
                 out_dir: str | Path = "dashboards", *, log_artifact: bool = True,
                 top_k: int = 3, tracker: Tracker | None = None,
                 extra: Sequence[Section] | Callable[[], Sequence[Section]] = ()) -> Path:
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
            trial's inspection, :func:`hpstudy.inspection.best_trial_sections`),
            or a function making them once the figures are drawn.

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
