"""Optimizers and lr schedulers built from config by name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..config import SchedulerConfig, TrainConfig


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The course's optimizers by name.

    ``momentum`` is SGD with heavy-ball momentum, ``nesterov`` SGD with Nesterov
    momentum (both use ``train.momentum``); ``adamw`` decouples weight decay,
    the others add it to the gradient (L2).
    """
    lr, wd, mom = cfg.lr, cfg.weight_decay, cfg.momentum
    name = cfg.optimizer
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=mom, weight_decay=wd)
    if name == "nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=mom, nesterov=True, weight_decay=wd)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=mom, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "nadam":
        return torch.optim.NAdam(params, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer '{name}'")


def milestones(cfg: SchedulerConfig, max_epochs: int) -> list[int]:
    """Multistep milestones in epochs; values below 1 are fractions of ``max_epochs``."""
    return sorted({int(round(m * max_epochs)) if m < 1 else int(m) for m in cfg.milestones})


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> dict[str, Any] | None:
    """A Lightning ``lr_scheduler`` config dict, or None for a constant lr."""
    s, epochs = cfg.scheduler, cfg.max_epochs
    if s.name == "constant":
        return None
    if s.name == "step":
        sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    elif s.name == "multistep":
        ms = milestones(s, epochs) or [int(epochs * 0.5), int(epochs * 0.75)]
        sched = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=ms, gamma=s.gamma)
    elif s.name == "exponential":
        sched = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=s.gamma)
    elif s.name == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs,
                                                           eta_min=s.eta_min)
    elif s.name == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=max(1, epochs * steps_per_epoch),
            pct_start=s.pct_start,
        )
        return {"scheduler": sched, "interval": "step"}
    elif s.name == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=s.factor, patience=s.patience
        )
        return {"scheduler": sched, "interval": "epoch", "monitor": "val_loss"}
    else:
        raise ValueError(f"unknown scheduler '{s.name}'")
    return {"scheduler": sched, "interval": "epoch"}
