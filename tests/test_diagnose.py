"""Diagnosis of learning curves: synthetic curves for every verdict, exact evidence, the
study-level summary, and a real study on digits that overfits and underfits for real."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest

from hpstudy.analyze import (
    ADVICE,
    VERDICTS,
    Diagnosis,
    StudyData,
    Thresholds,
    diagnose,
    diagnose_trials,
    format_text,
    summarize,
    threshold_defaults,
)
from hpstudy.analyze.summary import cliffs_delta, compare_groups

LN10 = math.log(10)


def history(train_loss, val_loss, train_acc, val_acc) -> list[dict[str, Any]]:
    """Per-epoch records in fit()'s format (lr and epoch time do not matter here)."""
    n = len(train_loss)
    assert len(val_loss) == len(train_acc) == len(val_acc) == n
    return [{"epoch": i + 1, "train_loss": train_loss[i], "val_loss": val_loss[i],
             "train_acc": train_acc[i], "val_acc": val_acc[i], "lr": 1e-3, "epoch_time_s": 0.1}
            for i in range(n)]


def decay(start: float, end: float, n: int, rate: float = 0.3) -> list[float]:
    """A smooth exponential approach from ``start`` to ``end`` over ``n`` epochs."""
    return [end + (start - end) * math.exp(-rate * i) for i in range(n)]


def good_curves(n: int = 20) -> list[dict[str, Any]]:
    return history(decay(2.3, 0.05, n), decay(2.2, 0.08, n), decay(0.1, 0.99, n),
                   decay(0.1, 0.97, n))


# ------------------------------------------------------------------ every verdict
def test_good_fit():
    d = diagnose(good_curves(), 10)
    assert d.verdict == "good_fit", d.reason
    assert d.advice == ADVICE["good_fit"]


def test_overfit_validation_loss_rises_while_training_loss_falls():
    n = 20
    val = [2.0 - 0.2 * i for i in range(8)] + [0.4 + 0.05 * i for i in range(12)]  # min: epoch 9
    h = history(decay(2.3, 0.001, n), val, decay(0.1, 1.0, n), decay(0.1, 0.93, n))
    d = diagnose(h, 10)
    assert d.verdict == "overfit"
    assert d.evidence["best_epoch"] == 9
    assert d.evidence["epochs_after_best"] == 11
    # mean of the last 3 epochs (0.4 + 0.05 * [9, 10, 11]) over the minimum 0.4
    assert d.evidence["val_loss_rise"] == pytest.approx(0.5 / 0.4)
    assert "validation loss rose" in d.reason and "epoch 9 of 20" in d.reason
    assert any("early stopping" in a and "9 of 20" in a for a in d.advice)


def test_overfit_large_growing_gap_with_flat_validation_loss():
    n = 20
    train_acc = [min(1.0, 0.5 + 0.05 * i) for i in range(n)]
    val_acc = [min(0.75, 0.5 + 0.03 * i) for i in range(n)]
    h = history(decay(2.3, 0.01, n), decay(2.3, 0.6, n), train_acc, val_acc)
    d = diagnose(h, 10)
    assert d.verdict == "overfit", d.reason
    assert d.evidence["gap"] == pytest.approx(0.25)
    assert d.evidence["gap_slope"] > 0
    assert "gap" in d.reason
    # the same curves with a looser limit on the gap are a good fit
    assert diagnose(h, 10, gap_max=0.3).verdict == "good_fit"


def test_closing_gap_is_not_overfit():
    n = 20
    train_acc = [0.99] * n
    val_acc = [0.7 + 0.0125 * i for i in range(n)]  # gap 0.29 -> 0.05, closing
    h = history(decay(2.3, 0.02, n), decay(2.3, 0.1, n), train_acc, val_acc)
    d = diagnose(h, 10)
    assert d.evidence["gap_slope"] < 0
    assert d.verdict == "good_fit", d.reason


