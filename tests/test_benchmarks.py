"""The benchmarks stay runnable: each one's quick configuration, in-process, real training."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def benchmarks_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))


def test_diagnosis_accuracy_quick(benchmarks_on_path, capsys):
    import diagnosis_accuracy

    result = diagnosis_accuracy.main(["--quick"])
    out = capsys.readouterr().out
    # one real run per verdict; every label confirmed on its own curves
    assert result["samples"] == len(diagnosis_accuracy.VERDICTS) == 8
    assert result["kept"] >= 7, out
    for line in ("macro-F1", "confusion, old rules", "confusion, new rules", "pruned  "):
        assert line in out, line
    # the old rules cannot say pruned or not_converged; the new ones know the status
    assert result["macro_f1_new"] > result["macro_f1_old"], out
    assert sys.modules["_diagnose_v1"].VERDICTS == ("good_fit", "overfit", "underfit",
                                                    "unstable", "diverged", "not_learning")


def test_scores_are_exact():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from diagnosis_accuracy import scores
    finally:
        sys.path.remove(str(BENCHMARKS))
    labels = ["a", "a", "b", "b", "c"]
    preds = ["a", "b", "b", "b", "a"]
    per, macro = scores(labels, preds, ["a", "b", "c"])
    assert per["a"] == (0.5, 0.5, 0.5, 2)
    assert per["b"] == (pytest.approx(2 / 3), 1.0, pytest.approx(0.8), 2)
    assert per["c"] == (0.0, 0.0, 0.0, 1)  # never predicted
    assert macro == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_guide_vs_search_quick(benchmarks_on_path, capsys):
    import guide_vs_search

    rows = guide_vs_search.main(["--quick"])
    out = capsys.readouterr().out
    assert len(rows) == 1
    r = rows[0]
    # both runs spent their epochs within the same budget and found something
    assert 0 < r.search_spent <= r.budget and 0 < r.guide_spent <= r.budget
    assert r.search_best is not None and r.search_to_best is not None
    assert r.search_to_best <= r.search_spent
    if r.guide_to_search_best is not None:
        assert r.ratio == r.guide_to_search_best / r.search_to_best
        assert r.guide_best >= r.search_best
    for text in ("search best", "guide best", "epochs to", "quick: best val acc", "wall time"):
        assert text in out, text


def test_overhead_quick(benchmarks_on_path, capsys):
    import overhead

    rows = overhead.main(["--quick"])
    out = capsys.readouterr().out
    assert [r.workload for r in rows] == [w.name for w in overhead.WORKLOADS]
    for r in rows:
        # both sides trained the same epochs; the trial's epochs are inside its whole time
        assert r.epochs == 1 and r.steps_per_epoch >= 1
        assert 0 < r.trial_epochs <= r.trial_whole and 0 < r.raw_epochs <= r.raw_whole
        assert r.trial_value is not None and 0 <= r.trial_value <= 1
        # one store round trip per epoch: the MLflow epoch log ran once per epoch
        assert r.calls["MLflow: log one epoch [per epoch]"] == r.epochs
        assert r.calls["Optuna: report [per epoch]"] == r.epochs
        assert r.calls["objective (all of the trial's own work)"] == 1
        assert f"{r.workload}: 1 epochs x {r.steps_per_epoch} steps" in out
    for text in ("epochs only", "whole trial", "per step", "per epoch", "per trial",
                 "summary (trial / raw)"):
        assert text in out, text


def test_study_overhead_quick(benchmarks_on_path, capsys):
    import study_overhead

    d = study_overhead.main(["--quick"])
    out = capsys.readouterr().out
    assert d["code"] == 0 and d["n_trials"] == 2
    assert 2 <= d["n_epochs"] <= 4  # 2 trials of at most 2 epochs (one may be pruned)
    parts = d["parts"]
    assert sum(parts.values()) == pytest.approx(d["wall"])  # the breakdown covers the wall time
    assert 0 < parts["training epochs"] < d["wall"]
    assert parts["register the best model"] > 0 and parts["dashboard: collect, draw, write, log"] > 0
    assert "best model   models:/quickstart-best/1" in d["stdout"]
    assert "% (target >= 85%)" in out and "imports" in out


def test_record_pastes_the_real_output(benchmarks_on_path, tmp_path, capsys):
    from _record import recorded, replace_section

    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\n<!-- begin x.py -->\nold\n<!-- end x.py -->\n\ntail\n")
    with recorded("x.py", ["--quick"], True, readme=readme):
        print("measured 1.23x")
    text = readme.read_text()
    assert "old" not in text and text.endswith("\ntail\n")
    assert "measured 1.23x" in text and "`python benchmarks/x.py --quick`" in text
    assert "cores (" in text  # the machine line
    assert "measured 1.23x" in capsys.readouterr().out  # still printed
    # a section not there yet is appended; replacing twice gives the same text
    once = replace_section("a\n", "y.py", "body")
    assert once.endswith("<!-- begin y.py -->\nbody\n<!-- end y.py -->\n")
    assert replace_section(once, "y.py", "body") == once
