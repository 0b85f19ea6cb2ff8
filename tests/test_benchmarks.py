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
