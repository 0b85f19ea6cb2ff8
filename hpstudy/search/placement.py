"""Which GPUs and CPU threads each worker of ``hpstudy run --workers N`` gets.

A small classifier leaves a large GPU mostly idle, so a study finishes sooner
with several trials on each GPU at once. :func:`place` is a plain function of
the machine's counts, tested with made-up ones:

* One-GPU trials (``train.devices: 1``): worker ``i`` is pinned to GPU
  ``i mod G`` through ``CUDA_VISIBLE_DEVICES`` (round robin: every GPU gets
  its first trial before any gets a second), and at most
  ``search.trials_per_gpu`` (k) workers share a GPU. Without ``--workers``,
  there are ``G * k`` of them.
* Trials of several GPUs (``train.devices: d > 1``): each worker owns ``d``
  adjacent GPUs, no two workers share one (``trials_per_gpu`` applies to
  one-GPU trials only); at most ``G // d`` workers.
* ``train.devices: auto`` or ``-1`` (all the GPUs a trial sees): the GPUs are
  split evenly between the workers (one worker gets them all by default).
* No GPU (or ``train.accelerator: cpu``): the CPU is the one device; every
  worker gets its share of the cores as torch threads, ``trials_per_gpu``
  workers by default. ``--workers N`` is never refused on the CPU; past the
  core count each worker gets one thread.

Asking for more than fits (``--workers 9`` on 4 GPUs at 2 trials each, or a
trial of 3 GPUs on a machine of 2) raises :class:`~hpstudy.config.ConfigError`
naming the flag or field before anything is written: the scheduler never
oversubscribes. Every worker also gets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``
(its share of the cores, for data preparation on the host) and
``CUDA_DEVICE_ORDER=PCI_BUS_ID``, so GPU numbers mean what ``nvidia-smi`` says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..config import ConfigError, StudyConfig

PLACEMENT_ENV = "HPSTUDY_PLACEMENT"  # a worker's placement in words (tagged on its runs)


@dataclass(frozen=True)
class WorkerPlacement:
    """Where one worker process runs its trials.

    Attributes:
        index: the worker's number.
        gpus: the machine's GPU numbers it sees (empty: the CPU).
        threads: its torch/OpenMP CPU threads.
        sharing: how many workers share its GPU(s) (1: its own).
    """

    index: int
    gpus: tuple[int, ...] = field(default_factory=tuple)
    threads: int = 1
    sharing: int = 1

    def describe(self) -> str:
        """One line: ``GPU 3 (shared by 2 trials), 4 threads`` or ``CPU, 1 thread``."""
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        if not self.gpus:
            return f"CPU, {threads}"
        which = f"GPU{'s' if len(self.gpus) > 1 else ''} {','.join(map(str, self.gpus))}"
        share = f" (shared by {self.sharing} trials)" if self.sharing > 1 else ""
        return f"{which}{share}, {threads}"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables of the worker process."""
        out = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
               PLACEMENT_ENV: self.describe()}
        if self.gpus:
            out["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.gpus))
            out["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        return out


def place(n_workers: int | None, n_gpus: int, trials_per_gpu: int = 1,
          devices_per_trial: int | None = 1, n_cpus: int = 1,
          workers_field: str = "--workers") -> list[WorkerPlacement]:
    """Place the workers of one machine on its GPUs and cores, never oversubscribing a GPU.

    Args:
        n_workers: worker processes asked for; None: as many as fit.
        n_gpus: GPUs of this machine usable by the study (0: CPU only).
        trials_per_gpu: concurrent one-GPU trials per GPU.
        devices_per_trial: GPUs one trial uses; None: all it is given (``auto``, ``-1``).
        n_cpus: CPU cores of this machine.
        workers_field: how messages name the worker count (a flag or a field).

    Returns:
        One :class:`WorkerPlacement` per worker.

    Raises:
        ConfigError: more workers than trial slots, or a trial wider than the machine.
    """
    if n_workers is not None and n_workers < 1:
        raise ConfigError(workers_field, None, f"must be at least 1 (got {n_workers})")
    if trials_per_gpu < 1:
        raise ConfigError("search.trials_per_gpu", None, "must be at least 1")
    if n_gpus <= 0:  # the CPU is the one device; its cores are shared out
        n = n_workers or trials_per_gpu
        d = devices_per_trial or 1  # DDP on the CPU: d processes per trial
        threads = max(1, n_cpus // (n * d))
        return [WorkerPlacement(i, (), threads, n) for i in range(n)]

    if devices_per_trial is None:  # a trial takes whatever it is given: split the GPUs
        n = n_workers or 1
        if n <= n_gpus:
            per = n_gpus // n
            return [WorkerPlacement(i, tuple(range(i * per, (i + 1) * per)),
                                    max(1, n_cpus // n)) for i in range(n)]
        devices_per_trial = 1  # more workers than GPUs: one GPU each, shared below

    d = devices_per_trial
    if d > n_gpus:
        raise ConfigError("train.devices", None,
                          f"a trial of {d} GPUs does not fit on this machine's {n_gpus}")
    if d > 1:
        slots = n_gpus // d
        n = n_workers or slots
        if n > slots:
            raise ConfigError(workers_field, None, (
                f"{n} workers of {d} GPUs each need {n * d} GPUs; this machine has {n_gpus} "
                f"(at most {slots} workers; trials of several GPUs never share them)"))
        return [WorkerPlacement(i, tuple(range(i * d, (i + 1) * d)), max(1, n_cpus // n))
                for i in range(n)]

    slots = n_gpus * trials_per_gpu
    n = n_workers or slots
    if n > slots:
        raise ConfigError(workers_field, None, (
            f"{n} workers need {n} trial slots; {n_gpus} GPU{'s' if n_gpus > 1 else ''} x "
            f"search.trials_per_gpu {trials_per_gpu} give {slots}: raise --trials-per-gpu "
            f"or run fewer workers"))
    # round robin: GPU g hosts workers g, g + G, g + 2G ...
    per_gpu = [len(range(g, n, n_gpus)) for g in range(n_gpus)]
    return [WorkerPlacement(i, (i % n_gpus,), max(1, n_cpus // n), per_gpu[i % n_gpus])
            for i in range(n)]


def devices_per_trial(cfg: StudyConfig) -> int | None:
    """GPUs one trial of ``cfg`` uses: ``train.devices`` as a count (None: ``auto``/``-1``).

    A list of device numbers (``[0, 1]``, ``"0,1"``) names GPUs among those the
    worker sees, so the worker needs as many as the highest number plus one.
    """
    devices = cfg.train.devices
    if isinstance(devices, str):
        s = devices.strip()
        if s == "auto":
            return None
        if "," not in s and s.lstrip("-").isdigit():
            devices = int(s)
        else:
            devices = [int(p) for p in s.split(",") if p.strip()]
    if isinstance(devices, list):
        return max(len(devices), max(devices) + 1)
    return None if devices == -1 else int(devices)


def usable_gpus(cfg: StudyConfig) -> int:
    """GPUs of this machine a study may place trials on (0 when it trains on the CPU)."""
    from ..train import gpu_count

    return gpu_count() if cfg.train.accelerator in ("auto", "gpu", "cuda") else 0


def plan_workers(cfg: StudyConfig, n_workers: int | None = None, *, limit: int | None = None,
                 n_gpus: int | None = None, n_cpus: int | None = None) -> list[WorkerPlacement]:
    """:func:`place` for a study on this machine (``--workers`` > ``search.workers`` > as many as fit).

    Args:
        cfg: the study (``search.trials_per_gpu``, ``search.workers``, ``train.devices``).
        n_workers: ``--workers`` (None: the study's ``search.workers``, else all slots).
        limit: at most this many workers when their number is not given (the trials to run).
        n_gpus: the GPUs to place on (default: those found); n_cpus: likewise the cores.
    """
    asked = n_workers or cfg.search.workers
    gpus = usable_gpus(cfg) if n_gpus is None else n_gpus
    cpus = (os.cpu_count() or 1) if n_cpus is None else n_cpus
    args = (gpus, cfg.search.trials_per_gpu, devices_per_trial(cfg), cpus)
    field_name = "--workers" if n_workers else "search.workers"
    placements = place(asked, *args, workers_field=field_name)
    if asked is None and limit is not None and 0 < limit < len(placements):
        placements = place(limit, *args, workers_field=field_name)
    return placements
