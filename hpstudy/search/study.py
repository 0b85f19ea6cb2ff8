"""Run, resume and join Optuna studies; one MLflow child run per trial.

``run_study`` creates or resumes the study named in the study file (Optuna's
``load_if_exists``), finds or creates the study's parent MLflow run (its id is
kept in the Optuna study's user attrs so every process agrees on it), and
optimizes with :class:`~hpstudy.search.objective.Objective`. Registering the
best model and drawing the dashboard are composed on top, by the CLI and the
Python API (:mod:`hpstudy.api`); search never imports report.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from .._proc import Interrupted, interruption
from ..config import ConfigError, StudyConfig, resolve_space, trial_params
from ..names import (
    ATTR_CONFIG,
    ATTR_DIAGNOSIS,
    ATTR_FAIL_REASON,
    ATTR_PARENT_RUN,
    ATTR_RUN_ID,
    ATTR_ZERO_BELOW,
    KILLED,
    TAG_NOTE,
)
from ..track import Tracker
from . import space as _space
from .objective import Objective
from .progress import Progress
from .storage import get_storage, quiet_experimental, recover_dead_trials, session_storage

_log = logging.getLogger("hpstudy")


class _QuietKnownFailures(logging.Filter):
    """Optuna logs "Trial N failed ..." with a traceback for every failed trial.

    hpstudy prints one line per trial with its reason (the progress view) and
    keeps the traceback on the trial's MLflow run (``error.txt``), so Optuna's
    record is dropped; ``HPSTUDY_DEBUG=1`` keeps it, traceback and all.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if os.environ.get("HPSTUDY_DEBUG"):
            return True
        return not (record.getMessage().startswith("Trial ") and " failed" in record.getMessage())


def configure_optuna_logging() -> None:
    """Optuna's INFO lines off; failed trials are reported by hpstudy, one line each."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logger = logging.getLogger("optuna")
    for target in (logger, *logger.handlers):
        if not any(isinstance(f, _QuietKnownFailures) for f in target.filters):
            target.addFilter(_QuietKnownFailures())


# ------------------------------------------------------------------ factories
def build_sampler(cfg: StudyConfig, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """Optuna sampler by name: tpe, random, grid, cmaes, qmc, gp, nsga2.

    ``seed_offset`` shifts a fixed seed (a resumed study must not replay the
    random proposals of its first session).
    """
    s = cfg.search.sampler
    seed = s.seed + seed_offset if s.seed is not None else None
    opts = dict(s.options)
    samplers = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "qmc": optuna.samplers.QMCSampler,
        "gp": optuna.samplers.GPSampler,
        "nsga2": optuna.samplers.NSGAIISampler,
    }
    if s.name == "grid":
        grid = _space.grid(resolve_space(cfg.search.space))
        return optuna.samplers.GridSampler(grid, seed=seed, **opts)
    return samplers[s.name](seed=seed, **opts)


# Pruner defaults, measured by benchmarks/search_efficiency.py (benchmarks/README.md): on its
# task the epoch-1 validation accuracy already ranks trials (Spearman 0.82, 0.93 at epoch 2)
# and the median at epoch 1 kept every top-10% trial, so pruning may start early; options in
# the study file win. SHA: rungs at 1, 3, 9, 27... epochs (Optuna's reduction factor 4 spent
# more epochs for no better result); Hyperband: Optuna's factor 3 (4 was no better).
PRUNER_DEFAULTS: dict[str, dict[str, Any]] = {
    "median": {"n_startup_trials": 3, "n_warmup_steps": 1},
    "percentile": {"percentile": 25.0, "n_startup_trials": 3, "n_warmup_steps": 1},
    "sha": {"min_resource": 1, "reduction_factor": 3},
    "hyperband": {"min_resource": 1, "reduction_factor": 3},
}


def build_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    """Optuna pruner by name: median, percentile, sha, hyperband, none.

    Defaults (:data:`PRUNER_DEFAULTS`, each overridden by ``search.pruner.options``):
    median and percentile let 3 trials finish and every trial train 1 epoch
    before pruning; SHA and Hyperband judge trials after 1, 3, 9... epochs,
    Hyperband up to ``train.max_epochs``.
    """
    p = cfg.search.pruner
    opts = {**PRUNER_DEFAULTS.get(p.name, {}), **p.options}
    if p.name == "median":
        return optuna.pruners.MedianPruner(**opts)
    if p.name == "percentile":
        return optuna.pruners.PercentilePruner(**opts)
    if p.name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(**opts)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(**{"max_resource": cfg.train.max_epochs, **opts})
    return optuna.pruners.NopPruner()


def open_study(cfg: StudyConfig, storage: str | optuna.storages.BaseStorage) -> optuna.Study:
    """Create the study or load it if it exists (resume), enqueueing the study's first trials."""
    if isinstance(storage, str):
        storage = get_storage(storage)
    study = optuna.create_study(
        study_name=cfg.name,
        storage=storage,
        sampler=build_sampler(cfg),
        pruner=build_pruner(cfg),
        direction=cfg.direction,
        load_if_exists=True,
    )
    if study.metric_names is None:  # optuna-dashboard then says val_acc, not "Objective 0"
        with quiet_experimental():
            study.set_metric_names([cfg.search.metric])
    space = resolve_space(cfg.search.space)
    _space.check_resumable(study, space, f"study '{cfg.name}'")
    done = len(study.get_trials(deepcopy=False))
    if done:
        # resuming: a sampler seeded as in the first session would replay its random
        # proposals; offset the seed by the trials so far (still reproducible)
        study.sampler = build_sampler(cfg, seed_offset=7919 * done)
    if cfg.search.enqueue:
        for params in cfg.search.enqueue:
            study.enqueue_trial(_space.enqueue_values(params, space), skip_if_exists=True)
    return study


