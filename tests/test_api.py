"""The Python API a notebook uses: ``hpstudy.run`` and ``hpstudy.load`` on real stores."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
import yaml
from conftest import tiny_study

import hpstudy
from hpstudy.analyze import StudyNotFoundError
from hpstudy.api import AblationResults, StagedResults, StudyResults
from hpstudy.config import ConfigError


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict:
    """One 3-trial study run through ``hpstudy.run`` (best model registered, test evaluated)."""
    tmp = tmp_path_factory.mktemp("api")
    raw = tiny_study("api-study", train={"evaluate_test": True})
    path = tmp / "api-study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    stores = {"storage": f"sqlite:///{tmp}/optuna.db", "tracking_uri": f"sqlite:///{tmp}/mlflow.db"}
    # options and config aliases as keywords, dotted keys in overrides
    summary = hpstudy.run(path, n_trials=3, max_epochs=3, overrides={"train.scheduler.name":
                                                                      "cosine"}, **stores)
    return {"path": path, "summary": summary, "tmp": tmp, **stores}


def test_run_takes_aliases_as_keywords_and_returns_the_summary(ran: dict) -> None:
    s = ran["summary"]
    assert s.study_name == "api-study" and s.counts["total"] == 3
    assert s.registered_model == "models:/api-study-best/1"
    study = optuna.load_study(study_name="api-study", storage=ran["storage"])
    assert study.metric_names == ["val_acc"]  # optuna-dashboard names the objective
    config = yaml.safe_load(study.user_attrs["config_yaml"])
    assert config["train"]["max_epochs"] == 3 and config["train"]["scheduler"]["name"] == "cosine"


def test_load_joins_trials_history_best_and_model(ran: dict) -> None:
    s = ran["summary"]
    res = hpstudy.load("api-study", storage=ran["storage"], tracking_uri=ran["tracking_uri"])
    assert isinstance(res, StudyResults)
    t = res.trials
    assert list(t["number"]) == [0, 1, 2]
    assert list(t.columns[:3]) == ["number", "state", "value"]
    assert {"train.lr", "data.batch_size", "model.drop_rate", "verdict", "test_acc", "run_id",
            "epochs", "duration_s"} <= set(t.columns)
    assert res.params == ["data.batch_size", "model.drop_rate", "train.lr"]
    study = optuna.load_study(study_name="api-study", storage=ran["storage"])
    for trial in study.trials:  # one row per trial, the same facts Optuna holds
        row = t.set_index("number").loc[trial.number]
        assert row["state"] == trial.state.name and row["value"] == pytest.approx(trial.value)
        assert row["train.lr"] == pytest.approx(trial.params["train.lr"])
        assert row["run_id"] == trial.user_attrs["mlflow_run_id"]
        assert row["verdict"] == trial.user_attrs["diagnosis"]
        assert row["test_acc"] == pytest.approx(trial.user_attrs["test_acc"])
        assert row["epochs"] == 3 and row["duration_s"] > 0
    # the long per-epoch frame: 3 epochs per trial
    assert list(res.history.columns[:2]) == ["trial", "epoch"]
    assert res.history.groupby("trial")["epoch"].apply(list).to_dict() == {
        0: [1, 2, 3], 1: [1, 2, 3], 2: [1, 2, 3]}
    assert res.best["number"] == s.best_trial and res.best["value"] == pytest.approx(s.best_value)
    # the registered best model, weights loaded with weights_only=True
    net = res.model()
    assert isinstance(net, torch.nn.Module) and not net.training
    x = torch.zeros(2, 1, 8, 8)
    assert net(x).shape == (2, 10)
    # the file reads the same study
    by_file = hpstudy.load(ran["path"], storage=ran["storage"], tracking_uri=ran["tracking_uri"])
    assert by_file.trials[["number", "value"]].equals(t[["number", "value"]])


def test_bad_keyword_override_names_the_field_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_study("bad"), sort_keys=False))
    with pytest.raises(ConfigError, match="learning_speed"):
        hpstudy.run(path, learning_speed=3, storage=f"sqlite:///{tmp_path}/o.db",
                    tracking_uri=f"sqlite:///{tmp_path}/m.db")
    assert not (tmp_path / "o.db").exists() and not (tmp_path / "m.db").exists()


def test_load_of_an_unknown_name_says_where_it_looked(ran: dict) -> None:
    with pytest.raises(StudyNotFoundError, match="nosuch"):
        hpstudy.load("nosuch", storage=ran["storage"], tracking_uri=ran["tracking_uri"])


def test_load_reads_staged_studies_by_their_prefix(ran: dict) -> None:
    # a guided study keeps its stages as studies <study>/1-..., /2-...: copies of a real one
    for stage in ("1-anything", "2-everything"):
        optuna.copy_study(from_study_name="api-study", from_storage=ran["storage"],
                          to_storage=ran["storage"], to_study_name=f"staged/{stage}")
    res = hpstudy.load("staged", storage=ran["storage"], tracking_uri=ran["tracking_uri"])
    assert isinstance(res, StagedResults) and list(res.stages) == ["1-anything", "2-everything"]
    assert list(res.trials["stage"]) == ["1-anything"] * 3 + ["2-everything"] * 3
    assert list(res.trials.columns[:4]) == ["stage", "number", "state", "value"]
    assert res.history.groupby("stage").size().to_dict() == {"1-anything": 9, "2-everything": 9}
    assert res.best["number"] == ran["summary"].best_trial


def test_load_reads_an_ablation_by_file_and_by_name(ran: dict, tmp_path: Path) -> None:
    from hpstudy.api import ablate
    from hpstudy.search.ablation import plan_ablation

    base = tiny_study("abl-base")
    base.pop("search")
    raw = {"name": "api-ablation", "base": base, "factors": {"dropout": {"off": 0.0, "on": 0.5}},
           "seeds": [0, 1], "overrides": {"train.max_epochs": 1},
           "tracking": {"uri": ran["tracking_uri"]}, "report": {"enabled": False}}
    ablate(plan_ablation(raw, "api-ablation.yaml"))
    path = tmp_path / "api-ablation.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    for res in (hpstudy.load(path), hpstudy.load("api-ablation",
                                                 tracking_uri=ran["tracking_uri"])):
        assert isinstance(res, AblationResults) and res.metric == "best_val_acc"
        assert sorted(zip(res.trials["cell"], res.trials["seed"], strict=True)) == [
            ("dropout=off", 0), ("dropout=off", 1), ("dropout=on", 0), ("dropout=on", 1)]
        assert set(res.trials["state"]) == {"COMPLETE"} and res.trials["verdict"].notna().all()
        assert len(res.history) == 4  # one epoch per run
        assert res.best["value"] == res.trials["value"].max()
        assert res.stats is not None and list(res.stats.cells["n"]) == [2, 2]
        with pytest.raises(LookupError, match="keeps no models"):
            res.model()
