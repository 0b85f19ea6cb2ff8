"""The lr range test (Smith, 2017): an exponential lr sweep, and the range it finds.

:func:`sweep` trains a fresh network of a concrete config with a real
Lightning Trainer for a few dozen batches while the learning rate grows
exponentially from ``min_lr`` to ``max_lr``, and records every batch's loss.
It is what Lightning's ``Tuner.lr_find`` does, with two differences that
matter on short sweeps: the raw losses are kept (``lr_find`` keeps only an
exponential average with a fixed beta of 0.98, whose lag of about 50 batches
moves the minimum of a 60-batch sweep far to the right), and the loss is
smoothed without lag (a centred moving average) by :func:`find_range`.

:func:`find_range` is pure: the lr where the smoothed loss bottoms out is the
top of the usable range (past it the loss climbs: the lr is too large), and the
search covers the ``decades`` orders of magnitude below it, inside the study's
own lr bounds (never at or above 1). A sweep whose loss never falls clearly
below where it started found nothing; the study's whole range is searched then.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MIN_FALL = 0.05  # the smoothed loss must fall this fraction below its start to count
EXPLODE = 4.0  # the sweep stops once the smoothed loss exceeds this multiple of its best


@dataclass(frozen=True)
class LrRange:
    """What a sweep found and the lr range it hands to stage 1.

    Attributes:
        lrs, losses: the sweep, one point per batch (raw losses).
        smoothed: the centred moving average of ``losses``.
        low, high: the lr range to search (at ``batch_size``).
        lr_min_loss: lr where the smoothed loss is lowest (None: nothing found).
        lr_steepest: lr where the smoothed loss falls fastest per decade, before its
            minimum (None: nothing found).
        found: whether the loss fell clearly (``MIN_FALL``) below its start.
        batch_size: the batch the sweep ran at (the guide's reference batch).
        steps_per_epoch: batches in one epoch of the sweep's training images.
        note: one sentence saying what was found and what is searched.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    low: float
    high: float
    lr_min_loss: float | None
    lr_steepest: float | None
    found: bool
    batch_size: int
    steps_per_epoch: int
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs(self) -> float:
        """The sweep's cost in epochs: its batches over the batches of one epoch."""
        return len(self.lrs) / max(1, self.steps_per_epoch)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items()} | {"epochs": self.epochs}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LrRange:
        keys = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in keys})


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Centred moving average over ``window`` points (fewer at the ends), NaN-safe."""
    half = max(0, window // 2)
    out = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i - half): i + half + 1] if math.isfinite(v)]
        out.append(sum(part) / len(part) if part else float("nan"))
    return out


def find_range(lrs: Sequence[float], losses: Sequence[float], *, bounds: tuple[float, float],
               decades: float = 2.0, batch_size: int = 0, steps_per_epoch: int = 1
               ) -> LrRange:
    """The lr range to search from a sweep's raw losses.

    Args:
        lrs: the lr of each batch (increasing).
        losses: each batch's training loss (NaN/inf where it blew up).
        bounds: ``(low, high)`` the study allows (its lr space, below 1).
        decades: orders of magnitude searched below the minimum-loss lr.
        batch_size: the sweep's batch (recorded).
        steps_per_epoch: batches per epoch of the sweep's images (recorded).
    """
    lo_b, hi_b = bounds
    lrs, losses = list(map(float, lrs)), list(map(float, losses))
    window = max(3, (len(lrs) // 12) | 1)
    sm = smooth(losses, window)
    finite = [i for i, v in enumerate(sm) if math.isfinite(v)]
    common = dict(lrs=lrs, losses=losses, smoothed=sm, batch_size=batch_size,
                  steps_per_epoch=steps_per_epoch)
    if len(finite) < 3:
        return LrRange(low=lo_b, high=hi_b, lr_min_loss=None, lr_steepest=None, found=False,
                       note="the sweep recorded too few finite losses; searching the study's "
                            f"whole lr range {lo_b:.3g}..{hi_b:.3g}", **common)
    start = sm[finite[0]]
    i_min = min(finite, key=lambda i: sm[i])
    if not sm[i_min] < (1 - MIN_FALL) * start:
        return LrRange(low=lo_b, high=hi_b, lr_min_loss=None, lr_steepest=None, found=False,
                       note=f"the loss never fell {MIN_FALL:.0%} below its start "
                            f"({start:.3g}) over lr {lrs[0]:.2g}..{lrs[-1]:.2g}; searching the "
                            f"study's whole lr range {lo_b:.3g}..{hi_b:.3g}", **common)
    before = [i for i in finite if i <= i_min]
    slopes = [(sm[b] - sm[a]) / (math.log10(lrs[b]) - math.log10(lrs[a]))
              for a, b in zip(before, before[1:], strict=False) if lrs[b] > lrs[a]]
    steep = None
    if slopes:
        k = min(range(len(slopes)), key=lambda j: slopes[j])
        steep = math.sqrt(lrs[before[k]] * lrs[before[k + 1]])
    lr_min = lrs[i_min]
    high = min(lr_min, hi_b)
    low = max(high / 10 ** decades, lo_b)
    if low >= high / math.sqrt(10):  # keep at least half a decade to search
        low = max(lo_b, high / math.sqrt(10))
        if low >= high:
            low, high = lo_b, max(hi_b, lo_b)
    note = (f"loss lowest at lr {lr_min:.3g}" + (f", falling fastest at {steep:.3g}" if steep
                                                  else "")
            + f": lr searched in {low:.3g}..{high:.3g}")
    if lr_min > hi_b:
        note += f" (the study's lr space ends at {hi_b:.3g})"
    return LrRange(low=low, high=high, lr_min_loss=lr_min, lr_steepest=steep, found=True,
                   note=note, **common)


# ------------------------------------------------------------------ the sweep
def _sweep_callback(min_lr: float, max_lr: float, steps: int) -> Any:
    from lightning.pytorch.callbacks import Callback

    class _Sweep(Callback):
        """Sets each batch's lr on an exponential grid and records its raw loss."""

        def __init__(self) -> None:
            self.lrs: list[float] = []
            self.losses: list[float] = []
            self.best = math.inf
            self.avg: list[float] = []

        def lr_at(self, i: int) -> float:
            return min_lr * (max_lr / min_lr) ** (i / max(1, steps - 1))

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            lr = self.lr_at(len(self.lrs))
            for opt in trainer.optimizers:
                for group in opt.param_groups:
                    group["lr"] = lr
            self.lrs.append(lr)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            value = float(loss.detach()) if loss is not None else float("nan")
            self.losses.append(value)
            recent = [v for v in self.losses[-5:] if math.isfinite(v)]
            level = sum(recent) / len(recent) if recent else math.inf
            self.best = min(self.best, level)
            # stop once the loss is gone: non-finite, or far above the best seen
            if not math.isfinite(value) or (len(self.losses) >= 5 and level > EXPLODE * self.best):
                trainer.should_stop = True
            if len(self.losses) >= steps:
                trainer.should_stop = True

    return _Sweep()


