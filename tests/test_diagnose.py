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
    StudyContext,
    StudyData,
    Thresholds,
    TrialRecord,
    advise,
    diagnose,
    diagnose_trials,
    format_text,
    summarize,
    threshold_defaults,
)
from hpstudy.analyze.diagnose import binomial_se, infer_n_val, scatter
from hpstudy.analyze.summary import cliffs_delta, compare_groups

LN10 = math.log(10)


def history(train_loss, val_loss, train_acc, val_acc, lr=1e-3) -> list[dict[str, Any]]:
    """Per-epoch records in fit()'s format (epoch time does not matter here)."""
    n = len(train_loss)
    assert len(val_loss) == len(train_acc) == len(val_acc) == n
    lrs = lr if isinstance(lr, list) else [lr] * n
    return [{"epoch": i + 1, "train_loss": train_loss[i], "val_loss": val_loss[i],
             "train_acc": train_acc[i], "val_acc": val_acc[i], "lr": lrs[i], "epoch_time_s": 0.1}
            for i in range(n)]


def decay(start: float, end: float, n: int, rate: float = 0.3) -> list[float]:
    """A smooth exponential approach from ``start`` to ``end`` over ``n`` epochs."""
    return [end + (start - end) * math.exp(-rate * i) for i in range(n)]


def good_curves(n: int = 20) -> list[dict[str, Any]]:
    return history(decay(2.3, 0.05, n), decay(2.2, 0.08, n), decay(0.1, 0.99, n),
                   decay(0.1, 0.97, n))


# The quickstart's trial 0 (real curves: baseline_cnn on digits, 287 validation images,
# dropout 0.45, cosine lr): validation loss lowest (0.0322) at epoch 11, 0.0329 at the end.
QUICKSTART_TRIAL_0 = [  # train_loss, val_loss, train_acc, val_acc
    (1.6400, 0.6592, 0.4183, 0.7805), (0.7051, 0.2715, 0.7461, 0.9129),
    (0.4316, 0.1534, 0.8548, 0.9721), (0.3413, 0.1946, 0.8730, 0.9373),
    (0.2192, 0.0678, 0.9278, 0.9756), (0.2018, 0.0566, 0.9443, 0.9861),
    (0.1481, 0.0434, 0.9522, 0.9895), (0.1151, 0.0937, 0.9661, 0.9721),
    (0.0822, 0.0454, 0.9765, 0.9930), (0.0809, 0.0794, 0.9757, 0.9721),
    (0.0515, 0.0322, 0.9852, 0.9895), (0.0534, 0.0370, 0.9852, 0.9895),
    (0.0532, 0.0389, 0.9835, 0.9895), (0.0573, 0.0356, 0.9800, 0.9895),
    (0.0424, 0.0329, 0.9887, 0.9895),
]


def quickstart_trial_0() -> list[dict[str, Any]]:
    tl, vl, ta, va = (list(c) for c in zip(*QUICKSTART_TRIAL_0, strict=True))
    return history(tl, vl, ta, va)


# ------------------------------------------------------------------ every verdict
def test_good_fit():
    d = diagnose(good_curves(), 10)
    assert d.verdict == "good_fit", d.reason
    assert d.advice == ADVICE["good_fit"]
    assert d.certainty == "clear"


def test_overfit_validation_loss_rises_while_training_loss_falls():
    n = 20
    val = [2.0 - 0.2 * i for i in range(8)] + [0.4 + 0.05 * i for i in range(12)]  # min: epoch 9
    h = history(decay(2.3, 0.001, n), val, decay(0.1, 1.0, n), decay(0.1, 0.93, n))
    d = diagnose(h, 10, n_val=1000)
    assert d.verdict == "overfit", d.reason
    # two names for two epochs: the study metric's best (val_acc, still rising) and the
    # validation-loss minimum
    assert d.evidence["best_epoch"] == 20 and d.evidence["monitor"] == "val_acc"
    assert d.evidence["val_loss_min_epoch"] == 9
    assert d.evidence["epochs_after_val_loss_min"] == 11
    # mean of the last 3 epochs (0.4 + 0.05 * [9, 10, 11]) over the minimum 0.4
    assert d.evidence["val_loss_rise"] == pytest.approx(0.5 / 0.4)
    # a straight line has no scatter: the noise is one image's worth of loss, ln(10) / 1000
    assert d.evidence["val_loss_noise"] == pytest.approx(0.0, abs=1e-12)
    assert d.evidence["val_loss_rise_snr"] == pytest.approx(0.5 / (LN10 / 1000))
    gap = d.evidence["gap"]
    assert d.evidence["gap_snr"] == pytest.approx(gap / binomial_se(d.evidence["final_val_acc"],
                                                                    1000))
    assert "validation loss rose" in d.reason and "epoch 9 of 20" in d.reason
    assert any("early stopping" in a and "epoch 9 of 20" in a for a in d.advice)


