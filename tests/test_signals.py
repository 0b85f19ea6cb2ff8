"""Signals and kills, for real: SIGINT/SIGTERM to real ``hpstudy`` processes, SIGKILL then rerun.

Every interrupted command must: record the running trial FAIL in Optuna with
``interrupted: SIGTERM`` (or SIGINT), end its MLflow run KILLED, leave the study
run not FINISHED, leave no child process behind, exit 128 + the signal number,
and print one line with what finished and the command that resumes. A process
killed with SIGKILL records nothing: the next run on the same host must see
that its trial's owner is gone, fail it at once, retry it, and end with exactly
the trials asked for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import run_cli, tiny_study
from mlflow import MlflowClient
from optuna.trial import TrialState
from servers import postgres_skip_reason, postgres_url
from test_scale import _cmdline, _descendants, _trials, hpstudy_cmd, wait_for

pytestmark = pytest.mark.dist

# a trial long enough to be interrupted in: thousands of one-batch epochs
LONG = {"max_epochs": 3000, "limit_train_batches": 1, "num_threads": 1}


def _write(tmp: Path, name: str, **sections: Any) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tiny_study(name, **sections), sort_keys=False))
    return path


def _start(args: list[str], tmp: Path) -> subprocess.Popen:
    # a session of its own: a signal to its group is what a terminal's Ctrl-C sends
    return subprocess.Popen(hpstudy_cmd(*args), cwd=tmp, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _running_with_epochs(name: str, storage: str, n: int = 1) -> list[Any]:
    running = [t for t in _trials(name, storage)
               if t.state == TrialState.RUNNING and t.intermediate_values]
    return running if len(running) >= n else []


def _finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _stores(tmp: Path) -> dict[str, str]:
    return {"storage": f"sqlite:///{tmp}/optuna.db", "tracking": f"sqlite:///{tmp}/mlflow.db"}


def _assert_interrupted_run(tracking: str, experiment: str, run_id: str, signame: str) -> None:
    run = MlflowClient(tracking_uri=tracking).get_run(run_id)
    assert run.info.status == "KILLED", run.info.status
    assert run.data.tags["hpstudy.state"] == "KILLED"
    assert run.data.tags["hpstudy.fail_reason"] == f"interrupted: {signame}"


def _parent_status(tracking: str, experiment: str) -> str:
    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name(experiment)
    (parent,) = client.search_runs([exp.experiment_id], "tags.`hpstudy.kind` = 'study'")
    return parent.info.status


def _one_line(err: str, signame: str) -> str:
    lines = [ln for ln in err.splitlines() if "interrupted by" in ln]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    assert lines[0].startswith(f"interrupted by {signame}"), lines[0]
    return lines[0]


# ------------------------------------------------------------------ hpstudy run
@pytest.mark.parametrize("isolate", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["in-process", "isolated"])
def test_sigterm_during_run_records_the_trial_and_exits_143(tmp_path: Path, isolate: bool):
    s = _stores(tmp_path)
    path = _write(tmp_path, "sigterm", train={**LONG, "isolate": isolate},
                  search={"n_trials": 3, "space": "none"})
    proc = _start(["run", str(path), "--storage", s["storage"], "--tracking-uri", s["tracking"],
                   "-q"], tmp_path)
    try:
        (trial,) = wait_for(lambda: _running_with_epochs("sigterm", s["storage"]), 240,
                            "a trial to report an epoch", step=0.5)
        children = _descendants(proc.pid)
        if isolate:
            assert any("hpstudy.train.child" in _cmdline(p) for p in children)
        proc.send_signal(signal.SIGTERM)
        code, out, err = _finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 143, err
    line = _one_line(err, "SIGTERM")
    assert "0 trial(s) finished" in line and f"trial {trial.number} recorded FAIL" in line
    assert f"resume with: hpstudy run {path}" in line and "--n-trials 3" in line
    (t,) = _trials("sigterm", s["storage"])
    assert t.state == TrialState.FAIL
    assert t.user_attrs["fail_reason"] == "interrupted: SIGTERM"
    _assert_interrupted_run(s["tracking"], "sigterm", t.user_attrs["mlflow_run_id"], "SIGTERM")
    assert _parent_status(s["tracking"], "sigterm") == "KILLED"
    for pid in children:  # no trial process, no rank, nothing left behind
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(
            f"/proc/{pid}/status").read_text().lower(), _cmdline(pid)


@pytest.mark.slow  # several processes of torch + Lightning: a minute or more
@pytest.mark.parametrize("how", ["ctrl-c to the group", "sigterm to the parent alone"])
def test_a_signal_to_a_two_worker_run_fails_both_trials_and_ends_everything(tmp_path: Path,
                                                                            how: str):
    """Ctrl-C reaches every process of the group; `kill PID` reaches only the parent, which
    forwards it: either way both running trials fail with the signal, and nothing is left."""
    sig, code_expected = ((signal.SIGINT, 130) if how.startswith("ctrl-c")
                          else (signal.SIGTERM, 143))
    s = _stores(tmp_path)
    name = "ctrlc" if sig == signal.SIGINT else "termparent"
    path = _write(tmp_path, name, train=LONG, search={"n_trials": 4, "space": "none"})
    proc = _start(["run", str(path), "--workers", "2", "--storage", s["storage"],
                   "--tracking-uri", s["tracking"], "-q"], tmp_path)
    try:
        wait_for(lambda: _running_with_epochs(name, s["storage"], 2), 300,
                 "both workers' trials to report an epoch", step=0.5)
        workers = _descendants(proc.pid)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C
        else:
            proc.send_signal(signal.SIGTERM)  # `kill PID`: the workers get nothing from the shell
        code, out, err = _finish(proc, 180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == code_expected, err
    _one_line(err, sig.name)
    trials = _trials(name, s["storage"])
    assert len(trials) == 2 and all(t.state == TrialState.FAIL for t in trials)
    assert {t.user_attrs["fail_reason"] for t in trials} == {f"interrupted: {sig.name}"}, err
    for t in trials:
        _assert_interrupted_run(s["tracking"], name, t.user_attrs["mlflow_run_id"], sig.name)
    assert _parent_status(s["tracking"], name) == "KILLED"
    time.sleep(0.5)
    assert not [p for p in workers if Path(f"/proc/{p}").exists()
                and "zombie" not in Path(f"/proc/{p}/status").read_text().lower()]


# ------------------------------------------------------------------ other verbs
def _running_run(tracking: str, experiment: str) -> str | None:
    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    for r in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'"):
        if r.data.tags.get("hpstudy.kind") in ("train", "ablation") and r.data.metrics:
            return r.info.run_id
    return None


def test_sigint_during_train_ends_its_run_killed(tmp_path: Path):
    s = _stores(tmp_path)
    path = _write(tmp_path, "traincc", train=LONG)
    proc = _start(["train", str(path), "--tracking-uri", s["tracking"]], tmp_path)
    try:
        run_id = wait_for(lambda: _running_run(s["tracking"], "traincc"), 240,
                          "the run to log an epoch", step=0.5)
        os.killpg(proc.pid, signal.SIGINT)
        code, out, err = _finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 130, err
    assert "recorded KILLED" in _one_line(err, "SIGINT")
    _assert_interrupted_run(s["tracking"], "traincc", run_id, "SIGINT")


def test_sigterm_during_ablate_kills_the_cell_run_and_resumes(tmp_path: Path):
    s = _stores(tmp_path)
    base = tiny_study("ablbase", train=LONG)
    base.pop("search")
    abl = tmp_path / "abl.yaml"
    abl.write_text(yaml.safe_dump({"name": "ablsig", "base": base, "seeds": [0],
                                   "factors": {"dropout": {"off": 0.0, "on": 0.2}},
                                   "report": {"enabled": False}}, sort_keys=False))
    proc = _start(["ablate", str(abl), "--tracking-uri", s["tracking"]], tmp_path)
    try:
        run_id = wait_for(lambda: _running_run(s["tracking"], "ablsig"), 240,
                          "a cell's run to log an epoch", step=0.5)
        proc.send_signal(signal.SIGTERM)
        code, out, err = _finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 143, err
    line = _one_line(err, "SIGTERM")
    assert "0 of 2 run(s) finished" in line and f"hpstudy ablate {abl}" in line
    _assert_interrupted_run(s["tracking"], "ablsig", run_id, "SIGTERM")
    client = MlflowClient(tracking_uri=s["tracking"])
    exp = client.get_experiment_by_name("ablsig")
    (summary,) = client.search_runs([exp.experiment_id],
                                    "tags.`hpstudy.kind` = 'ablation_summary'")
    assert summary.info.status == "KILLED"


@pytest.mark.slow  # several processes of torch + Lightning: a minute or more
def test_sigterm_during_worker_exits_143(tmp_path: Path):
    s = _stores(tmp_path)
    path = _write(tmp_path, "wsig", train=LONG, search={"n_trials": 2, "space": "none"})
    proc = _start(["worker", str(path), "--storage", s["storage"], "--tracking-uri",
                   s["tracking"], "-q"], tmp_path)
    try:
        wait_for(lambda: _running_with_epochs("wsig", s["storage"]), 240,
                 "the worker's trial to report an epoch", step=0.5)
        proc.send_signal(signal.SIGTERM)
        code, out, err = _finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 143, err
    assert "resume with: hpstudy worker" in _one_line(err, "SIGTERM")
    (t,) = _trials("wsig", s["storage"])
    assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == "interrupted: SIGTERM"


# ------------------------------------------------------------------ kill -9, then rerun
def killed_then_rerun(name: str, storage: str, tracking: str, tmp: Path) -> None:
    """SIGKILL a study mid-trial; an immediate rerun fails and retries that trial at once."""
    path = _write(tmp, name, train={"max_epochs": 2, "num_threads": 1},
                  search={"n_trials": 3, "space": "none"})
    proc = _start(["run", str(path), "--storage", storage, "--tracking-uri", tracking, "-q",
                   "--set", "train.max_epochs=3000", "--set", "train.limit_train_batches=1"],
                  tmp)
    try:
        (trial,) = wait_for(lambda: _running_with_epochs(name, storage), 240,
                            "a trial to report an epoch", step=0.5)
        os.killpg(proc.pid, signal.SIGKILL)  # nothing can be recorded
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert _trials(name, storage)[0].state == TrialState.RUNNING
    start = time.monotonic()
    rerun = _start(["run", str(path), "--storage", storage, "--tracking-uri", tracking, "-q",
                    "--no-report"], tmp)
    code, out, err = _finish(rerun, 400)
    assert code == 0, err
    trials = _trials(name, storage)
    lost = trials[0]
    assert lost.state == TrialState.FAIL
    assert lost.user_attrs["fail_reason"].startswith("worker lost: its process")
    retry = trials[1]
    assert retry.system_attrs.get("failed_trial") == lost.number
    assert retry.user_attrs["retry_of"] == lost.number
    # exactly the trials asked for: the retry is one of the 3, no number twice
    assert [t.state for t in trials[1:]] == [TrialState.COMPLETE] * 3
    assert [t.number for t in trials] == list(range(4))
    client = MlflowClient(tracking_uri=tracking)
    dead = client.get_run(lost.user_attrs["mlflow_run_id"])
    assert dead.info.status == "FAILED" and dead.data.tags["hpstudy.state"] == "FAIL"
    # at once: long before the heartbeat's 120 s grace period
    assert time.monotonic() - start < 110


def test_sigkill_then_rerun_retries_the_dead_trial_at_once_on_sqlite(tmp_path: Path):
    s = _stores(tmp_path)
    killed_then_rerun("killed9", s["storage"], s["tracking"], tmp_path)


@pytest.fixture
def pg() -> Iterator[str]:
    reason = postgres_skip_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is needed: {reason}")
        pytest.skip(reason)
    with postgres_url() as url:
        yield url


@pytest.mark.slow  # several processes of torch + Lightning: a minute or more
def test_sigkill_then_rerun_retries_the_dead_trial_at_once_on_postgres(pg, tmp_path: Path):
    killed_then_rerun("killed9pg", pg, f"sqlite:///{tmp_path}/mlflow.db", tmp_path)


# ------------------------------------------------------------------ incompatible resume
def test_resume_with_an_incompatible_space_exits_2_before_any_trial(tmp_path: Path, write_study,
                                                                    monkeypatch, capsys):
    s = _stores(tmp_path)
    raw = tiny_study("incompat", train={"max_epochs": 1, "limit_train_batches": 1},
                     search={"n_trials": 1})
    path = write_study(raw)
    args = ["--storage", s["storage"], "--tracking-uri", s["tracking"], "-q", "--no-report"]
    code, _, err = run_cli("run", str(path), *args, monkeypatch=monkeypatch, cwd=tmp_path,
                           capsys=capsys)
    assert code == 0, err
    raw["search"]["space"]["train.lr"] = [0.01, 0.001]  # float before, categorical now
    path = write_study(raw)
    code, _, err = run_cli("run", str(path), *args, monkeypatch=monkeypatch, cwd=tmp_path,
                           capsys=capsys)
    assert code == 2, err
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    assert "search.space.train.lr" in line and "float [0.001, 0.05, log]" in line
    assert "categorical [0.01, 0.001]" in line and "--set name=" in line
    assert len(optuna.load_study(study_name="incompat", storage=s["storage"]).trials) == 1