def sweep(cfg: Any, *, min_lr: float, max_lr: float, steps: int, bounds: tuple[float, float],
          decades: float = 2.0) -> LrRange:
    """Run the lr range test on a concrete config and find the range to search.

    The config should have regularization off and a constant schedule (the
    sweep sets every batch's lr itself); its optimizer and batch size are the
    ones the range is for.

    Args:
        cfg: a concrete :class:`~hpstudy.config.StudyConfig`.
        min_lr, max_lr: the sweep's first and last lr.
        steps: batches of the sweep (it stops early when the loss explodes).
        bounds: the study's lr bounds (see :func:`find_range`).
        decades: orders of magnitude searched below the minimum-loss lr.
    """
    import lightning.pytorch as pl
    import torch

    from .._proc import Interrupted, interruption
    from ..train import build_datamodule, build_module, build_trainer

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    pl.seed_everything(cfg.train.seed, workers=False, verbose=False)
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm)
    cb = _sweep_callback(min_lr, max_lr, steps)
    trainer = build_trainer(cfg, [cb], max_steps=steps, max_epochs=-1, limit_val_batches=0)
    try:
        trainer.fit(module, datamodule=dm)
    except SystemExit as e:  # Lightning's own signal handling (see train/fit.py)
        stop = interruption(e) or (Interrupted(signal.SIGINT) if trainer.interrupted else None)
        if stop is None:
            raise
        raise stop from None
    steps_per_epoch = math.ceil(dm.sizes.train / cfg.data.batch_size)
    found = find_range(cb.lrs[:len(cb.losses)], cb.losses, bounds=bounds, decades=decades,
                       batch_size=cfg.data.batch_size, steps_per_epoch=steps_per_epoch)
    return LrRange(**{**found.__dict__, "extra": {"n_train": dm.sizes.train}})
