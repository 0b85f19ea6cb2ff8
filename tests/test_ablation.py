"""Ablations: the design, statistics against hand-computed numbers, the figures' data,
the schema's errors, and real ablations through the CLI (Trainer + MLflow SQLite in tmp)."""

from __future__ import annotations

import json
import math
import statistics as stat
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import run_cli as _cli
from mlflow import MlflowClient
from scipy.stats import t as student_t

from hpstudy.analyze.ablation import (
    AblationData,
    Design,
    analyze_ablation,
    diagnose_cells,
    effect_sentences,
    format_ablation,
    mean_ci,
)
from hpstudy.api import ablate as run_ablation  # runs, statistics, then the report
from hpstudy.config import ConfigError
from hpstudy.report.ablation import (
    CellBarsInfo,
    CellCurve,
    CellCurvesInfo,
    EffectsInfo,
    InteractionInfo,
    InteractionLine,
    InteractionPanel,
    _cell_bars_info,
    _cell_curves_info,
    _draw_effects,
    _effects_info,
    _interaction_info,
    build_ablation_sections,
)
from hpstudy.search.ablation import load_ablation, plan_ablation

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "studies" / "ablations" / "quick_digits.yaml"
T975_2 = 4.302652729749462  # Student t quantiles from a table: 97.5%, 2 and 6 df
T975_6 = 2.4469118511449786


def _runs(table: dict[str, list[float]], failed: dict[str, int] | None = None) -> pd.DataFrame:
    rows = [{"cell": c, "seed": s, "state": "COMPLETE", "value": v}
            for c, vals in table.items() for s, v in enumerate(vals)]
    for c, seed in (failed or {}).items():
        rows.append({"cell": c, "seed": seed, "state": "FAIL", "value": math.nan,
                     "reason": "diverged: non-finite train_loss at epoch 2"})
    return pd.DataFrame(rows)


def _welch(a: list[float], b: list[float]) -> tuple[float, float, float, float]:
    """(difference, standard error, Welch-Satterthwaite df, two-sided p) by the textbook formulas."""
    va, vb = stat.variance(a) / len(a), stat.variance(b) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    diff = stat.mean(a) - stat.mean(b)
    return diff, se, df, 2 * student_t.sf(abs(diff / se), df)


# 2x2 table: A in {lo, hi}, B in {lo, hi}, three seeds per cell
TABLE = {
    "A=lo,B=lo": [0.90, 0.91, 0.92],  # mean .91, sd .01
    "A=hi,B=lo": [0.93, 0.95, 0.97],  # mean .95, sd .02
    "A=lo,B=hi": [0.92, 0.92, 0.95],  # mean .93, sd sqrt(.0003)
    "A=hi,B=hi": [0.98, 0.99, 1.00],  # mean .99, sd .01
}
FACTORIAL = Design("full_factorial", {"A": ("lo", "hi"), "B": ("lo", "hi")},
                   {"A": "lo", "B": "lo"})


# ------------------------------------------------------------------ design
def test_one_at_a_time_cells_roles_and_labels():
    d = Design("one_at_a_time", {"dropout": ("off", "on"), "bn": ("off", "on"),
                                 "sched": ("constant", "step", "cosine")},
               {"dropout": "off", "bn": "off", "sched": "constant"},
               {"dropout": "on", "bn": "on", "sched": "step"})
    cells = d.cells()
    assert [c.label for c in cells] == [
        "baseline", "dropout=on", "bn=on", "sched=step", "sched=cosine", "full",
        "full without dropout", "full without bn", "full without sched"]
    assert cells[0].id == "dropout=off,bn=off,sched=constant"
    assert cells[5].levels == {"dropout": "on", "bn": "on", "sched": "step"}
    # two factors: "only A" is also "full without B" -> merged, four cells in all
    two = Design("one_at_a_time", {"a": ("x", "y"), "b": ("x", "y")}, {"a": "x", "b": "x"},
                 {"a": "y", "b": "y"})
    got = {c.id: c.roles for c in two.cells()}
    assert got == {"a=x,b=x": ("baseline",), "a=y,b=x": ("only a=y", "full without b"),
                   "a=x,b=y": ("only b=y", "full without a"), "a=y,b=y": ("full",)}


def test_factorial_cells_cover_every_combination():
    d = Design("full_factorial", {"a": ("1", "2", "3"), "b": ("x", "y")}, {"a": "2", "b": "x"})
    cells = d.cells()
    assert len(cells) == 6 and len({c.id for c in cells}) == 6
    assert [c.label for c in cells if "baseline" in c.roles] == ["baseline"]
    assert cells[0].label == "a=1"  # levels that differ from the baseline name the cell


# ------------------------------------------------------------------ statistics
def test_mean_ci_is_the_t_interval():
    m = mean_ci([0.93, 0.95, 0.97])
    half = T975_2 * 0.02 / math.sqrt(3)
    assert (m.n, m.mean, m.std) == (3, pytest.approx(0.95), pytest.approx(0.02))
    assert (m.ci_low, m.ci_high) == (pytest.approx(0.95 - half), pytest.approx(0.95 + half))
    one = mean_ci([0.5])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.ci_low) and math.isnan(one.std)


