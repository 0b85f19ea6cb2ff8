"""``hpstudy diagnose STUDY --next FILE``: the next round's study file, narrowed by hand-computed
rules, validated, and run as written on a real store."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml
from conftest import run_cli, tiny_study

from hpstudy.analyze import StudyData
from hpstudy.config import SearchParam, load_study
from hpstudy.data import safe_presets
from hpstudy.search.next_round import (
    narrow_numeric,
    next_name,
    plan_next_round,
    write_next_round,
)


def test_narrowing_by_hand():
    lr = SearchParam(type="float", low=1e-4, high=0.3, log=True)
    # best trials at 1e-3 and 1e-2: one decade; margin max(0.25, 0.1 * log10(0.3 / 1e-4))
    # = 0.3477 decades: 10 ** -3.3477 = 4.4907e-4 (down to 3 digits: 0.000449) and
    # 10 ** -1.6523 = 0.022268 (up: 0.0223)
    margin = 0.1 * math.log10(0.3 / 1e-4)
    assert 10 ** (-3 - margin) == pytest.approx(4.4907e-4, rel=1e-4)
    assert narrow_numeric(lr, [1e-3, 1e-2]) == (0.000449, 0.0223)
    # linear: 0.2-0.3 of 0-0.5: margin max(0.025, 0.05)
    assert narrow_numeric(SearchParam(type="float", low=0.0, high=0.5), [0.2, 0.3]) == (
        0.15, 0.35)
    # a stepped entry snaps outwards to its grid; an int entry to whole numbers
    assert narrow_numeric(SearchParam(type="float", low=0.0, high=0.5, step=0.1),
                          [0.2, 0.3]) == (0.1, 0.4)
    assert narrow_numeric(SearchParam(type="int", low=1, high=64), [8, 16]) == (1, 23)
    # never beyond the old bounds
    assert narrow_numeric(lr, [1e-4, 0.3]) == (1e-4, 0.3)
    assert next_name("quickstart") == "quickstart-r2"
    assert next_name("quickstart-r2") == "quickstart-r3"


def test_next_round_validates_and_runs_as_written(tmp_path: Path, monkeypatch, capsys):
    space = {
        "train.lr": {"type": "float", "low": 1e-3, "high": 0.05, "log": True},
        "data.batch_size": [32, 64],
        "model.drop_rate": {"type": "float", "low": 0.0, "high": 0.5},
        "train.weight_decay": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True,
                               "allow_zero": True},
    }
    cfg = tiny_study("tiny", search={"n_trials": 4, "sampler": {"name": "random", "seed": 0},
                                     "pruner": "none", "space": space},
                     train={"max_epochs": 3, "optimizer": "adam", "lr": 0.01,
                            "num_threads": 1})
    cfg["train"]["accelerator"] = "cpu"
    study_file = tmp_path / "tiny.yaml"
    study_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    storage, uri = f"sqlite:///{tmp_path}/optuna.db", f"sqlite:///{tmp_path}/mlflow.db"
    code, out, err = run_cli("run", str(study_file), "--storage", storage, "--tracking-uri", uri,
                             "-q", monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 0, err
    nxt = tmp_path / "next" / "tiny-r2.yaml"
    code, out, err = run_cli("diagnose", "tiny", "--storage", storage, "--tracking-uri", uri,
                             "--next", str(nxt), monkeypatch=monkeypatch, cwd=tmp_path,
                             capsys=capsys)
    assert code == 0, err
    assert f"next round   {nxt} (study tiny-r2" in out
    text = nxt.read_text()
    assert text.startswith("# Next round of study 'tiny'")
    assert "# narrowed to the 3 best trials" in text  # a comment names the evidence

    new = load_study(nxt)  # validates as written
    assert new.name == "tiny-r2" and new.storage == storage and new.tracking.uri == uri
    old = optuna.load_study(study_name="tiny", storage=storage)
    done = sorted((t for t in old.trials if t.state.name == "COMPLETE"),
                  key=lambda t: (-t.value, t.number))
    best = done[0]
    lr = new.search.space["train.lr"]
    tops = [t.params["train.lr"] for t in done[:3]]
    assert 1e-3 <= lr["low"] <= min(tops) and max(tops) <= lr["high"] <= 0.05
    # trial 0 of the next round is the best trial, inside the new space
    (enq,) = new.search.enqueue
    assert enq["train.lr"] == pytest.approx(best.params["train.lr"])
    # 3 epochs: every best trial is still improving; the remedy is twice the epochs
    assert [t.user_attrs.get("diagnosis") for t in done[:3]] == ["not_converged"] * 3
    assert new.train.max_epochs == 6 and "  # raised 3 -> 6: 3 of the 3 best trials" in text

    code, out, err = run_cli("run", str(nxt), "--n-trials", "1", "--no-report", "-q",
                             monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 0, err
    r2 = optuna.load_study(study_name="tiny-r2", storage=storage)
    (t0,) = r2.trials
    assert t0.state.name == "COMPLETE"
    assert t0.params["train.lr"] == pytest.approx(best.params["train.lr"])
    wd = best.params["train.weight_decay"]
    if wd < 1e-5:  # the best trained without weight decay: 0 stays allowed, and is re-run
        assert new.search.space["train.weight_decay"].get("allow_zero")
        assert enq["train.weight_decay"] == 0.0


def test_next_needs_two_completed_trials(tmp_path: Path, monkeypatch, capsys):
    cfg = tiny_study("one", search={"n_trials": 1})
    study_file = tmp_path / "one.yaml"
    study_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    storage, uri = f"sqlite:///{tmp_path}/optuna.db", f"sqlite:///{tmp_path}/mlflow.db"
    assert run_cli("run", str(study_file), "--storage", storage, "--tracking-uri", uri, "-q",
                   monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)[0] == 0
    code, out, err = run_cli("diagnose", str(study_file), "--storage", storage,
                             "--tracking-uri", uri, "--next", str(tmp_path / "n.yaml"),
                             monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 2 and "needs at least 2 completed trials" in err
    assert not (tmp_path / "n.yaml").exists()


def _frame(verdict: str) -> tuple[StudyData, pd.DataFrame]:
    trials = pd.DataFrame({
        "number": [0, 1, 2, 3], "state": ["COMPLETE"] * 4, "value": [0.9, 0.8, 0.85, 0.5],
        "train.lr": [0.01, 0.02, 0.005, 0.04], "model.init": ["he_normal"] * 4,
        "model.drop_rate": [0.1, 0.2, 0.0, 0.4]})
    table = pd.DataFrame({"number": [0, 1, 2, 3], "verdict": [verdict] * 3 + ["good_fit"],
                          "reason": ["r0", "r1", "r2", "r3"]})
    return StudyData("base", None, trials, pd.DataFrame(),
                     ["model.drop_rate", "model.init", "train.lr"], "maximize"), table


def _base(tmp_path: Path) -> Any:
    cfg = tiny_study("base", search={"space": {
        "train.lr": {"type": "float", "low": 1e-3, "high": 0.05, "log": True},
        "model.init": ["he_normal", "orthogonal"],
        "model.drop_rate": {"type": "float", "low": 0.0, "high": 0.5}}})
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_study(path)


def test_overfit_and_underfit_remedies_validate(tmp_path: Path):
    cfg = _base(tmp_path)
    data, table = _frame("overfit")
    plan = plan_next_round(data, table, cfg, storage="sqlite:///x.db")
    new = load_study(write_next_round(tmp_path / "over.yaml", plan))
    space = new.search.space
    # dropout: from the best trials' lowest (0) up by 0.2 beyond the old top 0.5
    assert space["model.drop_rate"] == {"type": "float", "low": 0.0, "high": 0.7}
    # weight decay was not searched (config 0): searched from 1e-5 on a log scale
    assert space["train.weight_decay"] == {"type": "float", "low": 1e-5, "high": 0.01,
                                           "log": True}
    # augmentation presets safe for digits (no flips)
    assert space["data.augmentation"]["choices"] == safe_presets("digits")
    assert new.model.init == "he_normal" and "model.init" not in space  # all 3 agreed
    assert new.search.enqueue == [{"train.lr": 0.01, "model.drop_rate": 0.1}]
    text = (tmp_path / "over.yaml").read_text()
    assert "# 3 of the 3 best trials overfit (#0: r0): more regularization" in text

    data, table = _frame("underfit")
    plan = plan_next_round(data, table, cfg)
    new = load_study(write_next_round(tmp_path / "under.yaml", plan))
    assert new.model.model_extra["hidden"] == [64]  # the mlp's width, doubled
    assert "# 3 of the 3 best trials underfit (#0: r0): more capacity: model.hidden doubled" \
        in (tmp_path / "under.yaml").read_text()
