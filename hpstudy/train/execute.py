"""The one way to run a concrete configuration: :func:`execute`.

Every driver (the Optuna objective, ``hpstudy train``, ablation cells, guided
stages, refits) calls :func:`execute` with a concrete config and its epoch
hooks, and gets a :class:`~hpstudy.train.FitResult` back. It trains in this
process, or in a child process when the config asks for isolation or for more
than one device or node (:func:`needs_process`): a launcher in the driver's own
process would re-run the whole command once per rank (optuna #3281, #4835).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..config import StudyConfig
from .child import run_in_child
from .fit import EpochHook, FitResult, fit
from .memory import release_memory

__all__ = ["device_count", "execute", "gpu_count", "needs_process", "release_memory"]

_SPAWNING_STRATEGIES = ("ddp", "fsdp", "deepspeed")


def device_count(devices: int | str | list[int], accelerator: str = "auto") -> int:
    """How many processes Lightning starts for ``train.devices`` on one node."""
    if isinstance(devices, list):
        return len(devices)
    if isinstance(devices, str):
        s = devices.strip()
        if "," in s:
            return len([p for p in s.split(",") if p.strip()])
        if s.lstrip("-").isdigit():
            devices = int(s)
        else:  # "auto": every GPU when there are GPUs, one CPU process otherwise
            return max(1, gpu_count()) if accelerator in ("auto", "gpu", "cuda") else 1
    if devices == -1:
        return gpu_count() or os.cpu_count() or 1
    return int(devices)


def gpu_count() -> int:
    """CUDA devices visible to this process (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def needs_process(cfg: StudyConfig) -> bool:
    """Whether ``cfg`` trains in a child process.

    Yes for ``train.isolate: true``, for more than one device or node, and for
    strategies that launch processes (``ddp``, ``ddp_spawn``, ``fsdp``...).
    """
    t = cfg.train
    return bool(t.isolate or t.num_nodes > 1 or device_count(t.devices, t.accelerator) > 1
                or t.strategy.startswith(_SPAWNING_STRATEGIES))


def execute(
    cfg: StudyConfig,
    hooks: Sequence[EpochHook] = (),
    *,
    label: str = "run",
    on_failure_log: Callable[[Path], None] | None = None,
) -> FitResult:
    """Train one concrete configuration, in this process or in a child process.

    Args:
        cfg: the concrete config (hyperparameters already sampled).
        hooks: called once per epoch (in this process, whatever the path) with
            the epoch's record; a hook returning True stops training (pruning).
        label: names a child process's temporary folder (``quickstart-trial-0007``).
        on_failure_log: with a child process, called with its log file when it
            fails (to attach it to the run).

    Returns:
        The :class:`FitResult`. In-process it holds the module (best weights) and
        the data module; from a child process, ``checkpoint`` holds the weights
        when the config keeps them (``tracking.register_best``/``log_checkpoints``).

    Raises:
        Whatever training raises (out of memory, a crash, a signal), or
        :class:`~hpstudy.train.TrialProcessError` when a child fails or dies.
    """
    if needs_process(cfg):
        return run_in_child(cfg, hooks, label=label, on_failure_log=on_failure_log)
    return fit(cfg, hooks)
