"""``hpstudy ui``: the MLflow UI on the project's store, in the foreground until Ctrl-C.

``serve_ui`` resolves the store (flag > study file > ``$MLFLOW_TRACKING_URI``
> ``sqlite:///mlruns/mlflow.db``), starts ``mlflow server`` on it in its own
process group (uvicorn's access log off), waits until ``/health`` answers,
prints the URLs of the study's runs and, on Ctrl-C (or SIGTERM), stops the
whole group and returns 0.

The URLs open two views saved on the study's experiment (:func:`study_views`):
the study run with its trials nested under it (sorted by start time, the only
order in which MLflow nests), and the trials alone, best first; both with the
columns that matter (description, best objective, test accuracy, searched
hyperparameters, state, diagnosis) and the study's optimization history as the
first chart. :func:`serve_foreground` runs any such web server (``hpstudy
dashboard`` uses it for optuna-dashboard).

A study that tracks to an MLflow server (``http://...``) is not served again:
its URL on that server is printed instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .._proc import Interrupted, stop_process_group, trap_signals
from .._urls import absolute_url
from .tracker import local_artifact_root, prepare_local_uri

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# the GenAI job runner (judges, scorers) forks about 8 processes; hpstudy's runs need none
_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class UIError(RuntimeError):
    """The UI cannot be served as asked (port in use, server exited at start)."""


@dataclass
class StudyTarget:
    """What ``hpstudy ui`` serves: a store, and optionally one study's experiment."""

    tracking_uri: str
    experiment: str | None = None
    metric: str = "val_acc"
    direction: str = "maximize"


def is_remote(uri: str) -> bool:
    """A tracking server (``http(s)://``, ``databricks``...), not a store we can serve."""
    return not uri.startswith(("sqlite:", "file:", "postgresql", "mysql", "mssql")) \
        and "://" in uri


def resolve_target(study: str | None, tracking_uri: str | None) -> StudyTarget:
    """The store and experiment for a study file, a study name, or nothing (all experiments)."""
    if study and (Path(study).is_file() or study.endswith((".yaml", ".yml"))):
        from ..config import load_study

        cfg = load_study(study)
        return StudyTarget(cfg.tracking_uri(tracking_uri), cfg.tracking.experiment or cfg.name,
                           cfg.search.metric, cfg.direction)
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    return StudyTarget(uri, study or None)