def test_monitor_and_mode_pick_the_best_epoch():
    n = 20
    val = [2.0 - 0.2 * i for i in range(8)] + [0.4 + 0.05 * i for i in range(12)]
    h = history(decay(2.3, 0.001, n), val, decay(0.1, 1.0, n), decay(0.1, 0.93, n))
    d = diagnose(h, 10, monitor="val_loss", mode="min")
    assert d.evidence["best_epoch"] == d.evidence["val_loss_min_epoch"] == 9
    assert d.evidence["best_value"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="mode"):
        diagnose(h, 10, mode="up")


def test_gap_without_a_validation_loss_rise_is_not_overfit():
    n = 20
    train_acc = [min(1.0, 0.5 + 0.05 * i) for i in range(n)]
    val_acc = [min(0.75, 0.5 + 0.03 * i) for i in range(n)]
    flat = history(decay(2.3, 0.01, n), decay(2.3, 0.6, n), train_acc, val_acc)
    d = diagnose(flat, 10, n_val=500)
    # a 25-point gap alone: memorizing what validation does not reward, but validation
    # loss still at its minimum; the reason shows the gap
    assert d.verdict == "good_fit", d.reason
    assert d.evidence["gap"] == pytest.approx(0.25)
    assert "gap 25.0 points" in d.reason
    assert any(a.startswith("Training accuracy is 25.0 points above validation accuracy")
               for a in d.advice)
    # the same gap with validation loss rising from epoch 10 on is overfitting
    vl = decay(2.3, 0.6, n)[:10] + [0.6 + 0.03 * i for i in range(1, 11)]
    rising = history(decay(2.3, 0.01, n), vl, train_acc, val_acc)
    assert diagnose(rising, 10, n_val=500).verdict == "overfit"
    # ... unless the rise is forgiven by threshold
    assert diagnose(rising, 10, n_val=500, val_rise=10.0).verdict == "good_fit"


def test_closing_gap_is_not_overfit():
    n = 20
    train_acc = [0.99] * n
    val_acc = [0.7 + 0.0125 * i for i in range(n)]  # gap 0.29 -> 0.05, closing
    h = history(decay(2.3, 0.02, n), decay(2.3, 0.1, n), train_acc, val_acc)
    d = diagnose(h, 10, n_val=500)
    assert d.evidence["gap_slope"] < 0
    # validation accuracy still climbs 1.25 points an epoch: not done yet
    assert d.verdict == "not_converged", d.reason
    assert "validation accuracy rose" in d.reason


def test_underfit_converged_far_from_fit():
    n = 15
    h = history(decay(2.3, 1.4, n, rate=0.8), decay(2.3, 1.45, n, rate=0.8),
                decay(0.1, 0.5, n, rate=0.8), decay(0.1, 0.48, n, rate=0.8))
    d = diagnose(h, 10)
    assert d.verdict == "underfit", d.reason
    assert "converged at training accuracy 50.0%" in d.reason
    assert d.evidence["train_loss_fall"] < 0.05
    text = " ".join(d.advice).lower()
    for word in ("init", "learning rate", "batch size", "capacity"):
        assert word in text
    assert "max_epochs" not in text


def test_still_improving_is_not_converged_and_says_how_long_to_train():
    n = 6
    h = history([2.3 * 0.8 ** i for i in range(n)], [2.3 * 0.82 ** i for i in range(n)],
                [0.1 + 0.1 * i for i in range(n)], [0.1 + 0.1 * i for i in range(n)])
    d = diagnose(h, 10, max_epochs=6, n_val=1000)
    assert d.verdict == "not_converged", d.reason
    # window: min(3, 6 // 3) = 2 epochs
    assert d.evidence["train_loss_slope"] == pytest.approx((0.8 ** 5 - 0.8 ** 3) / (0.8 ** 3 * 2))
    assert d.advice[0] == ("The validation loss was still falling at epoch 6: raise "
                           "train.max_epochs to 12.")
    # early stopping already judged the validation curve: not "train longer"
    assert diagnose(h, 10, status="early_stopped").verdict != "not_converged"


