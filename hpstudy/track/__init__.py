"""MLflow tracking (client API): runs, tags, params, metrics, artifacts.

Public surface: :class:`Tracker`, :func:`history_csv`, :func:`dataset_input`,
:data:`EPOCH_METRICS`; :mod:`hpstudy.track.registry` (trial checkpoints, the
registered ``<study>-best`` model) and :mod:`hpstudy.track.ui` (``hpstudy ui``).
"""

from __future__ import annotations

from .tracker import (
    EPOCH_METRICS,
    Tracker,
    dataset_input,
    history_csv,
    is_local_store,
    local_artifact_root,
    prepare_local_uri,
    run_environment,
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
]