def test_underfit_plateau_far_from_fit():
    n = 15
    h = history(decay(2.3, 1.4, n, rate=0.8), decay(2.3, 1.45, n, rate=0.8),
                decay(0.1, 0.5, n, rate=0.8), decay(0.1, 0.48, n, rate=0.8))
    d = diagnose(h, 10)
    assert d.verdict == "underfit", d.reason
    assert "plateaued" in d.reason
    assert d.evidence["train_loss_slope"] > -0.01
    text = " ".join(d.advice).lower()
    for word in ("init", "learning rate", "batch size", "capacity"):
        assert word in text
    assert not d.advice[0].startswith("Train longer")


def test_underfit_still_improving_advises_training_longer():
    n = 6
    h = history([2.3 * 0.8 ** i for i in range(n)], [2.3 * 0.82 ** i for i in range(n)],
                [0.1 + 0.1 * i for i in range(n)], [0.1 + 0.1 * i for i in range(n)])
    d = diagnose(h, 10)
    assert d.verdict == "underfit"
    # window: min(3, 6 // 3) = 2 epochs
    assert d.evidence["train_loss_slope"] == pytest.approx((0.8 ** 5 - 0.8 ** 3) / (0.8 ** 3 * 2))
    assert d.advice[0].startswith("Train longer")


def test_unstable_zigzag_training_loss():
    tl = [2.0, 0.8, 1.2, 0.6, 1.0, 0.5, 0.9, 0.45, 0.85, 0.4]
    h = history(tl, [x * 1.1 for x in tl], [0.9] * 10, [0.88] * 10)
    d = diagnose(h, 10)
    assert d.verdict == "unstable", d.reason
    floor = 0.01 * LN10
    rises = [0.4 / (0.8 + floor), 0.4 / (0.6 + floor), 0.4 / (0.5 + floor), 0.4 / (0.45 + floor)]
    assert d.evidence["noise"] == pytest.approx(sum(rises) / 9)
    text = " ".join(d.advice).lower()
    assert "learning rate" in text and "larger batch" in text


def test_diverged_on_nan():
    h = good_curves(6)
    h[3]["train_loss"] = float("nan")
    h[3]["val_loss"] = float("nan")
    d = diagnose(h[:4], 10)
    assert d.verdict == "diverged"
    assert d.evidence["nonfinite_epoch"] == 4
    assert "epoch 4" in d.reason


def test_diverged_on_exploding_loss_at_chance():
    # diverged wins over not_learning: the accuracy is at chance too
    h = history([1e6, 5e4, 30.0, 25.0], [20.0, 22.0, 19.0, 21.0], [0.1] * 4, [0.1] * 4)
    d = diagnose(h, 10)
    assert d.verdict == "diverged"
    assert "1e+06" in d.reason


def test_diverged_when_loss_blows_up_after_learning():
    tl = [2.0, 0.8, 0.4, 0.3, 4.0, 5.0]
    h = history(tl, tl, [0.3, 0.7, 0.9, 0.92, 0.3, 0.2], [0.3, 0.7, 0.88, 0.9, 0.3, 0.2])
    d = diagnose(h, 10)
    assert d.verdict == "diverged"
    assert "epoch 5" in d.reason


def test_bad_init_that_recovers_is_not_diverged():
    # the first epoch's mean loss is far above chance (large initial logits), then it learns
    h = good_curves(20)
    h[0]["train_loss"] = 20.0
    assert diagnose(h, 10).verdict == "good_fit"


def test_not_learning_at_chance():
    h = history([2.30] * 8, [2.31] * 8, [0.11] * 8, [0.095] * 8)
    d = diagnose(h, 10)
    assert d.verdict == "not_learning"
    assert d.evidence["chance_acc"] == pytest.approx(0.1)
    text = " ".join(d.advice).lower()
    assert "init" in text and "normalization" in text and "orders of magnitude" in text


@pytest.mark.parametrize("acc, verdict", [(0.54, "not_learning"), (0.7, "underfit")])
def test_chance_depends_on_the_number_of_classes(acc, verdict):
    # 2 classes: chance is 0.5 and the bar is 0.5 + 0.1 * 0.5 = 0.55
    n = 8
    h = history(decay(0.7, 0.6, n), decay(0.7, 0.62, n), [acc] * n, [acc] * n)
    assert diagnose(h, 2).verdict == verdict


