"""Scaling out, with real processes: DDP trials on CPU/gloo, parallel workers, isolation, heartbeats.

Every test here starts processes (a trial's child, DDP ranks, worker processes)
and drives the real Lightning, Optuna and MLflow; nothing is mocked. Processes
are found through /proc and killed with real signals to stand in for the
kernel's OOM killer or a lost machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import tiny_study
from mlflow import MlflowClient
from optuna.trial import TrialState

from hpstudy.config import from_dict
from hpstudy.search import connect, get_storage, needs_process, open_study, run_study
from hpstudy.search.storage import GRACE_ENV, HEARTBEAT_ENV, trial_id
from hpstudy.train.child import death_reason, last_error_line
from hpstudy.train.execute import device_count

REPO = Path(__file__).resolve().parents[1]
# 180 training images: validation keeps 45, split 23/22 across two ranks, so a
# validation accuracy reduced over both ranks is a multiple of 1/45 and a
# rank-local one would be a multiple of 1/23 or 1/22
DDP_DATA = {"subset": 180, "batch_size": 32}
DDP_TRAIN = {"devices": 2, "accelerator": "cpu", "max_epochs": 2, "limit_train_batches": 2}


# ----------------------------------------------------------------- helpers
def _runs(tracking_uri: str, experiment: str) -> tuple[MlflowClient, list[Any], list[Any]]:
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("hpstudy.kind") == "study"]
    children = [r for r in runs if r.data.tags.get("hpstudy.kind") == "trial"]
    return client, parents, children


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _trials(name: str, storage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=get_storage(storage)).get_trials()
    except KeyError:
        return []


def hpstudy_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpstudy", *args]


# ----------------------------------------------------------------- pure parts
def test_death_reasons_name_the_signal_and_the_last_error():
    assert death_reason(-9) == ("trial process killed by signal SIGKILL (9): out of memory? "
                                "the kernel's OOM killer sends SIGKILL")
    assert death_reason(-11).startswith("trial process killed by signal SIGSEGV (11)")
    log = "Traceback (most recent call last):\n  File x\nRuntimeError: CUDA error\n"
    assert death_reason(3, log) == "trial process exited with code 3; last error: RuntimeError: CUDA error"
    assert last_error_line("all fine\n") is None


def test_devices_and_shares():
    assert device_count(2, "cpu") == 2 and device_count([0, 1, 3]) == 3
    assert device_count("0,1") == 2 and device_count("auto", "cpu") == 1
    cfg = from_dict(tiny_study("shares"))
    assert not needs_process(cfg)
    assert needs_process(cfg.with_overrides({"train.isolate": True}))
    assert needs_process(cfg.with_overrides({"train.strategy": "ddp_spawn"}))
    assert needs_process(cfg.with_overrides({"train.devices": 2}))
    # how workers share GPUs and cores: tests/test_placement.py


# ----------------------------------------------------------------------- DDP
@pytest.mark.dist
def test_ddp_trial_samples_once_and_reduces_validation_across_ranks(stores):
    cfg = from_dict(tiny_study("ddp", data=DDP_DATA, train={**DDP_TRAIN, "strategy": "ddp"},
                               search={"n_trials": 1}))
    run_study(cfg, progress=False, **stores)

    trials = _trials("ddp", stores["storage"])
    # `ddp` relaunched the trial process for rank 1; a naive objective would
    # have made that rank create a trial (and a run) of its own
    assert len(trials) == 1 and trials[0].state == TrialState.COMPLETE
    client, parents, children = _runs(stores["tracking_uri"], "ddp")
    assert len(parents) == 1 and len(children) == 1
    run, trial = children[0], trials[0]
    assert run.data.tags["hpstudy.state"] == "COMPLETE"
    assert float(run.data.params["train.lr"]) == pytest.approx(trial.params["train.lr"])
    assert int(run.data.params["data.batch_size"]) == trial.params["data.batch_size"]
    assert run.data.params["train.devices"] == "2" and run.data.params["train.strategy"] == "ddp"

    n_val = int(run.data.params["data.n_val"])
    assert n_val == 45
    hist = client.get_metric_history(run.info.run_id, "val_acc")
    assert [m.step for m in hist] == [1, 2]
    for m in hist:
        assert 0 < m.value < 1
        correct = m.value * n_val
        assert abs(correct - round(correct)) < 1e-4, f"val_acc {m.value} is not k/45"
    # what Optuna saw is what MLflow got: rank 0's reduced record, reported by the parent
    assert trial.intermediate_values == pytest.approx({m.step: m.value for m in hist})
    assert trial.value == pytest.approx(max(m.value for m in hist))
    assert {"config.yaml", "history.csv"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.dist
def test_ddp_spawn_trial_pruned_by_the_parent_stops_every_rank(tmp_path):
    # journal storage: pruning must not depend on RDB storage (only the parent touches it)
    storage = f"journal:///{tmp_path}/optuna.journal"
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = from_dict(tiny_study(
        "ddp-prune", data=DDP_DATA, train={**DDP_TRAIN, "strategy": "ddp_spawn", "max_epochs": 4},
        search={"n_trials": 1, "space": "none",
                "pruner": {"name": "median", "options": {"n_startup_trials": 1,
                                                         "n_warmup_steps": 0}}}))
    study = open_study(cfg, storage)
    # a finished trial that was perfect at every epoch: the median pruner stops any other
    study.add_trial(optuna.trial.create_trial(
        value=1.0, intermediate_values={e: 1.0 for e in range(1, 5)}))
    run_study(cfg, storage=storage, tracking_uri=tracking, progress=False)

    trial = _trials("ddp-prune", storage)[1]
    assert trial.state == TrialState.PRUNED, trial.user_attrs
    assert list(trial.intermediate_values) == [1]
    client, _, children = _runs(tracking, "ddp-prune")
    (run,) = children
    assert run.data.tags["hpstudy.state"] == "PRUNED"
    assert trial.user_attrs["status"] == "pruned"  # how the fit ended (one state tag in MLflow)
    # every rank stopped after epoch 1 (a rank that went on would hang the collective)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1]


# ----------------------------------------------------------------- isolation
@pytest.mark.dist
def test_isolated_trial_killed_by_a_signal_fails_with_reason_and_the_study_goes_on(stores):
    cfg = from_dict(tiny_study("isolated", train={"isolate": True, "max_epochs": 30,
                                                  "limit_train_batches": 2},
                               search={"n_trials": 2}))
    errors: list[BaseException] = []

    def go() -> None:
        try:
            run_study(cfg, progress=False, **stores)
        except BaseException as e:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(e)

    runner = threading.Thread(target=go)
    runner.start()
    try:
        child = wait_for(lambda: next((p for p in _descendants(os.getpid())
                                       if "hpstudy.train.child" in _cmdline(p)), None),
                         240, "the first trial's process")
        os.kill(child, signal.SIGKILL)  # what the kernel's OOM killer does
    finally:
        runner.join(300)
    assert not runner.is_alive() and not errors, errors

    first, second = _trials("isolated", stores["storage"])
    assert first.state == TrialState.FAIL
    assert "killed by signal SIGKILL" in first.user_attrs["fail_reason"]
    assert second.state == TrialState.COMPLETE  # the study went on
    client, _, children = _runs(stores["tracking_uri"], "isolated")
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    assert sorted(by_number) == [0, 1]
    dead = by_number[0]
    assert dead.info.status == "FAILED" and dead.data.tags["hpstudy.state"] == "FAIL"
    assert "killed by signal SIGKILL" in dead.data.tags["hpstudy.fail_reason"]
    assert "trial.log" in {a.path for a in client.list_artifacts(dead.info.run_id)}
    assert by_number[1].info.status == "FINISHED"
    assert by_number[1].data.tags["hpstudy.state"] == "COMPLETE"


# ------------------------------------------------------------------ parallel
@pytest.mark.dist
@pytest.mark.slow  # tens of seconds of the 15-minute default suite: `make test-all` runs it
def test_parallel_workers_finish_exactly_n_trials_and_survive_a_killed_worker(
    stores, write_study
):
    path = write_study(tiny_study("parallel", train={"max_epochs": 30,
                                                    "limit_train_batches": 2}))
    proc = subprocess.Popen(
        hpstudy_cmd("run", str(path), "--workers", "2", "--n-trials", "5", "--no-report", "-q",
                    "--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"]),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        # two trials running at the same time: both workers are mid-trial
        wait_for(lambda: sum(t.state == TrialState.RUNNING
                             for t in _trials("parallel", stores["storage"])) >= 2,
                 300, "two trials running at once", step=0.5)
        workers = [p for p in _descendants(proc.pid) if "spawn_main" in _cmdline(p)]
        assert len(workers) == 2, [_cmdline(p) for p in workers]
        os.kill(workers[0], signal.SIGKILL)
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out

    trials = _trials("parallel", stores["storage"])
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]  # exactly 5, no duplicates
    # each worker samples with its own seed: no two trials got the same hyperparameters
    assert len({t.params["train.lr"] for t in trials}) == 5
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in trials)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    assert failed[0].user_attrs["fail_reason"].startswith(
        "worker process killed by signal SIGKILL")
    _, parents, children = _runs(stores["tracking_uri"], "parallel")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["n_workers"] == 2
    numbers = sorted(int(r.data.tags["optuna.trial_number"]) for r in children)
    assert numbers == [0, 1, 2, 3, 4]  # one child run per trial
    for r in children:
        t = trials[int(r.data.tags["optuna.trial_number"])]
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert t.user_attrs["mlflow_run_id"] == r.info.run_id
        if t.state == TrialState.FAIL:
            assert r.info.status == "FAILED"
            assert r.data.tags["hpstudy.fail_reason"] == t.user_attrs["fail_reason"]
        else:
            assert r.info.status == "FINISHED"
    assert "study        parallel: 5 trials (4 complete, 0 pruned, 1 failed)" in out


# ---------------------------------------------------------------- heartbeats
def killed_worker_is_retried(name: str, storage: str, tracking_uri: str, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed mid-trial: its trial is failed by heartbeat and retried elsewhere.

    Shared by the SQLite test here and the PostgreSQL test in test_postgres.py.
    """
    monkeypatch.setenv(HEARTBEAT_ENV, "1")  # seconds; Optuna's minimum
    monkeypatch.setenv(GRACE_ENV, "3")
    cfg = from_dict(tiny_study(name, search={"n_trials": 1}))
    connect(cfg, storage, tracking_uri)  # the study and its parent run, as `hpstudy run` makes them
    # worker A joins by name (config from the storage) with a trial long enough to be killed in
    proc = subprocess.Popen(
        hpstudy_cmd("worker", name, "--storage", storage, "--tracking-uri", tracking_uri,
                    "--n-trials", "1", "--set", "train.max_epochs=2000", "-q"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for(lambda: any(t.state == TrialState.RUNNING and t.intermediate_values
                             for t in _trials(name, storage)),
                 240, "worker A's trial to report an epoch", step=0.5)
        proc.send_signal(signal.SIGKILL)  # a lost machine sends nothing either
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # as if the worker had run on another machine: its death cannot be seen from here, so
    # only the heartbeat tells (a worker on this host is failed at once: test_signals.py)
    store = get_storage(storage)
    (lost,) = _trials(name, storage)
    store.set_trial_system_attr(trial_id(store, name, lost.number), "hpstudy:owner",
                                {**lost.system_attrs["hpstudy:owner"], "host": "another-machine"})
    time.sleep(4)  # past the grace period

    # worker B (this process): its first trial fails the stale one and runs the retry
    run_study(cfg, n_trials=1, storage=storage, tracking_uri=tracking_uri, progress=False)

    lost, retry = _trials(name, storage)
    assert lost.state == TrialState.FAIL
    assert retry.state == TrialState.COMPLETE
    assert retry.params == lost.params
    assert retry.system_attrs["failed_trial"] == lost.number
    assert retry.user_attrs["retry_of"] == lost.number
    assert retry.user_attrs["mlflow_run_id"] != lost.user_attrs["mlflow_run_id"]
    client = MlflowClient(tracking_uri=tracking_uri)
    dead = client.get_run(lost.user_attrs["mlflow_run_id"])
    assert dead.info.status == "FAILED" and dead.data.tags["hpstudy.state"] == "FAIL"
    assert dead.data.tags["hpstudy.fail_reason"].startswith("worker lost: no heartbeat")
    again = client.get_run(retry.user_attrs["mlflow_run_id"])
    assert again.info.status == "FINISHED"
    assert again.data.params["train.lr"] == dead.data.params["train.lr"]


@pytest.mark.dist
def test_heartbeat_fails_and_retries_a_killed_workers_trial_on_sqlite(stores, tmp_path,
                                                                      monkeypatch):
    killed_worker_is_retried("heartbeat", stores["storage"], stores["tracking_uri"], tmp_path,
                             monkeypatch)
