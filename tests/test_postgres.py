"""Many machines: workers sharing one PostgreSQL study and one ``mlflow server``.

Uses this machine's PostgreSQL (127.0.0.1:5432, user postgres; every test
creates and drops its own database) and a real ``mlflow server`` process on
127.0.0.1. Skips with the reason when PostgreSQL is not there.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import tiny_study
from mlflow import MlflowClient
from optuna.trial import TrialState
from servers import (
    postgres_skip_reason,
    postgres_url,
    service_unavailable,
    skip_without_postgres,
    start_mlflow_server,
)
from test_scale import REPO, hpstudy_cmd, killed_worker_is_retried

from hpstudy.config import from_dict
from hpstudy.search import connect

pytestmark = [pytest.mark.dist, skip_without_postgres()]  # under CI: fail, with the reason


@pytest.fixture(scope="module", autouse=True)
def _postgres_here() -> None:
    """Before any server starts: skip, or under CI fail, when PostgreSQL is absent."""
    reason = postgres_skip_reason()
    if reason:
        service_unavailable(reason)


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One ``mlflow server`` for the module (it takes seconds to start)."""
    with start_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as (url, _proc):
        yield url


@pytest.fixture
def pg() -> Iterator[str]:
    with postgres_url() as url:
        yield url


def test_workers_on_two_processes_share_one_postgres_study(pg, tracking_server, tmp_path: Path):
    name = "pg-shared"
    cfg = from_dict(tiny_study(name, search={"n_trials": 4}))
    # the coordinator: creates the study, stores its config and the parent run's id
    parent = connect(cfg, pg, tracking_server).parent_run_id
    # two workers join by name, as on two machines (config read from the storage);
    # the bare postgresql:// form is what a user types
    bare = "postgresql://" + pg.split("://", 1)[1]
    procs = [subprocess.Popen(
        hpstudy_cmd("worker", name, "--storage", bare, "--tracking-uri", tracking_server,
                    "--n-trials", "2", "-q"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) for _ in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=400)
        assert p.returncode == 0, out

    trials = optuna.load_study(study_name=name, storage=pg).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]  # none lost, none twice
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.params["train.lr"] for t in trials}) == 4  # each worker its own seed
    client = MlflowClient(tracking_uri=tracking_server)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("hpstudy.kind") == "study"]
    children = [r for r in runs if r.data.tags.get("hpstudy.kind") == "trial"]
    assert [r.info.run_id for r in parents] == [parent]  # the workers found it, made none
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == [0, 1, 2, 3]
    for r in children:
        t = trials[int(r.data.tags["optuna.trial_number"])]
        assert r.data.tags["mlflow.parentRunId"] == parent
        assert t.user_attrs["mlflow_run_id"] == r.info.run_id
        assert r.info.status == "FINISHED"
        # artifacts went through the server (--artifacts-destination)
        assert "history.csv" in {a.path for a in client.list_artifacts(r.info.run_id)}


@pytest.mark.slow  # tens of seconds of the 15-minute default suite: `make test-all` runs it
def test_heartbeat_fails_and_retries_a_killed_workers_trial_on_postgres(
    pg, tracking_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    killed_worker_is_retried("pg-heartbeat", pg, tracking_server, tmp_path, monkeypatch)