# ------------------------------------------------------------------ sessions
@dataclass
class StudySession:
    """An open study: the Optuna study and storage, the tracker, the parent run."""

    cfg: StudyConfig
    study: optuna.Study
    storage: optuna.storages.BaseStorage
    storage_url: str
    tracker: Tracker
    parent_run_id: str


def connect(cfg: StudyConfig, storage: str | None = None, tracking_uri: str | None = None
            ) -> StudySession:
    """Open the study and its tracker; find or create the parent run (stored in the study)."""
    configure_optuna_logging()
    if cfg.data.val_split == 0:
        raise ConfigError(f"study '{cfg.name}'", "data.val_split",
                          "0 leaves no validation images, and a search compares trials on them; "
                          "search with a validation split, then `hpstudy refit` trains the best "
                          "configuration on every training image")
    storage_url = cfg.storage_url(storage)
    store, stale = session_storage(storage_url)
    study = open_study(cfg, store)  # refuses an incompatible resume before anything is written
    tracker = Tracker(cfg.tracking_uri(tracking_uri), cfg.tracking.experiment or cfg.name,
                      cfg.tracking.artifact_location)
    if stale is not None:
        stale.tracker = tracker  # stale trials' runs get marked FAILED too
    known = study.user_attrs.get(ATTR_PARENT_RUN)
    parent = tracker.study_run(cfg.name, known, params=_study_params(cfg, storage_url))
    if parent != known:
        study.set_user_attr(ATTR_PARENT_RUN, parent)
    if ATTR_CONFIG not in study.user_attrs:
        study.set_user_attr(ATTR_CONFIG, cfg.to_yaml())
    # readers (dashboards, hpstudy diagnose --next) show an "off" value as the 0 it trained
    zero = {k: p.low for k, p in resolve_space(cfg.search.space).items() if p.allow_zero}
    if zero and study.user_attrs.get(ATTR_ZERO_BELOW) != zero:
        study.set_user_attr(ATTR_ZERO_BELOW, zero)
    recover_dead_trials(study, store, tracker, parent)
    return StudySession(cfg, study, store, storage_url, tracker, parent)


def _study_params(cfg: StudyConfig, storage_url: str) -> dict[str, Any]:
    d = cfg.to_dict()
    params = trial_params(cfg)
    params.update({f"search.{k}": v for k, v in d["search"].items() if k != "enqueue"})
    params["storage"] = storage_url.split("@")[-1]  # never log credentials
    return params


