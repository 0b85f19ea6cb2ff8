"""Run, resume and join Optuna studies; one MLflow child run per trial.

``run_study`` creates or resumes the study named in the study file (Optuna's
``load_if_exists``), finds or creates the study's parent MLflow run (its id is
kept in the Optuna study's user attrs so every process agrees on it), and
optimizes. Each trial: sample once -> concrete config -> ``train.fit`` ->
per-epoch MLflow metrics and Optuna reports -> final state, tags, artifacts.
A failing trial (non-finite loss, out of memory, any exception) is recorded
as FAIL with its reason and the study goes on.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ..config import StudyConfig, trial_params
from ..track import Tracker, history_csv
from ..track import registry as _registry
from ..train import FitResult, checkpoint_from_fit, fit
from . import isolate as _isolate
from . import space as _space

PARENT_RUN_ATTR = "mlflow_parent_run_id"
CONFIG_ATTR = "config_yaml"  # the study's base config, so `hpstudy worker NAME` needs no file
_log = logging.getLogger("hpstudy")


class TrialFailed(RuntimeError):
    """A trial ended without a usable result (e.g. diverged); its reason is recorded."""


class _QuietKnownFailures(logging.Filter):
    """Optuna logs a traceback for every caught exception; ours already carry their reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TrialFailed):
            record.exc_info = None
        return True


def _configure_optuna_logging() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logger = logging.getLogger("optuna")
    if not any(isinstance(f, _QuietKnownFailures) for f in logger.filters):
        logger.addFilter(_QuietKnownFailures())
    for h in logger.handlers:
        if not any(isinstance(f, _QuietKnownFailures) for f in h.filters):
            h.addFilter(_QuietKnownFailures())


# ------------------------------------------------------------------ factories
def build_sampler(cfg: StudyConfig, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """Optuna sampler by name: tpe, random, grid, cmaes, qmc, gp, nsga2.

    ``seed_offset`` shifts a fixed seed (a resumed study must not replay the
    random proposals of its first session).
    """
    s = cfg.search.sampler
    if s.seed is not None and seed_offset:
        s = s.model_copy(update={"seed": s.seed + seed_offset})
    opts = dict(s.options)
    if s.name == "tpe":
        return optuna.samplers.TPESampler(seed=s.seed, **opts)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=s.seed, **opts)
    if s.name == "grid":
        grid = _space.grid(_space.resolve_space(cfg.search.space))
        return optuna.samplers.GridSampler(grid, seed=s.seed, **opts)
    if s.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=s.seed, **opts)
    if s.name == "qmc":
        return optuna.samplers.QMCSampler(seed=s.seed, **opts)
    if s.name == "gp":
        return optuna.samplers.GPSampler(seed=s.seed, **opts)
    if s.name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=s.seed, **opts)
    raise ValueError(f"unknown sampler '{s.name}'")


def build_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    """Optuna pruner by name: median, percentile, sha, hyperband, none.

    Defaults let the first trials and epochs run before anything is pruned
    (5 startup trials, 2 warm-up epochs): early epochs say little.
    """
    p = cfg.search.pruner
    opts = dict(p.options)
    if p.name == "median":
        return optuna.pruners.MedianPruner(**{"n_startup_trials": 5, "n_warmup_steps": 2, **opts})
    if p.name == "percentile":
        return optuna.pruners.PercentilePruner(
            **{"percentile": 25.0, "n_startup_trials": 5, "n_warmup_steps": 2, **opts})
    if p.name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(**opts)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            **{"min_resource": 1, "max_resource": cfg.train.max_epochs, **opts})
    if p.name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner '{p.name}'")


