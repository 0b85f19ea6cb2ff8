"""``hpstudy doctor``: each disagreement between a study and its runs, made on purpose and repaired."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
from conftest import run_cli, tiny_study
from mlflow import MlflowClient
from optuna.trial import TrialState

from hpstudy.config import from_dict
from hpstudy.search import connect, run_study
from hpstudy.search.doctor import doctor
from hpstudy.search.storage import get_storage, trial_id


@pytest.fixture
def broken(tmp_path: Path):
    """A finished 3-trial study, then every kind of damage a crash or a hand can do."""
    storage, tracking = f"sqlite:///{tmp_path}/optuna.db", f"sqlite:///{tmp_path}/mlflow.db"
    cfg = from_dict(tiny_study("doc", train={"max_epochs": 1}, search={"n_trials": 3}))
    run_study(cfg, storage=storage, tracking_uri=tracking, progress=False)
    session = connect(cfg, storage, tracking)
    study, tracker, store = session.study, session.tracker, session.storage
    t0, t1, t2 = study.get_trials()
    client = MlflowClient(tracking_uri=tracking)
    # 1. trial 0's run says FAIL although the trial completed
    tracker.end_run(t0.user_attrs["mlflow_run_id"], "FAIL", {"hpstudy.fail_reason": "lie"})
    # 2. trial 1 lost its run (deleted for good)
    client.delete_run(t1.user_attrs["mlflow_run_id"])
    store_ = get_storage(storage)
    # 3. trial 2 got a second run (a retried write)
    tracker.start_trial(session.parent_run_id, "doc", 2, {"x": 1})
    # 4. an orphan: a run of trial 7, which does not exist
    tracker.start_trial(session.parent_run_id, "doc", 7, {})
    # 5. a RUNNING trial whose process is dead (pid 999999 on this host)
    t3 = study.ask()
    run3 = tracker.start_trial(session.parent_run_id, "doc", t3.number, {})
    t3.set_user_attr("mlflow_run_id", run3)
    import socket

    store.set_trial_system_attr(trial_id(store_, "doc", t3.number), "hpstudy:owner",
                                {"host": socket.gethostname(), "pid": 999_999_999, "start": 1})
    # 6. the study run's counts are stale (4 trials now)
    return {"storage": storage, "tracking": tracking, "cfg": cfg, "tmp": tmp_path,
            "dead": t3.number}


def test_doctor_finds_each_break_and_fix_repairs_them(broken):
    b = broken
    findings = doctor("doc", b["storage"], b["tracking"])
    kinds = {(f.kind, f.trial) for f in findings}
    assert ("state_mismatch", 0) in kinds
    assert ("missing_run", 1) in kinds
    assert ("duplicate_runs", 2) in kinds
    assert ("orphan_run", 7) in kinds
    assert ("stale_running", b["dead"]) in kinds
    assert ("parent_counts", None) in kinds
    assert not any(f.fixed for f in findings)

    fixed = doctor("doc", b["storage"], b["tracking"], fix=True)
    assert all(f.fixed for f in fixed if f.fixable), [f.line() for f in fixed]
    assert doctor("doc", b["storage"], b["tracking"]) == []  # now they agree

    study = optuna.load_study(study_name="doc", storage=b["storage"])
    dead = study.trials[b["dead"]]
    assert dead.state == TrialState.FAIL and "gone" in dead.user_attrs["fail_reason"]
    client = MlflowClient(tracking_uri=b["tracking"])
    exp = client.get_experiment_by_name("doc")
    runs = client.search_runs([exp.experiment_id], "tags.`hpstudy.kind` = 'trial'")
    by_trial: dict[str, list] = {}
    for r in runs:
        by_trial.setdefault(r.data.tags["optuna.trial_number"], []).append(r)
    assert all(len(v) == 1 for k, v in by_trial.items() if k != "7")
    assert by_trial["0"][0].data.tags["hpstudy.state"] == "COMPLETE"
    assert by_trial["7"][0].data.tags["hpstudy.orphan"] == "true"


def test_doctor_cli_exit_codes(broken, monkeypatch, capsys):
    b = broken
    args = ["doctor", "doc", "--storage", b["storage"], "--tracking-uri", b["tracking"]]
    code, out, err = run_cli(*args, monkeypatch=monkeypatch, cwd=b["tmp"], capsys=capsys)
    assert code == 1 and "fixable with --fix" in out, (out, err)
    code, out, err = run_cli(*args, "--fix", monkeypatch=monkeypatch, cwd=b["tmp"], capsys=capsys)
    assert code == 0, (out, err)
    code, out, _ = run_cli(*args, monkeypatch=monkeypatch, cwd=b["tmp"], capsys=capsys)
    assert code == 0 and "agree" in out
    code, _, err = run_cli("doctor", "nosuch", "--storage", b["storage"], "--tracking-uri",
                           b["tracking"], monkeypatch=monkeypatch, cwd=b["tmp"], capsys=capsys)
    assert code == 2 and "nosuch" in err
    assert os.path.exists(Path(b["tmp"]) / "mlflow.db")
