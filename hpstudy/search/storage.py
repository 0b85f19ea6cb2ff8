"""Optuna storages: opening them, heartbeats, and trials whose worker is gone.

``get_storage(url)`` opens an RDBStorage (SQLite, PostgreSQL, MySQL...) or a
JournalStorage (``journal:///path``). RDB storages write a heartbeat per
running trial: any worker that starts a trial first fails the trials whose
heartbeat is older than the grace period and queues a retry (Optuna's own
mechanism). The tracker of the process that opened the storage is passed in,
so the stale trial's MLflow run is ended FAILED with the reason too.

Trials are changed through the storage's public methods (study and trial ids
looked up by name and number), never through Optuna's private attributes.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .._proc import owner_gone, this_process
from .._sqlite import tune_sqlite
from .._stores import sqlalchemy_url
from .._urls import absolute_url
from ..names import (
    ATTR_FAIL_REASON,
    ATTR_PARENT_RUN,
    ATTR_RETRY_OF,
    ATTR_RUN_ID,
    SYSATTR_OWNER,
)

_log = logging.getLogger("hpstudy")

# Optuna needs whole seconds; the environment overrides them (tests use 1 s / 3 s).
HEARTBEAT_ENV = "HPSTUDY_HEARTBEAT_INTERVAL"  # seconds between heartbeats (default 20)
GRACE_ENV = "HPSTUDY_HEARTBEAT_GRACE"  # seconds of silence before a trial is stale (default 120)
RETRY_ENV = "HPSTUDY_MAX_RETRY"  # retries of a stale trial (default 2)
_READERS: dict[str, optuna.storages.BaseStorage] = {}  # url -> storage opened without a tracker


@contextmanager
def quiet_experimental() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning for features this project relies on deliberately."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def get_storage(url: str, tracker: Any | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``.

    Args:
        url: ``sqlite:///...`` and other SQLAlchemy URLs (``postgresql://...``) give
            an RDBStorage (the folder of a relative SQLite path is created);
            ``journal:///path/to/file.log`` gives a JournalStorage on a file.
        tracker: the :class:`~hpstudy.track.Tracker` whose runs a stale trial's
            retry marks FAILED. Without one, the storage is shared per URL within
            this process (one connection pool, however often it is asked for).
    """
    url = absolute_url(url)
    if tracker is None and url in _READERS:
        return _READERS[url]
    storage = _open(url, stale_trial_handler(tracker))
    if tracker is None:
        _READERS[url] = storage
    return storage


def session_storage(url: str) -> tuple[optuna.storages.BaseStorage, StaleTrialHandler | None]:
    """A storage of a study session's own, and its stale-trial handler (None for journals).

    The session sets ``handler.tracker`` once its tracker exists, so the runs of
    trials it finds stale are marked FAILED too.
    """
    handler = stale_trial_handler()
    storage = _open(absolute_url(url), handler)
    return storage, handler if isinstance(storage, optuna.storages.RDBStorage) else None


def _open(url: str, handler: StaleTrialHandler) -> optuna.storages.BaseStorage:
    if url.startswith("journal:///"):
        path = Path(url.removeprefix("journal:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        tune_sqlite(url)
        # wait for a lock instead of failing with "database is locked"
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    with quiet_experimental():
        return optuna.storages.RDBStorage(sqlalchemy_url(url), engine_kwargs=engine_kwargs,
                                          heartbeat_interval=handler.interval_s,
                                          grace_period=handler.grace_s,
                                          heartbeat_stale_trial_callback=handler)


def stale_trial_handler(tracker: Any | None = None) -> StaleTrialHandler:
    """The stale-trial handler with the heartbeat timing of the environment (or the defaults)."""
    interval = int(os.environ.get(HEARTBEAT_ENV, "20"))
    grace = int(os.environ.get(GRACE_ENV, str(max(6 * interval, 2 * interval + 1))))
    retries = int(os.environ.get(RETRY_ENV, "2"))
    return StaleTrialHandler(grace, retries, tracker, interval_s=interval)


class StaleTrialHandler:
    """Optuna's ``heartbeat_stale_trial_callback``: record why, then retry.

    Optuna has already set the stale trial to FAIL (a finished trial takes no
    more user attrs); this marks its MLflow run FAILED with the reason (when a
    tracker was given) and queues a retry with
    :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` (same parameters;
    ``retry_of`` in its user attrs names the lost trial).
    """

    def __init__(self, grace_s: int, max_retry: int | None, tracker: Any | None = None,
                 interval_s: int = 20):
        self.grace_s, self.max_retry, self.tracker = grace_s, max_retry, tracker
        self.interval_s = interval_s

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        reason = (f"worker lost: no heartbeat for over {self.grace_s}s "
                  "(its process was killed or its machine is gone)")
        _log.warning("trial %d of %s: %s; retrying", trial.number, study.study_name, reason)
        if self.tracker is not None:
            mark_run_failed(self.tracker, study.study_name, trial.number,
                            trial.user_attrs.get(ATTR_RUN_ID), reason,
                            study.user_attrs.get(ATTR_PARENT_RUN), trial.params)
        retry_trial(study, trial, reason, self.max_retry)


def retry_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str,
                max_retry: int | None) -> None:
    """Queue a retry of a failed trial (same parameters, ``retry_of`` naming it)."""
    retry = copy.deepcopy(trial)
    attrs = {k: v for k, v in trial.user_attrs.items()
             if k not in (ATTR_RUN_ID, ATTR_FAIL_REASON)}  # the retry gets its own run
    retry.user_attrs = {**attrs, ATTR_RETRY_OF: trial.number, "retry_reason": reason}
    with quiet_experimental():
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, retry)


