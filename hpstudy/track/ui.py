"""``hpstudy ui``: the MLflow UI on the project's store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from .tracker import local_artifact_root, prepare_local_uri

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"


def ui_command(tracking_uri: str, host: str, port: int) -> list[str]:
    """The ``mlflow ui`` command line for a backend store (artifacts served through the UI)."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
           "--host", host, "--port", str(port)]
    if tracking_uri.startswith(("sqlite:", "file:")):
        cmd += ["--default-artifact-root", local_artifact_root(tracking_uri).as_uri()]
    return cmd


def experiment_url(tracking_uri: str, experiment: str | None, host: str, port: int) -> str:
    """URL of the experiment page (the UI's root when the experiment is unknown)."""
    base = f"http://{host}:{port}"
    if not experiment:
        return base
    from mlflow import MlflowClient

    exp = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment)
    return f"{base}/#/experiments/{exp.experiment_id}" if exp else base


def serve_ui(study: str | None = None, tracking_uri: str | None = None,
             host: str = "127.0.0.1", port: int = 5000) -> int:
    """Run the MLflow UI in the foreground until Ctrl-C; returns its exit code."""
    experiment = None
    if study:
        if Path(study).exists():
            from ..config import load_study

            cfg = load_study(study)
            tracking_uri = cfg.tracking_uri(tracking_uri)
            experiment = cfg.tracking.experiment or cfg.name
        else:
            experiment = study
    uri = prepare_local_uri(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI)
    url = experiment_url(uri, experiment, host, port)
    print(f"MLflow UI for {uri}\n  {url}\n(Ctrl-C to stop)", flush=True)
    proc = subprocess.Popen(ui_command(uri, host, port))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            return proc.wait()