def test_factorial_cells_main_effects_and_interaction_by_hand():
    s = analyze_ablation(_runs(TABLE), FACTORIAL)
    cells = s.cells.set_index("cell")
    hi_hi = cells.loc["A=hi,B=hi"]
    assert hi_hi["mean"] == pytest.approx(0.99) and hi_hi["std"] == pytest.approx(0.01)
    # an accuracy's interval stays in [0, 1]: .99 +- t * .01 / sqrt(3) = [.9652, 1.0148]
    assert hi_hi["ci_low"] == pytest.approx(0.99 - T975_2 * 0.01 / math.sqrt(3))
    assert hi_hi["ci_high"] == 1.0 and hi_hi["ci_method"] == "t, clipped to [0, 1]"
    assert cells.loc["A=lo,B=hi", "std"] == pytest.approx(math.sqrt(0.0003))
    assert list(cells["n"]) == [3, 3, 3, 3] and list(cells["n_failed"]) == [0, 0, 0, 0]

    eff = s.effects.set_index("factor")
    # main effect of A: all six runs at hi minus all six at lo (pooled over B)
    hi = TABLE["A=hi,B=lo"] + TABLE["A=hi,B=hi"]
    lo = TABLE["A=lo,B=lo"] + TABLE["A=lo,B=hi"]
    diff, se, df, p = _welch(hi, lo)
    assert diff == pytest.approx(0.97 - 0.92)
    a = eff.loc["A"]
    assert (a["kind"], a["level"], a["reference"]) == ("main", "hi", "lo")
    assert a["effect"] == pytest.approx(0.05)
    assert a["df"] == pytest.approx(df) and a["p_value"] == pytest.approx(p)
    half = student_t.ppf(0.975, df) * se
    assert (a["ci_low"], a["ci_high"]) == (pytest.approx(0.05 - half), pytest.approx(0.05 + half))
    b = eff.loc["B"]
    assert b["effect"] == pytest.approx((0.93 + 0.99) / 2 - (0.91 + 0.95) / 2)

    # interaction: .99 - .95 - .93 + .91 = .02; SE^2 = (.0001+.0004+.0003+.0001)/3 = .0003;
    # Welch-Satterthwaite df = .0003^2 / (sum (v_i/3)^2 / 2) = 9e-8 / 1.5e-8 = 6
    (row,) = s.interactions.to_dict("records")
    se = math.sqrt(0.0003)
    assert row["label"] == "A=hi x B=hi"
    assert row["interaction"] == pytest.approx(0.02)
    assert row["df"] == pytest.approx(6.0)
    assert row["t"] == pytest.approx(0.02 / se)
    assert row["ci_low"] == pytest.approx(0.02 - T975_6 * se)
    assert row["ci_high"] == pytest.approx(0.02 + T975_6 * se)
    assert row["p_value"] == pytest.approx(2 * student_t.sf(0.02 / se, 6))
    # pooled means behind the interaction plot
    g = s.group_means.set_index(["level_a", "level_b"])
    assert g.loc[("hi", "lo"), "mean"] == pytest.approx(0.95) and g.loc[("hi", "lo"), "n"] == 3


def test_one_at_a_time_effects_exclude_failed_runs_with_a_note():
    d = Design("one_at_a_time", {"A": ("lo", "hi"), "B": ("lo", "hi")}, {"A": "lo", "B": "lo"},
               {"A": "hi", "B": "hi"})
    s = analyze_ablation(_runs(TABLE, failed={"A=hi,B=hi": 3}), d)
    cells = s.cells.set_index("cell")
    assert cells.loc["A=hi,B=hi", "n"] == 3 and cells.loc["A=hi,B=hi", "n_failed"] == 1
    assert any("A=hi,B=hi seed 3 excluded" in n and "diverged" in n for n in s.notes)

    rows = {(r["factor"], r["kind"]): r for r in s.effects.to_dict("records")}
    assert set(rows) == {("A", "alone"), ("B", "alone"), ("A", "in_full"), ("B", "in_full")}
    # A alone: (A=hi,B=lo) - baseline; A in full: full - (full without A = A=lo,B=hi)
    for key, treat, ref in ((("A", "alone"), "A=hi,B=lo", "A=lo,B=lo"),
                            (("A", "in_full"), "A=hi,B=hi", "A=lo,B=hi"),
                            (("B", "in_full"), "A=hi,B=hi", "A=hi,B=lo")):
        diff, se, df, p = _welch(TABLE[treat], TABLE[ref])
        r = rows[key]
        assert (r["cell"], r["reference_cell"]) == (treat, ref)
        assert r["effect"] == pytest.approx(diff)
        assert r["df"] == pytest.approx(df) and r["p_value"] == pytest.approx(p)
        assert r["ci_high"] - r["effect"] == pytest.approx(student_t.ppf(0.975, df) * se)
    assert rows[("A", "alone")]["effect"] == pytest.approx(0.04)
    assert s.interactions.empty  # interactions belong to factorial designs


