"""Training: the Lightning module, optimizers/schedulers, and the one way to run a config.

Public surface: :func:`execute` (in-process or child-process training of one
concrete config), :func:`fit` (the in-process fit it uses), :class:`FitResult`,
:func:`needs_process`, :class:`TrialProcessError`, :class:`ClassifierModule`,
:func:`build_datamodule`, :func:`build_module`, :func:`build_trainer`, and the
checkpoint helpers; the device options (:mod:`.device`) and memory (:mod:`.memory`).
"""

from __future__ import annotations

from ..names import HISTORY_KEYS
from .checkpoint import checkpoint_from_fit, read_checkpoint, save_checkpoint
from .child import TrialProcessError, death_reason, run_in_child
from .device import check_device_options, resolve_accelerator, uses_gpu
from .execute import device_count, execute, gpu_count, needs_process, release_memory
from .fit import (
    EpochHook,
    FitResult,
    build_datamodule,
    build_module,
    build_trainer,
    fit,
)
from .memory import OutOfMemory
from .module import ClassifierModule
from .optim import build_optimizer, build_scheduler, optimizer_params, split_decay_params

__all__ = [
    "HISTORY_KEYS",
    "ClassifierModule",
    "EpochHook",
    "FitResult",
    "OutOfMemory",
    "TrialProcessError",
    "build_datamodule",
    "build_module",
    "build_optimizer",
    "build_scheduler",
    "build_trainer",
    "check_device_options",
    "checkpoint_from_fit",
    "death_reason",
    "device_count",
    "execute",
    "fit",
    "gpu_count",
    "needs_process",
    "optimizer_params",
    "read_checkpoint",
    "release_memory",
    "resolve_accelerator",
    "run_in_child",
    "save_checkpoint",
    "split_decay_params",
    "uses_gpu",
]