def ui_command(tracking_uri: str, host: str, port: int, workers: int = 1) -> list[str]:
    """The ``mlflow server`` command line serving ``tracking_uri`` (UI + REST API).

    A host other than the loopback gets ``--allowed-hosts`` naming this
    machine, so that MLflow's DNS-rebinding protection admits its own address.
    """
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
           "--host", host, "--port", str(port), "--workers", str(workers),
           # one line per request (hundreds a minute of browsing) would scroll the URL away
           "--uvicorn-opts", "--no-access-log"]
    if tracking_uri.startswith(("sqlite:", "file:")):
        cmd += ["--default-artifact-root", local_artifact_root(tracking_uri).as_uri()]
    if host not in LOOPBACK:
        names = {host, socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1"}
        names.discard("0.0.0.0")
        names.discard("::")
        allowed = sorted(names | {f"{n}:{port}" for n in names})
        cmd += ["--allowed-hosts", ",".join(allowed)]
    return cmd


def runs_url(base: str, experiment_id: str, metric: str = "val_acc",
             direction: str = "maximize") -> str:
    """The experiment's runs sorted by the best-epoch objective (trials flat, best first)."""
    key = quote(f"metrics.`best_{metric}`", safe="")
    asc = "true" if direction == "minimize" else "false"
    return f"{base}/#/experiments/{experiment_id}/runs?orderByKey={key}&orderByAsc={asc}"


# ------------------------------------------------------------------ saved views
# The MLflow UI (3.x) opens a view kept in an experiment tag
# ``mlflow.sharedViewState.<key>`` when its URL says ``?viewStateShareKey=<key>``:
# the search facets (sort, filter) and the table/chart settings (columns,
# charts), but not which parent rows are expanded (MLflow leaves that out). The
# runs table nests child runs under their parent only when it is sorted by
# start time without a filter; sorted by a metric it lists every run flat.
SHARE_TAG = "mlflow.sharedViewState."
VIEW_NESTED = "hpstudy"  # the study run with its trials nested under it
VIEW_BEST = "hpstudy-best"  # the trials alone, best first


def view_url(base: str, experiment_id: str, key: str = VIEW_NESTED) -> str:
    """The runs page of an experiment opened on the saved view ``key``."""
    return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={key}"


def _column(kind: str, name: str) -> str:
    return f"{kind}.`{name}`"


def _chart(uuid: str, section: str, kind: str, metric: str, **extra: Any) -> dict[str, Any]:
    return {"uuid": uuid, "type": kind, "runsCountToCompare": 100, "metricSectionId": section,
            "deleted": False, "isGenerated": False, "metricKey": metric, **extra}


def study_views(metric: str, direction: str, params: list[str]) -> dict[str, dict[str, Any]]:
    """The two saved views of a study's experiment, as the MLflow UI stores them.

    Args:
        metric: the study's objective (``val_acc``): its best-epoch value
            ``best_<metric>`` is a column and the sort of the "best first" view.
        direction: ``maximize`` or ``minimize``.
        params: the hyperparameters to show as columns (those the study searched).

    Returns:
        ``{key: state}`` for :data:`VIEW_NESTED` and :data:`VIEW_BEST`.
    """
    # Description: each trial's state, value, epoch and verdict in words (the run's note);
    # then the numbers, the searched hyperparameters, the tags
    columns = [_column("attributes", "Description"), _column("metrics", f"best_{metric}"),
               _column("metrics", "test_acc"), _column("metrics", "best_epoch"),
               _column("metrics", "best_value"), *(_column("params", p) for p in params),
               _column("tags", "hpstudy.state"), _column("tags", "hpstudy.diagnosis")]
    section = "hpstudy-section"
    line = {"lineSmoothness": 0, "scaleType": "linear", "xAxisKey": "step",
            "selectedXAxisMetricKey": "", "xAxisScaleType": "linear"}
    charts = [
        # the study run: best value so far and each trial's value, by trial number
        _chart("hpstudy-history", section, "LINE", "best_value",
               selectedMetricKeys=["best_value", "trial_value"], **line),
        _chart("hpstudy-curves", section, "LINE", metric, selectedMetricKeys=[metric], **line),
        _chart("hpstudy-best", section, "BAR", f"best_{metric}"),
        _chart("hpstudy-test", section, "BAR", "test_acc"),
    ]
    common = {"searchFilter": "", "startTime": "ALL", "lifecycleFilter": "Active",
              "datasetsFilter": [], "modelVersionFilter": "All Runs",
              "selectedColumns": columns, "runsHiddenMode": "SHOW_ALL",
              "columnOrder": [_column("attributes", "Run Name"), *columns],
              "compareRunCharts": charts,
              "compareRunSections": [{"uuid": section, "name": "hpstudy", "display": True,
                                      "isReordered": True, "deleted": False,
                                      "isGenerated": False}],
              "isAccordionReordered": True, "hideEmptyCharts": True}
    nested = {**common, "orderByKey": "attributes.start_time", "orderByAsc": False}
    best = {**common, "orderByKey": _column("metrics", f"best_{metric}"),
            "orderByAsc": direction == "minimize",
            "searchFilter": "tags.`hpstudy.kind` = 'trial'"}
    return {VIEW_NESTED: nested, VIEW_BEST: best}


def searched_params(client: Any, experiment_id: str, limit: int = 500) -> list[str]:
    """Params whose values differ between the experiment's trial (or cell) runs, sorted."""
    runs = client.search_runs([experiment_id], "tags.`hpstudy.kind` != 'study'",
                              max_results=limit)
    values: dict[str, set[str]] = {}
    for r in runs:
        for k, v in r.data.params.items():
            values.setdefault(k, set()).add(v)
    return sorted(k for k, v in values.items() if len(v) > 1 and not k.startswith("data.n_"))


def save_study_views(client: Any, experiment_id: str, metric: str, direction: str) -> None:
    """Keep the study's saved views on its experiment (tags), refreshed on every call."""
    for key, state in study_views(metric, direction,
                                  searched_params(client, experiment_id)).items():
        client.set_experiment_tag(experiment_id, SHARE_TAG + key, json.dumps(state))


def experiment_urls(target: StudyTarget, base: str) -> list[str]:
    """URLs of the study's runs (nested; best first), or of the experiment list."""
    if not target.experiment:
        return [f"{base}/"]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=absolute_url(target.tracking_uri))
    exp = client.get_experiment_by_name(target.experiment)
    if exp is None:
        return [f"{base}/"]
    try:
        save_study_views(client, exp.experiment_id, target.metric, target.direction)
    except Exception:  # noqa: BLE001 - a read-only store: the plain sorted URL still works
        return [runs_url(base, exp.experiment_id, target.metric, target.direction)]
    return [view_url(base, exp.experiment_id, VIEW_NESTED),
            view_url(base, exp.experiment_id, VIEW_BEST)]