def get_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``.

    ``sqlite:///...`` and other SQLAlchemy URLs (``postgresql://...``) give an
    RDBStorage (the folder of a relative SQLite path is created);
    ``journal:///path/to/file.log`` gives a JournalStorage on a file.
    """
    if url.startswith("journal:///"):
        path = Path(url.removeprefix("journal:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # wait for a lock instead of failing with "database is locked"
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    # heartbeats: a killed worker's trials become FAIL and are retried (isolate.py)
    with _isolate.quiet_experimental():
        return optuna.storages.RDBStorage(_sqlalchemy_url(url), engine_kwargs=engine_kwargs,
                                          **_isolate.heartbeat_kwargs())


def _sqlalchemy_url(url: str) -> str:
    """``postgresql://`` names psycopg 3 in SQLAlchemy 2.1; use psycopg2 when only it is here."""
    if url.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and \
                importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def open_study(cfg: StudyConfig, storage_url: str) -> optuna.Study:
    """Create the study or load it if it exists (resume), enqueueing the study's first trials."""
    study = optuna.create_study(
        study_name=cfg.name,
        storage=get_storage(storage_url),
        sampler=build_sampler(cfg),
        pruner=build_pruner(cfg),
        direction=cfg.direction,
        load_if_exists=True,
    )
    done = len(study.get_trials(deepcopy=False))
    if done:
        # resuming: a sampler seeded as in the first session would replay its random
        # proposals; offset the seed by the trials so far (still reproducible)
        study.sampler = build_sampler(cfg, seed_offset=7919 * done)
    if cfg.search.enqueue:
        space = _space.resolve_space(cfg.search.space)
        for params in cfg.search.enqueue:
            study.enqueue_trial(_space.enqueue_values(params, space), skip_if_exists=True)
    return study


# ------------------------------------------------------------------ objective
def _state_counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "running": sum(t.state == TrialState.RUNNING for t in trials),
        "total": len(trials),
    }


def _diagnose(result: FitResult, num_classes: int) -> dict[str, Any]:
    """The course's reading of the learning curves (verdict, evidence, advice)."""
    from ..analyze import diagnose

    return diagnose(result.history, num_classes).to_dict()


def record_fit(tracker: Tracker, run_id: str, result: FitResult, cfg: StudyConfig,
               state: str, extra_tags: dict[str, Any] | None = None) -> dict[str, Any]:
    """Log a finished fit to its run: summary metrics, tags, artifacts. Returns attrs."""
    summary: dict[str, float] = {}
    if result.best_epoch is not None:
        summary["best_val_acc"] = result.best["val_acc"]
        summary["best_val_loss"] = result.best["val_loss"]
        summary["best_epoch"] = result.best_epoch
    if result.test:
        summary.update(result.test)
    tracker.log_metrics(run_id, summary, step=result.best_epoch or 0)
    tracker.log_text(run_id, cfg.to_yaml(), "config.yaml")
    tracker.log_text(run_id, history_csv(result.history), "history.csv")
    tags: dict[str, Any] = {"hpstudy.status": result.status, **(extra_tags or {})}
    if result.reason:
        tags["hpstudy.fail_reason"] = result.reason
    attrs: dict[str, Any] = {"best_epoch": result.best_epoch, "num_params": result.num_params,
                             "status": result.status}
    # a trial trained in a child process sends its data facts, not its datamodule
    num_classes = (result.datamodule.num_classes if result.datamodule is not None
                   else result.data_info.get("data.num_classes"))
    if num_classes:
        diag = _diagnose(result, int(num_classes))
        tags["hpstudy.diagnosis"] = diag["verdict"]
        attrs["diagnosis"] = diag["verdict"]
        attrs["diagnosis_detail"] = diag
    if result.test:
        attrs.update(result.test)
    tracker.end_run(run_id, state, tags)
    return attrs


