"""MLflow tracking (client API): runs, tags, params, metrics, artifacts.

Public surface: :func:`tracked_run` / :class:`TrackedRun` (the one way to record a
run), :class:`Tracker`, :func:`history_csv`, :func:`dataset_input`,
:data:`EPOCH_METRICS`; :mod:`hpstudy.track.registry` (trial checkpoints, the
registered ``<study>-best`` model) and :mod:`hpstudy.track.ui` (``hpstudy ui``).
"""

from __future__ import annotations

from ..names import EPOCH_METRICS
from .run import TrackedRun, failure_reason, tracked_run
from .tracker import (
    Tracker,
    dataset_input,
    history_csv,
    is_local_store,
    local_artifact_root,
    prepare_local_uri,
    run_environment,
    trial_tags,
)

__all__ = [
    "EPOCH_METRICS",
    "Tracker",
    "dataset_input",
    "history_csv",
    "is_local_store",
    "local_artifact_root",
    "prepare_local_uri",
    "run_environment",
    "TrackedRun",
    "failure_reason",
    "tracked_run",
    "trial_tags",
]
