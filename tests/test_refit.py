"""Final-model protocols: training on every image (``val_split: 0``) and ``hpstudy refit``.

Everything runs through the real CLI on scikit-learn's digits with real
Optuna and MLflow SQLite stores in tmp_path.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from conftest import run_cli, tiny_study
from mlflow import MlflowClient

from hpstudy.config import ConfigError, from_dict, load_study
from hpstudy.names import ATTR_PARENT_RUN, ATTR_REFIT_RUN
from hpstudy.search import plan_ablation
from hpstudy.search.refit import refit_config, trial_config
from hpstudy.track import Tracker

DIGITS_TRAIN = 1437  # scikit-learn's 1,797 digits minus the 360 test images


def _digits(name: str, **sections) -> dict:
    """A tiny study on all of digits (no subset: a refit's image count is checked)."""
    raw = tiny_study(name, **sections)
    raw["data"] = {"dataset": "digits", "batch_size": 64, **sections.get("data", {})}
    raw["train"] = {**raw["train"], "num_threads": 1}
    return raw


# ------------------------------------------------------------------ val_split 0
def test_val_split_0_trains_on_every_image_and_reports_the_last_epoch(
        tmp_path: Path, write_study, monkeypatch, capsys):
    path = write_study(_digits("allimages", data={"val_split": 0},
                               train={"select": "last", "evaluate_test": True, "max_epochs": 2}))
    code, out, err = run_cli("train", str(path), monkeypatch=monkeypatch, cwd=tmp_path,
                             capsys=capsys)
    assert code == 0, err
    assert "test         " in out and "test_acc" in out
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("allimages")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.params["data.n_train"] == str(DIGITS_TRAIN)
    assert run.data.params["data.n_val"] == "0"
    assert run.data.metrics["best_epoch"] == 2  # the final epoch, not a validation pick
    assert 0 < run.data.metrics["test_acc"] <= 1
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert len(history) == 2 and all(math.isnan(m.value) for m in history)


@pytest.mark.parametrize("train,message", [
    ({}, "data.val_split: 0 leaves no validation images to pick the best epoch by: set "
         "train.select: last"),
    ({"select": "last", "early_stopping": True},
     "data.val_split: 0 leaves no validation images for train.early_stopping"),
    ({"select": "last", "scheduler": "plateau"},
     "data.val_split: 0 leaves no validation loss for the plateau scheduler"),
])
def test_val_split_0_refuses_what_needs_validation(tmp_path: Path, write_study, monkeypatch,
                                                   capsys, train, message):
    path = write_study(_digits("refused", data={"val_split": 0}, train=train))
    code, _, err = run_cli("train", str(path), monkeypatch=monkeypatch, cwd=tmp_path,
                           capsys=capsys)
    assert code == 2
    assert err.startswith(f"error: {path}: {message}")  # one line naming file and field
    assert not (tmp_path / "mlruns").exists()


def test_a_search_refuses_val_split_0(tmp_path: Path, write_study, monkeypatch, capsys):
    # the objective is a validation metric and the pruner watches it: no search without it
    path = write_study(_digits("nosearch", data={"val_split": 0}, train={"select": "last"}))
    code, _, err = run_cli("run", str(path), "--n-trials", "1", monkeypatch=monkeypatch,
                           cwd=tmp_path, capsys=capsys)
    assert code == 2
    assert "data.val_split: 0 leaves no validation images, and a search compares trials on " \
           "them" in err and "hpstudy refit" in err
    assert not (tmp_path / "mlruns" / "optuna.db").exists() or \
        not optuna.get_all_study_summaries(f"sqlite:///{tmp_path}/mlruns/optuna.db")


def test_an_ablation_refuses_a_validation_metric_without_validation():
    raw = {"name": "abl", "base": _digits("b", data={"val_split": 0}, train={"select": "last"}),
           "factors": {"dropout": {"off": 0.0, "on": 0.5}}, "metric": "best_val_acc"}
    with pytest.raises(ConfigError) as e:
        plan_ablation(raw, "abl.yaml")
    assert e.value.field == "metric" and "data.val_split: 0" in e.value.message


# ------------------------------------------------------------------ refit
def test_refit_retrains_the_best_trial_on_train_and_validation(tmp_path: Path, write_study,
                                                                monkeypatch, capsys, stores):
    raw = _digits("refitme", train={"max_epochs": 3, "optimizer": "adam", "lr": 0.01,
                                    "scheduler": {"name": "multistep", "milestones": [0.67],
                                                  "gamma": 0.5}})
    path = write_study(raw)
    flags = ["--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"]]
    code, _, err = run_cli("run", str(path), "--n-trials", "3", "--quiet", "--no-report", *flags,
                           monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 0, err
    study = optuna.load_study(study_name="refitme", storage=stores["storage"])
    best = study.best_trial
    parent = study.user_attrs[ATTR_PARENT_RUN]

    code, out, err = run_cli("refit", str(path), *flags, monkeypatch=monkeypatch, cwd=tmp_path,
                             capsys=capsys)
    assert code == 0, err
    epochs = best.user_attrs["best_epoch"]
    assert f"refit        trial {best.number} of refitme: {epochs} epochs on {DIGITS_TRAIN} " \
           "training images" in out
    assert "test error" in out

    client = MlflowClient(tracking_uri=stores["tracking_uri"])
    exp = client.get_experiment_by_name("refitme")
    refits = client.search_runs([exp.experiment_id], "tags.`hpstudy.kind` = 'refit'")
    assert len(refits) == 1
    run = refits[0]
    assert run.info.run_name == f"refit-trial-{best.number:04d}"
    assert run.info.status == "FINISHED" and run.data.tags["hpstudy.state"] == "COMPLETE"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["hpstudy.refit_of"] == str(best.number)
    assert run.data.tags["hpstudy.source_run_id"] == best.user_attrs["mlflow_run_id"]
    p = run.data.params
    assert (float(p["data.val_split"]), p["train.select"], p["train.evaluate_test"]) == \
        (0, "last", "True")
    assert p["train.max_epochs"] == str(epochs)
    assert p["data.n_train"] == str(DIGITS_TRAIN) and p["data.n_val"] == "0"
    # the best trial's hyperparameters, and its schedule in epochs (0.67 of 3 -> 2)
    assert float(p["train.lr"]) == pytest.approx(best.params["train.lr"])
    assert p["data.batch_size"] == str(best.params["data.batch_size"])
    assert p["train.scheduler.milestones"] == "[2.0]"
    assert 0 < run.data.metrics["test_acc"] <= 1
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == epochs
    # linked both ways
    assert client.get_run(parent).data.tags["hpstudy.refit_run_id"] == run.info.run_id
    study = optuna.load_study(study_name="refitme", storage=stores["storage"])
    assert study.user_attrs[ATTR_REFIT_RUN] == run.info.run_id

    # by the study's name (its config comes from the storage), with --set for the refit
    code, out, err = run_cli("refit", "refitme", *flags, "--set", "train.seed=1",
                             monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 0, err
    again = client.search_runs([exp.experiment_id], "tags.`hpstudy.kind` = 'refit'")
    assert len(again) == 2
    assert {r.data.params["train.seed"] for r in again} == {"0", "1"}


def test_trial_config_is_the_same_from_its_artifact_or_rebuilt(stores, tmp_path: Path):
    from hpstudy.api import run_config

    raw = _digits("rebuild", train={"max_epochs": 1})
    raw["search"]["space"]["train.weight_decay"] = {"type": "float", "low": 1e-4, "high": 1e-2,
                                                    "log": True, "allow_zero": True}
    raw["search"]["enqueue"] = [{"train.weight_decay": 0.0}]  # the 'off' decade: exactly 0
    cfg = from_dict(raw)
    run_config(cfg, n_trials=2, progress=False, report=False, **stores)
    study = optuna.load_study(study_name="rebuild", storage=stores["storage"])
    tracker = Tracker(stores["tracking_uri"], "rebuild")
    for trial in study.get_trials():
        from_artifact = trial_config(study, trial, tracker, "rebuild")
        rebuilt = trial_config(study, trial, None, "rebuild")
        assert from_artifact.to_dict() == rebuilt.to_dict()
    assert trial_config(study, study.trials[0], None, "x").train.weight_decay == 0.0


def test_refit_config_keeps_the_trials_schedule():
    src = from_dict(_digits("s", train={"max_epochs": 20, "optimizer": "nesterov", "lr": 0.1,
                                        "scheduler": {"name": "multistep",
                                                      "milestones": [0.5, 0.75]}}))
    cfg, notes = refit_config(src, 12)
    assert cfg.train.max_epochs == 12 and cfg.train.scheduler.milestones == [10, 15]
    assert (cfg.data.val_split, cfg.train.select, cfg.train.evaluate_test) == (0, "last", True)
    assert notes == []
    cos = from_dict(_digits("c", train={"max_epochs": 20, "scheduler": "cosine"}))
    _, notes = refit_config(cos, 12)
    assert notes == ["the cosine schedule anneals over the refit's 12 epochs (the trial annealed "
                     "over 20)"]


def test_refit_of_an_unknown_study_is_exit_2(tmp_path: Path, monkeypatch, capsys, stores,
                                            write_study):
    path = write_study(_digits("neverrun"))
    code, _, err = run_cli("refit", str(path), "--storage", stores["storage"], "--tracking-uri",
                           stores["tracking_uri"], monkeypatch=monkeypatch, cwd=tmp_path,
                           capsys=capsys)
    assert code == 2 and "no study 'neverrun'" in err and "run it first" in err
    assert load_study(path).name == "neverrun"