def mark_run_failed(tracker: Any, study_name: str, number: int, run_id: str | None,
                    reason: str, parent_id: str | None = None,
                    params: dict[str, Any] | None = None, state: str = "FAIL") -> str | None:
    """End the MLflow run of trial ``number`` as FAILED (or ``state``) with ``hpstudy.fail_reason``.

    The run is found by id, or (a worker killed between creating the run and
    recording its id) by its tags; a trial killed before its run existed gets
    one now under ``parent_id`` with ``params``, so every trial keeps its run.
    Returns the run id (None if there is none and no parent to create it under).
    """
    from ..names import TAG_FAIL_REASON

    try:
        if run_id is None:
            run_id = tracker.find_trial_run(study_name, number)
        if run_id is None:
            if parent_id is None:
                return None
            run_id = tracker.start_trial(parent_id, study_name, number, params or {})
        tracker.end_run(run_id, state, {TAG_FAIL_REASON: reason[:1000]})
    except Exception as e:  # noqa: BLE001 - the Optuna state is what counts
        _log.warning("could not mark the MLflow run of trial %d failed: %s", number, e)
        return None
    return run_id


def trial_id(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> int:
    """The storage's id of trial ``number`` of ``study_name`` (public storage methods)."""
    study_id = storage.get_study_id_from_name(study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def fail_trial(storage: optuna.storages.BaseStorage, study_name: str, number: int,
               reason: str, attrs: dict[str, Any] | None = None) -> bool:
    """Set a RUNNING trial to FAIL with ``fail_reason`` (and ``attrs``) as user attrs.

    Returns False when the trial had already finished (nothing is changed then).
    """
    tid = trial_id(storage, study_name, number)
    if storage.get_trial(tid).state != TrialState.RUNNING:
        return False
    # a finished trial takes no user attrs: set them first, then the state
    for key, value in {ATTR_FAIL_REASON: reason, **(attrs or {})}.items():
        storage.set_trial_user_attr(tid, key, value)
    try:
        return storage.set_trial_state_values(tid, TrialState.FAIL)
    except RuntimeError:  # finished meanwhile (e.g. stale-trial handling)
        return False


def record_owner(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> None:
    """Note in the trial's system attrs which process (host, pid) runs it."""
    storage.set_trial_system_attr(trial_id(storage, study_name, number), SYSATTR_OWNER,
                                  this_process())


def recover_dead_trials(study: optuna.Study, storage: optuna.storages.BaseStorage,
                        tracker: Any, parent_run_id: str | None) -> list[int]:
    """Fail and retry RUNNING trials whose process is provably gone (same host, no such pid).

    A worker killed with SIGKILL leaves its trial RUNNING; the heartbeat would
    notice only after the grace period (and journal storages have none). A
    process on this host can be checked at once; trials owned by other hosts
    are left to the heartbeat. Returns the numbers of the trials failed here.
    """
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.system_attrs.get(SYSATTR_OWNER)
        if not owner_gone(owner):
            continue
        reason = (f"worker lost: its process {owner['pid']} on {owner['host']} is gone "
                  "(killed?)")
        run_id = mark_run_failed(tracker, study.study_name, t.number,
                                 t.user_attrs.get(ATTR_RUN_ID), reason, parent_run_id, t.params)
        attrs = {ATTR_RUN_ID: run_id} if run_id is not None else {}
        if fail_trial(storage, study.study_name, t.number, reason, attrs):
            _log.warning("trial %d of %s: %s; retrying", t.number, study.study_name, reason)
            retry_trial(study, t, reason, int(os.environ.get(RETRY_ENV, "2")))
            failed.append(t.number)
    return failed