def test_three_levels_one_run_and_empty_cells():
    d = Design("full_factorial", {"lr": ("low", "mid", "high"), "bn": ("off", "on")},
               {"lr": "low", "bn": "off"})
    table = {"lr=low,bn=off": [0.80, 0.82], "lr=low,bn=on": [0.84, 0.86],
             "lr=mid,bn=off": [0.90, 0.92], "lr=mid,bn=on": [0.94],
             "lr=high,bn=off": [], "lr=high,bn=on": []}
    s = analyze_ablation(_runs(table, failed={"lr=high,bn=off": 0}), d)
    eff = {(r["factor"], r["level"]): r for r in s.effects.to_dict("records")}
    # one main effect per non-baseline level, each against the baseline level
    assert set(eff) == {("lr", "mid"), ("lr", "high"), ("bn", "on")}
    assert eff[("lr", "mid")]["effect"] == pytest.approx((0.90 + 0.92 + 0.94) / 3 - 0.83)
    assert math.isnan(eff[("lr", "high")]["effect"])
    assert eff[("lr", "high")]["note"] == "a compared cell has no successful run"
    cells = s.cells.set_index("cell")
    assert cells.loc["lr=mid,bn=on", "n"] == 1 and math.isnan(cells.loc["lr=mid,bn=on", "ci_low"])
    assert "cell lr=mid,bn=on: one successful run, no interval" in s.notes
    assert "cell lr=high,bn=on: no successful run" in s.notes
    inter = {r["label"]: r for r in s.interactions.to_dict("records")}
    assert set(inter) == {"lr=mid x bn=on", "lr=high x bn=on"}
    # (mid,on) has one run: estimate without interval
    assert inter["lr=mid x bn=on"]["interaction"] == pytest.approx(0.94 - 0.91 - 0.85 + 0.81)
    assert math.isnan(inter["lr=mid x bn=on"]["ci_low"])


# 95% Wilson score interval of 90 of 100 (the textbook example) and of 273 of 300
WILSON_90_100 = (0.8256343384950865, 0.9447708629393249)
WILSON_273_300 = (0.8722229892013517, 0.9374097743945206)
T80_4, T80_10, T975_4, T975_10 = 0.9409645772351816, 0.8790578, 2.7764451051977934, 2.2281389


def test_accuracy_intervals_stay_inside_0_1():
    # two seeds (the newcomer's case): .85 +- 12.706 * .0707 / sqrt 2 = [.2147, 1.4853] -> 1
    t1 = 12.706204736174694
    m = mean_ci([0.8, 0.9], scale="proportion")
    assert (m.ci_low, m.ci_high) == (pytest.approx(0.85 - t1 * 0.05), 1.0)
    assert m.method == "t, clipped to [0, 1]"
    # with 100 validation images the pooled Wilson (170 of 200) lies inside: t decides
    assert mean_ci([0.8, 0.9], scale="proportion", n_val=100)[3:5] == (
        pytest.approx(0.85 - t1 * 0.05), 1.0)
    # three seeds at .90 .91 .92 on 100 images: t gives .91 +- 4.3027 * .01 / sqrt 3 =
    # [.8852, .9348]; the pooled count, 273 of 300, has the wider Wilson interval
    m = mean_ci([0.90, 0.91, 0.92], scale="proportion", n_val=100)
    assert (m.ci_low, m.ci_high) == pytest.approx(WILSON_273_300)
    assert m.method == "Wilson, pooled counts"
    # identical runs count once: Wilson of one run's 90 of 100; unknown n_val: no width
    m = mean_ci([0.9, 0.9], scale="proportion", n_val=100)
    assert (m.std, m.method) == (0.0, "Wilson, one run's count")
    assert (m.ci_low, m.ci_high) == pytest.approx(WILSON_90_100)
    assert mean_ci([0.9, 0.9], scale="proportion")[3:] == (0.9, 0.9, "none (identical runs)")
    # a loss: the t interval clipped at 0: .15 +- 12.706 * .1414 / sqrt 2 -> [0, 1.4206]
    m = mean_ci([0.05, 0.25], scale="positive")
    assert (m.ci_low, m.ci_high) == (0.0, pytest.approx(0.15 + t1 * 0.1))
    with pytest.raises(ValueError):
        mean_ci([1.0], scale="logit")


def test_flags_detectable_effect_and_bounded_effects_by_hand():
    d = Design("one_at_a_time", {"A": ("lo", "hi"), "B": ("lo", "hi")}, {"A": "lo", "B": "lo"},
               {"A": "hi", "B": "hi"})
    table = {"A=lo,B=lo": [0.5, 0.5], "A=hi,B=lo": [0.0, 1.0], "A=lo,B=hi": [0.6, 0.7],
             "A=hi,B=hi": [0.55, 0.75]}
    s = analyze_ablation(_runs(table), d, n_val=100)
    cells = s.cells.set_index("label")
    assert cells.loc["baseline", "flags"] == "n<3, std 0"
    assert cells.loc["A=hi", "flags"] == "n<3"
    assert any(n.startswith("cell baseline: std 0: identical results on all 2 runs - the seeds "
                            "may not change anything (data.seed and train.seed both set?)")
               for n in s.notes)
    assert any(n.startswith("2 runs per cell, fewer than 3 seeds") for n in s.notes)
    # A alone: [0, 1] vs [.5, .5]: 0 +- 12.7 * .5 would be [-6.35, 6.35]; a difference of
    # accuracies lies in [-1, 1]
    a = s.effects.set_index(["factor", "kind"]).loc[("A", "alone")]
    assert (a["effect"], a["ci_low"], a["ci_high"]) == (0.0, -1.0, 1.0)
    # pooled std over the four cells (1 df each): variances 0, .5, .005, .02 -> sqrt(.525/4)
    s_pooled = math.sqrt((0.0 + 0.5 + 0.005 + 0.02) / 4)
    assert (s.pooled_std, s.pooled_df, s.n_per_cell) == (pytest.approx(s_pooled), 4, 2)
    # two cells of 2 runs: df = 2, t(.975, 2) = .95 / sqrt(.04875), t(.8, 2) = .6 / sqrt(.32)
    q = 0.95 / math.sqrt(0.04875) + 0.6 / math.sqrt(0.32)
    assert s.mde == pytest.approx(q * s_pooled * math.sqrt(2 / 2))
    assert a["mde"] == pytest.approx(s.mde)
    assert "this design detects a difference between two cells of about " \
        f"{100 * s.mde:.1f} points" in format_ablation(s)