# ------------------------------------------------------------------ contract
def test_every_verdict_has_advice():
    assert set(ADVICE) == set(VERDICTS)
    overfit = " ".join(ADVICE["overfit"]).lower()
    for word in ("dropout", "weight decay", "augmentation", "early stopping", "capacity"):
        assert word in overfit


def test_thresholds_are_named_with_defaults():
    assert threshold_defaults() == {f: getattr(Thresholds(), f) for f in threshold_defaults()}
    with pytest.raises(TypeError):
        diagnose(good_curves(), 10, no_such_threshold=1.0)
    with pytest.raises(ValueError, match="empty"):
        diagnose([], 10)
    with pytest.raises(ValueError, match="num_classes"):
        diagnose(good_curves(), 1)


def test_to_dict_is_json_and_round_trips():
    h = good_curves(6)
    h[5]["val_loss"] = float("inf")
    d = diagnose(h, 10)
    data = d.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data  # no NaN/inf leaks
    back = Diagnosis.from_dict(data)
    assert (back.verdict, back.reason, back.advice) == (d.verdict, d.reason, d.advice)
    assert set(data["evidence"]) >= {"gap", "best_epoch", "train_loss_slope", "noise"}


def test_single_epoch_history():
    d = diagnose(history([1.0], [1.1], [0.7], [0.68]), 10)
    assert d.verdict == "underfit"
    assert d.evidence["noise"] is None and d.evidence["best_epoch"] == 1


# ------------------------------------------------------------------ study summary
def _data(rows: list[dict[str, Any]], histories: dict[int, list[dict]] | None = None,
          params: tuple[str, ...] = ("train.lr", "model.drop_rate", "train.optimizer")
          ) -> StudyData:
    base = {"state": "COMPLETE", "duration_s": 1.0, "mlflow_run_id": None, "diagnosis": None,
            "best_epoch": None, "num_params": 1000, "status": "completed", "fail_reason": None,
            "num_classes": 10}
    trials = pd.DataFrame([{**base, **r} for r in rows])
    parts = [pd.DataFrame(h).assign(trial=n) for n, h in (histories or {}).items()]
    hist = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["trial", "epoch", "train_loss", "train_acc", "val_loss", "val_acc"])
    return StudyData(name="s", study=optuna.create_study(), trials=trials, histories=hist,
                     param_names=list(params), direction="maximize")


def test_cliffs_delta_and_group_comparison_are_exact():
    assert cliffs_delta([3, 4], [1, 2]) == 1.0
    assert cliffs_delta([1, 2], [1, 2]) == 0.0
    assert cliffs_delta([1, 3], [2, 2]) == 0.0
    # pairs (2,1) > (2,3) < (3,1) > (3,3) =: (2 - 1) / 4
    assert cliffs_delta([2, 3], [1, 3]) == pytest.approx(0.25)
    over = pd.DataFrame({"train.lr": [0.1, 0.2], "opt": ["sgd", "sgd"], "k": [1, 1]})
    good = pd.DataFrame({"train.lr": [0.01, 0.02, 0.03], "opt": ["sgd", "adam", "adam"],
                         "k": [1, 1, 1]})
    diff = compare_groups(over, good, ["train.lr", "opt", "k"])
    assert diff["param"].tolist() == ["train.lr", "opt", "k"]
    assert diff["effect"].tolist() == pytest.approx([1.0, 2 / 3, 0.0])
    assert diff.loc[0, "overfit"] == pytest.approx(0.15)
    assert diff.loc[0, "good_fit"] == pytest.approx(0.02)
    assert diff.loc[0, "note"] == "higher in overfit"
    assert (diff.loc[1, "overfit"], diff.loc[1, "good_fit"]) == ("sgd", "adam")
    assert diff.loc[2, "note"] == "no difference"