def test_a_learning_rate_step_restarts_the_convergence_window():
    # multistep schedule: lr / 10 at epoch 15 of 20; the loss drops right after the step,
    # then settles. Judged over the epochs since the step, it has converged.
    tl = decay(2.3, 0.3, 14, rate=0.5) + [0.3 - 0.25 * (1 - math.exp(-1.5 * i))
                                          for i in range(1, 7)]
    vl = [x + 0.05 for x in tl]
    ta = [min(0.99, 1.0 - x / 2.5) for x in tl]
    va = [a - 0.01 for a in ta]
    lrs = [0.1] * 14 + [0.01] * 6
    d = diagnose(history(tl, vl, ta, va, lr=lrs), 10, n_val=1000)
    assert d.evidence["lr_step_epoch"] == 15
    assert d.verdict == "good_fit", d.reason
    # the same curves at a constant lr look like a run still falling
    assert diagnose(history(tl, vl, ta, va), 10, n_val=1000).verdict == "not_converged"


@pytest.mark.parametrize("train_acc, val_acc, verdict", [
    (0.70, 0.68, "underfit"),  # bias: cannot fit its training set
    (0.88, 0.60, "good_fit"),  # variance: the 28-point gap exceeds the 12-point error
])
def test_underfit_needs_bias_to_dominate(train_acc, val_acc, verdict):
    n = 20
    h = history(decay(2.3, 0.5, n, rate=0.6), decay(2.3, 1.2, n, rate=0.6),
                [min(train_acc, 0.1 + 0.1 * i) for i in range(n)],
                [min(val_acc, 0.1 + 0.1 * i) for i in range(n)])
    d = diagnose(h, 10, n_val=1000)
    assert d.verdict == verdict, d.reason
    if verdict == "good_fit":
        assert "fits its training set better than it generalizes" in d.reason


def test_train_accuracy_84_still_rising_is_not_a_good_fit():
    # the quickstart's trial 5: 93.4% validation accuracy, training accuracy (under
    # dropout) 84% and still rising at the last epoch: once called good_fit
    train_acc = [0.17, 0.37, 0.55, 0.66, 0.70, 0.73, 0.75, 0.77, 0.78, 0.79, 0.80, 0.81,
                 0.82, 0.83, 0.84]
    val_acc = [0.29, 0.56, 0.79, 0.83, 0.79, 0.89, 0.90, 0.92, 0.90, 0.92, 0.93, 0.92,
               0.934, 0.93, 0.934]
    train_loss = [2.27, 1.84, 1.30, 0.91, 0.80, 0.72, 0.67, 0.63, 0.60, 0.57, 0.55, 0.53,
                  0.51, 0.49, 0.47]
    val_loss = [2.15, 1.42, 0.83, 0.56, 0.50, 0.38, 0.37, 0.32, 0.31, 0.28, 0.26, 0.26,
                0.255, 0.25, 0.25]
    d = diagnose(history(train_loss, val_loss, train_acc, val_acc), 10, n_val=287,
                 max_epochs=15)
    assert d.verdict == "not_converged", d.reason
    assert "training loss fell" in d.reason
    assert d.evidence["final_train_acc"] == pytest.approx(0.83)
    assert any("train.max_epochs to 30" in a for a in d.advice)


