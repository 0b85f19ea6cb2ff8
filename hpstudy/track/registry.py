"""The best trial's model: checkpoints on trial runs, one logged model, the registry.

The best trial is known only when a study ends, and its weights live in the
process that trained it, which may be another process or machine. So:

1. A trial that finishes better than the study's best so far (every trial
   when ``tracking.log_checkpoints`` is set) leaves ``checkpoint/model.pt`` on
   its run: the network's ``state_dict`` on the CPU, the arguments that rebuild
   the network from the model registry, and two validation inputs. A
   ``torch.save`` of a small dict: milliseconds, where ``log_model`` takes
   about a second (a ``torch.export`` trace).
2. When the study ends, :func:`register_best` loads the best trial's
   checkpoint (``torch.load(..., weights_only=True)``), rebuilds the network,
   logs it once with ``mlflow.pytorch.log_model`` (signature and input
   example) on the best trial's run and registers it as ``<study>-best``. A
   new version is created only when the best trial changed (a resumed study
   that improved); otherwise the latest version is returned as is.

The model takes normalized images (N, C, S, S) float32 and returns logits;
the normalization (mean, std, input size) is in the model's metadata. It is
saved as a ``torch.export`` program (``pt2``: loads without hpstudy and
without unpickling code), falling back to pickle for a network that cannot be
exported.
"""

from __future__ import annotations

import copy
import importlib.metadata
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._urls import absolute_url
from .tracker import Tracker

CHECKPOINT = "checkpoint/model.pt"
MODEL_NAME = "model"  # the logged model's name on the best trial's run
_log = logging.getLogger("hpstudy")
# mlflow.pytorch.log_model reads the process-wide tracking URI: one at a time per process
_LOG_MODEL_LOCK = threading.Lock()


def best_model_name(study_name: str) -> str:
    """The registered model of a study: ``<study>-best``."""
    return f"{study_name}-best"


# ----------------------------------------------------------------- checkpoints
def log_checkpoint(tracker: Tracker, run_id: str, checkpoint: dict[str, Any]) -> str:
    """Save ``checkpoint`` as the run's ``checkpoint/model.pt``; returns its ``runs:/`` URI."""
    with tempfile.TemporaryDirectory(prefix="hpstudy-ckpt-") as tmp:
        path = Path(tmp) / Path(CHECKPOINT).name
        torch.save(checkpoint, path)
        tracker.log_artifact(run_id, path, str(Path(CHECKPOINT).parent))
    return f"runs:/{run_id}/{CHECKPOINT}"


def missing_store(uri: str) -> str | None:
    """Why ``uri`` holds nothing to read (a SQLite file that does not exist), else None.

    Readers (``model.init_from``, ``hpstudy inspect``) check first: opening a
    missing SQLite store would create an empty one and answer "no such run".
    """
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            return f"no MLflow store at {uri} (no file {path})"
    return None


def load_checkpoint(tracker: Tracker, run_id: str) -> dict[str, Any]:
    """Download a run's checkpoint and load it with ``weights_only=True`` on the CPU."""
    with tempfile.TemporaryDirectory(prefix="hpstudy-ckpt-") as tmp:
        path = tracker.client.download_artifacts(run_id, CHECKPOINT, tmp)
        return torch.load(path, map_location="cpu", weights_only=True)


def build_network(checkpoint: dict[str, Any],
                  build: Callable[..., nn.Module] | None = None) -> nn.Module:
    """The checkpoint's network on the CPU in eval mode, weights loaded strictly.

    Args:
        checkpoint: from :func:`load_checkpoint`.
        build: ``create_model``-like builder (default: hpstudy's model registry).
    """
    if build is None:
        from ..models import create_model as build
    kwargs = dict(checkpoint["model"])
    net = build(kwargs.pop("name"), **kwargs)
    net.load_state_dict(checkpoint["state_dict"], strict=True)
    return net.cpu().eval()