def test_detectable_effect_and_words_of_a_factorial_design():
    s = analyze_ablation(_runs(TABLE), FACTORIAL)
    # pooled std: (2 * (.0001 + .0004 + .0003 + .0001) / 8) ** .5 = .015; cells of 3 (df 4)
    assert s.pooled_std == pytest.approx(0.015) and s.pooled_df == 8
    assert s.mde == pytest.approx((T975_4 + T80_4) * 0.015 * math.sqrt(2 / 3))
    # a main effect pools 6 runs a side: df 10
    eff = s.effects.set_index("factor")
    assert eff.loc["A", "mde"] == pytest.approx((T975_10 + T80_10) * 0.015 * math.sqrt(2 / 6),
                                                rel=1e-6)
    hi = TABLE["A=hi,B=lo"] + TABLE["A=hi,B=hi"]
    lo = TABLE["A=lo,B=lo"] + TABLE["A=lo,B=hi"]
    diff, se, df, p = _welch(hi, lo)
    assert p < 0.05 and eff.loc["A", "distinguishable"]
    lo_ci = diff - student_t.ppf(0.975, df) * se
    hi_ci = diff + student_t.ppf(0.975, df) * se
    words = effect_sentences(s)
    assert words[0] == (f"A=hi vs lo (main effect): +5.0 points [{100 * lo_ci:+.1f}, "
                        f"{100 * hi_ci:+.1f}], distinguishable from noise (p={p:.3f})")
    b = eff.loc["B"]
    assert not b["distinguishable"]
    assert words[1].startswith("B=hi vs lo (main effect): +3.0 points [") and \
        f"not distinguishable from noise (p={b['p_value']:.3f}); these groups detect about " \
        f"{100 * b['mde']:.1f} points" in words[1]
    assert words[2].startswith("A=hi x B=hi: +2.0 points") and "not distinguishable" in words[2]
    assert words[3] == ("Each test stands alone at 0.05: of 3 comparisons, about 0.15 would "
                        "pass by chance even if nothing mattered.")
    text = format_ablation(s)
    assert "in words" in text and "notes" not in text  # nothing to note: no notes block


def _history(cell: str, run: str, val_loss: list[float]) -> list[dict[str, Any]]:
    return [{"run_id": run, "cell": cell, "seed": 0, "epoch": e + 1,
             "train_loss": v * 0.9, "train_acc": 1.02 - 0.45 * v,
             "val_loss": v, "val_acc": 1.0 - 0.5 * v} for e, v in enumerate(val_loss)]


def test_cells_still_improving_are_flagged_train_longer_before_effects():
    d = Design("one_at_a_time", {"A": ("lo", "hi")}, {"A": "lo"}, {"A": "hi"})
    table = {"A=lo": [0.80, 0.82, 0.84], "A=hi": [0.85, 0.86, 0.88]}
    flat = [2.0, 1.2, 0.9, 0.8, 0.75, 0.74, 0.74, 0.745, 0.74, 0.742, 0.741, 0.743]
    falling = [2.0, 1.7, 1.5, 1.35, 1.2, 1.08, 0.97, 0.87, 0.78, 0.70, 0.63, 0.57]
    hist = pd.DataFrame(_history("A=lo", "r1", flat) + _history("A=hi", "r2", falling))
    runs = _runs(table).assign(diagnosis=None)
    diag = diagnose_cells(runs, hist, d, num_classes=10, n_val=300)
    got = diag.set_index("cell")
    assert not got.loc["A=lo", "still_improving"]
    assert got.loc["A=hi", "still_improving"]
    s = analyze_ablation(runs, d, n_val=300, diagnosis=diag)
    assert s.train_longer == ["A=hi"]
    assert s.cells.set_index("cell").loc["A=hi", "flags"] == "train longer"
    assert "read with care: A=hi still improving at the last epoch (train longer)" in \
        effect_sentences(s)[0]
    text = format_ablation(s)
    warn = text.index("before reading the effects: still improving at the last epoch (train "
                      "longer): A=hi")
    assert warn < text.index("\neffect ")
    # converged by the verdict, yet its validation loss is lowest at the last epoch: flagged
    flat[-3:] = [0.741, 0.7395, 0.739]
    hist = pd.DataFrame(_history("A=lo", "r1", flat))
    row = diagnose_cells(runs, hist, d, 10, 300).set_index("cell").loc["A=lo"]
    assert row["verdict"] != "not_converged" and row["still_improving"]
    assert row["improving_why"].startswith("its mean validation loss is lowest at the last "
                                           "epoch (12 of 12; it fell ")


