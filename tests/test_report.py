"""The study dashboard: exact figure infos, the HTML page, the real study's report (written by
``hpstudy run`` and by ``hpstudy report``), and the page rendered in real headless Chromium."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs
from test_diagnose import regimes_study

from hpstudy.analyze import EVIDENCE_COLUMNS, StudyData, collect, diagnose_trials, summarize
from hpstudy.analyze.collect import ParamSpec
from hpstudy.analyze.summary import comparison_caveat, format_text, min_p_value
from hpstudy.report import ARTIFACT_DIR, Section, contour_params, render_html, write_report
from hpstudy.report.figures import (
    GapInfo,
    GapLine,
    LearningCurvesInfo,
    SelectionInfo,
    Series,
    TrialCurves,
    VerdictCountsInfo,
    _draw_gap,
    _draw_learning_curves,
    _gap_info,
    _learning_curves_info,
    _selection_info,
    _verdict_counts_info,
    robust_range,
)
from hpstudy.report.html import _overview_html, diagnosis_table_html, summary_html
from hpstudy.report.params import (
    ImportanceInfo,
    ParallelAxis,
    SlicePanel,
    _draw_slice_panel,
    _importance_info,
    _parallel_info,
    _slice_info,
    importance_caveat,
)

NAN = float("nan")


def _histories() -> pd.DataFrame:
    rows = [
        # trial 0: three epochs, a NaN validation loss at epoch 2
        (0, 1, 2.0, 0.2, 2.1, 0.25), (0, 2, 1.0, 0.6, NAN, 0.55), (0, 3, 0.5, 0.9, 0.7, 0.8),
        # trial 1: two epochs, given out of order
        (1, 2, 0.4, 0.95, 0.5, 0.9), (1, 1, 1.5, 0.5, 1.4, 0.55),
        # trial 2: nothing finite
        (2, 1, math.inf, NAN, NAN, NAN),
    ]
    return pd.DataFrame(rows, columns=["trial", "epoch", "train_loss", "train_acc", "val_loss",
                                       "val_acc"])


def _table() -> pd.DataFrame:
    return pd.DataFrame({
        "number": [0, 1, 2, 3, 4],
        "state": ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "PRUNED"],
        "value": [0.80, 0.90, None, 0.85, 0.5],
        "verdict": ["overfit", "good_fit", "diverged", "overfit", None],
    })


# ------------------------------------------------------------------ pure infos
def test_selection_info_top_trials_and_one_per_verdict():
    info = _selection_info(_table(), "maximize", top_k=2)
    assert info == SelectionInfo(top=(1, 3), by_verdict=(
        ("good_fit", 1), ("overfit", 3), ("diverged", 2)))
    # minimizing flips the order; the pruned trial never counts as a top trial
    assert _selection_info(_table(), "minimize", top_k=3).top == (0, 3, 1)
    with pytest.raises(ValueError):
        _selection_info(_table(), "up")


def test_learning_curves_info_drops_nonfinite_and_sorts_epochs():
    info = _learning_curves_info(_histories(), [1, 0, 7, 2], labels={1: "best"}, title="T")
    assert info == LearningCurvesInfo("T", (
        TrialCurves(1, "best", Series((1, 2), (1.5, 0.4)), Series((1, 2), (1.4, 0.5)),
                    Series((1, 2), (0.5, 0.95)), Series((1, 2), (0.55, 0.9))),
        TrialCurves(0, "trial 0", Series((1, 2, 3), (2.0, 1.0, 0.5)),
                    Series((1, 3), (2.1, 0.7)), Series((1, 2, 3), (0.2, 0.6, 0.9)),
                    Series((1, 2, 3), (0.25, 0.55, 0.8))),
        TrialCurves(2, "trial 2", Series((), ()), Series((), ()), Series((), ()),
                    Series((), ())),
    ))  # trial 7 has no history and is left out
    with pytest.raises(ValueError, match="val_acc"):
        _learning_curves_info(_histories().drop(columns="val_acc"), [0])


def test_gap_info_per_trial_and_epoch():
    # trial 3 diverged: its huge losses are left out of the figure
    h = pd.concat([_histories(), pd.DataFrame(
        [(3, 1, 1e20, 0.1, 1e21, 0.1)], columns=_histories().columns)], ignore_index=True)
    info = _gap_info(h, _table().assign(verdict=["overfit", "good_fit", None, "diverged", None]))
    assert info == GapInfo((
        GapLine(0, "overfit", (1, 3), (pytest.approx(-0.05), pytest.approx(0.1)),
                (pytest.approx(0.1), pytest.approx(0.2))),
        GapLine(1, "good_fit", (1, 2), (pytest.approx(-0.05), pytest.approx(0.05)),
                (pytest.approx(-0.1), pytest.approx(0.1))),
    ))  # trial 2 has no finite epoch, trial 3 diverged


def test_verdict_counts_info_lists_every_verdict():
    assert _verdict_counts_info(_table()) == VerdictCountsInfo(
        ("good_fit", "overfit", "underfit", "not_converged", "unstable", "diverged",
         "not_learning", "pruned", "no verdict"),
        (1, 2, 0, 0, 0, 1, 0, 0, 1))


def test_contour_prefers_lr_by_batch_size():
    assert contour_params(["data.batch_size", "model.drop_rate", "train.lr"]) == (
        "train.lr", "data.batch_size")
    assert contour_params(["a", "b", "c"], importances=["c", "a", "b"]) == ("c", "a")
    assert contour_params(["b", "a"]) == ("a", "b")
    assert contour_params(["a"]) is None


def test_drawn_figures_have_one_trace_per_line():
    curves = _draw_learning_curves(_learning_curves_info(_histories(), [0, 1]))
    assert len(curves.data) == 8  # 2 trials x (train, val) x (loss, accuracy)
    assert curves.data[1].line.dash == "dash" and curves.data[0].line.dash == "solid"
    assert curves.layout.yaxis.type == "log"
    gap = _draw_gap(_gap_info(_histories(), _table()))
    assert len(gap.data) == 4
    assert [t.showlegend for t in gap.data] == [True, False, True, False]


def test_render_html_embeds_plotlyjs_once_and_needs_no_network():
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))
    page = render_html("t <&>", [
        Section("a", "A", figure=fig), Section("b", "B", note="not drawn: <why>"),
        Section("c", "C", figure=go.Figure(go.Bar(x=["x"], y=[1])), body="<p>hi</p>"),
    ])
    assert page.count(get_plotlyjs()[:200]) == 1
    assert page.count('class="plotly-graph-div') == 2
    assert not re.search(r"<script[^>]+src=", page)  # nothing fetched: works offline
    assert "t &lt;&amp;&gt;" in page and "not drawn: &lt;why&gt;" in page
    assert '<a href="#b">B</a>' in page


# ------------------------------------------------------------------ the real study
@pytest.fixture(scope="module")
def regimes(tmp_path_factory):
    return regimes_study(tmp_path_factory)


def _figure_count(path: Path) -> int:
    return path.read_text(encoding="utf-8").count('class="plotly-graph-div')


def test_run_writes_the_report_and_logs_it_to_the_study_run(regimes):
    path = Path(regimes["summary"].report_path)
    assert path == regimes["root"] / "dashboards" / "regimes" / "index.html"
    page = path.read_text(encoding="utf-8")
    for title in ("Optimization history", "Hyperparameter importances", "Parallel coordinates",
                  "Slice plots", "Contour: ", "Intermediate values",
                  "Learning curves of the top 2 trials", "one trial of each verdict",
                  "Generalization gap over epochs", "Diagnosis of every trial"):
        assert title in page, title
    assert page.count(get_plotlyjs()[:200]) == 1
    # the diagnosis table has a row per trial with its verdict
    for n, verdict in ((0, "overfit"), (1, "not_converged"), (2, "diverged")):
        row = re.search(rf'<tr id="trial-{n}">(.*?)</tr>', page, flags=re.S)
        assert row and f">{verdict}</span>" in row.group(1)
    # the concrete weight decay (0), not Optuna's search coordinate for "off"
    assert re.search(r"train\.weight_decay=0(?![.\de])", page)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=regimes["tracking_uri"])
    parent = regimes["summary"].parent_run_id
    logged = [f.path for f in client.list_artifacts(parent, ARTIFACT_DIR)]
    assert logged == [f"{ARTIFACT_DIR}/index.html"]


def test_report_cli_writes_into_out_dir(regimes, tmp_path, monkeypatch, capsys):
    from hpstudy.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["report", "regimes", "--storage", regimes["storage"], "--tracking-uri",
              regimes["tracking_uri"], "--out", str(tmp_path / "out"), "--top", "1",
              "--no-log"])
    assert exc.value.code in (0, None)
    path = tmp_path / "out" / "regimes" / "index.html"
    assert f"dashboard    {path}" in capsys.readouterr().out
    assert "Learning curves of the top 1 trials" in path.read_text(encoding="utf-8")


def test_report_sections_from_collected_data(regimes, tmp_path):
    data = collect("regimes", regimes["storage"], regimes["tracking_uri"])
    assert sorted(data.histories["trial"].unique()) == [0, 1, 2]
    assert data.history(0)[0]["epoch"] == 1 and len(data.history(0)) == 20
    assert len(data.history(2)) == 2  # diverged at epoch 2: its history still reaches the report
    table = diagnose_trials(data)
    path = write_report(data, tmp_path, table=table, summary=summarize(table, data), top_k=5)
    page = path.read_text(encoding="utf-8")
    assert "Learning curves of the top 2 trials" in page  # only 2 trials completed
    # every figure section drew a figure, or says why it could not; the slice section
    # draws one small figure per searched hyperparameter
    drawn = _figure_count(path)
    notes = page.count('class="note"')
    assert len(data.param_names) == 4
    assert drawn + notes == 9 + 4 and drawn >= 12


# ------------------------------------------------------------------ real browser
@pytest.fixture(scope="module")
def chromium():
    from browser import need_chromium

    return need_chromium()  # skips without Chromium; under CI fails, saying why


def test_report_renders_in_headless_chromium(regimes, chromium, tmp_path):
    from browser import screenshot_and_check

    path = Path(regimes["summary"].report_path)
    expected = _figure_count(path)
    assert expected >= 9
    shot = tmp_path / "report.png"
    result = screenshot_and_check(path, shot, window_size=(1400, 9000), chromium=chromium)
    assert result["probe"], "the error probe did not run"
    assert result["errors"] == [], result["errors"]
    assert result["plots"] == expected
    assert result["plots_drawn"] == expected
    assert result["screenshot"] == str(shot) and shot.stat().st_size > 50_000
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(shot) as im:
        assert im.size == (1400, 9000)
        colors = im.convert("RGB").resize((140, 900)).getcolors(maxcolors=100_000)
        assert colors is not None and len(colors) > 50  # drawn, not a blank page


def test_browser_check_catches_javascript_errors(chromium, tmp_path):
    from browser import screenshot_and_check

    page = tmp_path / "broken.html"
    page.write_text("<html><head></head><body><div class='plotly'></div><script>"
                    "console.error('bad thing'); null.x;</script></body></html>")
    result = screenshot_and_check(page, tmp_path / "broken.png", chromium=chromium)
    assert any("bad thing" in e for e in result["errors"])
    assert any("TypeError" in e for e in result["errors"])
    assert (result["plots"], result["plots_drawn"]) == (1, 0)
    assert not list(tmp_path.glob(".broken.probe-*"))  # the probe copy is cleaned up


# ------------------------------------------------------------------ honest axes and labels
def test_robust_range_leaves_one_extreme_epoch_off_the_axis():
    # sorted: -16, 0, .1, .2, .3, .4; quartiles (linear) .025 and .275, IQR .25: fences
    # -.725 and 1.025; the bulk 0-.4 padded by 5% of .4
    assert robust_range([0.0, 0.1, 0.2, 0.3, 0.4, -16.0]) == (
        pytest.approx(-0.02), pytest.approx(0.42))
    assert robust_range([0.0, 0.1, 0.2, 0.3, 0.4, 0.5]) is None  # nothing far out
    assert robust_range([1.0, -16.0]) is None  # too few points to call one an outlier
    # the range always holds 0 (the reference line)
    assert robust_range([0.5, 0.6, 0.7, 0.8, 50.0]) == (
        pytest.approx(-0.04), pytest.approx(0.84))


def test_gap_plot_is_readable_when_one_epoch_is_extreme():
    rows = [(n, e, 1.0, 0.9, 1.1 + 0.01 * e, 0.85) for n in (0, 1) for e in range(1, 7)]
    rows.append((2, 1, 17.0, 0.1, 1.0, 0.1))  # loss gap -16 at epoch 1
    rows += [(2, e, 1.0, 0.9, 1.05, 0.88) for e in range(2, 7)]
    h = pd.DataFrame(rows, columns=["trial", "epoch", "train_loss", "train_acc", "val_loss",
                                    "val_acc"])
    table = pd.DataFrame({"number": [0, 1, 2], "state": ["COMPLETE"] * 3,
                          "value": [0.85, 0.85, 0.88], "verdict": ["good_fit"] * 3})
    info = _gap_info(h, table)
    assert info.acc_range is None and info.loss_range is not None  # accuracy gaps: no outlier
    lo, hi = info.loss_range
    assert -1 < lo < 0 < hi < 1  # the -16 does not flatten the other lines
    fig = _draw_gap(info)
    (edge,) = [t for t in fig.data if t.name == "beyond the axis" and t.xaxis == "x2"]
    assert list(edge.x) == [1] and list(edge.y) == [lo]
    assert list(edge.customdata[0]) == ["trial 2", pytest.approx(-16.0)]
    assert list(fig.layout.yaxis2.range) == [lo, hi]
    # a large positive gap is overfitting: it is never left off the axis
    h.loc[(h["trial"] == 1) & (h["epoch"] >= 4), "val_loss"] = 9.0
    lo, hi = _gap_info(h, table).loss_range
    assert hi > 8.0 and -16.0 < lo < 0  # the overfit epochs stay in view, the -16 does not


def test_learning_curves_keep_their_loss_axis_when_a_trial_diverges():
    rows = [(n, e, 2.0 / e, 0.5, 2.2 / e, 0.5) for n in (0, 1) for e in range(1, 6)]
    rows += [(2, 1, 2.3, 0.1, 2.3, 0.1), (2, 2, 1e25, 0.1, 1e24, 0.1)]
    h = pd.DataFrame(rows, columns=["trial", "epoch", "train_loss", "train_acc", "val_loss",
                                    "val_acc"])
    info = _learning_curves_info(h, [0, 1, 2])
    lo, hi = info.loss_range  # log10: the bulk is 0.4-2.3, far below 1e24
    assert lo < math.log10(0.4) and math.log10(2.3) < hi < 1
    fig = _draw_learning_curves(info)
    (edge,) = [t for t in fig.data if t.name == "beyond the axis"]
    assert list(edge.x) == [2, 2] and list(edge.y) == [10 ** hi, 10 ** hi]
    assert [c[1] for c in edge.customdata] == [1e25, 1e24]
    assert list(fig.layout.yaxis.range) == [lo, hi]
    # a training loss falling towards 0 (memorizing) is no outlier: only the top is fenced
    h.loc[(h["trial"] == 0) & (h["epoch"] == 5), "train_loss"] = 1e-6
    lo, hi = _learning_curves_info(h, [0, 1, 2]).loss_range
    assert lo < -6 and hi < 1


def _space_trials() -> tuple[pd.DataFrame, dict[str, ParamSpec]]:
    trials = pd.DataFrame({
        "number": [0, 1, 2, 3, 4], "state": ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED",
                                              "COMPLETE"],
        "value": [0.9, 0.95, 0.95, 0.5, 0.8],
        "model.init": ["he_normal", "orthogonal", "he_normal", "normal", "orthogonal"],
        "data.batch_size": [16, 64, 16, 32, 64],
        "train.weight_decay": [0.0, 1e-4, 1e-3, 0.0, 0.0],
    })
    space = {
        "model.init": ParamSpec("model.init", "categorical",
                                choices=("he_normal", "normal", "orthogonal")),
        "data.batch_size": ParamSpec("data.batch_size", "categorical", choices=(16, 32, 64)),
        "train.weight_decay": ParamSpec("train.weight_decay", "float", True, 1e-6, 1e-2,
                                        zero_below=1e-6),
    }
    return trials, space


def test_slice_info_unquoted_categories_zero_as_zero_and_ties():
    trials, space = _space_trials()
    info = _slice_info(trials, space, list(space), "maximize", "val_acc")
    init, batch, wd = info.panels
    # completed trials only; trials 1 and 2 tie at the best value
    assert init == SlicePanel(
        "model.init", "categorical", False, ("he_normal", "orthogonal", "he_normal",
                                             "orthogonal"),
        (0.9, 0.95, 0.95, 0.8), (0, 1, 2, 4), ("he_normal", "orthogonal", "he_normal",
                                               "orthogonal"),
        (False, True, True, False), ("he_normal", "normal", "orthogonal"))
    assert batch.categories == ("16", "32", "64") and batch.x == ("16", "64", "16", "64")
    # weight decay 0 sits half a decade below the smallest value, with its own tick "0"
    zero_at = 1e-6 / 10 ** 0.5
    assert wd.log and wd.zero_at == pytest.approx(zero_at)
    assert wd.x == (pytest.approx(zero_at), 1e-4, 1e-3, pytest.approx(zero_at))
    assert wd.labels == ("0", "0.0001", "0.001", "0")
    assert wd.ticks[0] == (pytest.approx(zero_at), "0")
    assert [t[1] for t in wd.ticks[1:]] == ["1e-06", "1e-05", "0.0001", "0.001", "0.01"]
    fig = _draw_slice_panel(wd, "val_acc")
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis.ticktext[0] == "0"
    stars = [t for t in fig.data if t.name == "best"]
    assert [c[0] for c in stars[0].customdata] == [1, 2]
    assert list(_draw_slice_panel(init, "val_acc").layout.xaxis.categoryarray) == [
        "he_normal", "normal", "orthogonal"]


def test_parallel_info_codes_categories_and_puts_zero_on_its_tick():
    trials, space = _space_trials()
    info = _parallel_info(trials, space, list(space), "maximize", "val_acc")
    assert info.values == (0.9, 0.95, 0.95, 0.8)
    init, batch, wd = info.axes
    assert init == ParallelAxis("model.init", (0.0, 2.0, 0.0, 2.0), (0.0, 1.0, 2.0),
                                ("he_normal", "normal", "orthogonal"), (-0.25, 2.25))
    assert batch.ticktext == ("16", "32", "64")
    zero = math.log10(1e-6) - 0.5
    assert wd.values == (pytest.approx(zero), -4.0, -3.0, pytest.approx(zero))
    assert wd.ticktext[0] == "0" and wd.tickvals[0] == pytest.approx(zero)


def test_importances_show_their_spread_and_sample_size():
    runs = [{"a": 0.6, "b": 0.3, "c": 0.1}, {"a": 0.2, "b": 0.5, "c": 0.3},
            {"a": 0.4, "b": 0.4, "c": 0.2}]
    assert _importance_info(runs, 12) == ImportanceInfo(
        ("a", "b", "c"), (pytest.approx(0.4), pytest.approx(0.4), pytest.approx(0.2)),
        (0.2, 0.3, 0.1), (0.6, 0.5, 0.3), 12, 3)  # a and b tie on the mean: by name
    text = importance_caveat(12, 6)
    assert text.startswith("From 12 completed trials and 6 hyperparameters. Fewer than 20 "
                           "completed trials makes importances unreliable")
    assert importance_caveat(25, 6) == "From 25 completed trials and 6 hyperparameters."


def test_verdict_comparison_states_group_sizes_drops_constants_and_warns():
    assert min_p_value(3, 3) == pytest.approx(0.1)  # 2 / C(6, 3)
    assert min_p_value(3, 6) == pytest.approx(2 / 84)
    assert comparison_caveat(5, 9) == "" and comparison_caveat(0, 3) == ""
    assert comparison_caveat(3, 6) == (
        "3 overfit vs 6 good_fit: with fewer than 5 trials in a group these differences are "
        "anecdotes, not evidence; even groups that do not overlap at all would give p = 0.024 "
        "at best (two-sided rank test)")
    trials = pd.DataFrame({"number": range(9), "num_params": [1000] * 9,
                           "model.drop_rate": [0.0, 0.1, 0.0, 0.3, 0.4, 0.5, 0.3, 0.4, 0.5],
                           "train.optimizer": ["adam"] * 9})
    table = pd.DataFrame({"number": range(9), "verdict": ["overfit"] * 3 + ["good_fit"] * 6})
    data = StudyData("s", None, trials, pd.DataFrame(), ["model.drop_rate", "train.optimizer"],
                     "maximize")
    summary = summarize(table, data)
    assert list(summary.differences["param"]) == ["model.drop_rate"]  # constants left out
    html_text = summary_html(summary)
    assert "overfit (n=3)" in html_text and "good_fit (n=6)" in html_text
    assert '<p class="warn">3 overfit vs 6 good_fit' in html_text
    assert "caution: 3 overfit vs 6 good_fit" in format_text(
        table.assign(state="COMPLETE", value=0.9, reason="", advice=[[]] * 9,
                     **{k: None for k in EVIDENCE_COLUMNS}), summary)


def test_overview_lists_ties_and_trial_details_are_collapsed_with_shared_advice_once():
    trials, _ = _space_trials()
    data = StudyData("s", None, trials, pd.DataFrame(), ["model.init"], "maximize")
    table = pd.DataFrame({"number": [0, 1, 2, 3, 4], "state": trials["state"],
                          "value": trials["value"], "verdict": ["good_fit"] * 5,
                          "reason": ["r"] * 5,
                          "advice": [["shared tip", "own tip 0"], ["shared tip"], [],
                                     ["shared tip", "x"], []],
                          **{k: None for k in EVIDENCE_COLUMNS}})
    overview = _overview_html(data, table)
    assert '<a href="#trial-1">1</a>: value 0.95' in overview
    assert "tied at 0.95</th>" in overview and '<a href="#trial-2">2</a>' in overview
    details = diagnosis_table_html(table, data)
    assert details.count("shared tip") == 1  # once, above the table
    assert "<b>A1</b> (3 trials: #0, #1, #3): shared tip" in details
    assert "<details><summary>Per-trial details: 5 trials" in details  # closed: no `open`
    row0 = re.search(r'<tr id="trial-0">(.*?)</tr>', details).group(1)
    assert "own tip 0" in row0 and "shared advice A1" in row0


# ------------------------------------------------------------------ layout in Chromium
_LAYOUT_JS = """
var vw = document.documentElement.clientWidth, out = {vw: vw,
  scroll: document.documentElement.scrollWidth, cards: [], plots: [], wd: []};
