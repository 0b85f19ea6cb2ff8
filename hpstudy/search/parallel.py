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

Devices: with GPUs each worker sees its share through ``CUDA_VISIBLE_DEVICES``
(round-robin; several workers share a GPU when there are more workers than
GPUs); on the CPU the cores are split (``OMP_NUM_THREADS`` and
``torch.set_num_threads``).

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
import time
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from ..config import StudyConfig
from . import isolate as _isolate
from .study import (
    Objective,
    StudySummary,
    _configure_optuna_logging,
    _Progress,
    close_study,
    connect,
    finish_summary,
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


def device_shares(workers: int, n_gpus: int, n_cpus: int) -> list[dict[str, str]]:
    """Environment for each worker: its GPUs, or its share of the CPU threads.

    Args:
        workers: number of worker processes.
        n_gpus: GPUs on this machine (0: CPU only).
        n_cpus: CPU cores on this machine.

    Returns:
        One dict of environment variables per worker.
    """
    if n_gpus > 0:
        if workers <= n_gpus:  # each worker gets a disjoint set, round-robin
            groups = [list(range(n_gpus))[i::workers] for i in range(workers)]
        else:  # more workers than GPUs: they share, evenly
            groups = [[i % n_gpus] for i in range(workers)]
        return [{"CUDA_VISIBLE_DEVICES": ",".join(map(str, g))} for g in groups]
    threads = max(1, n_cpus // workers)
    return [{"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            for _ in range(workers)]


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
    return cfg.with_overrides({"search.sampler.seed": seed + salt}, source="worker seed")


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
    """Entry point of a worker process: join the study and run trials while tickets last."""
    import yaml

    from ..config import from_dict

    _configure_optuna_logging()
    if spec.threads:
        import torch

        torch.set_num_threads(spec.threads)
    cfg = from_dict(yaml.safe_load(spec.cfg_yaml), "study config (parallel worker)")
    cfg = with_worker_seed(cfg, spec.index)  # worker 0 keeps the study's own seed
    study, tracker, parent = connect(cfg, spec.storage, spec.tracking_uri)
    objective = Objective(cfg, tracker, parent)

    def run(trial: optuna.Trial) -> float:
        # the parent reads this to name the trial a crash of this process took
        spec.current[spec.index] = trial.number
        try:
            return objective(trial)
        finally:
            spec.current[spec.index] = _IDLE

    while _take_ticket(spec):
        study.optimize(run, n_trials=1, catch=(Exception,), gc_after_trial=False)


# ------------------------------------------------------------------ parent side
def fail_lost_trial(study: optuna.Study, tracker: Any, parent_id: str, number: int,
                    reason: str) -> bool:
    """Record a still-RUNNING trial whose process died as FAIL with ``reason``.

    Its MLflow run (created now if the worker died before making it) ends
    FAILED with the reason. Returns False when the trial had already finished.
    """
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None or trial.state != TrialState.RUNNING:
        return False
    run_id = _isolate.mark_run_failed(tracker, study.study_name, number,
                                      trial.user_attrs.get("mlflow_run_id"), reason, parent_id,
                                      trial.params)
    # a finished trial takes no user attrs: set them first, then the state
    # (Trial(study, id) is Optuna's handle on an existing trial)
    handle = optuna.trial.Trial(study, trial._trial_id)
    handle.set_user_attr("fail_reason", reason)
    if run_id is not None:
        handle.set_user_attr("mlflow_run_id", run_id)
    try:
        study.tell(number, state=TrialState.FAIL)
    except (ValueError, RuntimeError):  # finished meanwhile (e.g. stale-trial handling)
        return False
    return True


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

    def stop(self, grace_s: float = 0.0, timeout: float = 30.0) -> None:
        """Wait ``grace_s`` for workers to end their trials themselves, then terminate them."""
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
    report: bool | None = None,
) -> StudySummary:
    """Create or resume the study and run ``workers`` trials at once, each worker a process.

    Args:
        cfg: the study config.
        workers: worker processes on this machine.
        n_trials: trials to run now across all workers (default ``search.n_trials``);
            exactly this many finish (resuming adds this many more).
        timeout: no trial starts after this many seconds.
        storage: Optuna storage URL (flag > study file > $HPSTUDY_STORAGE > default).
        tracking_uri: MLflow URI (flag > study file > $MLFLOW_TRACKING_URI > default).
        progress: show the progress bar.
        report: write the dashboard at the end (default ``report.enabled``).
    """
    start = time.perf_counter()
    storage_url = cfg.storage_url(storage)
    study, tracker, parent = connect(cfg, storage, tracking_uri)  # parent run exists before workers
    n = n_trials if n_trials is not None else cfg.search.n_trials
    t = timeout if timeout is not None else cfg.search.timeout
    ctx = mp.get_context("spawn")
    tickets = ctx.Value("i", _NO_LIMIT if n is None else n)
    current = ctx.Array("i", [-1] * workers)
    deadline = None if t is None else time.time() + t
    n_gpus = _isolate._gpu_count() if cfg.train.accelerator in ("auto", "gpu", "cuda") else 0
    envs = device_shares(workers, n_gpus, os.cpu_count() or 1)
    threads = None if n_gpus else int(envs[0]["OMP_NUM_THREADS"])
    specs = [WorkerSpec(i, cfg.to_yaml(), storage_url, tracker.uri, threads, deadline, tickets,
                        current) for i in range(workers)]
    seen = {t.number for t in study.get_trials(deepcopy=False, states=_FINISHED)}
    bar = _Progress(n, cfg.search.metric, enabled=progress)
    pool = _Workers(specs, envs)
    status, grace = "FINISHED", 0.0
    try:
        for i in range(workers):
            pool.start(i)
        while pool.alive():
            time.sleep(0.5)
            _handle_deaths(pool, study, tracker, parent)
            _show_finished(study, bar, seen)
        _handle_deaths(pool, study, tracker, parent)
        _show_finished(study, bar, seen)
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too (one process group): let them record
        # their trials as interrupted before anything is terminated
        status, grace = "KILLED", 15.0
        raise
    finally:
        pool.stop(grace)
        bar.close()
        summary = close_study(study, cfg, tracker, parent, storage_url, status,
                              n_workers=workers)
    return finish_summary(summary, study, cfg, tracker, start, report)


def _handle_deaths(pool: _Workers, study: optuna.Study, tracker: Any, parent_id: str) -> None:
    """Record the trial of each worker that died abnormally; restart it if work is left."""
    for i, p in enumerate(pool.procs):
        if p is None or p.is_alive() or p.exitcode == 0:
            continue
        spec = pool.specs[i]
        number = spec.current[i]
        reason = _isolate.death_reason(p.exitcode).replace("trial process", "worker process")
        p.join()
        pool.procs[i] = None
        spec.current[i] = _IDLE
        if number >= 0:
            if fail_lost_trial(study, tracker, parent_id, number, reason):
                _log.warning("trial %d failed: %s", number, reason)
        else:
            if number == _CLAIMED:  # died before its trial started: the ticket is unused
                with spec.tickets.get_lock():
                    if spec.tickets.value != _NO_LIMIT:
                        spec.tickets.value += 1
            _log.warning("worker %d died between trials: %s", i, reason)
        if _tickets_left(spec) and pool.restarts[i] < _MAX_RESTARTS_PER_WORKER:
            pool.restarts[i] += 1
            pool.start(i)


def _show_finished(study: optuna.Study, bar: _Progress, seen: set[int]) -> None:
    for t in study.get_trials(deepcopy=False, states=_FINISHED):
        if t.number not in seen:
            seen.add(t.number)
            bar(study, t)