# ------------------------------------------------------------------ figure data
def test_cell_bars_info_exact():
    cells = pd.DataFrame({
        "cell": ["a=0", "a=1", "a=2"], "label": ["baseline", "a=1", "a=2"],
        "roles": ["baseline", "only a=1", "only a=2"], "n": [2, 1, 0],
        "mean": [0.5, 0.75, math.nan], "ci_low": [0.25, math.nan, math.nan],
        "ci_high": [0.875, math.nan, math.nan]})
    runs = pd.DataFrame({"cell": ["a=0", "a=0", "a=1", "a=1"], "state": [
        "COMPLETE", "COMPLETE", "COMPLETE", "FAIL"], "value": [0.25, 0.75, 0.75, math.nan]})
    cells["flags"] = ["n<3", "n<3", ""]
    # the axis: data .25-.75 and the interval's .875, padded by 8%: (.2, .925)
    assert _cell_bars_info(cells, runs, "best_val_acc") == CellBarsInfo(
        "best_val_acc", ("a=0", "a=1"), ("baseline", "a=1"), (0.5, 0.75), (0.375, 0.0),
        (0.25, 0.0), (2, 1), (True, False), ((0.25, 0.75), (0.75,)), ("n<3", "n<3"),
        (pytest.approx(0.2), pytest.approx(0.925)))
    # an interval far wider than the data runs off the axis (1.5x the data's span at most);
    # an accuracy's axis stays inside [0, 1], a loss's does not
    cells.loc[0, ["ci_low", "ci_high"]] = [-3.0, 1.5]
    assert _cell_bars_info(cells, runs, "best_val_acc").y_range == (0.0, 1.0)
    lo, hi = _cell_bars_info(cells, runs, "best_val_loss").y_range
    assert (lo, hi) == (pytest.approx(-0.5 - 0.08 * 2.0), pytest.approx(1.5 + 0.08 * 2.0))


def test_effects_info_marks_helps_hurts_unclear_by_direction():
    effects = pd.DataFrame({
        "label": ["x", "y", "z", "w"], "kind": ["alone", "alone", "in_full", "alone"],
        "effect": [0.5, -0.25, 0.125, math.nan], "ci_low": [0.25, -0.5, math.nan, 0.0],
        "ci_high": [0.75, -0.125, math.nan, 0.0], "p_value": [0.01, 0.02, math.nan, 0.5]})
    inter = pd.DataFrame({"label": ["x x y"], "interaction": [0.0], "ci_low": [-0.5],
                          "ci_high": [0.5], "p_value": [1.0]})
    got = _effects_info(effects, inter, "best_val_acc", True)
    assert got == EffectsInfo("best_val_acc", True, ("x", "y", "z", "x x y"),
                              ("alone", "alone", "in_full", "interaction"),
                              (0.5, -0.25, 0.125, 0.0), (0.25, -0.5, 0.125, -0.5),
                              (0.75, -0.125, 0.125, 0.5), (0.01, 0.02, None, 1.0),
                              ("helps", "hurts", "unclear", "unclear"))
    # for a loss, lower is better: the same intervals read the other way round
    assert _effects_info(effects, inter, "best_val_loss", False).verdicts[:2] == ("hurts", "helps")


def test_forest_plot_puts_p_values_beside_the_rows_never_on_markers():
    effects = pd.DataFrame({
        "label": ["x", "y"], "kind": ["alone", "alone"], "effect": [0.5, -0.25],
        "ci_low": [0.25, -0.5], "ci_high": [0.75, 0.125], "p_value": [0.0104, 0.0004]})
    fig = _draw_effects(_effects_info(effects, pd.DataFrame(), "best_val_acc", True, mde=0.3))
    drawn = [t for t in fig.data if t.x and t.x[0] is not None]
    assert [t.mode for t in drawn] == ["markers", "markers"] and all(t.text is None
                                                                     for t in drawn)
    assert list(fig.layout.yaxis.ticktext) == ["x  (p=0.010)", "y  (p <0.001)"]
    assert fig.layout.yaxis.type == "category"
    (band,) = fig.layout.shapes[:1]
    assert (band.x0, band.x1) == (-0.3, 0.3)


def test_report_omits_notes_when_there_are_none_and_reads_effects_first():
    d = Design("one_at_a_time", {"A": ("lo", "hi")}, {"A": "lo"}, {"A": "hi"})
    runs = _runs({"A=lo": [0.80, 0.82, 0.84], "A=hi": [0.85, 0.86, 0.88]})
    stats = analyze_ablation(runs, d)
    assert stats.notes == []
    data = AblationData("a", runs.assign(diagnosis=None), pd.DataFrame(
        columns=["run_id", "cell", "seed", "epoch", "train_loss", "train_acc", "val_loss",
                 "val_acc"]))
    keys = [sec.key for sec in build_ablation_sections(data, stats, d, [0, 1, 2])]
    assert keys == ["overview", "cells", "reading", "effects", "interactions", "curves",
                    "diagnosis"]
    stats.notes.append("something")
    assert build_ablation_sections(data, stats, d, [0, 1, 2])[-1].key == "notes"


def test_interaction_info_exact():
    g = pd.DataFrame({"factor_a": ["A"] * 4, "level_a": ["lo", "lo", "hi", "hi"],
                      "factor_b": ["B"] * 4, "level_b": ["lo", "hi", "lo", "hi"],
                      "mean": [0.5, 0.625, 0.75, math.nan], "ci_low": [0.25, math.nan, 0.5, 0.0],
                      "ci_high": [0.75, math.nan, 1.0, 0.0]})
    assert _interaction_info(g, "m") == InteractionInfo("m", (InteractionPanel(
        "A", "B", ("lo", "hi"), (
            InteractionLine("lo", ("lo", "hi"), (0.5, 0.75), (0.25, 0.25), (0.25, 0.25)),
            InteractionLine("hi", ("lo",), (0.625,), (0.0,), (0.0,)))),))