def test_pruned_trials_get_no_verdict_on_their_partial_curves():
    # a trial pruned at epoch 3 while still learning fast: once "underfit, train longer"
    h = history([2.25, 1.37, 1.00], [1.44, 0.62, 0.50], [0.22, 0.52, 0.66], [0.55, 0.90, 0.85])
    d = diagnose(h, 10, status="pruned", max_epochs=15,
                 prune_reason="below the median of earlier trials at epoch 3")
    assert d.verdict == "pruned"
    assert d.reason.startswith("pruned at epoch 3 (below the median of earlier trials at "
                               "epoch 3)")
    text = " ".join(d.advice).lower()
    for word in ("capacity", "train longer", "max_epochs", "dropout"):
        assert word not in text
    assert "3 of 15 epochs" in text
    assert diagnose(h, 10).verdict == "not_converged"  # the same curves, not pruned
    # in its study: how many were pruned, and what to change in the pruner
    ctx = StudyContext(tuple(TrialRecord(i, 0.9, "pruned" if i % 2 else "good_fit", {})
                             for i in range(24)))
    advice = advise(d, {"train.lr": 1e-3}, ctx, number=1)
    assert advice[0] == ("It ran 3 of 15 epochs, one of 12 pruned trials out of 24: if good "
                         "configurations are among them, raise the pruner's warm-up "
                         "(n_warmup_steps).")
    assert not any("capacity" in a or "max_epochs" in a for a in advice)
    # at chance when pruned is still pruned (the pruner acted, not the diagnosis)
    flat = history([2.30] * 3, [2.30] * 3, [0.1] * 3, [0.1] * 3)
    assert diagnose(flat, 10, status="pruned").verdict == "pruned"
    with pytest.raises(ValueError, match="status"):
        diagnose(h, 10, status="killed")


def test_a_val_loss_rise_within_noise_is_not_overfit():
    # quickstart trial 0: "validation loss rose 11.1%" -> overfit, for a 99% model
    d = diagnose(quickstart_trial_0(), 10, n_val=287)
    assert d.verdict == "good_fit", d.reason
    ev = d.evidence
    assert ev["val_loss_min"] == pytest.approx(0.0322) and ev["val_loss_min_epoch"] == 11
    assert ev["best_epoch"] == 9  # val_acc's best, the epoch MLflow and Optuna report
    # the rise (0.0036 nats) is below one validation image's worth of loss (ln 10 / 287)
    assert ev["val_loss_resolution"] == pytest.approx(LN10 / 287)
    assert ev["val_loss_rise_snr"] < 1
    assert ev["gap"] < 0  # dropout: training accuracy below validation accuracy
    # the old rules called this overfit; with 287 images the same rise is noise
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "_diagnose_v1", Path(__file__).parents[1] / "benchmarks" / "_diagnose_v1.py")
    old = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_diagnose_v1", old)  # dataclasses look their module up
    spec.loader.exec_module(old)
    assert old.diagnose(quickstart_trial_0(), 10).verdict == "overfit"


def test_the_same_rise_is_overfit_on_a_large_validation_set():
    # validation loss 0.030 -> 0.036 (+20%) after epoch 10, train 100% vs validation 97%
    n = 20
    vl = decay(2.0, 0.03, 10, rate=0.9) + [0.03 + 0.0006 * i for i in range(1, 11)]
    h = history(decay(2.3, 0.001, n, rate=0.5), vl, decay(0.3, 1.0, n), decay(0.3, 0.97, n))
    small, large = diagnose(h, 10, n_val=287), diagnose(h, 10, n_val=10_000)
    assert small.verdict != "overfit", small.reason  # 0.006 nats < one image (0.008)
    assert large.verdict == "overfit", large.reason


def test_borderline_calls_say_so():
    n = 20
    vl = decay(2.0, 0.3, 10, rate=0.9) + [0.3 + 0.0018 * i for i in range(1, 11)]
    h = history(decay(2.3, 0.001, n, rate=0.5), vl, decay(0.3, 1.0, n), decay(0.3, 0.90, n))
    d = diagnose(h, 10, n_val=2000)  # +5.4% for val_rise 5%: just over the line
    assert d.verdict == "overfit"
    assert d.certainty == "borderline" and "(borderline:" in d.reason


def test_unstable_zigzag_training_loss():
    tl = [2.0, 0.8, 1.2, 0.6, 1.0, 0.5, 0.9, 0.45, 0.85, 0.4]
    h = history(tl, [x * 1.1 for x in tl], [0.9] * 10, [0.88] * 10)
    d = diagnose(h, 10)
    assert d.verdict == "unstable", d.reason
    # second differences from epoch 2: |d| = 1.0 1.0 0.9 0.9 0.85 0.85 0.85, median 0.9
    sigma = 1.4826 * 0.9 / math.sqrt(6)
    assert d.evidence["train_loss_noise"] == pytest.approx(sigma)
    assert d.evidence["noise"] == pytest.approx(sigma / (LN10 - 0.4))
    assert d.evidence["train_loss_rises"] == 4
    text = " ".join(d.advice).lower()
    assert "learning rate" in text and "larger batch" in text