class Objective:
    """The Optuna objective: sample once, train, track, report.

    Sampling happens here, once per trial, in the process that talks to
    Optuna; the concrete config is what gets trained (and what DDP ranks
    receive), so every rank trains the same hyperparameters.
    """

    def __init__(self, cfg: StudyConfig, tracker: Tracker, parent_run_id: str,
                 on_trial_end: Any | None = None):
        self.cfg, self.tracker, self.parent_run_id = cfg, tracker, parent_run_id
        self.space = _space.resolve_space(cfg.search.space)
        self.on_trial_end = on_trial_end

    def concrete(self, trial: optuna.Trial) -> StudyConfig:
        """The trial's concrete config (sampled once)."""
        params = _space.suggest(trial, self.space)
        return self.cfg.with_overrides(params, source=f"trial {trial.number}")

    def __call__(self, trial: optuna.Trial) -> float:
        run_id: str | None = None
        try:
            tcfg = self.concrete(trial)
            params = trial_params(tcfg)
            run_id = self.tracker.start_trial(self.parent_run_id, self.cfg.name, trial.number,
                                              params)
            trial.set_user_attr("mlflow_run_id", run_id)
            result = self.train(trial, tcfg, run_id)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            if run_id:
                self.tracker.end_run(run_id, "KILLED", {"hpstudy.fail_reason": "interrupted"})
            raise
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"[:1000]
            trial.set_user_attr("fail_reason", reason)
            if run_id:
                self.tracker.end_run(run_id, "FAIL", {"hpstudy.fail_reason": reason})
            _free_memory()
            raise
        return self.finish(trial, tcfg, run_id, result)

    def train(self, trial: optuna.Trial, tcfg: StudyConfig, run_id: str) -> FitResult:
        """Fit the concrete config with per-epoch MLflow logging and Optuna pruning."""
        metric = self.cfg.search.metric

        def report(record: dict[str, Any]) -> bool:
            self.tracker.log_epoch(run_id, record)
            value = record[metric]
            if not math.isfinite(value):
                return False
            trial.report(value, record["epoch"])
            return trial.should_prune()

        if _isolate.needs_process(tcfg):  # DDP or train.isolate: ranks never touch Optuna
            return _isolate.run_trial_process(
                tcfg, report, label=f"{self.cfg.name}-trial-{trial.number:04d}",
                on_failure_log=lambda p: self.tracker.log_artifact(run_id, p))
        return fit(tcfg, hooks=[report])

    def finish(self, trial: optuna.Trial, tcfg: StudyConfig, run_id: str,
               result: FitResult) -> float:
        state = {"pruned": "PRUNED", "diverged": "FAIL"}.get(result.status, "COMPLETE")
        self.tracker.log_params(run_id, {"model.num_params": result.num_params,
                                         **result.data_info})
        self.tracker.log_dataset(run_id, tcfg.to_dict()["data"], result.data_info)
        self.keep_checkpoint(trial, run_id, result, state)
        attrs = record_fit(self.tracker, run_id, result, tcfg, state)
        for k, v in attrs.items():
            if v is not None:
                trial.set_user_attr(k, v)
        if state == "PRUNED":
            raise optuna.TrialPruned(f"pruned at epoch {len(result.history)}")
        if state == "FAIL":
            trial.set_user_attr("fail_reason", result.reason)
            raise TrialFailed(result.reason or "failed")
        value = result.value
        if value is None or not math.isfinite(value):
            reason = f"no finite {self.cfg.search.metric} was recorded"
            trial.set_user_attr("fail_reason", reason)
            raise TrialFailed(reason)
        return float(value)

    def keep_checkpoint(self, trial: optuna.Trial, run_id: str, result: FitResult,
                        state: str) -> None:
        """Leave the trial's best weights on its run when they may be wanted later.

        Every trial with weights keeps them when ``tracking.log_checkpoints`` is
        set; otherwise only a COMPLETE trial better than the study's best so far
        does (``tracking.register_best``): the best trial is known only at the
        end, and this process may be the only one that has its weights.
        """
        t = self.cfg.tracking
        in_process = result.module is not None and result.datamodule is not None
        if result.best_epoch is None or not (in_process or result.checkpoint):
            return  # no epoch finished, or a child process kept no weights
        wanted = t.log_checkpoints and state != "FAIL"
        if not wanted and t.register_best and state == "COMPLETE" and result.value is not None:
            wanted = _improves(trial.study, float(result.value))
        if not wanted:
            return
        try:
            meta = {"study": self.cfg.name, "trial_number": trial.number}
            if in_process:
                ckpt = checkpoint_from_fit(result, meta)
            else:
                ckpt = {**result.checkpoint, "meta": {**result.checkpoint["meta"], **meta}}
            trial.set_user_attr("checkpoint", _registry.log_checkpoint(self.tracker, run_id, ckpt))
        except Exception as e:  # noqa: BLE001 - a lost checkpoint must not fail the trial
            _log.warning("trial %d: checkpoint not logged: %s: %s", trial.number,
                         type(e).__name__, e)


def _improves(study: optuna.Study, value: float) -> bool:
    """Whether ``value`` beats the study's best COMPLETE trial (True when there is none)."""
    try:
        best = study.best_value
    except ValueError:
        return math.isfinite(value)
    if study.direction == optuna.study.StudyDirection.MAXIMIZE:
        return value > best
    return value < best


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort after a failure
        pass