def test_cell_curves_info_mean_and_std_over_seeds():
    h = pd.DataFrame({
        "run_id": ["r1", "r1", "r2", "r2", "r3"], "cell": ["c", "c", "c", "c", "d"],
        "epoch": [1, 2, 1, 2, 1], "val_acc": [0.25, 0.5, 0.75, math.nan, 0.5],
        "val_loss": [2.0, 1.0, 1.0, 1.0, 1.5], "train_acc": [0.5, 0.75, 0.5, 0.75, 0.5],
        "train_loss": [1.5, 1.0, 1.5, 1.0, 1.5]})
    # epoch 2 of r2 has a NaN and is dropped: epoch 2 is r1 alone (std 0)
    std1 = stat.stdev([0.25, 0.75])
    assert _cell_curves_info(h, [("c", "cell c"), ("d", "cell d"), ("e", "none")]) == \
        CellCurvesInfo((
            CellCurve("c", "cell c", 2, (1, 2), (0.5, 0.5), (std1, 0.0), (1.5, 1.0),
                      (stat.stdev([2.0, 1.0]), 0.0), (0.5, 0.75), (1.5, 1.0)),
            CellCurve("d", "cell d", 1, (1,), (0.5,), (0.0,), (1.5,), (0.0,), (0.5,), (1.5,))))


# ------------------------------------------------------------------ schema
def _tiny_base(**train: Any) -> dict[str, Any]:
    return {"name": "tinybase", "data": {"dataset": "digits", "batch_size": 64, "subset": 128},
            "model": {"arch": "mlp", "hidden": [16]},
            "train": {"max_epochs": 2, "optimizer": "adam", "lr": 0.01, "num_threads": 1,
                      **train},
            "report": {"enabled": False}}


def test_factor_forms_and_yaml_level_names(tmp_path: Path):
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump({"name": "forms", "base": "base.yaml"}) + """
factors:
  dropout: {off: 0.0, on: 0.5}
  norm:
    key: model.norm_layer
    levels: {off: none, on: batch}
    baseline: on
  sched:
    levels:
      flat: {scheduler: constant}
      step: {train.scheduler: {name: step, step_size: 1}, lr: 0.02}
design: full_factorial
seeds: [3, 4]
""")
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(_tiny_base()))
    plan = load_ablation(path, ["seeds=[5]", "train.max_epochs=1"])
    assert plan.seeds == [5] and len(plan.cells) == 8
    assert plan.design.factors == {"dropout": ("off", "on"), "norm": ("off", "on"),
                                   "sched": ("flat", "step")}
    assert plan.design.baseline == {"dropout": "off", "norm": "on", "sched": "flat"}
    cfg = plan.config("dropout=on,norm=off,sched=step", 5)
    assert cfg.model.drop_rate == 0.5 and cfg.model.norm_layer == "none"
    assert cfg.train.scheduler.name == "step" and cfg.train.lr == 0.02
    assert cfg.train.seed == 5 and cfg.data.seed == 5 and cfg.train.max_epochs == 1
    assert cfg.name == "forms"
    assert plan.config_hash("dropout=on,norm=off,sched=step", 5) != \
        plan.config_hash("dropout=on,norm=off,sched=step", 6)


@pytest.mark.parametrize("change, field, fragment", [
    ({"factors": {"dropout": {"off": 0.0}}}, "factors.dropout", "two or more levels"),
    ({"factors": {"batch_norm": {"off": "none", "on": "batch"}}}, "factors",
     "must be a config key or alias"),
    ({"factors": {"dropout": {"key": "model.drop_rate", "levels": {"a=b": 0.1, "c": 0.2}}}},
     "factors.dropout", "no '=' or ','"),
    ({"factors": {"d1": {"key": "dropout", "levels": {"a": 0.1, "b": 0.2}},
                  "d2": {"levels": {"a": {"model.drop_rate": 0.3}, "b": {"lr": 0.1}}}}},
     "factors", "both set model.drop_rate"),
    ({"factors": {"seed": {"a": 1, "b": 2}}}, "factors.seed", "seeds come from"),
    ({"design": "latin_square"}, "design", "one_at_a_time"),
    ({"seeds": [1, 1]}, "seeds", "distinct"),
    ({"factors": {"lr": {"a": 0.1, "b": -1.0}}}, "train.lr", "greater than 0"),
    ({"factors": {"arch": {"mlp": {"model.arch": "mlp"}, "x": {"model.arch": "no_such_net"}}}},
     None, "no_such_net"),
    ({"metric": "test_acc"}, "metric", "evaluate_test"),
    ({"colour": "red"}, "colour", "unknown key"),
])
def test_bad_ablations_raise_naming_the_field(change, field, fragment):
    raw = {"name": "bad", "base": _tiny_base(), "factors": {"dropout": {"off": 0.0, "on": 0.5}},
           **change}
    with pytest.raises(ConfigError) as err:
        plan_ablation(raw, "bad.yaml")
    if field:
        assert err.value.field == field, str(err.value)
    assert fragment in str(err.value)


