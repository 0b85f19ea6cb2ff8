"""One tracked run: :func:`tracked_run` starts an MLflow run and closes it whatever happens.

Every driver records its run the same way::

    with tracked_run(tracker, "trial-0007", tags=..., params=..., parent_id=...) as run:
        result = execute(cfg, hooks=[run.log_epoch, ...])
        run.record(result, cfg)        # summary metrics, tags, artifacts, diagnosis; ends it

An exception or a signal inside the block ends the run ``FAIL`` (status
FAILED) or ``KILLED`` with the reason in ``hpstudy.fail_reason`` and the full
traceback as the ``error.txt`` artifact, then propagates. A block that leaves
without recording ends the run ``FAIL`` ("ended without a result").
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._proc import interruption
from ..names import (
    ATTR_BEST_EPOCH,
    ATTR_DIAGNOSIS,
    ATTR_DIAGNOSIS_DETAIL,
    ATTR_EPOCHS,
    ATTR_NUM_PARAMS,
    ATTR_PRUNE_REASON,
    ATTR_STATUS,
    COMPLETE,
    DIAGNOSIS_ARTIFACT,
    FAIL,
    KILLED,
    METRIC_BEST_EPOCH,
    METRIC_BEST_VAL_ACC,
    METRIC_BEST_VAL_LOSS,
    PARAM_NUM_PARAMS,
    PRUNED,
    TAG_DIAGNOSIS,
    TAG_DIAGNOSIS_REASON,
    TAG_FAIL_REASON,
    TAG_NOTE,
)
from .tracker import Tracker, history_csv

_log = logging.getLogger("hpstudy")


def failure_reason(exc: BaseException) -> str:
    """One line for a run that ended with ``exc`` (``interrupted: SIGTERM``, ``ValueError: ...``).

    An exception that carries its own recorded line in a ``fail_reason``
    attribute (``out_of_memory: ...``, see :mod:`hpstudy.train.memory`) gives it as is.
    """
    stop = interruption(exc)
    if stop is not None:
        return stop.reason
    own = getattr(exc, "fail_reason", None)
    if isinstance(own, str) and own:
        return own[:1000]
    return f"{type(exc).__name__}: {exc}"[:1000]


def diagnose_result(result: Any, cfg: Any, prune_reason: str | None = None
                    ) -> dict[str, Any] | None:
    """The course's reading of a result's learning curves (verdict, reason, evidence, advice).

    None without curves, without a class count, or without a validation split
    (``val_split: 0``): the training curves alone cannot tell a fit from an overfit.
    """
    num_classes = result.data_info.get("data.num_classes")
    if not num_classes or not result.history or not getattr(result, "validated", True):
        return None
    from ..analyze import diagnose

    n_val = result.data_info.get("data.n_val")
    return diagnose(result.history, int(num_classes), status=result.status,
                    n_val=int(n_val) if n_val else None, max_epochs=cfg.train.max_epochs,
                    prune_reason=prune_reason, monitor=result.monitor,
                    mode=result.mode).to_dict()


class TrackedRun:
    """An open MLflow run: log epochs, then record the result (which ends it)."""

    def __init__(self, tracker: Tracker, run_id: str):
        self.tracker, self.id = tracker, run_id
        self.state: str | None = None  # set when the run has ended
        self.monitor: Any | None = None  # MLflow's system-metrics monitor (GPU runs)

    @property
    def ended(self) -> bool:
        return self.state is not None

    def log_epoch(self, record: dict[str, Any]) -> bool:
        """All metrics of one epoch in one call (an epoch hook: never asks to stop)."""
        self.tracker.log_epoch(self.id, record)
        return False

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.tracker.log_artifact(self.id, path, artifact_path)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.tracker.set_tags(self.id, tags)

    def record(self, result: Any, cfg: Any, *, state: str | None = None,
               tags: dict[str, Any] | None = None,
               prune_reason: str | None = None) -> dict[str, Any]:
        """Log a finished fit and end the run; returns the facts the caller keeps (user attrs).

        Logs the model size and data facts as params, the dataset as an input,
        the summary metrics (``best_val_acc``, ``best_val_loss``, ``best_epoch``,
        test metrics), ``config.yaml`` and ``history.csv``, the diagnosis tag,
        then ends the run with ``state`` (default: ``result.state``).
        """
        state = state or result.state
        t = self.tracker
        t.log_params(self.id, {PARAM_NUM_PARAMS: result.num_params, **result.data_info})
        t.log_dataset(self.id, cfg.to_dict()["data"], result.data_info)
        summary: dict[str, float] = {}
        if result.best_epoch is not None:
            summary[METRIC_BEST_VAL_ACC] = result.best["val_acc"]
            summary[METRIC_BEST_VAL_LOSS] = result.best["val_loss"]
            summary[METRIC_BEST_EPOCH] = result.best_epoch
        summary.update(result.test or {})
        summary.update(getattr(result, "metrics", None) or {})  # compile time, GPU memory
        t.log_metrics(self.id, summary, step=result.best_epoch or 0)
        t.log_text(self.id, cfg.to_yaml(), "config.yaml")
        t.log_text(self.id, history_csv(result.history), "history.csv")
        attrs: dict[str, Any] = {ATTR_BEST_EPOCH: result.best_epoch,
                                 ATTR_EPOCHS: len(result.history),
                                 ATTR_NUM_PARAMS: result.num_params, ATTR_STATUS: result.status,
                                 **(result.test or {})}
        all_tags: dict[str, Any] = dict(tags or {})
        diag = diagnose_result(result, cfg, prune_reason)
        if diag is not None:
            all_tags[TAG_DIAGNOSIS] = diag["verdict"]
            all_tags[TAG_DIAGNOSIS_REASON] = diag["reason"]
            t.log_text(self.id, json.dumps(diag, indent=1), DIAGNOSIS_ARTIFACT)
            attrs[ATTR_DIAGNOSIS] = diag["verdict"]
            attrs[ATTR_DIAGNOSIS_DETAIL] = diag
        if prune_reason:
            attrs[ATTR_PRUNE_REASON] = prune_reason
        if state == FAIL:
            all_tags[TAG_FAIL_REASON] = result.failure or result.reason or "failed"
            all_tags.setdefault(TAG_NOTE, f"FAILED: {all_tags[TAG_FAIL_REASON]}")
        elif state == PRUNED:  # the status stays FINISHED: the description says why it stopped
            all_tags.setdefault(TAG_NOTE, f"PRUNED after epoch {len(result.history)}"
                                + (f", {diag['verdict']}" if diag else ""))
        elif state == COMPLETE and result.best_epoch is not None:
            metric = cfg.search.metric
            all_tags.setdefault(TAG_NOTE, f"COMPLETE {metric} {result.best[metric]:.4f} at epoch "
                                f"{result.best_epoch}" + (f", {diag['verdict']}" if diag else ""))
        self.end(state, all_tags)
        return attrs

    def end(self, state: str, tags: dict[str, Any] | None = None) -> None:
        """Tag the final state and terminate the run (idempotent)."""
        if self.ended:
            return
        if self.monitor is not None:  # its last samples go in before the run ends
            monitor, self.monitor = self.monitor, None
            monitor.finish()
        self.tracker.end_run(self.id, state, tags)
        self.state = state

    def fail(self, exc: BaseException) -> str:
        """End the run for ``exc``: KILLED for a signal, FAIL otherwise; returns the reason.

        Never raises: a store that fails now (a locked database, a server gone)
        must not replace ``exc``, which the caller re-raises (an interruption
        has to reach the code that stops the study).
        """
        reason = failure_reason(exc)
        if self.ended:
            return reason
        try:
            self.tracker.log_text(self.id, "".join(traceback.format_exception(exc)), "error.txt")
        except Exception:  # noqa: BLE001 - the state below matters more
            pass
        state = KILLED if interruption(exc) is not None else FAIL
        tags = {TAG_FAIL_REASON: reason, TAG_NOTE: f"{state}: {reason}"}
        # Ctrl-C reaches every worker at once: on a SQLite store they all write now, and a
        # process killed inside a write holds the lock until it exits. Retry for a few
        # seconds, quietly (MLflow's store logs each failed statement with its traceback).
        store_log = logging.getLogger("mlflow.store.db.utils")
        level, store_log.level = store_log.level, logging.CRITICAL
        try:
            for wait in (0.25, 0.5, 1.0, 2.0, 4.0, None):
                try:
                    self.end(state, tags)
                    break
                except Exception as e:  # noqa: BLE001 - see above
                    if wait is None:
                        _log.warning("run %s could not be marked %s: %s: %s", self.id, state,
                                     type(e).__name__, str(e).splitlines()[0])
                    else:
                        time.sleep(wait)
        finally:
            store_log.setLevel(level)
        return reason


@contextmanager
def tracked_run(tracker: Tracker, name: str, *, tags: dict[str, Any],
                params: dict[str, Any], parent_id: str | None = None,
                gpu_metrics: bool = False) -> Iterator[TrackedRun]:
    """Start a run (name, tags, params; nested under ``parent_id``) and always close it.

    ``gpu_metrics``: the run trains on a CUDA GPU; log its utilization and memory
    while the run is open (:mod:`hpstudy.track.system`).

    Yields:
        The :class:`TrackedRun`. Leaving the block by an exception or a signal
        ends it KILLED or FAILED with the reason (and re-raises); leaving it
        normally without :meth:`TrackedRun.record` ends it FAIL.
    """
    run = TrackedRun(tracker, tracker.start_run(name, tags, params, parent_id=parent_id))
    if gpu_metrics:
        from .system import start_gpu_monitor

        run.monitor = start_gpu_monitor(run.id, tracker.uri)
    try:
        yield run
    except BaseException as e:
        run.fail(e)
        raise
    if not run.ended:
        run.end(FAIL, {TAG_FAIL_REASON: "ended without a result"})


__all__ = ["COMPLETE", "TrackedRun", "diagnose_result", "failure_reason", "tracked_run"]
