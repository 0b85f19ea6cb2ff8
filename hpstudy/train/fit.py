"""``fit(config, hooks)``: train one concrete configuration with a real Lightning Trainer.

The per-epoch history is the single source of truth downstream: MLflow
metrics, Optuna intermediate values and the diagnosis all read it. Hooks are
called once per epoch (on rank 0 only) with that epoch's record; a hook that
returns ``True`` stops training (Optuna pruning), and the decision is
broadcast so every DDP rank stops together.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping

from .._proc import Interrupted, interruption
from ..config import StudyConfig
from ..data import ImageDataModule
from ..models import model_info
from ..names import (
    COMPLETE,
    CURVE_KEYS,
    FAIL,
    METRIC_COMPILE_TIME,
    METRIC_GPU_PEAK_MEMORY,
    PRUNED,
)
from .device import CompileClock, check_device_options, configure_process, prepare_network
from .memory import OOM_ERRORS, MemoryProbe, OutOfMemory, oom_reason, release_memory
from .module import ClassifierModule
from .transfer import load_init_weights
from .tta import evaluate_tta

EpochHook = Callable[[dict[str, Any]], bool | None]

for _name in ("lightning.pytorch", "lightning.fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")
# epoch metrics are torchmetrics values already reduced across ranks by compute()
warnings.filterwarnings("ignore", ".*when logging on epoch level in distributed setting.*")


@dataclass
class FitResult:
    """What one training run produced.

    ``status`` is ``completed`` (ran all epochs), ``early_stopped``, ``pruned``
    (a hook asked to stop) or ``diverged`` (non-finite loss; ``reason`` says where).
    ``best`` is the history record of the best epoch by ``monitor``.
    """

    history: list[dict[str, Any]]
    status: str
    monitor: str
    mode: str
    best_epoch: int | None = None
    best: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    # end-of-run evaluations of the kept weights: test_loss/test_acc (train.evaluate_test)
    # and the test-time augmentation metrics (*_tta, train.tta)
    test: dict[str, float] | None = None
    num_params: int = 0
    data_info: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    module: ClassifierModule | None = None
    datamodule: ImageDataModule | None = None
    # a fit in a child process leaves its best weights in a file (train.checkpoint);
    # the parent reads it into ``checkpoint`` before the file's folder is removed
    checkpoint_path: str | None = None
    checkpoint: dict[str, Any] | None = None
    validated: bool = True  # False: no validation split (data.val_split: 0)
    # summary facts of the device: compile_time_s (compiled), gpu_peak_memory_mb (CUDA)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def value(self) -> float | None:
        """The objective: the monitored metric at the best epoch."""
        return None if not self.best else self.best.get(self.monitor)

    @property
    def state(self) -> str:
        """The Optuna trial state and MLflow ``hpstudy.state`` of this result.

        ``PRUNED`` when a hook stopped it; ``FAIL`` when it diverged or no epoch
        gave a finite value of the monitored metric; ``COMPLETE`` otherwise.
        """
        if self.status == "pruned":
            return PRUNED
        if self.status == "diverged" or self.best_epoch is None:
            return FAIL
        if self.validated and (self.value is None or not math.isfinite(self.value)):
            return FAIL
        return COMPLETE

    @property
    def failure(self) -> str | None:
        """Why the result is ``FAIL`` (None when it is not)."""
        if self.state != FAIL:
            return None
        if self.reason:
            return self.reason
        return "no epoch finished" if self.best_epoch is None else \
            f"no finite {self.monitor} was recorded"


def _better(a: float, b: float | None, mode: str) -> bool:
    if b is None or not math.isfinite(b):
        return math.isfinite(a)
    return a > b if mode == "max" else a < b


class _EpochRecorder(Callback):
    """Builds the history once per epoch, keeps the best weights, runs the hooks."""

    def __init__(self, hooks: Sequence[EpochHook], monitor: str, mode: str,
                 select: str = "best", validates: bool = True,
                 excluded: Callable[[], float] | None = None):
        self.hooks, self.monitor, self.mode = list(hooks), monitor, mode
        # seconds of the epoch not to count in epoch_time_s (compiling: CompileClock)
        self.excluded = excluded
        # select "last": the final weights are the ones kept (no copy per epoch);
        # without validation an epoch is recorded when its training ends
        self.select, self.validates = select, validates
        self.history: list[dict[str, Any]] = []
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stop_reason: str | None = None  # "pruned" or "diverged: ..."
        # ddp_spawn trains in spawned copies of this callback: rank 0 leaves its
        # state in this file for the main process (Lightning sends back only weights)
        self.handoff: str | None = None
        self._t0 = 0.0
        self._lr = float("nan")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.handoff and trainer.is_global_zero:
            torch.save({"history": self.history, "best_value": self.best_value,
                        "best_epoch": self.best_epoch, "best_state": self.best_state,
                        "stop_reason": self.stop_reason}, self.handoff)

    def take_handoff(self) -> None:
        """Adopt the state a spawned rank 0 left behind (no-op when training ran here)."""
        if not self.handoff:
            return
        path, self.handoff = self.handoff, None
        try:
            if os.path.getsize(path) > 0:
                state = torch.load(path, weights_only=True)
                self.history, self.best_value = state["history"], state["best_value"]
                self.best_epoch, self.best_state = state["best_epoch"], state["best_state"]
                self.stop_reason = state["stop_reason"]
        finally:
            os.unlink(path)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._lr = float(trainer.optimizers[0].param_groups[0]["lr"])  # lr used this epoch

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self.validates:
            return
        self._record(trainer, pl_module, pl_module.epoch_values)  # type: ignore[arg-type]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.validates:
            return  # recorded after this epoch's validation
        metrics = dict(pl_module.epoch_metrics("train"))  # type: ignore[operator]
        nan = torch.tensor(float("nan"), device=metrics["train_loss"].device)
        self._record(trainer, pl_module, {**metrics, "val_loss": nan, "val_acc": nan})

    def _record(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                m: Any) -> None:
        # one host sync per epoch, for the whole record
        values = torch.stack([m[k].detach().float().reshape(()) for k in CURVE_KEYS]).tolist()
        record: dict[str, Any] = {"epoch": trainer.current_epoch + 1}
        record.update(dict(zip(CURVE_KEYS, values, strict=True)))
        record["lr"] = self._lr
        record["epoch_time_s"] = time.perf_counter() - self._t0 - (
            self.excluded() if self.excluded is not None else 0.0)
        self.history.append(record)

        watched = ("train_loss", "val_loss") if self.validates else ("train_loss",)
        bad = [k for k in watched if not math.isfinite(record[k])]
        if bad:
            self.stop_reason = f"diverged: non-finite {bad[0]} at epoch {record['epoch']}"
            trainer.should_stop = True
            return
        value = record[self.monitor]
        if self.select == "last":
            self.best_value, self.best_epoch = value, record["epoch"]
        elif _better(value, self.best_value, self.mode):
            self.best_value, self.best_epoch = value, record["epoch"]
            self.best_state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

        stop = False
        if trainer.is_global_zero:
            for hook in self.hooks:
                stop = bool(hook(dict(record))) or stop
        stop = trainer.strategy.broadcast(stop, src=0)
        if stop:
            self.stop_reason = "pruned"
            trainer.should_stop = True


def _trains_in_spawned_ranks(trainer: pl.Trainer) -> bool:
    """Whether ``trainer.fit`` trains in spawned copies of this process (``ddp_spawn``).

    Lightning has no public way to ask which launcher a strategy uses; its
    multiprocessing launcher is the one whose ranks (rank 0 included) train in
    new processes and send back only the weights, so callbacks must hand their
    state over through a file. Kept in this one function (private upstream class).
    """
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    return isinstance(trainer.strategy.launcher, _MultiProcessingLauncher)


def build_datamodule(cfg: StudyConfig) -> ImageDataModule:
    """The data module of a concrete config, sized for its model."""
    d = cfg.data
    return ImageDataModule(
        dataset=d.dataset, root=d.root, batch_size=d.batch_size, val_split=d.val_split,
        seed=d.seed, augmentation=d.augmentation, min_size=model_info(cfg.model.arch).min_size,
        subset=d.subset, eval_batch_size=d.eval_batch_size, download=d.download,
        options=d.options, num_workers=d.num_workers,
    )


def build_module(cfg: StudyConfig, dm: ImageDataModule) -> ClassifierModule:
    """The Lightning module of a concrete config for a prepared data module."""
    dm.prepare()
    d = cfg.to_dict()
    module = ClassifierModule(d["model"], d["train"], num_classes=dm.num_classes,
                              in_chans=dm.in_chans, input_size=dm.input_size)
    load_init_weights(module.net, cfg)  # model.init_from (transfer learning), if set
    return module


def build_trainer(cfg: StudyConfig, callbacks: list[Callback], **overrides: Any) -> pl.Trainer:
    """A Lightning Trainer for a concrete config (no logger: tracking is hpstudy's own)."""
    t = cfg.train
    kwargs: dict[str, Any] = dict(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=t.precision,
        deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # TensorLoader shards by rank itself
        callbacks=callbacks,
    )
    if t.limit_train_batches is not None:
        kwargs["limit_train_batches"] = t.limit_train_batches
    if t.limit_val_batches is not None:
        kwargs["limit_val_batches"] = t.limit_val_batches
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


def fit(
    cfg: StudyConfig,
    hooks: Sequence[EpochHook] = (),
    *,
    monitor: str | None = None,
    mode: str | None = None,
) -> FitResult:
    """Train one concrete configuration.

    Args:
        cfg: a concrete (trial) config.
        hooks: called after each epoch with the epoch's record; return True to stop.
        monitor: metric that picks the best epoch (default: ``search.metric``).
        mode: ``max`` or ``min`` (default: from ``search.direction``).

    Returns:
        The :class:`FitResult`; the module holds the best epoch's weights.

    Raises:
        ConfigError: a device option this machine cannot honour (before training).
        OutOfMemory: the device ran out of memory; its ``fail_reason`` names the
            batch size that would fit. The device's memory is released first.
        Whatever else training raises (a crash): the caller records it.
    """
    probe = MemoryProbe()
    try:
        return _fit(cfg, hooks, monitor, mode, probe)
    except OOM_ERRORS as e:
        reason = oom_reason(e, probe, batch_size=cfg.data.batch_size,
                            eval_batch_size=cfg.data.eval_batch_size, device=probe.device)
    # out of the handler: the error's traceback (the fit's frames and tensors) is gone
    release_memory()
    raise OutOfMemory(reason)


def _fit(cfg: StudyConfig, hooks: Sequence[EpochHook], monitor: str | None, mode: str | None,
         probe: MemoryProbe) -> FitResult:
    start = time.perf_counter()
    monitor = monitor or cfg.search.metric
    mode = mode or ("max" if cfg.direction == "maximize" else "min")
    t = cfg.train
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    check_device_options(cfg, "trial config", space=False)
    configure_process(cfg)
    pl.seed_everything(t.seed, workers=False, verbose=False)

    dm = build_datamodule(cfg)
    module = build_module(cfg, dm)
    clock = CompileClock() if prepare_network(module, cfg) else None
    validates = dm.has_val
    recorder = _EpochRecorder(hooks, monitor, mode, select=t.select, validates=validates,
                              excluded=clock.take_epoch if clock is not None else None)
    device_callbacks: list[Callback] = [probe] + ([clock] if clock is not None else [])
    callbacks: list[Callback] = [*device_callbacks, recorder]
    if t.early_stopping.enabled:
        es = t.early_stopping
        callbacks.append(EarlyStopping(
            monitor=es.monitor, mode="max" if es.monitor == "val_acc" else "min",
            patience=es.patience, min_delta=es.min_delta, check_finite=False,
        ))
    # Lightning's logged metrics are read only by EarlyStopping and a plateau scheduler
    module.lightning_logging = t.early_stopping.enabled or t.scheduler.name == "plateau"
    trainer = build_trainer(cfg, callbacks, **({} if validates else {"limit_val_batches": 0}))
    if _trains_in_spawned_ranks(trainer):
        fd, recorder.handoff = tempfile.mkstemp(prefix="hpstudy-recorder-", suffix=".pt")
        os.close(fd)
    try:
        trainer.fit(module, datamodule=dm)
    except SystemExit as e:
        # Lightning ends fit with sys.exit(1) after a KeyboardInterrupt and raises its
        # SIGTERMException (a SystemExit) on SIGTERM: an interruption of this run,
        # which its caller records, not an exit of the whole process
        stop = interruption(e) or (Interrupted(signal.SIGINT) if trainer.interrupted else None)
        if stop is None:
            raise
        raise stop from None
    finally:
        recorder.take_handoff()

    if recorder.stop_reason == "pruned":
        status = "pruned"
    elif recorder.stop_reason:
        status = "diverged"
    elif len(recorder.history) < t.max_epochs:
        status = "early_stopped"
    else:
        status = "completed"

    if recorder.best_state is not None:
        module.load_state_dict(recorder.best_state)
    module.lightning_logging = True  # test and validate results are Lightning's logged metrics
    test = None
    if t.evaluate_test and status in ("completed", "early_stopped") and dm.has_test:
        test_trainer = build_trainer(cfg, device_callbacks, limit_test_batches=None)
        out = test_trainer.test(module, datamodule=dm, verbose=False)
        test = {k: float(v) for k, v in (out[0] if out else {}).items()}
    if t.tta != "none" and status in ("completed", "early_stopped"):
        # test-time augmentation: its own metrics (test_acc_tta, val_acc_tta), never selection
        test = {**(test or {}), **evaluate_tta(cfg, module, dm, build_trainer)}

    best = {}
    if recorder.best_epoch is not None:
        best = dict(recorder.history[recorder.best_epoch - 1])
    return FitResult(
        history=recorder.history,
        status=status,
        monitor=monitor,
        mode=mode,
        best_epoch=recorder.best_epoch,
        best=best,
        reason=None if status in ("completed", "early_stopped") else recorder.stop_reason,
        test=test,
        num_params=module.num_params,
        data_info=dm.describe(),
        duration_s=time.perf_counter() - start,
        module=module,
        datamodule=dm,
        validated=validates,
        metrics=_device_metrics(clock, probe),
    )


def _device_metrics(clock: CompileClock | None, probe: MemoryProbe) -> dict[str, float]:
    """``compile_time_s`` when compiled, ``gpu_peak_memory_mb`` on a CUDA device."""
    out: dict[str, float] = {}
    if clock is not None:
        out[METRIC_COMPILE_TIME] = round(clock.total_s, 3)
    peak = probe.peak_bytes()
    if peak is not None:
        out[METRIC_GPU_PEAK_MEMORY] = round(peak / 2**20, 1)
    return out