# ------------------------------------------------------------------ summary
@dataclass
class StudySummary:
    """What ``hpstudy run`` prints at the end."""

    study_name: str
    storage: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    counts: dict[str, int]
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_trial: int | None = None
    best_run_id: str | None = None
    report_path: str | None = None
    duration_s: float = 0.0
    registered_model: str | None = None  # models:/<study>-best/<version>
    best_verdict: str | None = None  # the best trial's diagnosis
    best_test: dict[str, float] = field(default_factory=dict)  # its test metrics, if evaluated
    best_ties: list[int] = field(default_factory=list)  # other trials with the same best value


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Trials per state (complete, pruned, failed, running) and in total."""
    trials = study.get_trials(deepcopy=False)
    return {
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "running": sum(t.state == TrialState.RUNNING for t in trials),
        "total": len(trials),
    }


def study_summary(session: StudySession) -> StudySummary:
    """Counts and the best trial of an open study."""
    study, tracker = session.study, session.tracker
    summary = StudySummary(study.study_name, session.storage_url, tracker.uri,
                           tracker.experiment_id, session.parent_run_id, state_counts(study))
    try:
        best = study.best_trial
    except ValueError:
        return summary
    summary.best_value = best.value
    summary.best_params = dict(best.params)
    summary.best_trial = best.number
    summary.best_run_id = best.user_attrs.get(ATTR_RUN_ID)
    summary.best_verdict = best.user_attrs.get(ATTR_DIAGNOSIS)
    summary.best_test = {k: float(v) for k, v in best.user_attrs.items()
                         if k.startswith("test_") and isinstance(v, int | float)}
    summary.best_ties = [t.number for t in study.get_trials(deepcopy=False,
                                                             states=(TrialState.COMPLETE,))
                         if t.number != best.number and t.value == best.value]
    return summary


def close_study(session: StudySession, status: str, **extra: float) -> StudySummary:
    """Study-level results on the parent run (counts, best value), which ends with ``status``."""
    summary = study_summary(session)
    c = summary.counts
    finals = {"n_trials": c["total"], "n_complete": c["complete"], "n_pruned": c["pruned"],
              "n_failed": c["failed"], **extra}
    note = (f"study: {c['total']} trials, {c['complete']} complete, {c['pruned']} pruned, "
            f"{c['failed']} failed")
    if summary.best_value is not None:
        finals.update(best_value=summary.best_value, best_trial_number=summary.best_trial)
        note += (f"; best {session.cfg.search.metric} {summary.best_value:.4f} "
                 f"(trial {summary.best_trial})")
    session.tracker.set_tags(session.parent_run_id, {TAG_NOTE: note})
    session.tracker.finish_study(session.parent_run_id, finals, status=status)
    return summary


def note_interruption(error: BaseException | None, study: optuna.Study, before: set[int],
                      requested: int | None) -> None:
    """Tell an :class:`~hpstudy._proc.Interrupted` what finished in this session and what is left."""
    if not isinstance(error, Interrupted):
        return
    new = [t for t in study.get_trials(deepcopy=False) if t.number not in before]
    lost = [t for t in new if t.state == TrialState.FAIL
            and str(t.user_attrs.get(ATTR_FAIL_REASON, "")).startswith("interrupted")]
    done = [t for t in new if t.state.is_finished() and t not in lost]
    c = {s: sum(t.state == s for t in done) for s in (TrialState.COMPLETE, TrialState.PRUNED,
                                                     TrialState.FAIL)}
    error.progress = (f"{len(done)} trial(s) finished ({c[TrialState.COMPLETE]} complete, "
                      f"{c[TrialState.PRUNED]} pruned, {c[TrialState.FAIL]} failed)"
                      + (f", trial {', '.join(str(t.number) for t in lost)} recorded FAIL "
                         f"({error.reason})" if lost else ""))
    if requested is not None:
        error.remaining = max(requested - len(done), 0) or None


def end_status(exc: BaseException | None) -> str:
    """The parent run's status after optimizing: FINISHED, KILLED (a signal) or FAILED."""
    if exc is None:
        return "FINISHED"
    return KILLED if interruption(exc) is not None else "FAILED"


# ------------------------------------------------------------------ running
def run_study(
    cfg: StudyConfig,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    objective: Callable[[StudySession], Callable[[optuna.Trial], float]] | None = None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
) -> StudySummary:
    """Create or resume the study and run trials in this process.

    Args:
        cfg: the study config.
        n_trials: trials to run now (default ``search.n_trials``); resuming adds
            this many more.
        timeout: stop starting new trials after this many seconds.
        storage: Optuna storage URL (flag > study file > $HPSTUDY_STORAGE > default).
        tracking_uri: MLflow URI (flag > study file > $MLFLOW_TRACKING_URI > default).
        progress: show the progress bar and one line per trial.
        objective: builds the objective from the open session (default
            :class:`Objective`); guided stages map sampled values first.
        callbacks: more Optuna callbacks, called after each trial (one may
            ``study.stop()``: a guided stage stops when its epochs are spent).
    """
    start = time.perf_counter()
    session = connect(cfg, storage, tracking_uri)
    n = n_trials if n_trials is not None else cfg.search.n_trials
    t = timeout if timeout is not None else cfg.search.timeout
    bar = Progress(n, cfg.search.metric, enabled=progress)
    bar.start(session)
    before = {tr.number for tr in session.study.get_trials(deepcopy=False)}
    error: BaseException | None = None
    try:
        session.study.optimize((objective or Objective)(session), n_trials=n, timeout=t,
                               catch=(Exception,), callbacks=[bar, *callbacks],
                               gc_after_trial=False)
    except BaseException as e:
        error = e
        raise
    finally:
        bar.close()
        summary = close_study(session, end_status(error))
        summary.duration_s = time.perf_counter() - start
        note_interruption(error, session.study, before, n)
    return summary