# ------------------------------------------------------------------ progress
class _Progress:
    """A tqdm bar: trials done/pruned/failed and the best value so far."""

    def __init__(self, total: int | None, metric: str, enabled: bool = True):
        from tqdm.auto import tqdm

        self.metric = metric
        self.bar = tqdm(total=total, unit="trial", dynamic_ncols=True, disable=not enabled,
                        desc="trials")
        self.counts = {"done": 0, "pruned": 0, "failed": 0}

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        key = {TrialState.COMPLETE: "done", TrialState.PRUNED: "pruned",
               TrialState.FAIL: "failed"}.get(trial.state)
        if key:
            self.counts[key] += 1
        post = dict(self.counts)
        try:
            post["best"] = f"{study.best_value:.4f}"
        except ValueError:
            pass
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)
        value = f"{self.metric}={trial.value:.4f}" if trial.value is not None else ""
        why = trial.user_attrs.get("fail_reason", "") if trial.state == TrialState.FAIL else ""
        diag = trial.user_attrs.get("diagnosis", "")
        self.bar.write(f"trial {trial.number:4d} {trial.state.name:8s} {value} {diag} {why}".rstrip())

    def close(self) -> None:
        self.bar.close()


# ------------------------------------------------------------------ running
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


def summarize(study: optuna.Study, cfg: StudyConfig, tracker: Tracker, parent_run_id: str,
              storage_url: str) -> StudySummary:
    counts = _state_counts(study)
    summary = StudySummary(cfg.name, storage_url, tracker.uri, tracker.experiment_id,
                           parent_run_id, counts)
    try:
        best = study.best_trial
    except ValueError:
        return summary
    summary.best_value = best.value
    summary.best_params = dict(best.params)
    summary.best_trial = best.number
    summary.best_run_id = best.user_attrs.get("mlflow_run_id")
    return summary


def register_best_model(study: optuna.Study, cfg: StudyConfig, tracker: Tracker,
                        parent_run_id: str) -> str | None:
    """Register the best trial's model as ``<study>-best``; returns ``models:/<name>/<version>``.

    A new version is made only when the best trial changed since the last
    registration. Returns None (with a warning) when there is no best trial,
    it left no checkpoint, or MLflow refuses: the study itself succeeded.
    """
    try:
        best = study.best_trial
    except ValueError:
        return None
    run_id = best.user_attrs.get("mlflow_run_id")
    if not run_id or "checkpoint" not in best.user_attrs:
        _log.warning("best trial %d left no checkpoint: no model registered", best.number)
        return None
    try:
        reg = _registry.register_best(tracker, cfg.name, run_id, trial_number=best.number,
                                      metric=cfg.search.metric, value=float(best.value))
        tracker.set_tags(parent_run_id, {"hpstudy.best_trial": best.number,
                                         "hpstudy.best_run_id": run_id,
                                         "hpstudy.registered_model": reg.model_uri})
    except Exception as e:  # noqa: BLE001 - the study itself succeeded
        _log.warning("best model not registered: %s: %s", type(e).__name__, e)
        return None
    return reg.model_uri


def connect(cfg: StudyConfig, storage: str | None = None, tracking_uri: str | None = None
            ) -> tuple[optuna.Study, Tracker, str]:
    """Open the study and its tracker; find or create the parent run (stored in the study)."""
    _configure_optuna_logging()
    storage_url = cfg.storage_url(storage)
    study = open_study(cfg, storage_url)
    tracker = Tracker(cfg.tracking_uri(tracking_uri), cfg.tracking.experiment or cfg.name,
                      cfg.tracking.artifact_location)
    known = study.user_attrs.get(PARENT_RUN_ATTR)
    parent = tracker.study_run(cfg.name, known, params=_study_params(cfg, storage_url))
    if parent != known:
        study.set_user_attr(PARENT_RUN_ATTR, parent)
    _isolate.register_tracker(cfg.name, tracker)  # stale trials' runs get marked FAILED
    if CONFIG_ATTR not in study.user_attrs:
        study.set_user_attr(CONFIG_ATTR, cfg.to_yaml())
    return study, tracker, parent


def _study_params(cfg: StudyConfig, storage_url: str) -> dict[str, Any]:
    d = cfg.to_dict()
    params = trial_params(cfg)
    params.update({f"search.{k}": v for k, v in d["search"].items() if k != "enqueue"})
    params["storage"] = storage_url.split("@")[-1]  # never log credentials
    return params


