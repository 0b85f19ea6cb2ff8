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


def test_search_efficiency_quick(benchmarks_on_path, tmp_path, capsys):
    import mlflow
    import optuna
    import search_efficiency as se

    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nintro\n\n## other.py\n\nkept\n")
    out = se.main(["--quick", "--write", "--readme", str(readme), "--keep", str(tmp_path)])
    printed = capsys.readouterr().out
    n_trials, max_epochs = se.QUICK_TASK["search"]["n_trials"], se.QUICK_TASK["train"]["max_epochs"]
    results = out["results"]
    assert sorted(results) == [0, 1]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/seed0/mlflow.db")
    for seed, arms in results.items():
        assert list(arms) == list(se.ARMS)
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/seed{seed}/optuna.db")
        for name, arm in arms.items():
            # every trial of the equal budget ran and was counted, in order
            assert len(arm.epochs) == len(arm.values) == len(arm.states) == n_trials
            assert arm.spent == sum(arm.epochs)
            for e, v, state, rep in zip(arm.epochs, arm.values, arm.states, arm.reported,
                                        strict=True):
                assert e == rep  # the epochs attr agrees with the values reported per epoch
                assert (v is not None) == (state == "COMPLETE")
                if state == "COMPLETE":
                    assert e == max_epochs  # no early stopping in the task
                else:  # a pruner may stop a trial after its last epoch (SHA's top rung)
                    assert state == "PRUNED" and name != "random" and 1 <= e <= max_epochs
            if name == "random":
                assert arm.states == ["COMPLETE"] * n_trials
                assert arm.spent == n_trials * max_epochs
            # the same trials, read independently from the Optuna storage
            study = optuna.load_study(study_name=f"bench-efficiency-{name}-s{seed}",
                                      storage=storage)
            trials = sorted(study.trials, key=lambda t: t.number)
            assert [len(t.intermediate_values) for t in trials] == arm.reported
            if seed == 0:  # and from MLflow: one val_acc point per trained epoch
                exp = client.get_experiment_by_name(study.study_name)
                runs = client.search_runs([exp.experiment_id],
                                          "tags.`hpstudy.kind` != 'study'")
                per_trial = {int(r.data.tags["optuna.trial_number"]):
                             len(client.get_metric_history(r.info.run_id, "val_acc"))
                             for r in runs}
                assert [per_trial[t.number] for t in trials] == arm.epochs
    # epochs to target recomputed from the recorded trials
    for row in out["rows"]:
        arms = results[row.seed]
        target = max(v for v in arms["random"].values if v is not None)
        assert row.target == target
        total, expected = 0.0, None
        for e, v in zip(arms[row.arm].epochs, arms[row.arm].values, strict=True):
            total += e
            if v is not None and v >= target:
                expected = total
                break
        assert row.to_target == expected
        if row.arm == "random":
            assert row.ratio == 1.0 and row.best == target
        elif expected is not None:
            assert row.ratio == expected / arms["random"].epochs_to(target)
            assert row.best >= target
    for text in ("epochs to", "medians over seeds", "reached", "wall time"):
        assert text in printed, text
    # --write: the output between the section's markers, the rest of the README kept
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n\n## other.py\n\nkept\n")
    section = text.split(se.BEGIN)[1].split(se.END)[0]
    assert out["text"] in section and "cores" in section and "seeds 0 1" in section
    # written again: replaced, not appended
    se.write_section(readme, "second")
    text = readme.read_text()
    assert text.count(se.BEGIN) == text.count(se.END) == 1
    assert f"{se.BEGIN}\nsecond\n{se.END}" in text and out["text"] not in text
    assert text.startswith("# Benchmarks\n\nintro\n\n## other.py\n\nkept\n")


def test_search_efficiency_epochs_to():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from search_efficiency import Arm, rows_of
    finally:
        sys.path.remove(str(BENCHMARKS))
    rnd = Arm("random", 0, epochs=[10, 10, 10, 10], values=[0.5, 0.7, 0.6, 0.7],
              states=["COMPLETE"] * 4, reported=[10] * 4)
    tpe = Arm("median", 0, epochs=[10, 3, 2, 10, 10], values=[0.4, None, None, 0.7, 0.8],
              states=["COMPLETE", "PRUNED", "PRUNED", "COMPLETE", "COMPLETE"],
              reported=[10, 3, 2, 10, 10])
    assert rnd.epochs_to(0.7) == 20 and tpe.epochs_to(0.7) == 25 and tpe.epochs_to(0.9) is None
    rows = {r.arm: r for r in rows_of({0: {"random": rnd, "median": tpe}})}
    assert rows["random"].target == rows["median"].target == 0.7
    assert rows["median"].to_target == 25 and rows["median"].ratio == 25 / 20
    assert rows["median"].best == 0.8 and rows["median"].n_pruned == 2
    # averaged over every order of random's trials: (one 0.7 first) + (the 0.5 and 0.6 before
    # the first 0.7 in a third of the orders each) = 10 + 20 / 3
    assert rnd.mean_epochs_to(0.7) == pytest.approx(10 + 20 / 3)
    assert rows["median"].ratio_avg == pytest.approx(25 / (10 + 20 / 3))
    # unequal epochs and a trial that never completed: checked against every order
    import itertools

    arm = Arm("x", 0, epochs=[1, 2, 3, 4], values=[0.9, None, 0.9, 0.1], states=[""] * 4,
              reported=[0] * 4)
    perms = list(itertools.permutations(range(4)))
    mean = sum(Arm("x", 0, epochs=[arm.epochs[i] for i in p], values=[arm.values[i] for i in p],
                   states=[""] * 4, reported=[0] * 4).epochs_to(0.9) for p in perms) / len(perms)
    assert arm.mean_epochs_to(0.9) == pytest.approx(mean)