def experiment_url(target: StudyTarget, base: str) -> str:
    """URL of the study's runs nested under its study run (see :func:`experiment_urls`)."""
    return experiment_urls(target, base)[0]


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # as uvicorn binds: connections of a server that just stopped (TIME_WAIT) are no conflict
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float, what: str = "mlflow server"
                ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UIError(f"{what} exited with code {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise UIError(f"{what} did not answer {url} within {timeout:.0f}s")


def stop_server(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGTERM the server's process group (uvicorn shuts down gracefully), then SIGKILL."""
    return stop_process_group(proc, grace_s=timeout)


def serve_foreground(cmd: list[str], probe_url: str, ready_message: str, *,
                     env: dict[str, str] | None = None, ready_timeout: float = 180.0,
                     what: str = "mlflow server", stopped: str = "MLflow UI stopped",
                     say: Callable[[str], None]) -> int:
    """Run a web server in its own process group until Ctrl-C, SIGTERM or SIGHUP.

    The server leads its own process group, so a terminal's signals do not reach
    it: they reach this process, which stops it (a closed terminal included).
    Prints ``ready_message`` once ``probe_url`` answers 200.

    Returns:
        0 after a signal stopped the server, else the server's exit code.

    Raises:
        UIError: the server exited or hung while starting.
    """
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        with trap_signals():
            _wait_ready(probe_url, proc, ready_timeout, what)
            say(ready_message)
            return proc.wait()
    except (Interrupted, KeyboardInterrupt):
        stop_server(proc)
        say(stopped)
        return 0
    finally:
        if proc.poll() is None:
            stop_server(proc)


def serve_ui(study: str | None = None, tracking_uri: str | None = None,
             host: str = "127.0.0.1", port: int = 5000, *, ready_timeout: float = 180.0,
             echo: Callable[[str], None] | None = None) -> int:
    """Run the MLflow UI on the project's store in the foreground until Ctrl-C.

    Args:
        study: a study file or name (its experiment's URL is printed), or None.
        tracking_uri: MLflow store (flag > study file > $MLFLOW_TRACKING_URI > default).
        host: bind address; anything but the loopback exposes the UI (no login).
        port: TCP port.
        ready_timeout: seconds to wait for the server to answer.
        echo: where messages go (default: print to stdout, flushed).

    Returns:
        0 after Ctrl-C or SIGTERM stopped the server, else the server's exit code.

    Raises:
        UIError: the port is taken, or the server exited or hung while starting.
    """
    say = echo or (lambda m: print(m, flush=True))
    target = resolve_target(study, tracking_uri)
    if is_remote(target.tracking_uri):
        base = target.tracking_uri.rstrip("/")
        say(f"{target.tracking_uri} is a tracking server: its UI is already there\n"
            + _url_lines(experiment_urls(target, base)))
        return 0
    if not port_free(host, port):
        raise UIError(f"port {port} on {host} is in use; pick another with --port")
    uri = prepare_local_uri(target.tracking_uri)
    wildcard = host in ("0.0.0.0", "::")
    shown = socket.getfqdn() if wildcard else host
    urls = experiment_urls(StudyTarget(uri, target.experiment, target.metric, target.direction),
                           f"http://{_url_host(shown)}:{port}")  # a new store is made here, once
    if host not in LOOPBACK:
        say(f"warning: the MLflow UI has no login; anyone who reaches {host}:{port} can read "
            "and delete runs")
    env = {**os.environ, **{k: v for k, v in _SERVER_ENV.items() if k not in os.environ}}
    probe = "127.0.0.1" if wildcard or host in LOOPBACK else host
    return serve_foreground(ui_command(uri, host, port), f"http://{_url_host(probe)}:{port}/health",
                            f"MLflow UI on {uri}\n{_url_lines(urls)}\n(Ctrl-C to stop)", env=env,
                            ready_timeout=ready_timeout, say=say)


def _url_lines(urls: list[str]) -> str:
    """The URLs to open, each with what it shows."""
    if len(urls) == 1:
        return f"  {urls[0]}"
    return (f"  {urls[0]}\n    the study run with its trials nested (click its + to list them)\n"
            f"  {urls[1]}\n    the trials alone, best first")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host



