"""A real study end to end: Optuna storage + Lightning + MLflow store, all in tmp_path."""

from __future__ import annotations

import math

import optuna
import pytest
from conftest import tiny_study
from mlflow import MlflowClient

from hpstudy.api import run_config
from hpstudy.config import from_dict
from hpstudy.search import PARENT_RUN_ATTR, run_study
from hpstudy.train import fit

EPOCH_METRICS = {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s"}


def _runs(tracking_uri: str, experiment: str):
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def test_three_trial_study_writes_the_contract(stores):
    cfg = from_dict(tiny_study("contract"))
    summary = run_study(cfg, progress=False, **stores)
    assert summary.counts["complete"] == 3 and summary.counts["total"] == 3

    study = optuna.load_study(study_name="contract", storage=stores["storage"])
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2]

    client, runs = _runs(stores["tracking_uri"], "contract")
    parents = [r for r in runs if r.data.tags.get("hpstudy.kind") == "study"]
    children = [r for r in runs if r.data.tags.get("hpstudy.kind") == "trial"]
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert study.user_attrs[PARENT_RUN_ATTR] == parent.info.run_id
    assert parent.data.metrics["n_complete"] == 3
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert parent.info.status == "FINISHED"

    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    assert sorted(by_number) == [0, 1, 2]
    for t in trials:
        run = by_number[t.number]
        assert run.info.run_name == f"trial-{t.number:04d}"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["optuna.study_name"] == "contract"
        assert run.data.tags["hpstudy.state"] == "COMPLETE"
        assert run.info.status == "FINISHED"
        assert t.user_attrs["mlflow_run_id"] == run.info.run_id
        assert t.user_attrs["best_epoch"] in (1, 2)
        assert t.user_attrs["num_params"] > 0
        # params: the concrete config as flat dotted keys, sampled values included
        p = run.data.params
        assert float(p["train.lr"]) == pytest.approx(t.params["train.lr"])
        assert int(p["data.batch_size"]) == t.params["data.batch_size"]
        assert int(p["model.num_params"]) == t.user_attrs["num_params"]
        assert p["model.arch"] == "mlp" and p["train.optimizer"] == "adam"
        # metrics: one value per epoch, step = epoch, plus the summary metrics
        for key in EPOCH_METRICS:
            hist = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in hist] == [1, 2], key
        assert run.data.metrics["best_val_acc"] == pytest.approx(t.value)
        assert run.data.metrics["best_epoch"] == t.user_attrs["best_epoch"]
        arts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "history.csv"} <= arts
        csv = client.download_artifacts(run.info.run_id, "history.csv")
        lines = open(csv).read().strip().splitlines()
        assert lines[0].startswith("epoch,train_loss") and len(lines) == 3


def test_resume_adds_trials_without_duplicates(stores):
    cfg = from_dict(tiny_study("resume", search={"n_trials": 2}))
    run_study(cfg, progress=False, **stores)
    summary = run_study(cfg, progress=False, **stores)
    assert summary.counts["total"] == 4
    study = optuna.load_study(study_name="resume", storage=stores["storage"])
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    _, runs = _runs(stores["tracking_uri"], "resume")
    assert sum(r.data.tags.get("hpstudy.kind") == "study" for r in runs) == 1
    numbers = [r.data.tags["optuna.trial_number"] for r in runs
               if r.data.tags.get("hpstudy.kind") == "trial"]
    assert sorted(numbers) == ["0", "1", "2", "3"]


def test_diverging_trial_fails_with_reason_and_study_goes_on(stores):
    # lr 1e30 with plain SGD overflows float32 within the first epoch; lr 0.1 trains.
    cfg = from_dict(tiny_study(
        "diverge",
        train={"optimizer": "sgd"},
        search={"n_trials": 2, "sampler": {"name": "grid", "seed": 0},
                "space": {"train.lr": [1.0e30, 0.1]}},
    ))
    summary = run_study(cfg, progress=False, **stores)
    assert summary.counts == {"complete": 1, "pruned": 0, "failed": 1, "running": 0, "total": 2}
    study = optuna.load_study(study_name="diverge", storage=stores["storage"])
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL][0]
    assert failed.params["train.lr"] == 1.0e30
    assert "non-finite" in failed.user_attrs["fail_reason"]
    client = MlflowClient(tracking_uri=stores["tracking_uri"])
    run = client.get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["hpstudy.state"] == "FAIL"
    assert "non-finite" in run.data.tags["hpstudy.fail_reason"]


def test_crashing_trial_is_recorded_and_study_goes_on(stores):
    # val_split 0.9999 leaves no training images: the data module raises inside the trial
    cfg = from_dict(tiny_study(
        "crash",
        search={"n_trials": 2, "sampler": {"name": "grid", "seed": 0},
                "space": {"data.val_split": [0.9999, 0.2]}},
    ))
    summary = run_study(cfg, progress=False, **stores)
    assert summary.counts["failed"] == 1 and summary.counts["complete"] == 1
    study = optuna.load_study(study_name="crash", storage=stores["storage"])
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL][0]
    assert "val_split" in failed.user_attrs["fail_reason"]