def test_a_fast_curved_descent_is_not_unstable():
    # four epochs of a fast, never rising descent: curvature, not noise
    h = history([2.29, 2.26, 2.19, 2.05], [2.28, 2.23, 2.12, 1.90], [0.11, 0.19, 0.31, 0.36],
                [0.10, 0.46, 0.56, 0.57])
    assert diagnose(h, 10).verdict == "not_converged"


def test_diverged_on_nan():
    h = good_curves(6)
    h[3]["train_loss"] = float("nan")
    h[3]["val_loss"] = float("nan")
    d = diagnose(h[:4], 10, status="diverged")
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
    # 2 classes, 1000 validation images: chance is 0.5 and the bar is 0.5 + 0.1 * 0.5
    # (3 standard errors at chance, 0.047, are less)
    n = 12
    h = history(decay(0.7, 0.6, n, rate=0.8), decay(0.7, 0.62, n, rate=0.8), [acc] * n,
                [acc] * n)
    assert diagnose(h, 2, n_val=1000).verdict == verdict


def test_not_learning_bar_grows_on_a_small_validation_set():
    # 25 validation images at 10 classes: 3 standard errors at chance are 18 points
    h = history(decay(2.3, 2.1, 8), decay(2.3, 2.1, 8), [0.2] * 8, [0.24] * 8)
    assert diagnose(h, 10, n_val=10_000).verdict != "not_learning"
    assert diagnose(h, 10, n_val=25).verdict == "not_learning"


# ------------------------------------------------------------------ noise estimates
def test_scatter_ignores_a_straight_trend_and_measures_noise():
    assert scatter([1.0, 2.0, 3.0, 4.0, 5.0]) == 0.0
    assert scatter([1.0, 2.0, 3.0]) is None  # too few points
    zigzag = [(-1) ** i * 0.5 + 0.1 * i for i in range(9)]  # +-0.5 around a line
    # second differences are +-2 (a +-0.5 alternation): 1.4826 * 2 / sqrt(6)
    assert scatter(zigzag) == pytest.approx(1.4826 * 2 / math.sqrt(6))


def test_n_val_is_inferred_from_the_accuracy_steps():
    import numpy as np

    accs = [float(np.float32(k / 287)) for k in (250, 270, 281, 283, 284)]
    assert infer_n_val(accs) == 287
    assert infer_n_val([0.5, 0.25]) is None  # too few distinct values
    h = history(decay(2.3, 0.1, 5), decay(2.3, 0.1, 5), [0.5, 0.8, 0.9, 0.95, 0.97], accs)
    ev = diagnose(h, 10).evidence
    assert (ev["n_val"], ev["n_val_source"]) == (287, "accuracy steps")
    ev = diagnose(h, 10, n_val=300).evidence
    assert (ev["n_val"], ev["n_val_source"]) == (300, "given")
    ev = diagnose(good_curves(), 10).evidence
    assert (ev["n_val"], ev["n_val_source"]) == (Thresholds().n_val_default, "assumed")


# ------------------------------------------------------------------ advice in the study
def _context(values: dict[int, float], drop: dict[int, float], lr: dict[int, float],
             n_val: int = 287) -> StudyContext:
    return StudyContext(tuple(
        TrialRecord(n, v, "good_fit", {"model.drop_rate": drop[n], "train.lr": lr[n],
                                        "train.max_epochs": 15}, n_val)
        for n, v in values.items()))


