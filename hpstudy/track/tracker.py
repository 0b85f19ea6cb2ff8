"""MLflow tracking with the client API: one parent run per study, one child per trial.

Naming is a contract (DESIGN.md): experiment = study name; the parent run is
tagged ``hpstudy.kind=study``; each trial's run is named ``trial-0007``, nested
under the parent (``mlflow.parentRunId``) and tagged ``optuna.study_name``,
``optuna.trial_number``, ``hpstudy.state`` and ``hpstudy.diagnosis``. Metrics
are written once per epoch in one ``log_batch`` call (step = epoch).

The client is created once per process: a fresh SQLite store costs about a
second of migrations, and a fluent-API global run would not survive
concurrent trials.

New experiments are tagged ``mlflow.experimentKind=custom_model_development``
so the MLflow 3 UI opens them on their training runs, not the GenAI overview.
Each trial's dataset is an MLflow input (:meth:`Tracker.log_dataset`): name,
a digest of what selects the images, split sizes in its profile.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import platform
import subprocess
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

from .._sqlite import tune_sqlite
from .._urls import absolute_url
from ..names import (
    EPOCH_METRICS,
    HISTORY_KEYS,
    KIND_STUDY,
    KIND_TRIAL,
    RUNNING,
    STATE_TO_RUN_STATUS,
    TAG_KIND,
    TAG_PARENT_RUN,
    TAG_STATE,
    TAG_STUDY,
    TAG_TRIAL_NUMBER,
    trial_run_name,
)

# a new SQLite store announces its migrations at INFO; mlflow configures its
# loggers on import, so quiet that one child logger after the import
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

_MAX_PARAM_LEN = 6000  # MLflow's param value limit
_BATCH = 100  # MLflow accepts at most 100 params per log_batch call
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # UI opens on runs
# data-config keys that change how images are fed, not which images: left out of the digest
_NOT_DATA_IDENTITY = ("batch_size", "eval_batch_size", "num_workers", "augmentation", "download",
                      "root", "flip_invariant",
                      # describe() facts about how images are fed, not which images
                      "data.loader", "data.augment_ops", "data.cache")


def _now_ms() -> int:
    return int(time.time() * 1000)


def is_local_store(uri: str) -> bool:
    """SQLite or file stores: artifacts go to a local folder we choose."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def local_artifact_root(uri: str) -> Path:
    """``artifacts/`` beside a SQLite store's file (``mlruns/artifacts`` for the default)."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts"
    if uri.startswith("file:"):
        return Path(uri.removeprefix("file://").removeprefix("file:")).resolve() / "artifacts"
    return Path("mlruns/artifacts").resolve()


def prepare_local_uri(uri: str) -> str:
    """Create the folder of a relative ``sqlite:///path/db`` URI (MLflow does not)."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
    return uri


def _param_value(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, list | dict | tuple) else str(v)
    return s[:_MAX_PARAM_LEN]


@lru_cache(maxsize=1)
def run_environment() -> dict[str, str]:
    """Git commit and hardware, tagged on every run (record the evidence)."""
    tags: dict[str, str] = {"hpstudy.host": platform.node(),
                            "hpstudy.python": platform.python_version(),
                            # the UI's Source column (with the commit below)
                            "mlflow.source.type": "LOCAL", "mlflow.source.name": "hpstudy"}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        if commit:
            tags["mlflow.source.git.commit"] = commit
    except (OSError, subprocess.SubprocessError):
        pass
    # a parallel worker's GPU(s) and threads (hpstudy.search.placement)
    if os.environ.get("HPSTUDY_PLACEMENT"):
        tags["hpstudy.placement"] = os.environ["HPSTUDY_PLACEMENT"]
    import torch

    tags["hpstudy.torch"] = torch.__version__
    if torch.cuda.is_available():
        tags["hpstudy.hardware"] = f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    else:
        tags["hpstudy.hardware"] = f"cpu ({os.cpu_count()} cores, {platform.machine()})"
    return tags


