"""The Lightning module: thin, the same for every architecture.

Builds the network from the model registry by name, applies the init scheme,
shares one ``_step`` across train/val/test, sums loss and correct predictions
on the device (:class:`EpochSums`) and logs them once per epoch.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn as nn
from torchmetrics import Metric

from ..config import ModelConfig, TrainConfig
from ..models import count_params, create_model, init_weights
from .optim import build_optimizer, build_scheduler, optimizer_params
from .regularize import kernels, l1_penalty, max_norm_
from .transfer import apply_finetune

STAGES = ("train", "val", "test")


class MeanLoss(Metric):
    """Sample-weighted mean loss, accumulated on device, summed across DDP ranks.

    torchmetrics' MeanMetric checks every update for NaN with a host sync
    (``if nans.any()``) and drops NaN batches; here a NaN propagates to the
    epoch value, which is how a diverged trial is detected, and nothing syncs
    until ``compute()`` once per epoch.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        # float32 state: float64 does not exist on every device (Apple MPS)
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, loss: torch.Tensor, n: int) -> None:
        self.total += loss.detach().float() * n
        self.count += n

    def compute(self) -> torch.Tensor:
        return self.total / self.count


class EpochSums:
    """Sample-weighted loss and correct predictions of one stage's epoch, summed on device.

    One stacked add per step and nothing else: torchmetrics' ``update`` costs
    tens of microseconds of Python bookkeeping per call and per metric, which
    on small batches is a visible part of a step (``benchmarks/overhead.py``).
    :meth:`compute` sums across DDP ranks once per epoch; a NaN loss propagates
    to the epoch's value, which is how a diverged run is detected. Accuracy is
    top-1 over all samples (torchmetrics' micro-averaged multiclass accuracy).
    """

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None  # (loss * n, correct) on the device
        self.count = 0  # samples, counted on the host (no sync)

    @property
    def updated(self) -> bool:
        return self.count > 0

    def update(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        n = y.shape[0]
        step = torch.stack([loss.detach().float() * n,
                            (logits.detach().argmax(-1) == y).sum().float()])
        self.sums = step if self.sums is None else self.sums.add_(step)
        self.count += n

    def compute(self, device: torch.device, strategy: Any | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean loss, accuracy)`` as tensors on ``device``, summed over ranks; then reset."""
        if self.sums is None:  # no batch this epoch (this rank): NaN, as 0 / 0
            self.sums = torch.zeros(2, device=device)
        total = torch.cat([self.sums, self.sums.new_tensor([self.count])])
        if strategy is not None and getattr(strategy, "world_size", 1) > 1:
            total = strategy.reduce(total, reduce_op="sum")
        self.sums, self.count = None, 0
        return total[0] / total[2], total[1] / total[2]


class ClassifierModule(pl.LightningModule):
    """Image classifier trained with cross-entropy.

    Args:
        model: the ``model:`` section as plain data.
        train: the ``train:`` section as plain data.
        num_classes, in_chans, input_size: from the data module.
    """

    def __init__(
        self,
        model: dict[str, Any],
        train: dict[str, Any],
        num_classes: int,
        in_chans: int,
        input_size: int,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = ModelConfig.model_validate(model)
        self.train_cfg = TrainConfig.model_validate(train)
        self.net = create_model(
            self.model_cfg.arch, num_classes=num_classes, in_chans=in_chans,
            input_size=input_size, **self.model_cfg.kwargs(),
        )
        init_weights(self.net, self.model_cfg.init)
        self.num_params = count_params(self.net)
        # train.finetune: freeze what does not train (model.init_from's weights are loaded
        # by build_module); then the kernels that train.l1 and train.max_norm act on
        self.finetuning = apply_finetune(self.net, self.train_cfg.finetune)
        t = self.train_cfg
        self._kernels = kernels(self.net) if (t.l1 or t.max_norm is not None) else []
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.train_cfg.label_smoothing)
        self.sums = {s: EpochSums() for s in STAGES}
        # the last validation epoch's train_/val_ loss and acc (tensors, read once per epoch)
        self.epoch_values: dict[str, torch.Tensor] = {}
        # also log them through Lightning (self.log_dict: about 3 ms per epoch of its
        # result bookkeeping); fit() turns it off when nothing reads Lightning's logged
        # metrics (no EarlyStopping, no plateau scheduler)
        self.lightning_logging = True

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets plain bookkeeping attributes (the running hook's name) around
        # every hook call, dozens per step, each through nn.Module.__setattr__'s
        # parameter/module/buffer checks. A plain value replacing an attribute that is
        # already a plain one (in __dict__) needs none of them: the same result, faster.
        if name in self.__dict__ and not isinstance(value, torch.Tensor | nn.Module):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = self.criterion(logits, y)
        self.sums[stage].update(loss, logits, y)  # on device: no per-step host sync
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        if self.train_cfg.l1:  # optimized, not logged: train_loss stays the data loss
            loss = loss + l1_penalty(self._kernels, self.train_cfg.l1)
        return loss

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any,
                       optimizer_closure: Any = None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.train_cfg.max_norm is not None:  # after every step, on the device
            max_norm_(self._kernels, self.train_cfg.max_norm)

    def on_train_start(self) -> None:
        self.finetuning.hold(self.net)  # train.finetune: head keeps BatchNorm statistics frozen

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """``{stage}_loss`` and ``{stage}_acc`` of the epoch so far, then reset (syncs ranks)."""
        return self._epoch_metrics(stage)

    def _epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        # summed across DDP ranks once per epoch
        loss, acc = self.sums[stage].compute(self.device, self.trainer.strategy)
        return {f"{stage}_loss": loss, f"{stage}_acc": acc}

    def on_validation_epoch_end(self) -> None:
        # Validation runs after the last training batch of the epoch, so the
        # training metrics of this epoch are complete here too: one log call.
        metrics = self._epoch_metrics("val")
        if not self.trainer.sanity_checking and self.sums["train"].updated:
            metrics.update(self._epoch_metrics("train"))
        self.epoch_values = metrics
        if self.lightning_logging:
            self.log_dict(metrics, prog_bar=False, sync_dist=False)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._epoch_metrics("test"), sync_dist=False)

    def configure_optimizers(self):
        # only what trains (train.finetune freezes the rest), decayed per weight_decay_on
        opt = build_optimizer(optimizer_params(self.net, self.train_cfg), self.train_cfg)
        steps = self.trainer.estimated_stepping_batches // max(1, self.train_cfg.max_epochs)
        sched = build_scheduler(opt, self.train_cfg, steps_per_epoch=max(1, int(steps)))
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": sched}
