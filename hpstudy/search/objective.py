"""The Optuna objective: sample once, run the concrete config, record it.

A short driver over :func:`hpstudy.train.execute` (one way to run a config)
and :func:`hpstudy.track.tracked_run` (one way to record it). Sampling happens
here, once per trial, in the process that talks to Optuna; the concrete config
is what gets trained (and what DDP ranks receive), so every rank trains the
same hyperparameters.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from .._proc import interruption
from ..config import StudyConfig, resolve_space, trial_params
from ..names import (
    ATTR_CHECKPOINT,
    ATTR_FAIL_REASON,
    ATTR_RUN_ID,
    COMPLETE,
    FAIL,
    PRUNED,
    trial_run_name,
)
from ..track import registry as _registry
from ..track import tracked_run, trial_tags
from ..track.run import failure_reason
from ..train import FitResult, checkpoint_from_fit, execute, release_memory, uses_gpu
from . import space as _space
from .storage import fail_trial, record_owner

if TYPE_CHECKING:
    from .study import StudySession

_log = logging.getLogger("hpstudy")


class TrialFailed(RuntimeError):
    """A trial ended without a usable result (e.g. diverged); its reason is recorded."""


class Objective:
    """The Optuna objective of an open study session (see the module docstring)."""

    def __init__(self, session: StudySession):
        self.session = session
        self.cfg = session.cfg
        self.space = resolve_space(self.cfg.search.space)

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            value = self._run(trial)
        except optuna.TrialPruned:
            self._log_history(trial.number, None, "n_pruned")
            raise
        except Exception as e:
            trial.set_user_attr(ATTR_FAIL_REASON, failure_reason(e))
            self._log_history(trial.number, None, "n_failed")
            raise  # Optuna records FAIL (the study catches Exception) and goes on
        except BaseException as e:
            stop = interruption(e)
            if stop is None:
                raise
            # Optuna leaves a trial RUNNING for anything but Exception/KeyboardInterrupt:
            # record it FAIL with the reason ourselves, then stop the study
            s = self.session
            fail_trial(s.storage, s.study.study_name, trial.number, stop.reason)
            raise stop from None
        finally:
            release_memory()
        self._log_history(trial.number, value, "n_complete")
        return value

    def _log_history(self, number: int, value: float | None, counter: str) -> None:
        """The optimization history on the study run: step = trial number (one call per trial).

        ``best_value`` is the best objective so far and ``best_trial_number``
        its trial, ``trial_value`` this trial's value (COMPLETE trials), and
        ``n_complete``/``n_pruned``/``n_failed`` the counts so far (this trial
        counted under ``counter``), so the MLflow UI's chart view draws the
        study's history as lines rather than single points.
        """
        s = self.session
        trials = s.study.get_trials(deepcopy=False)
        counts = {"n_complete": TrialState.COMPLETE, "n_pruned": TrialState.PRUNED,
                  "n_failed": TrialState.FAIL}
        metrics: dict[str, float] = {k: sum(t.state == st for t in trials) + (k == counter)
                                     for k, st in counts.items()}
        best, best_number = None, None
        for t in trials:  # COMPLETE trials other than this one
            if t.state == TrialState.COMPLETE and t.value is not None and (
                    best is None or _better(s.study, t.value, best)):
                best, best_number = t.value, t.number
        if value is not None and math.isfinite(value):
            metrics["trial_value"] = value
            if best is None or _better(s.study, value, best):
                best, best_number = value, number
        if best is not None:
            metrics["best_value"] = best
            metrics["best_trial_number"] = best_number
        try:
            s.tracker.log_metrics(s.parent_run_id, metrics, step=number)
        except Exception as e:  # noqa: BLE001 - a lost chart point must not fail the trial
            _log.warning("trial %d: history not logged on the study run: %s", number, e)

    def _run(self, trial: optuna.Trial) -> float:
        s, n = self.session, trial.number
        record_owner(s.storage, s.study.study_name, n)  # a rerun can tell when it died
        tcfg = self.trial_config(trial)
        with tracked_run(s.tracker, trial_run_name(n), tags=trial_tags(self.cfg.name, n),
                         params=trial_params(tcfg), parent_id=s.parent_run_id,
                         gpu_metrics=uses_gpu(tcfg)) as run:
            trial.set_user_attr(ATTR_RUN_ID, run.id)
            result = execute(tcfg, [run.log_epoch, self._reporter(trial, tcfg.train.max_epochs)],
                             label=f"{self.cfg.name}-{trial_run_name(n)}",
                             on_failure_log=run.log_artifact)
            self._keep_checkpoint(trial, run.id, result)
            why = prune_reason(self.cfg, len(result.history)) if result.state == PRUNED else None
            attrs = run.record(result, tcfg, prune_reason=why)
        for k, v in attrs.items():
            if v is not None:
                trial.set_user_attr(k, v)
        if result.state == PRUNED:
            raise optuna.TrialPruned(why)
        if result.state == FAIL:
            trial.set_user_attr(ATTR_FAIL_REASON, result.failure)
            raise TrialFailed(result.failure)
        return float(result.value)  # type: ignore[arg-type]

    def trial_config(self, trial: optuna.Trial) -> StudyConfig:
        """The trial's concrete config: the study's config with every space entry sampled.

        Drivers that map sampled values before training (the guide scales the
        lr with the batch size) override this one method.
        """
        return self.cfg.concrete(_space.suggest(trial, self.space), source=f"trial {trial.number}")

    def _reporter(self, trial: optuna.Trial, max_epochs: int) -> Any:
        """The pruning hook: report the epoch's objective, say whether to stop.

        The pruner is not asked after the last epoch: stopping a trial that has
        trained all its epochs saves nothing and would record a finished trial as
        PRUNED (SHA's and Hyperband's rungs can fall on ``max_epochs``).
        """
        metric = self.cfg.search.metric

        def report(record: dict[str, Any]) -> bool:
            value = record[metric]
            if not math.isfinite(value):
                return False
            trial.report(value, record["epoch"])
            return record["epoch"] < max_epochs and trial.should_prune()

        return report

    def _keep_checkpoint(self, trial: optuna.Trial, run_id: str, result: FitResult) -> None:
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
        wanted = t.log_checkpoints and result.state != FAIL
        if not wanted and t.register_best and result.state == COMPLETE:
            wanted = _improves(trial.study, float(result.value))  # type: ignore[arg-type]
        if not wanted:
            return
        try:
            meta = {"study": self.cfg.name, "trial_number": trial.number}
            if in_process:
                ckpt = checkpoint_from_fit(result, meta)
            else:
                ckpt = {**result.checkpoint, "meta": {**result.checkpoint["meta"], **meta}}
            uri = _registry.log_checkpoint(self.session.tracker, run_id, ckpt)
            trial.set_user_attr(ATTR_CHECKPOINT, uri)
        except Exception as e:  # noqa: BLE001 - a lost checkpoint must not fail the trial
            _log.warning("trial %d: checkpoint not logged: %s: %s", trial.number,
                         type(e).__name__, e)


def prune_reason(cfg: Any, epoch: int) -> str:
    """Why the study's pruner stopped a trial after ``epoch``, in the pruner's own terms."""
    p = cfg.search.pruner
    opts = p.options
    if p.name == "median":
        return f"below the median of earlier trials at epoch {epoch} (median pruner)"
    if p.name == "percentile":
        pct = opts.get("percentile", 25.0)
        return f"outside the best {pct:g}% of earlier trials at epoch {epoch} (percentile pruner)"
    if p.name in ("sha", "hyperband"):
        from .study import PRUNER_DEFAULTS  # study imports this module

        rf = opts.get("reduction_factor", PRUNER_DEFAULTS[p.name]["reduction_factor"])
        kind = "successive halving" if p.name == "sha" else "Hyperband"
        return (f"not in the best 1/{rf} of its rung at epoch {epoch}, so not promoted "
                f"({kind})")
    return f"stopped at epoch {epoch} by the {p.name} pruner"


def _improves(study: optuna.Study, value: float) -> bool:
    """Whether ``value`` beats the study's best COMPLETE trial (True when there is none)."""
    try:
        best = study.best_value
    except ValueError:
        return math.isfinite(value)
    return _better(study, value, best)


def _better(study: optuna.Study, value: float, best: float) -> bool:
    if study.direction == optuna.study.StudyDirection.MAXIMIZE:
        return value > best
    return value < best