def test_summary_counts_and_compares_overfit_with_good_fit():
    n = 20
    val = [2.0 - 0.2 * i for i in range(8)] + [0.4 + 0.05 * i for i in range(12)]
    over = history(decay(2.3, 0.001, n), val, decay(0.1, 1.0, n), decay(0.1, 0.93, n))
    rows = [
        {"number": 0, "value": 0.93, "train.lr": 0.1, "model.drop_rate": 0.0,
         "train.optimizer": "sgd", "num_params": 5000},
        {"number": 1, "value": 0.97, "train.lr": 0.01, "model.drop_rate": 0.5,
         "train.optimizer": "adam"},
        {"number": 2, "value": 0.96, "train.lr": 0.02, "model.drop_rate": 0.4,
         "train.optimizer": "adam"},
        {"number": 3, "value": None, "state": "FAIL", "train.lr": 5.0, "model.drop_rate": 0.1,
         "train.optimizer": "sgd", "fail_reason": "CUDA out of memory"},
    ]
    data = _data(rows, {0: over, 1: good_curves(), 2: good_curves()})
    table = diagnose_trials(data)
    assert table["verdict"].tolist() == ["overfit", "good_fit", "good_fit", None]
    assert table.loc[3, "reason"] == "CUDA out of memory"
    s = summarize(table, data)
    assert s.counts == {"good_fit": 2, "overfit": 1, "underfit": 0, "unstable": 0,
                        "diverged": 0, "not_learning": 0}
    assert (s.undiagnosed, s.n_overfit, s.n_good_fit) == (1, 1, 2)
    d = s.differences.set_index("param")
    assert d.loc["train.lr", "effect"] == 1.0 and d.loc["train.lr", "note"] == "higher in overfit"
    assert d.loc["model.drop_rate", "note"] == "lower in overfit"
    assert d.loc["train.optimizer", "overfit"] == "sgd"
    assert d.loc["num_params", "effect"] == 1.0  # capacity is compared too
    text = format_text(table, s)
    assert "4 trials: good_fit 2, overfit 1, 1 without a verdict" in text
    assert "overfit (1) vs good_fit (2)" in text
    assert "why: validation loss rose" in text and "try: Add or raise dropout" in text


def test_stored_diagnosis_is_used_without_history():
    stored = diagnose(good_curves(), 10).to_dict()
    data = _data([{"number": 0, "value": 0.9, "train.lr": 0.1, "model.drop_rate": 0.0,
                   "train.optimizer": "sgd"}])
    data.diagnoses[0] = stored
    table = diagnose_trials(data)
    assert table.loc[0, "verdict"] == "good_fit"
    assert table.loc[0, "reason"] == stored["reason"]


# ------------------------------------------------------------------ real training
_REGIMES: dict[str, Any] = {}


