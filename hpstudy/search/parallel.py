"""Parallel trials on one machine: ``hpstudy run STUDY --workers N``.

The parent process opens the study and creates its MLflow parent run once
(``connect`` stores the run id in the study's user attrs), then starts N worker
processes (``spawn``: no forked torch/thread state). Each worker joins the same
Optuna storage and runs whole trials in a loop, exactly like ``hpstudy worker``
on another machine; Optuna's storage hands out trial numbers, so none repeats.

Exactly T trials: before each trial a worker takes a ticket from a counter
shared by the workers of this machine (a lock-protected integer), so T tickets
give T finished trials, never T + workers - 1 as a stop-after-the-fact callback
(Optuna's ``MaxTrialsCallback``) would.

Devices: :mod:`~hpstudy.search.placement` pins each worker to its GPU(s)
through ``CUDA_VISIBLE_DEVICES`` (round robin, at most ``search.trials_per_gpu``
one-GPU trials per GPU, trials of several GPUs on GPUs of their own) and gives
it its share of the CPU cores (``OMP_NUM_THREADS`` and ``torch.set_num_threads``).

A worker that dies mid-trial (segfault, OOM kill) takes its trial with it: the
parent records that trial as FAIL with the exit status as ``fail_reason``,
marks its MLflow run FAILED, and starts a replacement worker; the study goes on.

Storage: SQLite (the default) holds a few local workers thanks to the lock
timeout set in ``get_storage`` (measured by ``benchmarks/parallel.py``); many
workers or many machines want PostgreSQL.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from .._proc import Interrupted, interruption, trap_signals
from ..config import StudyConfig
from ..names import ATTR_RUN_ID
from ..train import death_reason
from .objective import Objective
from .placement import plan_workers
from .progress import Progress
from .storage import fail_trial, mark_run_failed
from .study import (
    StudySession,
    StudySummary,
    close_study,
    configure_optuna_logging,
    connect,
    end_status,
    note_interruption,
)

_log = logging.getLogger("hpstudy")
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_MAX_RESTARTS_PER_WORKER = 3  # a worker that keeps dying points at a bug, not bad luck
_NO_LIMIT = -1
_IDLE, _CLAIMED = -1, -2  # values of WorkerSpec.current besides a trial number


@dataclass
class WorkerSpec:
    """What one worker process needs (picklable: plain data and shared counters)."""

    index: int
    cfg_yaml: str
    storage: str
    tracking_uri: str
    threads: int | None
    deadline: float | None  # time.time() after which no trial starts
    tickets: Any  # mp.Value("i"): trials left to start on this machine (-1: no limit)
    current: Any  # mp.Array("i"): each worker's trial number, or _IDLE / _CLAIMED (ticket taken)


# ------------------------------------------------------------------ worker side
def with_worker_seed(cfg: StudyConfig, salt: int | None = None) -> StudyConfig:
    """A copy whose sampler seed is offset by ``salt`` (random when None).

    Every worker builds its own sampler; with the study's fixed seed they would
    all propose the same hyperparameters (a seeded RandomSampler, and TPE's
    random start-up trials, repeat their sequence in each process).
    """
    seed = cfg.search.sampler.seed
    if seed is None or salt == 0:
        return cfg
    if salt is None:  # another machine's worker: no shared counter to number it
        salt = int.from_bytes(os.urandom(3), "big") + 1
    return cfg.concrete({"search.sampler.seed": seed + salt}, source="worker seed")


def _take_ticket(spec: WorkerSpec) -> bool:
    if spec.deadline is not None and time.time() >= spec.deadline:
        return False
    with spec.tickets.get_lock():
        if spec.tickets.value == _NO_LIMIT:
            return True
        if spec.tickets.value <= 0:
            return False
        spec.tickets.value -= 1
        spec.current[spec.index] = _CLAIMED  # a death before the trial starts returns it
        return True


def worker_main(spec: WorkerSpec) -> None:
    """Entry point of a worker process: join the study and run trials while tickets last.

    A signal (the terminal's Ctrl-C reaches every worker; the parent forwards
    SIGTERM) ends the running trial FAIL with the reason and its run KILLED,
    then the worker exits with 128 + the signal number.
    """
    try:
        with trap_signals():
            _work(spec)
    except Interrupted as e:
        sys.exit(e.exit_code)


def _work(spec: WorkerSpec) -> None:
    from ..config import from_dict, load_yaml_text

    configure_optuna_logging()
    if spec.threads:
        import torch

        torch.set_num_threads(spec.threads)
    # validated by the parent already: the schema only
    cfg = from_dict(load_yaml_text(spec.cfg_yaml), "study config (parallel worker)", concrete=True)
    cfg = with_worker_seed(cfg, spec.index)  # worker 0 keeps the study's own seed
    session = connect(cfg, spec.storage, spec.tracking_uri)
    objective = Objective(session)

    def run(trial: optuna.Trial) -> float:
        # the parent reads this to name the trial a crash of this process took
        spec.current[spec.index] = trial.number
        try:
            return objective(trial)
        finally:
            spec.current[spec.index] = _IDLE

    while _take_ticket(spec):
        session.study.optimize(run, n_trials=1, catch=(Exception,), gc_after_trial=False)


# ------------------------------------------------------------------ parent side
def fail_lost_trial(session: StudySession, number: int, reason: str) -> bool:
    """Record a still-RUNNING trial whose process died as FAIL with ``reason``.

    Its MLflow run (created now if the worker died before making it) ends
    FAILED with the reason. Returns False when the trial had already finished.
    """
    study = session.study
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None or trial.state != TrialState.RUNNING:
        return False
    run_id = mark_run_failed(session.tracker, study.study_name, number,
                             trial.user_attrs.get(ATTR_RUN_ID), reason, session.parent_run_id,
                             trial.params)
    attrs = {ATTR_RUN_ID: run_id} if run_id is not None else {}
    return fail_trial(session.storage, study.study_name, number, reason, attrs)


class _Workers:
    """The worker processes of one ``run_parallel`` call, restarted when they die."""

    def __init__(self, specs: list[WorkerSpec], envs: list[dict[str, str]]):
        self.ctx = mp.get_context("spawn")
        self.specs, self.envs = specs, envs
        self.procs: list[Any] = [None] * len(specs)
        self.restarts = [0] * len(specs)

    def start(self, i: int) -> None:
        # spawn copies os.environ at start: set this worker's share around start()
        saved = {k: os.environ.get(k) for k in self.envs[i]}
        os.environ.update(self.envs[i])
        try:
            p = self.ctx.Process(target=worker_main, args=(self.specs[i],),
                                 name=f"hpstudy-worker-{i}", daemon=False)
            p.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.procs[i] = p

    def alive(self) -> bool:
        return any(p is not None and p.is_alive() for p in self.procs)

    def stop(self, grace_s: float = 0.0, timeout: float = 30.0, signum: int | None = None
             ) -> None:
        """Wait ``grace_s`` for workers to end their trials themselves, then terminate them.

        ``signum``: sent to every live worker first (a SIGTERM to this process
        only, e.g. ``kill``, must reach the workers too; one that already got
        the terminal's Ctrl-C ignores a second signal).
        """
        if signum is not None:
            for p in self.procs:
                if p is not None and p.is_alive():
                    try:
                        os.kill(p.pid, signum)
                    except ProcessLookupError:
                        pass
        deadline = time.monotonic() + grace_s
        for p in self.procs:
            if p is not None:
                p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p is not None and p.is_alive():
                p.terminate()
        for p in self.procs:
            if p is not None:
                p.join(timeout)
                if p.is_alive():
                    p.kill()
                    p.join()


def _tickets_left(spec: WorkerSpec) -> bool:
    if spec.deadline is not None and time.time() >= spec.deadline:
        return False
    return spec.tickets.value == _NO_LIMIT or spec.tickets.value > 0


def run_parallel(
    cfg: StudyConfig,
    *,
    workers: int,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
) -> StudySummary:
    """Create or resume the study and run ``workers`` trials at once, each worker a process.

    Args:
        cfg: the study config.
        workers: worker processes on this machine (placed by
            :func:`~hpstudy.search.placement.plan_workers`; too many is a ConfigError).
        n_trials: trials to run now across all workers (default ``search.n_trials``);
            exactly this many finish (resuming adds this many more).
        timeout: no trial starts after this many seconds.
        storage: Optuna storage URL (flag > study file > $HPSTUDY_STORAGE > default).
        tracking_uri: MLflow URI (flag > study file > $MLFLOW_TRACKING_URI > default).
        progress: show the progress bar.
    """
    start = time.perf_counter()
    # before anything is written: more workers than fit is exit 2, never oversubscription
    placements = plan_workers(cfg, workers)
    session = connect(cfg, storage, tracking_uri)  # the parent run exists before the workers
    study = session.study
    n = n_trials if n_trials is not None else cfg.search.n_trials
    t = timeout if timeout is not None else cfg.search.timeout
    ctx = mp.get_context("spawn")
    tickets = ctx.Value("i", _NO_LIMIT if n is None else n)
    current = ctx.Array("i", [-1] * workers)
    deadline = None if t is None else time.time() + t
    envs = [p.env for p in placements]
    specs = [WorkerSpec(i, cfg.to_yaml(), session.storage_url, session.tracker.uri,
                        placements[i].threads, deadline, tickets, current)
             for i in range(workers)]
    seen = {t.number for t in study.get_trials(deepcopy=False, states=_FINISHED)}
    before = {t.number for t in study.get_trials(deepcopy=False)}
    bar = Progress(n, cfg.search.metric, enabled=progress)
    bar.start(session)
    pool = _Workers(specs, envs)
    error: BaseException | None = None
    grace = 0.0
    try:
        for i in range(workers):
            pool.start(i)
        while pool.alive():
            time.sleep(0.5)
            _handle_deaths(pool, session)
            bar.show(study, seen)
        _handle_deaths(pool, session)
        bar.show(study, seen)
    except BaseException as e:
        # let the workers record their trials as interrupted before anything is
        # terminated; a trial whose worker had to be killed is failed here
        # (30 s: on a loaded machine a worker closing its run on a busy SQLite store took
        # over 15 s once, and the SIGTERM that ended it then named the wrong signal)
        error, grace = e, 30.0
        stop = interruption(e)
        pool.stop(grace, signum=stop.signum if stop is not None else signal.SIGTERM)
        _handle_deaths(pool, session, restart=False,
                       reason=stop.reason if stop is not None else None)
        raise
    finally:
        pool.stop(grace)
        bar.close()
        summary = close_study(session, end_status(error), n_workers=workers)
        summary.duration_s = time.perf_counter() - start
        note_interruption(error, study, before, n)
    return summary


def _handle_deaths(pool: _Workers, session: StudySession, restart: bool = True,
                   reason: str | None = None) -> None:
    """Record the trial of each worker that died abnormally; restart it if work is left.

    ``reason``: what to record instead of the exit status (an interruption).
    """
    for i, p in enumerate(pool.procs):
        if p is None or p.is_alive() or p.exitcode == 0:
            continue
        spec = pool.specs[i]
        number = spec.current[i]
        why = reason or death_reason(p.exitcode).replace("trial process", "worker process")
        p.join()
        pool.procs[i] = None
        spec.current[i] = _IDLE
        if number >= 0:
            if fail_lost_trial(session, number, why):
                _log.warning("trial %d failed: %s", number, why)
        else:
            if number == _CLAIMED:  # died before its trial started: the ticket is unused
                with spec.tickets.get_lock():
                    if spec.tickets.value != _NO_LIMIT:
                        spec.tickets.value += 1
            if restart:
                _log.warning("worker %d died between trials: %s", i, why)
        if restart and _tickets_left(spec) and pool.restarts[i] < _MAX_RESTARTS_PER_WORKER:
            pool.restarts[i] += 1
            pool.start(i)