def test_pruner_stops_bad_trials(stores):
    # 4 good trials establish the median; a trial with a tiny lr is far below it.
    cfg = from_dict(tiny_study(
        "prune",
        train={"max_epochs": 4},
        search={"n_trials": 5, "sampler": {"name": "grid", "seed": 0},
                "pruner": {"name": "median", "options": {"n_startup_trials": 2,
                                                         "n_warmup_steps": 0}},
                "space": {"train.lr": [0.02, 0.021, 0.022, 0.023, 1e-6]}},
    ))
    # grid order is shuffled by seed; enqueue fixes the order: good ones first
    cfg = cfg.with_overrides({"search.enqueue": [{"train.lr": v} for v in
                                                 (0.02, 0.021, 0.022, 0.023, 1e-6)]})
    summary = run_study(cfg, progress=False, **stores)
    study = optuna.load_study(study_name="prune", storage=stores["storage"])
    slow = [t for t in study.trials if t.params["train.lr"] == 1e-6][0]
    assert slow.state == optuna.trial.TrialState.PRUNED
    assert summary.counts["pruned"] >= 1
    client = MlflowClient(tracking_uri=stores["tracking_uri"])
    run = client.get_run(slow.user_attrs["mlflow_run_id"])
    assert run.data.tags["hpstudy.state"] == "PRUNED"
    assert len(client.get_metric_history(run.info.run_id, "val_acc")) < 4


def test_a_trial_that_trained_every_epoch_is_never_pruned(stores):
    """The pruner judges only epochs before the last: a rung on max_epochs saves nothing."""
    cfg = from_dict(tiny_study(
        "noprune-last",
        train={"max_epochs": 2},
        search={"n_trials": 3, "sampler": {"name": "grid", "seed": 0},
                # the median pruner may judge epoch 2 only: the last one
                "pruner": {"name": "median", "options": {"n_startup_trials": 1,
                                                         "n_warmup_steps": 2}},
                "space": {"train.lr": [0.02, 0.021, 1e-6]}},
    ))
    cfg = cfg.with_overrides({"search.enqueue": [{"train.lr": v} for v in (0.02, 0.021, 1e-6)]})
    run_study(cfg, progress=False, **stores)
    study = optuna.load_study(study_name="noprune-last", storage=stores["storage"])
    slow = [t for t in study.trials if t.params["train.lr"] == 1e-6][0]
    good = max(t.value for t in study.trials if t.params["train.lr"] != 1e-6)
    assert slow.intermediate_values[2] < good  # below the median at its last epoch...
    assert slow.state == optuna.trial.TrialState.COMPLETE  # ...and kept: it had finished
    assert sorted(slow.intermediate_values) == [1, 2]


def test_fit_history_and_best_weights():
    cfg = from_dict(tiny_study("fit", train={"max_epochs": 3, "evaluate_test": True},
                               search={"space": "none"}))
    result = fit(cfg)
    assert result.status == "completed"
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    for r in result.history:
        assert all(math.isfinite(r[k]) for k in EPOCH_METRICS)
    best = max(result.history, key=lambda r: r["val_acc"])
    assert result.best_epoch == best["epoch"]
    assert result.test is not None and 0.0 <= result.test["test_acc"] <= 1.0
    assert result.data_info["data.n_train"] == 256


@pytest.mark.parametrize("scheduler", ["step", "multistep", "cosine", "onecycle", "plateau",
                                       "exponential"])
def test_schedulers_change_the_lr(scheduler):
    sched = {"name": scheduler, "step_size": 1, "milestones": [1], "gamma": 0.5, "patience": 0}
    cfg = from_dict(tiny_study("sched", train={"max_epochs": 3, "lr": 0.01,
                                               "scheduler": sched},
                               search={"space": "none"}))
    lrs = [r["lr"] for r in fit(cfg).history]
    assert lrs[0] != lrs[-1] or scheduler == "plateau", lrs
    if scheduler in ("step", "multistep", "exponential"):
        assert lrs[1] == pytest.approx(lrs[0] * 0.5)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adagrad", "adadelta",
                                       "rmsprop", "adam", "adamw", "nadam"])
def test_every_optimizer_trains(optimizer):
    cfg = from_dict(tiny_study("opt", train={"max_epochs": 1, "optimizer": optimizer,
                                             "limit_train_batches": 2},
                               search={"space": "none"}))
    r = fit(cfg)
    assert r.status == "completed" and math.isfinite(r.history[0]["train_loss"])


def test_early_stopping_stops_before_max_epochs():
    cfg = from_dict(tiny_study("es", train={"max_epochs": 30, "lr": 1e-7,
                                            "early_stopping": {"enabled": True,
                                                               "monitor": "val_acc",
                                                               "patience": 1,
                                                               "min_delta": 0.05}},
                               search={"space": "none"}))
    r = fit(cfg)
    assert r.status == "early_stopped" and len(r.history) < 30


def test_resumed_random_search_does_not_replay_its_first_proposals(stores):
    cfg = from_dict(tiny_study("replay", train={"max_epochs": 1, "limit_train_batches": 1},
                               search={"n_trials": 2}))
    run_study(cfg, progress=False, **stores)
    run_study(cfg, progress=False, **stores)
    study = optuna.load_study(study_name="replay", storage=stores["storage"])
    lrs = [t.params["train.lr"] for t in study.trials]
    assert len(set(lrs)) == 4, lrs


def test_isolated_trial_hands_its_checkpoint_to_the_registry(stores):
    # the weights of a trial trained in a child process reach the model registry
    cfg = from_dict(tiny_study("isoreg", train={"max_epochs": 1, "isolate": True},
                               search={"n_trials": 1}, tracking={"register_best": True}))
    summary = run_config(cfg, progress=False, **stores)  # the CLI's run: study + registration
    assert summary.counts["complete"] == 1
    assert summary.registered_model == "models:/isoreg-best/1"
    study = optuna.load_study(study_name="isoreg", storage=stores["storage"])
    run_id = study.trials[0].user_attrs["mlflow_run_id"]
    client = MlflowClient(tracking_uri=stores["tracking_uri"])
    assert "checkpoint/model.pt" in {a.path for a in client.list_artifacts(run_id, "checkpoint")}
