"""The Python entry points, and the composition the CLI shares with them.

Layers below compose here, at the top (DESIGN.md): run the study
(:mod:`hpstudy.search`), register its best model (:mod:`hpstudy.track.registry`),
draw its report (:mod:`hpstudy.report`). ``hpstudy run`` / ``train`` /
``ablate`` call these same functions, so a notebook gets exactly what the
command line does::

    import hpstudy
    summary = hpstudy.run("studies/quickstart.yaml", n_trials=4, overrides={"train.max_epochs": 5})
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._proc import Interrupted, trap_signals
from .config import StudyConfig, load_study, trial_params
from .names import (
    ATTR_CHECKPOINT,
    ATTR_RUN_ID,
    DEFAULT_STORAGE,
    DEFAULT_TRACKING_URI,
    KIND_TRAIN,
    STORAGE_ENV,
    TAG_KIND,
    TAG_STUDY,
    TRACKING_ENV,
)

_log = logging.getLogger("hpstudy")


# ------------------------------------------------------------------ stores
def store_origin(flag: str | None, field_value: str | None, env: str, default: str,
                 flag_name: str, field_name: str, source: str) -> tuple[str, str]:
    """``(url, where it came from)``: flag > study file > environment > default."""
    if flag:
        return flag, flag_name
    if field_value:
        return field_value, f"{source}: {field_name}"
    if os.environ.get(env):
        return os.environ[env], f"${env}"
    return default, f"{field_name} (default {default})"


def preflight(cfg: StudyConfig, *, storage: str | None = None, tracking_uri: str | None = None,
              source: str = "study file", optuna_store: bool = True) -> None:
    """Check the Optuna storage and the MLflow store can be used, before either is written.

    Raises:
        ConfigError: naming the flag, field or variable the URL came from, and the cause.
    """
    from ._stores import check_storage, check_tracking

    if optuna_store:
        check_storage(*store_origin(storage, cfg.storage, STORAGE_ENV, DEFAULT_STORAGE,
                                    "--storage", "storage", source))
    check_tracking(*store_origin(tracking_uri, cfg.tracking.uri, TRACKING_ENV,
                                 DEFAULT_TRACKING_URI, "--tracking-uri", "tracking.uri", source))


# ------------------------------------------------------------------ studies
def run(study: str | Path | StudyConfig, *, overrides: dict[str, Any] | None = None,
        n_trials: int | None = None, timeout: float | None = None, workers: int | None = None,
        storage: str | None = None, tracking_uri: str | None = None, progress: bool = False,
        report: bool | None = None) -> Any:
    """Create or resume a study, run its trials, register the best model, write the report.

    Args:
        study: a study file or a :class:`~hpstudy.config.StudyConfig`.
        overrides: ``{"train.max_epochs": 5, "lr": 0.01}`` (dotted keys or aliases),
            applied like ``--set``.
        n_trials: trials to run now (default ``search.n_trials``).
        timeout: seconds after which no new trial starts.
        workers: trials in parallel, one process each (default ``search.workers``).
        storage: Optuna storage URL (argument > study file > $HPSTUDY_STORAGE > default).
        tracking_uri: MLflow URI (argument > study file > $MLFLOW_TRACKING_URI > default).
        progress: show the progress bar and one line per trial.
        report: write the dashboard (default ``report.enabled``).

    Returns:
        The :class:`~hpstudy.search.StudySummary`.
    """
    if isinstance(study, StudyConfig):
        cfg = study.with_overrides(overrides) if overrides else study
    else:
        cfg = load_study(study, overrides)
    preflight(cfg, storage=storage, tracking_uri=tracking_uri, source=str(study))
    with trap_signals():
        return run_config(cfg, n_trials=n_trials, timeout=timeout, workers=workers, storage=storage,
                          tracking_uri=tracking_uri, progress=progress, report=report)


def run_config(cfg: StudyConfig, *, n_trials: int | None = None, timeout: float | None = None,
               workers: int | None = None, storage: str | None = None,
               tracking_uri: str | None = None, progress: bool = True,
               report: bool | None = None) -> Any:
    """:func:`run` for a loaded config (what ``hpstudy run`` calls)."""
    from .search import run_parallel, run_study

    start = time.perf_counter()
    kwargs: dict[str, Any] = dict(n_trials=n_trials, timeout=timeout, storage=storage,
                                  tracking_uri=tracking_uri, progress=progress)
    n_workers = workers or cfg.search.workers
    if n_workers > 1:
        summary = run_parallel(cfg, workers=n_workers, **kwargs)
    else:
        summary = run_study(cfg, **kwargs)
    return finish_study(cfg, summary, report=report, start=start)


def finish_study(cfg: StudyConfig, summary: Any, *, report: bool | None = None,
                 start: float | None = None) -> Any:
    """After a study ran to its end: register the best model, write the dashboard."""
    from .track import Tracker

    tracker = Tracker(summary.tracking_uri, cfg.tracking.experiment or cfg.name)
    if cfg.tracking.register_best:
        summary.registered_model = register_best_model(cfg, summary, tracker)
    if cfg.report.enabled if report is None else report:
        summary.report_path = write_dashboard(cfg, summary.storage, tracker)
    if start is not None:
        summary.duration_s = time.perf_counter() - start
    return summary


def register_best_model(cfg: StudyConfig, summary: Any, tracker: Any) -> str | None:
    """Register the best trial's model as ``<study>-best``; returns ``models:/<name>/<version>``.

    A new version is made only when the best trial changed since the last
    registration. Returns None (with a warning) when there is no best trial,
    it left no checkpoint, or MLflow refuses: the study itself succeeded.
    """
    import optuna

    from .search import get_storage
    from .track import registry

    if summary.best_trial is None:
        return None
    study = optuna.load_study(study_name=cfg.name, storage=get_storage(summary.storage))
    best = study.best_trial
    run_id = best.user_attrs.get(ATTR_RUN_ID)
    if not run_id or ATTR_CHECKPOINT not in best.user_attrs:
        _log.warning("best trial %d left no checkpoint: no model registered", best.number)
        return None
    try:
        reg = registry.register_best(tracker, cfg.name, run_id, trial_number=best.number,
                                     metric=cfg.search.metric, value=float(best.value))
        tracker.set_tags(summary.parent_run_id, {"hpstudy.best_trial": best.number,
                                                 "hpstudy.best_run_id": run_id,
                                                 "hpstudy.registered_model": reg.model_uri})
    except Exception as e:  # noqa: BLE001 - the study itself succeeded
        _log.warning("best model not registered: %s: %s", type(e).__name__, e)
        return None
    return reg.model_uri


def write_dashboard(cfg: StudyConfig, storage_url: str, tracker: Any) -> str | None:
    """Write ``<report.dir>/<study>/index.html``, log it to the parent run, return its path.

    Returns None (with a warning) when it cannot be written: a dashboard that
    fails to draw must not turn a finished study into a failed command.
    """
    from .report import report_study  # plotly is imported only when a report is wanted

    try:
        path = report_study(cfg.name, storage_url, tracker.uri, cfg.report.dir, tracker=tracker)
    except Exception as e:  # noqa: BLE001 - the study itself succeeded
        _log.warning("dashboard not written: %s: %s", type(e).__name__, e)
        return None
    return str(path)


# ------------------------------------------------------------------ one run
@dataclass
class TrainOutcome:
    """What ``hpstudy train`` made: the fit, its MLflow run, and the facts recorded."""

    result: Any  # hpstudy.train.FitResult
    run_id: str
    tracking_uri: str
    attrs: dict[str, Any]  # best epoch, diagnosis, test metrics...


def train(cfg: StudyConfig, tracking_uri: str | None = None,
          hooks: list[Callable[[dict[str, Any]], Any]] | None = None) -> TrainOutcome:
    """One run with the config's fixed hyperparameters (no search): ``hpstudy train``.

    Args:
        cfg: the config (its values plus any overrides).
        tracking_uri: MLflow URI (argument > study file > $MLFLOW_TRACKING_URI > default).
        hooks: extra epoch hooks (e.g. printing each epoch as it ends).
    """
    from .track import Tracker, tracked_run
    from .train import execute

    tracker = Tracker(cfg.tracking_uri(tracking_uri), cfg.tracking.experiment or cfg.name,
                      cfg.tracking.artifact_location)
    name = time.strftime("train-%Y%m%d-%H%M%S")
    try:
        with tracked_run(tracker, name, tags={TAG_KIND: KIND_TRAIN, TAG_STUDY: cfg.name},
                         params=trial_params(cfg)) as run:
            result = execute(cfg, [run.log_epoch, *(hooks or [])], label=f"{cfg.name}-{name}",
                             on_failure_log=run.log_artifact)
            attrs = run.record(result, cfg)
    except Interrupted as e:
        e.progress = f"run {name} recorded KILLED"
        raise
    return TrainOutcome(result, run.id, tracker.uri, attrs)


# ------------------------------------------------------------------ ablations
def ablate(plan: Any, *, tracking_uri: str | None = None, report: bool | None = None,
           echo: Callable[[str], Any] | None = None) -> Any:
    """Run an ablation's missing cells, analyze it, write and log its report.

    Args:
        plan: from :func:`hpstudy.search.load_ablation`.
        tracking_uri: MLflow URI (argument > ablation file > base config > env > default).
        report: write ``<report.dir>/<name>/index.html`` (default ``report.enabled``).
        echo: called with one progress line per run.

    Returns:
        The :class:`~hpstudy.search.AblationSummary`.
    """
    from .search import run_ablation

    start = time.perf_counter()
    summary = run_ablation(plan, tracking_uri=tracking_uri, echo=echo)
    if plan.spec.report.enabled if report is None else report:
        summary.report_path = write_ablation_dashboard(plan, summary)
    summary.duration_s = time.perf_counter() - start
    return summary


def write_ablation_dashboard(plan: Any, summary: Any) -> str | None:
    """Write ``<report.dir>/<ablation>/index.html``, log it to the summary run, return its path.

    Returns None (with a warning) when it cannot be written: the runs are done
    and recorded; a report that fails to draw must not fail the command.
    """
    from .report import ARTIFACT_DIR, write_ablation_report
    from .track import Tracker

    overview = {
        "description": plan.spec.description,
        "MLflow experiment": f"{plan.experiment} (id {summary.experiment_id})",
        "MLflow summary run": summary.summary_run_id,
        "tracking URI": summary.tracking_uri,
    }
    try:
        path = write_ablation_report(summary.data, summary.stats, plan.design, plan.seeds,
                                     plan.spec.report.dir, overview=overview)
        Tracker(summary.tracking_uri, plan.experiment).log_artifact(
            summary.summary_run_id, path, ARTIFACT_DIR)
    except Exception as e:  # noqa: BLE001 - the ablation itself succeeded
        _log.warning("ablation report not written: %s: %s", type(e).__name__, e)
        return None
    return str(path)


# ------------------------------------------------------------------ guided tuning
def guide(study: str | Path | StudyConfig, *, overrides: dict[str, Any] | None = None,
          budget_epochs: float | None = None, storage: str | None = None,
          tracking_uri: str | None = None, progress: bool = False, report: bool | None = None,
          echo: Callable[[str], Any] | None = None) -> Any:
    """Guided tuning: the course's three milestones as three linked studies (``hpstudy guide``).

    Args:
        study: a study file or a :class:`~hpstudy.config.StudyConfig`.
        overrides: dotted keys applied like ``--set`` (``{"guide.budget_epochs": 120}``).
        budget_epochs: total training epochs of all stages (over ``guide.budget_epochs``).
        storage: Optuna storage URL (argument > study file > $HPSTUDY_STORAGE > default).
        tracking_uri: MLflow URI (argument > study file > $MLFLOW_TRACKING_URI > default).
        progress: show each stage's progress bar and one line per trial.
        report: write the guide's page (default ``report.enabled``).
        echo: called with each line of the guide's account (default: none).

    Returns:
        The :class:`~hpstudy.guide.GuideSummary`; ``summary.stopped`` is the stage whose
        rule failed (None when all three were accepted).
    """
    from .guide import plan_guide

    if isinstance(study, StudyConfig):
        cfg = study.with_overrides(overrides) if overrides else study
    else:
        cfg = load_study(study, overrides)
    plan = plan_guide(cfg, str(study) if not isinstance(study, StudyConfig) else cfg.name,
                      budget_epochs)
    preflight(cfg, storage=storage, tracking_uri=tracking_uri, source=str(study))
    with trap_signals():
        return run_guide_plan(plan, storage=storage, tracking_uri=tracking_uri,
                              progress=progress, report=report, echo=echo)


def run_guide_plan(plan: Any, *, storage: str | None = None, tracking_uri: str | None = None,
                   progress: bool = True, report: bool | None = None,
                   echo: Callable[[str], Any] | None = None) -> Any:
    """:func:`guide` for a checked plan (what ``hpstudy guide`` calls): run, then the page."""
    from .guide import run_guide

    summary = run_guide(plan, storage=storage, tracking_uri=tracking_uri, progress=progress,
                        echo=echo)
    if plan.cfg.report.enabled if report is None else report:
        summary.report_path = write_guide_dashboard(plan.cfg, summary)
    return summary


def write_guide_dashboard(cfg: StudyConfig, summary: Any) -> str | None:
    """Write ``<report.dir>/<study>/guide/index.html``, log it, return its path (None on failure)."""
    from .report import report_guide

    try:
        path = report_guide(cfg.name, summary.storage, summary.tracking_uri, cfg.report.dir)
    except Exception as e:  # noqa: BLE001 - the stages ran and are recorded
        _log.warning("guide page not written: %s: %s", type(e).__name__, e)
        return None
    return str(path)
