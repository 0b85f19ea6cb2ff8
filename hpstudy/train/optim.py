"""Optimizers and lr schedulers built from config by name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn

from ..config import SchedulerConfig, TrainConfig
from ..models import param_groups_weights_only


def build_optimizer(params: Iterable[Any], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The course's optimizers by name.

    ``params`` are parameters or parameter groups (:func:`optimizer_params`);
    a group's own ``weight_decay`` wins over ``train.weight_decay``.

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


def phase_factors(cfg: SchedulerConfig, lr: float, max_epochs: int
                  ) -> tuple[list[int], list[float]]:
    """``(milestones in epochs, lr factor of each phase)`` of a multistep with gammas or values.

    Phase 0 (before the first milestone) has factor 1; phase ``i`` the product
    of the first ``i`` gammas, or ``values[i] / lr``. Milestones are kept in the
    order given (validated increasing), so each stays paired with its factor.
    """
    epochs = [int(round(m * max_epochs)) if m < 1 else int(m) for m in cfg.milestones]
    if cfg.values is not None:
        return epochs, [v / lr for v in cfg.values]
    factors = [1.0]
    for g in cfg.gammas or []:
        factors.append(factors[-1] * g)
    return epochs, factors


def build_phase_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig
                          ) -> torch.optim.lr_scheduler.LambdaLR:
    """Multistep with a factor per milestone (``gammas``) or an lr per phase (``values``).

    The lr of epoch ``e`` (0-based, the scheduler stepping once per epoch) is
    ``train.lr`` times the factor of the last milestone ``<= e``, exactly when
    ``MultiStepLR`` would decay: ``milestones: [20]`` changes the lr from the
    21st epoch on ("after epoch 20").
    """
    epochs, factors = phase_factors(cfg.scheduler, cfg.lr, cfg.max_epochs)

    def factor(epoch: int) -> float:
        return factors[sum(epoch >= m for m in epochs)]

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def split_decay_params(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(decay, no_decay)``: the trainable conv and linear kernels, and everything else.

    Biases, batch/layer/group norm scales and shifts and PReLU slopes land in
    ``no_decay``; frozen parameters in neither
    (:func:`hpstudy.models.param_groups_weights_only`).
    """
    return param_groups_weights_only(module)


def optimizer_params(module: nn.Module, cfg: TrainConfig) -> list[Any]:
    """What :func:`build_optimizer` gets: the trainable parameters, in two groups by
    ``weight_decay_on``.

    ``weights``: the kernels decay with ``train.weight_decay``, the rest in a
    group with ``weight_decay: 0``. The thesis writes Keras's ``l2(λ)`` on
    kernels, which adds ``λ·||w||²`` to the loss (gradient ``2λw``); PyTorch's
    ``weight_decay=wd`` adds ``wd·w``, so its study files use ``wd = 2λ``.
    """
    if cfg.weight_decay_on == "all" or cfg.weight_decay == 0:
        return [p for p in module.parameters() if p.requires_grad]  # frozen ones never step
    decay, no_decay = split_decay_params(module)
    groups: list[dict[str, Any]] = [{"params": decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> dict[str, Any] | None:
    """A Lightning ``lr_scheduler`` config dict, or None for a constant lr."""
    s, epochs = cfg.scheduler, cfg.max_epochs
    if s.name == "constant":
        return None
    if s.name == "step":
        sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    elif s.name == "multistep" and (s.gammas is not None or s.values is not None):
        sched = build_phase_scheduler(optimizer, cfg)
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