def regimes_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real 3-trial study on digits (once per test session), enqueued so that:

    - trial 0 overfits: ~43 training images (val_split 0.97), a 256x256 MLP, no
      regularization, 20 epochs: train loss -> 0 while validation loss climbs;
    - trial 1 underfits: the same net under strong regularization (dropout 0.7,
      L2 weight decay 0.1) stays near 75% on both train and validation, no gap;
    - trial 2 diverges: SGD at lr 1000 gives a NaN loss at epoch 2 (a FAIL trial).

    The report is written at the end (``report.enabled``) into ``<root>/dashboards``.
    """
    if _REGIMES:
        return _REGIMES
    from hpstudy.api import run_config as run_study  # study + registration + report
    from hpstudy.config import from_dict

    root = tmp_path_factory.mktemp("regimes")
    space = {
        "model.drop_rate": {"type": "float", "low": 0.0, "high": 0.9},
        "train.weight_decay": {"type": "float", "low": 1e-6, "high": 0.3, "log": True,
                               "allow_zero": True},
        "train.lr": {"type": "float", "low": 1e-6, "high": 1e3, "log": True},
        "train.optimizer": ["adam", "sgd"],
    }
    enqueue = [
        {"model.drop_rate": 0.0, "train.weight_decay": 0.0, "train.lr": 3e-3,
         "train.optimizer": "adam"},
        {"model.drop_rate": 0.7, "train.weight_decay": 0.1, "train.lr": 3e-3,
         "train.optimizer": "adam"},
        {"model.drop_rate": 0.0, "train.weight_decay": 0.0, "train.lr": 1e3,
         "train.optimizer": "sgd"},
    ]
    cfg = from_dict({
        "name": "regimes",
        "data": {"dataset": "digits", "val_split": 0.97, "batch_size": 16},
        "model": {"arch": "mlp", "hidden": [256, 256]},
        "train": {"accelerator": "cpu", "max_epochs": 20, "optimizer": "adam", "lr": 3e-3},
        "search": {"n_trials": 3, "sampler": {"name": "random", "seed": 0}, "pruner": "none",
                   "space": space, "enqueue": enqueue},
        "tracking": {"register_best": False},  # the model registry is tested elsewhere
        "report": {"enabled": True, "dir": str(root / "dashboards")},
    })
    storage, uri = f"sqlite:///{root}/optuna.db", f"sqlite:///{root}/mlflow.db"
    summary = run_study(cfg, storage=storage, tracking_uri=uri, progress=False)
    _REGIMES.update(root=root, name="regimes", storage=storage, tracking_uri=uri,
                    summary=summary)
    return _REGIMES


@pytest.fixture(scope="module")
def regimes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return regimes_study(tmp_path_factory)


def test_real_training_overfits_and_underfits(regimes):
    study = optuna.load_study(study_name="regimes", storage=regimes["storage"])
    trials = {t.number: t for t in study.trials}
    assert [trials[i].state.name for i in range(3)] == ["COMPLETE", "COMPLETE", "FAIL"]
    verdicts = {i: trials[i].user_attrs.get("diagnosis") for i in range(3)}
    assert verdicts == {0: "overfit", 1: "underfit", 2: "diverged"}, {
        i: trials[i].user_attrs.get("diagnosis_detail", {}).get("reason") for i in range(3)}
    over = trials[0].user_attrs["diagnosis_detail"]["evidence"]
    assert over["final_train_acc"] > 0.99 and over["gap"] > 0.1  # memorized 43 images
    assert over["epochs_after_best"] >= 3
    under = trials[1].user_attrs["diagnosis_detail"]["evidence"]
    assert under["best_val_acc"] < 0.9 and under["best_acc"] > 0.19
    assert abs(under["gap"]) < 0.1  # bias, not variance: train and validation agree

    # the same verdicts are MLflow tags of the trials' child runs
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=regimes["tracking_uri"])
    for i in range(3):
        run = client.get_run(trials[i].user_attrs["mlflow_run_id"])
        assert run.data.tags["hpstudy.diagnosis"] == verdicts[i]
        assert run.data.tags["optuna.trial_number"] == str(i)


def test_diagnose_cli_reads_the_study_back(regimes, monkeypatch, capsys, tmp_path):
    from hpstudy.cli import main

    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["diagnose", "regimes", "--storage", regimes["storage"],
              "--tracking-uri", regimes["tracking_uri"]])
    out = capsys.readouterr().out
    assert exc.value.code in (0, None)
    table = out.split("\n\n")[0].splitlines()  # the trial table ends at the first blank line
    rows = {ln.split()[0]: ln.split()[3] for ln in table[2:] if ln[:1].isdigit()}
    assert rows == {"0": "overfit", "1": "underfit", "2": "diverged"}
    assert "3 trials: overfit 1, underfit 1, diverged 1" in out
    assert "try: Use early stopping on validation loss: its best epoch was" in out
    assert "needs at least one trial of each" in out  # no good_fit in this study

    # a threshold that forgives a 20% rise and a 100% gap turns trial 0 into a good fit
    with pytest.raises(SystemExit):
        main(["diagnose", "regimes", "--storage", regimes["storage"], "--tracking-uri",
              regimes["tracking_uri"], "--threshold", "val_rise=10", "--threshold",
              "gap_max=1"])
    out = capsys.readouterr().out
    assert "0      COMPLETE" in out and "good_fit" in out.splitlines()[2]


def test_diagnose_cli_unknown_study_exits_2(tmp_path, monkeypatch, capsys):
    from hpstudy.cli import main

    monkeypatch.chdir(tmp_path)
    path = Path(tmp_path) / "nothing.yaml"
    path.write_text("name: nothing\n")
    with pytest.raises(SystemExit) as exc:
        main(["diagnose", str(path), "--storage", f"sqlite:///{tmp_path}/o.db",
              "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    assert exc.value.code == 2
    assert "no study named 'nothing'" in capsys.readouterr().err