document.querySelectorAll('#slice .card').forEach(function(c){
  var r = c.getBoundingClientRect(), svg = c.querySelector('svg.main-svg');
  out.cards.push({left: r.left, right: r.right, top: Math.round(r.top),
                  svg: svg ? svg.getBoundingClientRect().width : -1, width: r.width});});
document.querySelectorAll('.plotly-graph-div').forEach(function(p){
  var r = p.getBoundingClientRect(); out.plots.push({id: p.id, left: r.left, right: r.right});});
out.ticks = {};
document.querySelectorAll('#slice .card').forEach(function(c){
  var t = c.querySelector('.gtitle'); if (!t) return;
  out.ticks[t.textContent] = Array.prototype.map.call(c.querySelectorAll('.xtick text'),
    function(x){return x.textContent;});});
out.details_open = Array.prototype.map.call(document.querySelectorAll('#diagnosis details'),
  function(d){return d.open;});
out.parallel_ticks = Array.prototype.map.call(
  document.querySelectorAll('#parallel .tick text'), function(x){return x.textContent;});
return out;"""


@pytest.mark.parametrize("width", [1000, 1400])
def test_dashboard_layout_in_headless_chromium(regimes, chromium, tmp_path, width):
    from browser import screenshot_and_check

    path = Path(regimes["summary"].report_path)
    shot = tmp_path / f"dashboard-{width}.png"
    r = screenshot_and_check(path, shot, window_size=(width, 2400), chromium=chromium,
                             measure_js=_LAYOUT_JS)
    assert r["errors"] == [], r["errors"]
    m = r["measure"]
    assert m and "error" not in m, m
    vw = m["vw"]
    assert m["scroll"] <= vw  # nothing makes the page scroll sideways
    # one slice card per searched hyperparameter, each inside the viewport, its figure
    # inside its card; cards wrap onto rows (the grid is at least 320 px a card)
    assert len(m["cards"]) == 4
    for c in m["cards"]:
        assert 0 <= c["left"] and c["right"] <= vw, c
        assert 0 < c["svg"] <= c["width"] + 0.5, c
    per_row = max(sum(1 for c in m["cards"] if c["top"] == t) for t in {c["top"]
                                                                         for c in m["cards"]})
    assert per_row == (vw - 2 * 24 - 2 * 17 + 10) // (320 + 10)  # as many as fit
    for p in m["plots"]:
        assert p["left"] >= 0 and p["right"] <= vw, p
    # the enqueued weight decay of 0 is 0 on the slice axis and in the parallel coordinates;
    # categories read as written, unquoted
    wd = m["ticks"]["train.weight_decay"]
    assert "0" in wd and "1e-07" not in wd, wd
    assert m["ticks"]["train.optimizer"] == ["adam", "sgd"]
    assert "0" in m["parallel_ticks"] and "adam" in m["parallel_ticks"]
    assert not any("'" in t for t in m["parallel_ticks"])
    assert m["details_open"] == [False]  # per-trial details collapsed by default
    assert shot.stat().st_size > 20_000