def test_set_cannot_override_a_factor_or_the_seeds():
    raw = {"name": "s", "base": _tiny_base(), "factors": {"dropout": {"off": 0.0, "on": 0.5}}}
    with pytest.raises(ConfigError, match="factor 'dropout' sets this key"):
        plan_ablation(raw, "s.yaml", ["model.drop_rate=0.1"])
    with pytest.raises(ConfigError, match="seeds come from"):
        plan_ablation(raw, "s.yaml", ["seed=3"])


@pytest.mark.parametrize("path", sorted((ROOT / "studies" / "ablations").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_shipped_ablations_validate_every_cell(path: Path):
    plan = load_ablation(path)  # the schema, the base study file and every cell's config
    assert plan.name == yaml.safe_load(path.read_text())["name"]
    assert len(plan.cells) >= 2 and len(plan.seeds) >= 2
    # each cell trains a different concrete config
    assert len({plan.config_hash(c.id, plan.seeds[0]) for c in plan.cells}) == len(plan.cells)


def test_cli_bad_file_exits_2_before_writing(tmp_path: Path, monkeypatch, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "base": _tiny_base(), "factors": {
        "arch": {"levels": {"mlp": {"model.arch": "mlp"}, "nin": {"model.arch": "nin"}}}}}))
    code, out, err = _cli("ablate", str(path), cwd=tmp_path, monkeypatch=monkeypatch,
                          capsys=capsys)
    # nin does not take mlp's `hidden`: the cell's real config validation says so
    assert code == 2 and "cell arch=nin" in err and "hidden" in err, err
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "dashboards").exists()


