"""Search: spaces, samplers/pruners by name, and running/resuming/joining studies.

Public surface: :func:`run_study`, :func:`connect` -> :class:`StudySession`,
:func:`open_study`, :func:`build_sampler`, :func:`build_pruner`,
:func:`get_storage`, :class:`Objective`, :class:`StudySummary`,
:func:`study_summary`, and :mod:`hpstudy.search.space`; scaling out:
:func:`run_parallel` (``--workers N``); ablations: :func:`load_ablation`,
:func:`plan_ablation`, :func:`run_ablation`, :func:`check_data`.

Nothing here imports :mod:`hpstudy.report`: the CLI and :mod:`hpstudy.api`
compose running a study, registering its best model and drawing its report.
"""

from __future__ import annotations

from ..names import ATTR_CONFIG as CONFIG_ATTR
from ..names import ATTR_PARENT_RUN as PARENT_RUN_ATTR
from ..train import TrialProcessError, needs_process
from . import space
from .ablation import (
    AblationPlan,
    AblationSummary,
    check_data,
    load_ablation,
    plan_ablation,
    run_ablation,
)
from .objective import Objective, TrialFailed
from .parallel import run_parallel
from .storage import fail_trial, get_storage, mark_run_failed
from .study import (
    StudySession,
    StudySummary,
    build_pruner,
    build_sampler,
    close_study,
    connect,
    open_study,
    run_study,
    state_counts,
    study_summary,
)

__all__ = [
    "AblationPlan",
    "AblationSummary",
    "CONFIG_ATTR",
    "PARENT_RUN_ATTR",
    "Objective",
    "StudySession",
    "StudySummary",
    "TrialFailed",
    "TrialProcessError",
    "build_pruner",
    "build_sampler",
    "check_data",
    "close_study",
    "connect",
    "fail_trial",
    "get_storage",
    "load_ablation",
    "mark_run_failed",
    "needs_process",
    "open_study",
    "plan_ablation",
    "run_ablation",
    "run_parallel",
    "run_study",
    "space",
    "state_counts",
    "study_summary",
]
