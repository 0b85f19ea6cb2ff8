"""Guided tuning: the budget, the lr range test, the rules, the plan's checks, and real guides.

The pure pieces are checked exactly; the guide itself runs for real (Lightning
Trainer, Optuna and MLflow SQLite stores in tmp_path) on a tiny digits study:
a stage made to fail stops the command with exit 3 and the course's advice,
the same command then resumes there, every stage is accepted, the epoch
budget holds, and the report and the collect API show the stages.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from conftest import run_cli, tiny_study
from mlflow import MlflowClient

from hpstudy.analyze import collect_guide, flat_config, trial_epochs
from hpstudy.config import ConfigError, from_dict
from hpstudy.guide import (
    LR_BASE,
    WIDTH_SCALE,
    Budget,
    TrialView,
    find_range,
    plan_guide,
    rules,
    scale_width,
    split,
    width_knobs,
)
from hpstudy.names import stage_study_name
from hpstudy.report.guide import _lr_range_info, _stage_epochs_info, _stage_fits_info


# ------------------------------------------------------------------ budget
def test_split_is_proportional_and_meets_floors_in_order():
    assert split(360, {"a": 0.1, "b": 0.3, "c": 0.6}) == pytest.approx(
        {"a": 36, "b": 108, "c": 216})
    # a floor raises a share; the later stages share what is left
    assert split(40, {"a": 0.1, "b": 0.3, "c": 0.6}, {"a": 6, "b": 15, "c": 15}) == \
        pytest.approx({"a": 6, "b": 15, "c": 19})
    # a floor the total cannot meet takes what there is
    assert split(5, {"a": 1, "b": 1}, {"a": 8}) == pytest.approx({"a": 5, "b": 0})


def test_budget_resplits_what_is_left_when_a_stage_finishes_early():
    b = Budget(360, {"1-anything": 0.1, "2-everything": 0.3, "3-right-thing": 0.6})
    assert b.plan() == pytest.approx({"1-anything": 36, "2-everything": 108,
                                      "3-right-thing": 216})
    b.add("1-anything", 14.5)  # 21.5 of its 36 unspent
    assert b.left == pytest.approx(345.5)
    assert b.split_from("2-everything") == pytest.approx(
        {"2-everything": 345.5 / 3, "3-right-thing": 345.5 * 2 / 3})
    b.add("2-everything", 400)
    assert b.left == 0.0
    with pytest.raises(ValueError):
        Budget(0, {"a": 1})


def test_trial_epochs_counts_what_was_trained():
    assert trial_epochs({"epochs": 7}, [0.5] * 7) == 7
    assert trial_epochs({}, [0.1, 0.2, 0.3]) == 3  # crashed before it was recorded
    assert trial_epochs({"epochs": 2}, [0.1, 0.2, 0.3]) == 3  # never fewer than reported
    assert trial_epochs({"epochs": True}, 4) == 4


# ------------------------------------------------------------------ lr range test
def _curve(n: int = 60):
    lrs = [1e-6 * (1e6) ** (i / (n - 1)) for i in range(n)]
    # flat until 1e-4, falls until 1e-2, explodes after: the textbook range test
    losses = []
    for lr in lrs:
        x = math.log10(lr)
        losses.append(2.3 if x < -4 else (2.3 - 0.8 * (x + 4) if x < -2 else 0.7 + 3 * (x + 2)))
    return lrs, losses


def test_find_range_takes_the_decades_below_the_minimum_loss():
    lrs, losses = _curve()
    r = find_range(lrs, losses, bounds=(1e-6, 0.3), decades=2, batch_size=64, steps_per_epoch=20)
    assert r.found
    assert r.lr_min_loss == pytest.approx(1e-2, rel=0.3)
    assert r.high == r.lr_min_loss and r.low == pytest.approx(r.high / 100)
    assert 1e-4 < r.lr_steepest < r.lr_min_loss
    assert r.epochs == pytest.approx(60 / 20)
    assert "lr searched in" in r.note


def test_find_range_stays_inside_the_study_bounds_and_below_one():
    lrs, losses = _curve()
    r = find_range(lrs, losses, bounds=(3e-3, 5e-3), decades=2)
    assert (r.low, r.high) == (pytest.approx(3e-3), pytest.approx(5e-3))
    # the loss bottoming out past the study's top: capped there, and said so
    shifted = [lr * 100 for lr in lrs]
    r = find_range(shifted, losses, bounds=(1e-4, 0.3), decades=1)
    assert r.high == pytest.approx(0.3) and r.low == pytest.approx(0.03)
    assert "ends at 0.3" in r.note


def test_find_range_without_a_fall_searches_the_whole_study_range():
    lrs = [1e-6 * 10 ** (i / 10) for i in range(40)]
    r = find_range(lrs, [2.3] * 40, bounds=(1e-4, 0.3))
    assert not r.found and (r.low, r.high) == (1e-4, 0.3)
    assert "never fell" in r.note
    r = find_range(lrs[:2], [2.3, float("nan")], bounds=(1e-4, 0.3))
    assert not r.found and "too few" in r.note


# ------------------------------------------------------------------ capacity
def test_scale_width_scales_numbers_and_keeps_the_rest():
    assert scale_width([16, 32], 2) == [32, 64]
    assert scale_width(64, 0.5) == 32 and scale_width(3, 0.1) == 1  # at least 1
    assert scale_width(1.0, 2) == 2.0
    assert scale_width([64, "M", [128, 96]], 0.5) == [32, "M", [64, 48]]
    assert scale_width(0, 4) == 0 and scale_width(None, 2) is None and scale_width(True, 2)


def test_stage_two_grows_capacity_in_the_listed_order():
    from hpstudy.guide.stages import growth

    cfg = from_dict(_study())
    plan = plan_guide(cfg, "planned.yaml")
    assert growth(plan.capacity, cfg) == [{WIDTH_SCALE: 1.0}, {WIDTH_SCALE: 2.0},
                                          {WIDTH_SCALE: 4.0}]
    raw = _study(everything={"capacity": {"model.hidden": [[16], [32], [64], [128]],
                                          "model.arch": ["mlp"]}})
    cfg = from_dict(raw)
    plan = plan_guide(cfg, "planned.yaml")
    # from the file's value ([32]) up; the single arch stays
    assert growth(plan.capacity, cfg) == [{"model.hidden": [32], "model.arch": "mlp"},
                                          {"model.hidden": [64], "model.arch": "mlp"},
                                          {"model.hidden": [128], "model.arch": "mlp"}]


def test_stage_two_answers_the_last_diagnosis():
    from hpstudy.guide.stages import next_step

    ladder = [{"model.hidden": 32}, {"model.hidden": 64}, {"model.hidden": 128}]
    band = (1e-4, 1e-2)
    last = {"model.hidden": 32, "train.optimizer": "adam", "train.lr": 1e-3}
    step, why = next_step(last, "not_converged", ladder, band, [last])
    assert step["train.lr"] == pytest.approx(1e-3 * math.sqrt(10)) and step["model.hidden"] == 32
    assert "raise the lr" in why
    step, why = next_step(last, "diverged", ladder, band, [last])
    assert step["train.lr"] == pytest.approx(1e-3 / math.sqrt(10)) and "reduce" in why
    step, why = next_step(last, "good_fit", ladder, band, [last])
    assert step == {**last, "model.hidden": 64} and "grow capacity" in why
    # a move used up falls back to the other one: the lr at the top of its band
    top = {**last, "train.lr": 1e-2}
    step, why = next_step(top, "not_converged", ladder, band, [top])
    assert step == {**top, "model.hidden": 64} and "top of its band" in why
    # capacity at the top of its ladder: raise the lr; nothing left: the sampler
    high = {**last, "model.hidden": 128}
    assert next_step(high, "underfit", ladder, band, [high])[0]["train.lr"] > 1e-3
    done = {**high, "train.lr": 1e-2}
    assert next_step(done, "underfit", ladder, band, [done])[0] is None
    # never a configuration that already ran; off the ladder: the sampler
    assert next_step(last, "good_fit", ladder, band, [last, {**last, "model.hidden": 64}])[0] \
        == {**last, "train.lr": pytest.approx(1e-3 * math.sqrt(10))}
    assert next_step({**last, "model.hidden": 48}, "good_fit", ladder, band, [])[0] is None


def test_width_knobs_come_from_the_file_or_the_builder():
    assert width_knobs({"arch": "baseline_cnn", "widths": [16, 32]}) == {"widths": [16, 32],
                                                                        "hidden": 200}
    assert width_knobs({"arch": "mlp"}) == {"hidden": (256, 128)}
    assert width_knobs({"arch": "efficientnet_b0"}) == {"width_mult": 1.0}
    # the generic cnn's width_mult is its growth per stage, not a scale of the network
    assert width_knobs({"arch": "cnn", "width": 32, "width_mult": 2.0}) == {"width": 32}
    assert width_knobs({"arch": "alexnet"}) == {}


# ------------------------------------------------------------------ rules
def _t(n, value, train, verdict, state="COMPLETE", classes=10, n_val=None):
    return TrialView(n, state, value, verdict, f"{verdict} reason", (f"advice for {verdict}",),
                     train_acc=train, val_acc=value, num_classes=classes, n_val=n_val,
                     epochs=3, overrides={"train.lr": 0.01 * (n + 1)})


def test_anything_needs_training_accuracy_above_chance_by_the_margin():
    trials = [_t(0, 0.30, 0.27, "not_converged"), _t(1, 0.25, 0.35, "not_converged"),
              _t(2, 0.50, 0.80, "good_fit", state="PRUNED")]
    j = rules.judge_anything(trials, chance_margin=0.2, num_classes=None)
    # chance 10%, bar 28%: trial 0 (27%) misses it; the pruned trial does not count
    assert j.accepted and j.winner.number == 1
    assert j.evidence["bar"] == pytest.approx(0.28) and j.evidence["passing"] == 1
    j = rules.judge_anything(trials, chance_margin=0.5, num_classes=None)
    assert not j.accepted and j.examined.number == 1
    assert "below 55.0%" in j.line
    assert j.advice[0].startswith("When stuck, reduce the learning rate")


def test_everything_needs_the_target_and_a_settled_fit():
    trials = [_t(0, 0.90, 0.995, "not_converged"), _t(1, 0.95, 0.992, "overfit"),
              _t(2, 0.97, 0.97, "good_fit")]
    j = rules.judge_everything(trials, target=0.99, epochs=15, capacity="width x [1, 2]")
    assert j.accepted and j.winner.number == 1 and j.evidence["verdict"] == "overfit"
    assert rules.fits(trials[1], 0.99) and not rules.fits(trials[0], 0.99)
    j = rules.judge_everything(trials[2:], target=0.99, epochs=15, capacity="width x [1, 2]")
    assert not j.accepted
    assert "capacity or training length is the problem" in j.line
    assert any("Raise capacity: width x [1, 2]" in a for a in j.advice)
    assert any("15 epochs per trial" in a for a in j.advice)
    # a good fit's own advice (compare with the best) is no advice for a failed stage
    assert "advice for good_fit" not in j.advice
    j = rules.judge_everything(trials[:1], target=0.99, epochs=15, capacity="c")
    assert not j.accepted and "not settled" in j.line


def test_right_thing_needs_validation_to_follow_at_stage_twos_level():
    trials = [_t(0, 0.990, 1.0, "overfit"), _t(1, 0.985, 0.98, "good_fit"),
              _t(2, 0.970, 0.90, "underfit")]
    j = rules.judge_right_thing(trials, baseline=0.98, baseline_trial=3)
    # the overfit trial scored higher but does not count; the note says so
    assert j.accepted and j.winner.number == 1
    assert "trial 0 scored 0.9900 but reads overfit" in j.line
    j = rules.judge_right_thing(trials[:1], baseline=0.98)
    assert not j.accepted and "validation does not follow yet" in j.line
    assert j.advice[0].startswith("Add or raise dropout")
    j = rules.judge_right_thing(trials[1:], baseline=0.99)
    assert not j.accepted and "regularization cost accuracy" in j.line
    # one image short of stage 2's best on 75 validation images is within its noise
    noisy = [_t(0, 0.9467, 0.97, "good_fit", n_val=75)]
    j = rules.judge_right_thing(noisy, baseline=0.96)
    assert j.accepted and j.evidence["floor"] == pytest.approx(0.96 - math.sqrt(.96 * .04 / 75))
    assert "one standard error on 75 validation images" in j.rule
    assert not rules.judge_right_thing([_t(0, 0.92, 0.97, "good_fit", n_val=75)],
                                       baseline=0.96).accepted


# ------------------------------------------------------------------ the plan's checks
def _study(**guide):
    return tiny_study("planned", data={"dataset": "digits", "batch_size": 32, "subset": 400},
                      model={"arch": "mlp", "hidden": [32]},
                      train={"max_epochs": 4, "num_threads": 1},
                      search={"n_trials": 4, "space": "course"}, guide=guide)


def test_the_guide_quickstart_plans_within_its_budget():
    from hpstudy.config import load_study

    path = Path(__file__).resolve().parents[1] / "studies" / "guide_quickstart.yaml"
    plan = plan_guide(load_study(path), str(path))
    assert plan.budget == 180 and plan.batch_ref == 64
    assert plan.knobs == {"widths": [16, 32], "hidden": 64}
    assert plan.epochs("1-anything") == 5 and plan.epochs("3-right-thing") == 15


def test_plan_takes_its_ranges_from_the_study_space():
    plan = plan_guide(from_dict(_study()), "planned.yaml")
    assert plan.budget == 4 * 4  # search.n_trials x train.max_epochs
    assert plan.lr_bounds == (1e-4, 0.3) and plan.batch_sizes == [16, 32, 64, 128, 256]
    assert plan.batch_ref == 32 and plan.optimizer == "adam"
    assert list(plan.capacity) == [WIDTH_SCALE] and plan.knobs == {"hidden": [32]}
    # digits: no preset flips its images
    assert plan.regularizers["data.augmentation"].choices == ["none", "standard", "strong"]
    assert plan.regularizers["train.weight_decay"].allow_zero


@pytest.mark.parametrize("guide, field, fragment", [
    ({"anything": {"batch_sizes": [16, 48]}}, "guide.anything.batch_sizes", "powers of 2"),
    ({"everything": {"optimizers": ["sgd"]}}, "guide.everything.optimizers", "Adam family"),
    ({"everything": {"capacity": {"model.depth": [2, 4]}}}, "guide.everything.capacity.model.depth",
     "does not take depth"),
    ({"everything": {"capacity": {"guide.x": [1]}}}, "guide.everything.capacity.guide.x",
     "config keys"),
    ({"right_thing": {"space": {"augmentation": [["hflip"]]}}},
     "guide.right_thing.space.data.augmentation", "mirrors"),
    ({"budget_epochs": 5}, "guide.budget_epochs", "cannot run one trial of each stage"),
    ({"lr_range": {"min_lr": 0.5, "max_lr": 0.1}}, "guide.lr_range", "below max_lr"),
    ({"nope": 1}, "guide.nope", "unknown key"),
])
def test_bad_guide_settings_name_their_field(guide, field, fragment):
    with pytest.raises(ConfigError) as e:
        plan_guide(from_dict(_study(**guide)), "planned.yaml")
    assert e.value.field == field, str(e.value)
    assert fragment in str(e.value)


def test_an_architecture_without_width_knobs_must_list_its_capacity():
    raw = _study()
    raw["model"] = {"arch": "alexnet"}
    with pytest.raises(ConfigError) as e:
        plan_guide(from_dict(raw), "planned.yaml")
    assert e.value.field == "guide.everything.capacity" and "alexnet" in str(e.value)
    raw["guide"] = {"everything": {"capacity": {"model.arch": ["alexnet", "alexnet_small"]}}}
    assert "model.arch" in plan_guide(from_dict(raw), "planned.yaml").capacity


def test_bad_guide_input_exits_2_before_anything_is_written(tmp_path, write_study, monkeypatch,
                                                            capsys):
    path = write_study(_study(budget_epochs=3))
    code, out, err = run_cli("guide", str(path), monkeypatch=monkeypatch, cwd=tmp_path,
                             capsys=capsys)
    assert code == 2 and "guide.budget_epochs" in err and "cannot run one trial" in err
    code, _, err = run_cli("guide", str(path), "--budget-epochs", "20", "--set",
                           "guide.anything.batch_sizes=[24]", monkeypatch=monkeypatch,
                           cwd=tmp_path, capsys=capsys)
    assert code == 2 and "guide.anything.batch_sizes" in err
    assert not (tmp_path / "mlruns" / "optuna.db").exists()


# ------------------------------------------------------------------ real guides
def _guide_study(**guide):
    base = {"budget_epochs": 40, "lr_range": {"steps": 12},
            "anything": {"trials": 2, "epochs": 2},
            "everything": {"train_acc": 0.9, "width_scales": [1, 4], "epochs": 6},
            "right_thing": {"sgd_trials": 1, "trials": 2}}
    for k, v in guide.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return tiny_study("tg", data={"dataset": "digits", "batch_size": 32, "subset": 400},
                      model={"arch": "mlp", "hidden": [32]},
                      train={"max_epochs": 6, "lr": 0.003, "scheduler": "cosine",
                             "num_threads": 1},
                      search={"n_trials": 4, "sampler": {"name": "tpe", "seed": 0},
                              "pruner": "none", "space": "course"},
                      guide=base)


def _stage(name: str, storage: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state.is_finished()]


def test_a_failed_stage_stops_with_advice_and_the_rerun_resumes_there(tmp_path: Path,
                                                                       write_study, monkeypatch,
                                                                       capsys):
    """Stage 2 cannot pass in one epoch (a single epoch is never a settled fit): exit 3
    with the diagnosis and the advice; the rerun keeps stage 1, continues stage 2 and ends
    with every stage accepted, inside the epoch budget."""
    path = write_study(_guide_study(everything={"epochs": 1, "trials": 1}))
    code, out, err = run_cli("guide", str(path), "-q", monkeypatch=monkeypatch, cwd=tmp_path,
                             capsys=capsys)
    assert code == 3, out + err
    assert "stopped      tg: stage 2-everything failed its rule" in out
    assert "a single epoch" in out  # the diagnosis of the trial it rests on
    assert "Train longer: 1 epochs per trial (guide.everything.epochs)." in out
    storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    s1 = _stage("tg/1-anything", storage)
    s2 = _stage("tg/2-everything", storage)
    assert s1.user_attrs["guide_outcome"] == "accepted"
    assert s2.user_attrs["guide_outcome"] == "failed"
    first_s1 = [t.number for t in s1.trials]
    assert len(_finished(s2)) == 1  # the next growth step waits in the queue

    # the parent runs say the same, linked by tags, in the study's experiment
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("tg")
    parents = {r.data.tags["hpstudy.stage"]: r for r in client.search_runs(
        [exp.experiment_id], filter_string="tags.`hpstudy.kind` = 'study'")}
    assert set(parents) == {"1-anything", "2-everything"}
    assert parents["2-everything"].data.tags["hpstudy.stage_outcome"] == "failed"
    assert parents["1-anything"].data.tags["hpstudy.guide"] == "tg"
    assert "training accuracy" in parents["1-anything"].data.tags["hpstudy.stage_target"]
    assert {a.path for a in client.list_artifacts(parents["1-anything"].info.run_id)} >= {
        "lr_range_test.csv", "lr_range_test.html", "guide_stage.json"}

    # the advice said: train longer; the same command resumes at stage 2
    code, out, err = run_cli("guide", str(path), "-q", "--set", "guide.everything.epochs=6",
                             "--set", "guide.everything.trials=3", monkeypatch=monkeypatch,
                             cwd=tmp_path, capsys=capsys)
    assert code == 0, out + err
    assert "accepted earlier" in out
    assert "3 stages accepted" in out
    assert [t.number for t in _stage("tg/1-anything", storage).trials] == first_s1  # not rerun
    s2 = _stage("tg/2-everything", storage)
    assert len(_finished(s2)) >= 2 and s2.user_attrs["guide_outcome"] == "accepted"
    s3 = _stage("tg/3-right-thing", storage)
    res3 = s3.user_attrs["guide_result"]
    assert s3.user_attrs["guide_outcome"] == "accepted"
    assert res3["value"] >= s2.user_attrs["guide_result"]["value"]  # stage 3's floor
    parts = [t.user_attrs.get("guide_part") for t in _finished(s3)]
    assert parts.count("search") == 2 and parts.count("sgd") == 1
    sgd = next(t for t in s3.trials if t.user_attrs.get("guide_part") == "sgd")
    assert sgd.params["train.optimizer"] in ("momentum", "nesterov")

    # stage 1 scaled the lr with the batch: lr = lr_base x batch / 32
    for t in s1.trials:
        o = t.user_attrs["guide_overrides"]
        want = t.params[LR_BASE] * t.params["data.batch_size"] / 32
        assert o["train.lr"] == pytest.approx(min(max(want, 1e-4), 0.3))

    # the budget: every epoch trained (and the range test's) within the 40 given
    guide = collect_guide("tg", storage, f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert list(guide.stages) == ["1-anything", "2-everything", "3-right-thing"]
    assert sum(guide.spent.values()) <= 40 + 1e-9
    assert guide.lr_range and guide.lr_range["epochs"] > 0
    assert guide.stopped is None
    # what each stage changed: the config after stage 2 holds its winner's values, and
    # its diff lists only values that differ from the config after stage 1
    after2 = flat_config(guide.config_after("2-everything"))
    for key, value in s2.user_attrs["guide_result"]["overrides"].items():
        assert after2[key] == value, key
    assert all(before != after for _, before, after in guide.changes("2-everything"))
    assert dict((k, b) for k, _, b in guide.changes("3-right-thing")).get(
        "train.optimizer") in (None, "adamw", "momentum", "nesterov")
    assert guide.stages["3-right-thing"].history()  # the winner's curves were read back

    # hpstudy report on the study's name: the guide's page (the study has no plain study)
    code, out, _ = run_cli("report", "tg", monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 0 and "dashboards/tg/guide/index.html" in out, out
    html = (tmp_path / "dashboards" / "tg" / "guide" / "index.html").read_text()
    for text in ("The three stages side by side", "LR range test", "fig-lr-range", "fig-fits",
                 "fig-epochs", "Trials of 3-right-thing", "2-everything", "accepted"):
        assert text in html, text


def test_stage_one_made_to_fail_stops_with_the_course_advice(stores):
    from hpstudy.api import guide

    raw = _guide_study(anything={"chance_margin": 0.999})  # 99.9% of the way in 2 epochs
    plan = plan_guide(from_dict(raw), "tg.yaml")
    lines: list[str] = []
    summary = guide(from_dict(raw), echo=lines.append, **stores)  # the Python entry point
    assert summary.stopped is not None and summary.stopped.stage == "1-anything"
    assert [r.stage for r in summary.stages] == ["1-anything"]
    assert "nothing learned" in summary.stopped.line
    assert "When stuck, reduce the learning rate" in summary.stopped.advice[0]
    assert summary.used <= plan.budget
    study = _stage(stage_study_name("tg", "1-anything"), stores["storage"])
    res = study.user_attrs["guide_result"]
    assert res["outcome"] == "failed" and res["evidence"]["bar"] == pytest.approx(0.9991)
    json.dumps(res)  # plain data
    assert any(line.strip().startswith("advice") for line in lines)


# ------------------------------------------------------------------ figures
def test_figure_infos_drop_what_cannot_be_drawn():
    info = _lr_range_info({"lrs": [1e-4, 1e-3, 0.0, 1e-2], "losses": [2.3, 2.0, 1.0, float("nan")],
                           "smoothed": [2.2, 2.1, 1.5, 1.9], "low": 1e-4, "high": 1e-2,
                           "lr_min_loss": 1e-2, "lr_steepest": None, "batch_size": 32})
    assert info.lrs == (1e-4, 1e-3) and info.losses == (2.3, 2.0)
    assert info.smooth_lrs == (1e-4, 1e-3, 1e-2) and info.lr_steepest is None
    with pytest.raises(ValueError):
        _lr_range_info({"lrs": [1e-3], "losses": []})
    fits = _stage_fits_info({"3-right-thing": [{"epoch": 1, "train_acc": 0.5, "val_acc": 0.6}],
                             "1-anything": [{"epoch": 1, "train_acc": float("nan"),
                                             "val_acc": 0.1},
                                            {"epoch": 2, "train_acc": 0.4, "val_acc": 0.3}]})
    assert [c.stage for c in fits.curves] == ["1-anything", "3-right-thing"]
    assert fits.curves[0].epochs == (2,)
    ep = _stage_epochs_info({"1-anything": 5.5}, {"1-anything": 4, "2-everything": 12}, 40)
    assert ep.stages == ("1-anything", "2-everything")
    assert ep.spent == (5.5, 0.0) and ep.planned == (4.0, 12.0) and ep.total == 40.0
