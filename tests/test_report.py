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

from hpstudy.analyze import collect, diagnose_trials, summarize
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
    # every figure section drew a figure, or says why it could not
    drawn = _figure_count(path)
    notes = page.count('class="note"')
    assert drawn + notes == 10 and drawn >= 9


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