def history_csv(history: Iterable[dict[str, Any]]) -> str:
    """Per-epoch history as CSV text (the ``history.csv`` artifact)."""
    rows = list(history)
    buf = io.StringIO()
    keys = list(HISTORY_KEYS)
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def dataset_input(data: dict[str, Any], info: dict[str, Any]) -> DatasetInput:
    """The MLflow input entity of a trial's dataset.

    Args:
        data: the concrete ``data:`` section as plain data (``StudyConfig.to_dict()["data"]``).
        info: the data module's ``describe()`` (``data.n_train``, ``data.mean``...).

    Returns:
        A ``DatasetInput`` named after the dataset, with an 8-hex digest of what
        selects its images (dataset, options, split seed and sizes, subset, the
        training split's normalization statistics), the split sizes as its
        profile, an image/label tensor schema and context ``training``.
    """
    identity = {k: v for k, v in data.items() if k not in _NOT_DATA_IDENTITY}
    identity.update(info)
    digest = hashlib.md5(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]
    sizes = {k: info.get(f"data.{k}") for k in ("n_train", "n_val", "n_test")}
    profile = {"num_rows": sizes["n_train"], **sizes, "input_size": info.get("data.input_size")}
    options = {k: v for k, v in identity.items() if k not in ("dataset", "seed", "val_split",
                                                             "subset") and not k.startswith("data.")}
    source = {"tags": {"hpstudy.loader": "hpstudy.data", "hpstudy.dataset": str(data["dataset"]),
                       "hpstudy.options": json.dumps(options, sort_keys=True, default=str)}}
    dataset = Dataset(name=str(data["dataset"]), digest=digest, source_type="code",
                      source=json.dumps(source), schema=_image_schema(info),
                      profile=json.dumps(profile))
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])


def _image_schema(info: dict[str, Any]) -> str | None:
    """Tensor schema of the fed images (N, C, S, S) float32 and labels (N,) int64."""
    mean, size = info.get("data.mean"), info.get("data.input_size")
    if not isinstance(mean, list) or not size:
        return None
    import numpy as np
    from mlflow.types import Schema, TensorSpec

    features = Schema([TensorSpec(np.dtype(np.float32), (-1, len(mean), size, size), "image")])
    targets = Schema([TensorSpec(np.dtype(np.int64), (-1,), "label")])
    return json.dumps({"mlflow_tensorspec": {"features": features.to_json(),
                                             "targets": targets.to_json()}})


def trial_tags(study_name: str, number: int) -> dict[str, Any]:
    """The tags a trial's run starts with (``hpstudy.state`` RUNNING until it ends)."""
    return {TAG_KIND: KIND_TRIAL, TAG_STUDY: study_name, TAG_TRIAL_NUMBER: number,
            TAG_STATE: RUNNING}


