"""Search: spaces, samplers/pruners by name, and running/resuming/joining studies.

Public surface: :func:`run_study`, :func:`run_single`, :func:`open_study`,
:func:`connect`, :func:`build_sampler`, :func:`build_pruner`, :func:`get_storage`,
:class:`Objective`, :class:`StudySummary`, and :mod:`hpstudy.search.space`; scaling out:
:func:`run_parallel` (``--workers N``), :func:`run_trial_process` (a trial in its own
process: DDP, ``train.isolate``) and :class:`TrialProcessError`; ablations:
:func:`load_ablation`, :func:`plan_ablation`, :func:`run_ablation`, :func:`check_data`.
"""

from __future__ import annotations

from . import space
from .ablation import (
    AblationPlan,
    AblationSummary,
    check_data,
    load_ablation,
    plan_ablation,
    run_ablation,
)
from .isolate import TrialProcessError, needs_process, run_trial_process
from .parallel import run_parallel
from .study import (
    CONFIG_ATTR,
    PARENT_RUN_ATTR,
    Objective,
    StudySummary,
    TrialFailed,
    build_pruner,
    build_sampler,
    connect,
    get_storage,
    open_study,
    record_fit,
    run_single,
    run_study,
    summarize,
)

__all__ = [
    "AblationPlan",
    "AblationSummary",
    "check_data",
    "load_ablation",
    "plan_ablation",
    "run_ablation",
    "CONFIG_ATTR",
    "PARENT_RUN_ATTR",
    "Objective",
    "StudySummary",
    "TrialFailed",
    "TrialProcessError",
    "build_pruner",
    "build_sampler",
    "connect",
    "get_storage",
    "open_study",
    "run_trial_process",
    "needs_process",
    "record_fit",
    "run_parallel",
    "run_single",
    "run_study",
    "space",
    "summarize",
]
