"""MLflow tracking (client API): runs, tags, params, metrics, artifacts.

Public surface: :class:`Tracker`, :func:`history_csv`, :data:`EPOCH_METRICS`.
"""

from __future__ import annotations

from .tracker import (
    EPOCH_METRICS,
    Tracker,
    history_csv,
    is_local_store,
    local_artifact_root,
    prepare_local_uri,
    run_environment,
)

__all__ = [
    "EPOCH_METRICS",
    "Tracker",
    "history_csv",
    "is_local_store",
    "local_artifact_root",
    "prepare_local_uri",
    "run_environment",
]