def test_advice_names_the_trial_values_and_the_best_trials():
    n = 20
    val = [2.0 - 0.2 * i for i in range(8)] + [0.4 + 0.05 * i for i in range(12)]
    over = diagnose(history(decay(2.3, 0.001, n), val, decay(0.1, 1.0, n),
                            decay(0.1, 0.93, n)), 10, n_val=1000)
    ctx = _context({1: 0.99, 2: 0.985, 3: 0.98, 4: 0.90, 0: 0.93},
                   {1: 0.3, 2: 0.45, 3: 0.35, 4: 0.0, 0: 0.0},
                   {1: 3e-3, 2: 1e-3, 3: 2e-3, 4: 1e-2, 0: 3e-3})
    params = {"model.drop_rate": 0.0, "train.lr": 3e-3, "train.weight_decay": 0.0}
    advice = advise(over, params, ctx, number=0)
    assert advice[0] == ("model.drop_rate is 0 here; the 3 best trials (#1, #2, #3) use "
                         "0.3-0.45: raise it into that range.")
    assert advice[1].startswith("train.weight_decay is 0 here: add weight decay")
    assert not any(a.startswith("Add or raise dropout") for a in advice)  # replaced
    assert any("early stopping" in a for a in advice)
    # without a study, the trial's own values and the course's ranges
    alone = advise(over, params)
    assert alone[0] == "model.drop_rate is 0 here: add dropout (0.2-0.5 on the dense layers)."
    some = advise(over, {**params, "model.drop_rate": 0.2})
    assert some[0] == "model.drop_rate is 0.2 here: raise dropout (0.2-0.5 on the dense layers)."
    # a lr far from the better trials', for a run that did not learn
    flat = diagnose(history([2.30] * 8, [2.31] * 8, [0.11] * 8, [0.095] * 8), 10)
    lost = advise(flat, {"train.lr": 1e-7}, ctx, number=0)
    assert lost[0] == ("train.lr is 1e-07 here, 4.0 orders of magnitude off; the 3 best trials "
                       "(#1, #2, #3) use 0.001-0.003: move it into that range.")


def test_good_fit_clearly_worse_than_the_best_says_so():
    d = diagnose(good_curves(), 10, n_val=287)
    # the quickstart's trial 5 (93.4%) against its best trial (99.65%)
    ctx = _context({0: 0.934, 7: 0.9965, 3: 0.95}, {0: 0.48, 7: 0.37, 3: 0.3},
                   {0: 2.4e-3, 7: 1.05e-2, 3: 3e-3})
    params = {"model.drop_rate": 0.48, "train.lr": 2.4e-3, "train.max_epochs": 15}
    advice = advise(d, params, ctx, number=0)
    se = math.sqrt(binomial_se(0.934, 287) ** 2 + binomial_se(0.9965, 287) ** 2)
    assert 0.0625 > 3 * se  # 6.2 points apart, beyond 3 standard errors
    assert advice[0].startswith("Clearly worse than the best trial: val_acc 0.934 vs #7's "
                                f"0.9965 (6.2 points apart, noise {100 * se:.1f} points)")
    assert "train.lr 0.0105 vs 0.0024 here" in advice[0]
    assert "model.drop_rate 0.37 vs 0.48 here" in advice[0]
    assert "Start from #7" in advice[0]
    # within noise of the best: says so, no "clearly worse"
    close = advise(d, params, _context({0: 0.97, 7: 0.975}, {0: 0.4, 7: 0.37},
                                       {0: 3e-3, 7: 1e-2}), number=0)
    assert close[0].startswith("Within noise of the best trial #7")
    # the best itself
    best = advise(d, params, ctx, number=7, value=0.9965)
    assert best[0].startswith("The study's best so far")


def test_not_converged_advice_names_the_epochs_and_a_low_lr():
    n = 6
    h = history([2.3 * 0.8 ** i for i in range(n)], [2.3 * 0.82 ** i for i in range(n)],
                [0.1 + 0.1 * i for i in range(n)], [0.1 + 0.1 * i for i in range(n)])
    d = diagnose(h, 10, max_epochs=6, n_val=1000)
    ctx = _context({1: 0.99, 2: 0.98}, {1: 0.3, 2: 0.3}, {1: 3e-3, 2: 1e-2})
    advice = advise(d, {"train.lr": 1e-4, "train.max_epochs": 6}, ctx, number=0)
    assert advice[0] == ("train.lr is 0.0001 here; the 2 best trials (#1, #2) use 0.003-0.01: "
                         "raise it into that range.")
    assert "raise train.max_epochs to 12" in " ".join(advice)