def run_study(
    cfg: StudyConfig,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    report: bool | None = None,
) -> StudySummary:
    """Create or resume the study and run trials in this process.

    Args:
        cfg: the study config.
        n_trials: trials to run now (default ``search.n_trials``); resuming adds
            this many more.
        timeout: stop starting new trials after this many seconds.
        storage: Optuna storage URL (flag > study file > $HPSTUDY_STORAGE > default).
        tracking_uri: MLflow URI (flag > study file > $MLFLOW_TRACKING_URI > default).
        progress: show the progress bar.
        report: write the dashboard at the end (default ``report.enabled``).
    """
    start = time.perf_counter()
    study, tracker, parent = connect(cfg, storage, tracking_uri)
    n = n_trials if n_trials is not None else cfg.search.n_trials
    t = timeout if timeout is not None else cfg.search.timeout
    bar = _Progress(n, cfg.search.metric, enabled=progress)
    objective = Objective(cfg, tracker, parent)
    status = "FINISHED"
    try:
        study.optimize(objective, n_trials=n, timeout=t, catch=(Exception,), callbacks=[bar],
                       gc_after_trial=False)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        bar.close()
        summary = close_study(study, cfg, tracker, parent, cfg.storage_url(storage), status)
    return finish_summary(summary, study, cfg, tracker, start, report)


def close_study(study: optuna.Study, cfg: StudyConfig, tracker: Tracker, parent: str,
                storage_url: str, status: str, **extra: float) -> StudySummary:
    """Study-level results on the parent run (counts, best value), which ends with ``status``."""
    summary = summarize(study, cfg, tracker, parent, storage_url)
    c = summary.counts
    finals = {"n_trials": c["total"], "n_complete": c["complete"], "n_pruned": c["pruned"],
              "n_failed": c["failed"], **extra}
    if summary.best_value is not None:
        finals.update(best_value=summary.best_value, best_trial_number=summary.best_trial)
    tracker.finish_study(parent, finals, status=status)
    return summary


def finish_summary(summary: StudySummary, study: optuna.Study, cfg: StudyConfig,
                   tracker: Tracker, start: float, report: bool | None) -> StudySummary:
    """After a study ran to its end: register the best model, write the dashboard."""
    if cfg.tracking.register_best:
        summary.registered_model = register_best_model(study, cfg, tracker,
                                                       summary.parent_run_id)
    summary.duration_s = time.perf_counter() - start
    if cfg.report.enabled if report is None else report:
        summary.report_path = write_dashboard(cfg, summary.storage, tracker.uri)
    return summary


def write_dashboard(cfg: StudyConfig, storage_url: str, tracking_uri: str) -> str | None:
    """Write ``<report.dir>/<study>/index.html``, log it to the parent run, return its path.

    Returns None (with a warning) when it cannot be written: a dashboard that
    fails to draw must not turn a finished study into a failed command.
    """
    from ..report import report_study  # plotly is imported only when a report is wanted

    try:
        path = report_study(cfg.name, storage_url, tracking_uri, cfg.report.dir)
    except Exception as e:  # noqa: BLE001 - the study itself succeeded
        _log.warning("dashboard not written: %s: %s", type(e).__name__, e)
        return None
    return str(path)


def run_single(cfg: StudyConfig, tracking_uri: str | None = None) -> tuple[FitResult, str, Tracker]:
    """``hpstudy train``: one run with the config's fixed hyperparameters (no search)."""
    tracker = Tracker(cfg.tracking_uri(tracking_uri), cfg.tracking.experiment or cfg.name,
                      cfg.tracking.artifact_location)
    name = time.strftime("train-%Y%m%d-%H%M%S")
    run_id = tracker.start_run(name, {"hpstudy.kind": "train", "optuna.study_name": cfg.name},
                               trial_params(cfg))
    try:
        if _isolate.needs_process(cfg):  # a DDP launcher here would re-run `hpstudy train`
            result = _isolate.run_trial_process(cfg, lambda r: bool(tracker.log_epoch(run_id, r)),
                                                label=name)
        else:
            result = fit(cfg, hooks=[lambda r: tracker.log_epoch(run_id, r)])
    except BaseException as e:
        state = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAIL"
        tracker.end_run(run_id, state, {"hpstudy.fail_reason": f"{type(e).__name__}: {e}"[:1000]})
        raise
    tracker.log_params(run_id, {"model.num_params": result.num_params, **result.data_info})
    tracker.log_dataset(run_id, cfg.to_dict()["data"], result.data_info)
    state = "FAIL" if result.status == "diverged" else "COMPLETE"
    record_fit(tracker, run_id, result, cfg, state)
    return result, run_id, tracker