# ------------------------------------------------------------------ real ablations
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow SQLite store for the module: a fresh one costs seconds of migrations."""
    return f"sqlite:///{tmp_path_factory.mktemp('ablation-store')}/mlflow.db"


def test_quick_digits_through_the_cli_logs_reports_and_resumes(tmp_path: Path, store: str,
                                                               monkeypatch, capsys):
    args = ("ablate", str(QUICK), "--tracking-uri", store, "--set", "seeds=[0,1]",
            "--set", "train.max_epochs=2", "--set", "data.subset=192",
            "--set", "train.limit_val_batches=2")
    code, out, err = _cli(*args, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert "8 cells x 2 seeds = 16 runs, 0 already finished, 16 to run" in out
    assert "[16/16] cell-dropout=on,batch_norm=on,lr_schedule=constant-seed1" in out
    assert "dropout=on alone (vs baseline)" in out and "p (Welch)" in out
    # honest at small n: 2 seeds flagged, the detectable difference stated, effects in words
    assert "design       With 2 runs per cell" in out and "in words" in out
    assert "2 runs per cell, fewer than 3 seeds" in out
    assert "distinguishable from noise (p=" in out
    report = tmp_path / "dashboards" / "quick_digits" / "index.html"
    assert f"report       {Path('dashboards') / 'quick_digits' / 'index.html'}" in out

    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("quick_digits")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    (summary,) = [r for r in runs if r.data.tags.get("hpstudy.kind") == "ablation_summary"]
    cells = [r for r in runs if r.data.tags.get("hpstudy.kind") == "ablation"]
    assert len(cells) == 16 and summary.info.status == "FINISHED"
    plan = load_ablation(QUICK, ["seeds=[0,1]", "train.max_epochs=2", "data.subset=192",
                                 "train.limit_val_batches=2"])
    assert {(r.data.tags["hpstudy.cell"], int(r.data.tags["hpstudy.seed"])) for r in cells} == \
        {(c.id, s) for c in plan.cells for s in (0, 1)}
    for r in cells:
        tags, params = r.data.tags, r.data.params
        cell, seed = tags["hpstudy.cell"], int(tags["hpstudy.seed"])
        assert r.info.run_name == f"cell-{cell}-seed{seed}"
        assert r.info.status == "FINISHED" and tags["hpstudy.state"] == "COMPLETE"
        assert tags["mlflow.parentRunId"] == summary.info.run_id
        assert tags["hpstudy.diagnosis"] and tags["hpstudy.ablation"] == "quick_digits"
        levels = dict(kv.split("=") for kv in cell.split(","))
        assert {k: tags[f"hpstudy.factor.{k}"] for k in levels} == levels
        # the concrete config trained: the cell's levels and the seed
        assert float(params["model.drop_rate"]) == {"off": 0.0, "on": 0.5}[levels["dropout"]]
        assert params["model.norm_layer"] == {"off": "none", "on": "batch"}[levels["batch_norm"]]
        assert params["train.scheduler.name"] == levels["lr_schedule"]
        assert params["train.seed"] == params["data.seed"] == str(seed)
        assert params["train.max_epochs"] == "2"
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val_acc")] == [1, 2]
    arts = {a.path for a in client.list_artifacts(summary.info.run_id)}
    assert {"dashboard", "ablation", "ablation.yaml", "base_config.yaml"} <= arts
    stats = json.loads(open(client.download_artifacts(summary.info.run_id,
                                                      "ablation/stats.json")).read())
    assert [c["n"] for c in stats["cells"]] == [2] * 8
    assert all(0.0 <= c["ci_low"] <= c["ci_high"] <= 1.0 for c in stats["cells"])
    assert all("n<3" in c["flags"] for c in stats["cells"])
    assert stats["design"]["n_per_cell"] == 2 and stats["design"]["mde"] > 0
    full = next(c for c in stats["cells"] if c["label"] == "full")
    best = [r.data.metrics["best_val_acc"] for r in cells
            if r.data.tags["hpstudy.cell"] == full["cell"]]
    assert full["mean"] == pytest.approx(sum(best) / 2)

    page = report.read_text()
    for section in ("overview", "cells", "reading", "effects", "interactions", "curves",
                    "diagnosis", "notes"):
        assert f'<section id="{section}">' in page
    assert page.count('class="plotly-graph-div"') == 3  # cells, effects, curves
    assert "interactions need a full_factorial design" in page

    # rerun: every (cell, seed) finished with the same config -> nothing is trained
    code, out, err = _cli(*args, "--no-report", cwd=tmp_path, monkeypatch=monkeypatch,
                          capsys=capsys)
    assert code == 0, err
    assert "16 already finished, 0 to run" in out and "[1/" not in out
    assert len(client.search_runs([exp.experiment_id], max_results=1000)) == 17


def test_diverged_runs_are_recorded_excluded_and_rerun(store: str, tmp_path: Path):
    raw = {"name": "diverging", "base": _tiny_base(optimizer="sgd"), "design": "full_factorial",
           "factors": {"lr": {"ok": 0.1, "huge": 1e12}, "dropout": {"off": 0.0, "on": 0.25}},
           "seeds": [0, 1], "report": {"dir": str(tmp_path / "dash")}}
    plan = plan_ablation(raw, "diverging.yaml", ["seeds=[0]"])
    lines: list[str] = []
    s = run_ablation(plan, tracking_uri=store, echo=lines.append)
    assert (s.planned, s.ran, s.failed) == (4, 4, 2)
    assert any("FAILED (diverged: non-finite" in ln for ln in lines)
    cells = s.stats.cells.set_index("label")
    assert cells.loc["lr=huge", "n"] == 0 and cells.loc["lr=huge", "n_failed"] == 1
    assert sum("excluded from the statistics: diverged" in n for n in s.stats.notes) == 2
    main = s.stats.effects.set_index("factor").loc["lr"]
    assert math.isnan(main["effect"]) and main["note"] == "a compared cell has no successful run"
    assert Path(s.report_path).is_file()
    failed = [r for r in MlflowClient(tracking_uri=store).search_runs(
        [s.experiment_id], "attributes.status = 'FAILED'")]
    assert len(failed) == 2
    assert all(r.data.tags["hpstudy.fail_reason"].startswith("diverged") for r in failed)

    # resume with a second seed: finished runs are kept, the failed ones run again
    again = run_ablation(plan_ablation(raw, "diverging.yaml"), tracking_uri=store, report=False)
    assert (again.resumed, again.ran, again.failed) == (2, 6, 4)
    assert list(again.stats.cells["n"]) == [2, 2, 0, 0]


@pytest.mark.dist
@pytest.mark.slow  # tens of seconds of the 15-minute default suite: `make test-all` runs it
def test_ddp_cells_train_in_child_processes_exactly_once_each(tmp_path: Path):
    # train.devices: 2 with strategy ddp inside `hpstudy ablate` would relaunch the whole
    # command per rank; the cells go through the child-process path instead (2 cells x 2 seeds)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    base = _tiny_base()
    base["data"].update({"subset": 180, "batch_size": 32})
    base["train"].update({"devices": 2, "accelerator": "cpu", "strategy": "ddp",
                          "max_epochs": 1, "limit_train_batches": 2})
    raw = {"name": "ddp-cells", "base": base, "factors": {"dropout": {"off": 0.0, "on": 0.3}},
           "seeds": [0, 1], "report": {"enabled": False}}
    s = run_ablation(plan_ablation(raw, "ddp-cells.yaml"), tracking_uri=store)
    assert (s.planned, s.ran, s.failed) == (4, 4, 0)
    runs = MlflowClient(tracking_uri=store).search_runs(
        [s.experiment_id], "tags.`hpstudy.kind` = 'ablation'")
    assert len(runs) == 4
    assert sorted((r.data.tags["hpstudy.cell"], r.data.tags["hpstudy.seed"]) for r in runs) == [
        ("dropout=off", "0"), ("dropout=off", "1"), ("dropout=on", "0"), ("dropout=on", "1")]
    for r in runs:
        assert r.info.status == "FINISHED" and r.data.tags["hpstudy.state"] == "COMPLETE"
        # the validation accuracy is reduced over both ranks: k / n_val, not k / (n_val / 2)
        n_val = int(r.data.params["data.n_val"])
        correct = r.data.metrics["val_acc"] * n_val
        assert n_val % 2 == 1 and abs(correct - round(correct)) < 1e-4


def test_interval_coverage_benchmark_runs(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import ablation_intervals

    rows = ablation_intervals.main(["--cells", "300", "--runs", "2", "3"])
    assert "coverage / median" in capsys.readouterr().out
    assert len(rows) == 2 * len(ablation_intervals.CASES)
    # the interval hpstudy reports covers at least as often as the clipped t interval, and
    # near its nominal 95% where the t interval alone falls short (2 runs near 100%)
    for r in rows:
        assert r["hpstudy"][0] >= r["t"][0] and r["hpstudy"][0] >= 0.9, r
    assert min(r["t"][0] for r in rows if r["runs"] == 2) < 0.9