def test_study_context_from_a_trials_frame():
    frame = pd.DataFrame({
        "number": [0, 1, 2, 3], "state": ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"],
        "value": [0.9, 0.95, 0.99, None], "verdict": ["good_fit", "overfit", "pruned", None],
        "train.lr": [1e-3, 3e-3, 1e-2, 1e-1], "n_val": [287, 287, 287, None],
    })
    ctx = StudyContext.from_frame(frame, direction="maximize")
    assert [t.number for t in ctx.ranked()] == [1, 0]  # pruned and valueless left out
    assert ctx.best(exclude=1)[0].params == {"train.lr": 1e-3}
    assert ctx.trials[3].n_val is None and ctx.trials[2].verdict == "pruned"
    low = StudyContext.from_frame(frame, direction="minimize")
    assert [t.number for t in low.ranked()] == [0, 1]


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
    d = diagnose(h, 10, status="diverged")
    data = d.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data  # no NaN/inf leaks
    back = Diagnosis.from_dict(data)
    assert (back.verdict, back.reason, back.advice) == (d.verdict, d.reason, d.advice)
    assert set(data["evidence"]) >= {"gap", "best_epoch", "val_loss_min_epoch",
                                     "train_loss_slope", "noise", "status", "n_val",
                                     "certainty"}
    good = diagnose(good_curves(), 10, n_val=300).to_dict()
    assert json.loads(json.dumps(good, allow_nan=False)) == good


def test_single_epoch_history():
    d = diagnose(history([1.0], [1.1], [0.7], [0.68]), 10)
    assert d.verdict == "not_converged" and d.certainty == "borderline"
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
    assert s.counts == {"good_fit": 2, "overfit": 1, "underfit": 0, "not_converged": 0,
                        "unstable": 0, "diverged": 0, "not_learning": 0, "pruned": 0}
    assert (s.undiagnosed, s.n_overfit, s.n_good_fit) == (1, 1, 2)
    d = s.differences.set_index("param")
    assert d.loc["train.lr", "effect"] == 1.0 and d.loc["train.lr", "note"] == "higher in overfit"
    assert d.loc["model.drop_rate", "note"] == "lower in overfit"
    assert d.loc["train.optimizer", "overfit"] == "sgd"
    assert d.loc["num_params", "effect"] == 1.0  # capacity is compared too
    text = format_text(table, s)
    assert "4 trials: good_fit 2, overfit 1, 1 without a verdict" in text
    assert "overfit (n=1) vs good_fit (n=2)" in text
    assert "caution: 1 overfit vs 2 good_fit: with fewer than 5 trials in a group" in text
    assert "why: validation loss rose" in text
    # advice names the trial's dropout against the two better trials' (lines wrapped)
    assert ("try: model.drop_rate is 0 here; the 2 best trials (#1, #2) use 0.4-0.5: raise "
            "it into that range.") in " ".join(text.split())


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
    - trial 1 is held back: the same net under strong regularization (dropout 0.7,
      L2 weight decay 0.1) reaches about 75% on both train and validation, no gap,
      and is still improving fast at epoch 20 (not_converged; 43 images give 3 steps
      an epoch, too few for it to settle where it would underfit);
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
    # the stored verdicts come from the search (the lead passes status/n_val there); the
    # curves alone already give these
    assert verdicts == {0: "overfit", 1: "not_converged", 2: "diverged"}, {
        i: trials[i].user_attrs.get("diagnosis_detail", {}).get("reason") for i in range(3)}
    over = trials[0].user_attrs["diagnosis_detail"]["evidence"]
    assert over["final_train_acc"] > 0.99 and over["gap"] > 0.1  # memorized 43 images
    assert over["epochs_after_val_loss_min"] >= 3
    held = trials[1].user_attrs["diagnosis_detail"]["evidence"]
    assert held["best_val_acc"] < 0.9 and held["best_acc"] > 0.19
    assert abs(held["gap"]) < 0.1  # bias, not variance: train and validation agree
    assert held["train_loss_fall"] > 0.05 and held["train_loss_fall_snr"] > 3

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
    assert rows == {"0": "overfit", "1": "not_converged", "2": "diverged"}
    assert "3 trials: overfit 1, not_converged 1, diverged 1" in out
    assert "try: Use early stopping on validation loss: it was lowest at epoch" in out
    assert "needs at least one trial of each" in out  # no good_fit in this study

    # a threshold that forgives a rise of the validation loss up to 1000% (and one that
    # asks 1 standard error of any signal) turns trial 0 into a good fit
    with pytest.raises(SystemExit):
        main(["diagnose", "regimes", "--storage", regimes["storage"], "--tracking-uri",
              regimes["tracking_uri"], "--threshold", "val_rise=10", "--threshold",
              "noise_factor=1"])
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
