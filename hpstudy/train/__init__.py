"""Training: the Lightning module, optimizers/schedulers and :func:`fit`.

Public surface: :func:`fit`, :class:`FitResult`, :class:`ClassifierModule`,
:func:`build_datamodule`, :func:`build_module`, :func:`build_trainer`.
"""

from __future__ import annotations

from .checkpoint import checkpoint_from_fit, read_checkpoint, save_checkpoint
from .fit import (
    HISTORY_KEYS,
    EpochHook,
    FitResult,
    build_datamodule,
    build_module,
    build_trainer,
    fit,
)
from .module import ClassifierModule
from .optim import build_optimizer, build_scheduler

__all__ = [
    "HISTORY_KEYS",
    "ClassifierModule",
    "EpochHook",
    "FitResult",
    "build_datamodule",
    "build_module",
    "build_optimizer",
    "build_scheduler",
    "build_trainer",
    "checkpoint_from_fit",
    "fit",
    "read_checkpoint",
    "save_checkpoint",
]