# ----------------------------------------------------------------- logged model
@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for the block, then restore what was set.

    ``mlflow.pytorch.log_model`` and the registry's ``models:/`` resolution have
    no client argument; hpstudy never leaves a global tracking URI set, so the
    previous one (often none) is put back, and so is ``$MLFLOW_TRACKING_URI``,
    which ``mlflow.set_tracking_uri`` sets and unsets along with it.
    """
    import mlflow

    env = os.environ.get("MLFLOW_TRACKING_URI")
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    if previous == env:  # only the environment named it: no global to restore
        previous = None
    with _LOG_MODEL_LOCK:
        mlflow.set_tracking_uri(absolute_url(uri))
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)  # None unsets the global and the variable
            if env is not None:
                os.environ["MLFLOW_TRACKING_URI"] = env


def _requirements() -> list[str]:
    """Pinned runtime requirements (skips MLflow's slow requirement inference)."""
    reqs = []
    for dist in ("torch", "mlflow", "numpy"):
        try:
            reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return reqs


@dataclass
class LoggedModel:
    """What :func:`log_network` logged."""

    model_id: str
    model_uri: str  # models:/<model_id>
    serialization: str  # pt2 or pickle


def log_network(tracker: Tracker, run_id: str, net: nn.Module, example: torch.Tensor,
                metadata: dict[str, Any] | None = None, name: str = MODEL_NAME) -> LoggedModel:
    """``mlflow.pytorch.log_model`` on ``run_id`` with a signature and an input example.

    Args:
        tracker: the study's tracker (its URI is used; nothing global stays set).
        run_id: the run the model belongs to (its experiment holds the model).
        net: a CPU network in eval mode.
        example: a batch of at least 2 inputs (keeps the batch dimension dynamic).
        metadata: stored in the MLmodel file.
        name: the logged model's name.
    """
    import mlflow.pytorch
    from mlflow.models import infer_signature

    net = net.cpu().eval()
    with torch.no_grad():
        out = net(example)
    x = example.numpy()
    signature = infer_signature(x, out.numpy())
    params = {k: v[:500] for k, v in tracker.client.get_run(run_id).data.params.items()}

    def new_model() -> str:
        # created here, in the run's experiment: without an active run the fluent
        # API would file the model under the Default experiment
        return tracker.client.create_logged_model(
            tracker.experiment_id, name=name, source_run_id=run_id, params=params,
            tags={"hpstudy.run_id": run_id}, model_type="image-classifier").model_id

    common = dict(signature=signature, input_example=x, run_id=run_id, metadata=metadata,
                  pip_requirements=_requirements())
    with _tracking_uri(tracker.uri):
        model_id = new_model()
        try:
            mlflow.pytorch.log_model(copy.deepcopy(net), model_id=model_id,
                                     serialization_format="pt2", **common)
            fmt = "pt2"
        except Exception as e:  # noqa: BLE001 - a network torch.export cannot trace
            _log.warning("torch.export failed (%s); logging the model with pickle", e)
            model_id = new_model()
            mlflow.pytorch.log_model(net, model_id=model_id, serialization_format="pickle",
                                     **common)
            fmt = "pickle"
    return LoggedModel(model_id, f"models:/{model_id}", fmt)


def load_model(model_uri: str, tracking_uri: str) -> nn.Module:
    """``mlflow.pytorch.load_model`` of ``models:/<study>-best/<version>`` on a given store.

    Args:
        model_uri: ``models:/<name>/<version>``, ``models:/<model_id>`` or ``runs:/...``.
        tracking_uri: the store or server that holds it (also its model registry).

    Returns:
        The network on the CPU: an exported program's module (``pt2``, traced in
        eval mode; it refuses ``.train()``/``.eval()``) or the pickled network
        (put in eval mode by MLflow).
    """
    import mlflow.pytorch

    with _tracking_uri(tracking_uri):
        return mlflow.pytorch.load_model(model_uri, map_location="cpu")


# ----------------------------------------------------------------- registry
@dataclass
class RegisteredBest:
    """The registered version holding a study's best model."""

    name: str
    version: int
    run_id: str
    model_uri: str  # models:/<name>/<version>
    created: bool  # False: the latest version already held this run's model

    def __str__(self) -> str:
        return self.model_uri


def latest_version(tracker: Tracker, name: str) -> Any | None:
    """The highest version of a registered model (None when it has none)."""
    versions = tracker.client.search_model_versions(f"name = '{name}'")
    return max(versions, key=lambda v: int(v.version), default=None)


def register_best(tracker: Tracker, study_name: str, run_id: str, *, trial_number: int,
                  metric: str, value: float,
                  build: Callable[..., nn.Module] | None = None) -> RegisteredBest:
    """Register the best trial's model as ``<study>-best`` (new version only if it changed).

    Args:
        tracker: the study's tracker.
        study_name: the study (model name ``<study>-best``).
        run_id: the best trial's run, which holds ``checkpoint/model.pt``.
        trial_number: the best trial's number (version tags and description).
        metric: the objective's name (``val_acc``).
        value: the best trial's objective value.
        build: ``create_model``-like builder (default: hpstudy's model registry).

    Raises:
        Whatever MLflow raises (no checkpoint, an unreachable server): the
        caller decides whether a study without a registered model is an error.
    """
    from mlflow.exceptions import MlflowException

    name = best_model_name(study_name)
    latest = latest_version(tracker, name)
    if latest is not None and latest.run_id == run_id:
        return RegisteredBest(name, int(latest.version), run_id,
                              f"models:/{name}/{latest.version}", created=False)
    ckpt = load_checkpoint(tracker, run_id)
    net = build_network(ckpt, build)
    meta = {**ckpt["meta"], "study": study_name, "trial_number": trial_number,
            "input": "normalized images (N, C, S, S) float32: (x / 255 - mean) / std, "
                     "bilinear-resized to input_size when smaller"}
    logged = log_network(tracker, run_id, net, ckpt["example"], metadata=meta)
    try:
        tracker.client.create_registered_model(
            name, description=f"Best trial of study '{study_name}' ({metric}), by hpstudy.")
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    description = f"trial {trial_number} of {study_name}: {metric} = {value:.6g}"
    with _tracking_uri(tracker.uri):  # the registry resolves models:/ sources via the fluent URI
        mv = tracker.client.create_model_version(
            name, source=logged.model_uri, run_id=run_id, model_id=logged.model_id,
            description=description,
            tags={"optuna.study_name": study_name, "optuna.trial_number": str(trial_number),
                  "hpstudy.metric": metric, "hpstudy.value": repr(float(value)),
                  "hpstudy.serialization": logged.serialization},
        )
    return RegisteredBest(name, int(mv.version), run_id, f"models:/{name}/{mv.version}",
                          created=True)