class Tracker:
    """One MLflow client bound to one experiment.

    Args:
        uri: tracking URI (``sqlite:///mlruns/mlflow.db``, ``http://127.0.0.1:5000``...).
        experiment: experiment name (the study name).
        artifact_location: where a new experiment stores artifacts; ``None`` puts
            them under ``mlruns/artifacts/`` next to a local store and lets a
            tracking server decide otherwise.
    """

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None):
        self.uri = prepare_local_uri(uri)
        if self.uri.startswith("sqlite:"):
            tune_sqlite(absolute_url(self.uri))
        self.client = MlflowClient(tracking_uri=absolute_url(self.uri))
        self.experiment = experiment
        self.experiment_id = self._experiment_id(experiment, artifact_location)
        self._writer: ThreadPoolExecutor | None = None  # epoch metrics (log_epoch)
        self._pending: list[tuple[str, Future[None]]] = []
        self._pid = os.getpid()  # background writes only in the process that made it

    def __getstate__(self) -> dict[str, Any]:
        # a copy sent to a spawned DDP rank: no writer thread, nothing pending
        return {**self.__dict__, "_writer": None, "_pending": []}

    @classmethod
    def for_run(cls, uri: str, run_id: str) -> Tracker:
        """A tracker bound to the experiment that holds ``run_id``."""
        client = MlflowClient(tracking_uri=absolute_url(uri))
        experiment = client.get_experiment(client.get_run(run_id).info.experiment_id)
        return cls(uri, experiment.name)

    def _experiment_id(self, name: str, artifact_location: str | None) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        if artifact_location is None and is_local_store(self.uri):
            artifact_location = (local_artifact_root(self.uri) / name).as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=artifact_location,
                                                 tags=EXPERIMENT_KIND)
        except Exception:  # created meanwhile by another worker
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    # ------------------------------------------------------------- runs
    def study_run(self, study_name: str, run_id: str | None = None,
                  params: dict[str, Any] | None = None) -> str:
        """The study's parent run: ``run_id`` if it still exists, else found by tag, else new."""
        if run_id:
            try:
                run = self.client.get_run(run_id)
                if run.info.lifecycle_stage == "active":
                    self.client.update_run(run_id, status="RUNNING")
                    return run_id
            except Exception:
                pass
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=(f"tags.`{TAG_KIND}` = '{KIND_STUDY}' and "
                           f"tags.`{TAG_STUDY}` = '{study_name}'"),
            max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        if found:
            self.client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
        tags = {TAG_KIND: KIND_STUDY, TAG_STUDY: study_name, **run_environment()}
        run = self.client.create_run(self.experiment_id, run_name=study_name, tags=tags)
        if params:
            self.log_params(run.info.run_id, params)
        return run.info.run_id

    def start_run(self, run_name: str, tags: dict[str, Any], params: dict[str, Any],
                  parent_id: str | None = None) -> str:
        """A (child) run with tags and params logged in batches."""
        all_tags = {**run_environment(), **{k: str(v) for k, v in tags.items()}}
        if parent_id:
            all_tags[TAG_PARENT_RUN] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def start_trial(self, parent_id: str, study_name: str, number: int,
                    params: dict[str, Any]) -> str:
        """The child run of trial ``number``, named ``trial-0007``."""
        return self.start_run(trial_run_name(number), trial_tags(study_name, number), params,
                              parent_id=parent_id)

    def find_trial_run(self, study_name: str, number: int) -> str | None:
        """The newest run of trial ``number`` of ``study_name`` (by its tags), or None."""
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=(f"tags.`{TAG_STUDY}` = '{study_name}' and "
                           f"tags.`{TAG_TRIAL_NUMBER}` = '{number}' and "
                           f"tags.`{TAG_KIND}` = '{KIND_TRIAL}'"),
            max_results=1, order_by=["attributes.start_time DESC"],
        )
        return found[0].info.run_id if found else None

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(run_id, params=items[i : i + _BATCH])

    def log_epoch(self, run_id: str, record: dict[str, Any]) -> None:
        """All metrics of one epoch in one call (step = epoch), written in the background.

        The call returns at once: one writer thread per tracker sends the
        epochs in order while the next epoch trains (a ``log_batch`` on SQLite
        waits 15-25 ms for the disk, about 5 ms of it CPU). :meth:`end_run`
        (and :meth:`flush`) waits for them; a write that failed raises there.
        """
        ts, step = _now_ms(), int(record["epoch"])
        metrics = [Metric(k, float(record[k]), ts, step) for k in EPOCH_METRICS if k in record]
        if os.getpid() != self._pid:
            # a spawned or forked rank: it may end with os._exit, which waits for no
            # thread, so its epochs are written before the epoch ends
            self.client.log_batch(run_id, metrics=metrics)
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpstudy-mlflow")
        future = self._writer.submit(self.client.log_batch, run_id, metrics=metrics)
        self._pending.append((run_id, future))

    def flush(self, run_id: str | None = None) -> None:
        """Wait for the epochs logged in the background (of ``run_id``, or all).

        Raises:
            The first error of those writes (each is raised once).
        """
        keep, error = [], None
        for rid, future in self._pending:
            if run_id is not None and rid != run_id:
                keep.append((rid, future))
                continue
            e = future.exception()
            if e is not None and error is None:
                error = e
        self._pending = keep
        if error is not None:
            raise error

    def log_metrics(self, run_id: str, values: dict[str, float], step: int = 0) -> None:
        ts = _now_ms()
        metrics = [Metric(k, float(v), ts, step) for k, v in values.items() if v is not None]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_dataset(self, run_id: str, data: dict[str, Any], info: dict[str, Any]) -> None:
        """Log the trial's dataset as an MLflow input (see :func:`dataset_input`)."""
        if data.get("dataset") and info:
            self.client.log_inputs(run_id, datasets=[dataset_input(data, info)])

    def end_run(self, run_id: str, state: str, tags: dict[str, Any] | None = None) -> None:
        """Wait for its epochs, tag the final ``hpstudy.state`` and terminate (FAIL -> FAILED).

        An epoch that could not be written is raised after the run is terminated.
        """
        try:
            self.flush(run_id)
        finally:
            self.set_tags(run_id, {TAG_STATE: state, **(tags or {})})
            self.client.set_terminated(run_id, status=STATE_TO_RUN_STATUS.get(state, "FINISHED"))

    def finish_study(self, run_id: str, summary: dict[str, float], status: str = "FINISHED") -> None:
        """Study-level results on the parent run (step = number of trials so far)."""
        step = int(summary.get("n_trials", 0))
        self.log_metrics(run_id, summary, step=step)
        self.client.set_terminated(run_id, status=status)
