"""Device memory of a trial: per-image measurement, out-of-memory advice, release between trials.

A CUDA out-of-memory error ends the trial FAIL with a one-line reason that
starts ``out_of_memory:`` and names the batch size that would fit, worked
out from what this model measurably needs (:class:`MemoryProbe`):

* During training, the CUDA caching allocator is read around the second step
  (the first creates the optimizer's state): memory allocated before it is the
  fixed part (weights, gradients, optimizer state, the dataset on the device);
  the peak during it, above that, per image, is the per-image part
  (activations kept for the backward pass).
* When the error comes before that (most often: a batch too large from the
  first step), or in validation, the probe measures right there, while the
  model is still on the device: one step at two small batches of the failing
  shape (training: forward and backward; evaluation: forward only), whose
  difference is the per-image part; what the optimizer will still add is
  counted in the fixed part.
* What this trial could use is what the device has free plus what this
  process holds in its cache (other trials on the same GPU keep theirs),
  capped by ``torch.cuda.set_per_process_memory_fraction``. 90% of it, less
  the fixed part, over the per-image part is the largest batch that fits.
* On the CPU nothing is measured: the advice halves the batch.

The reason reaches the Optuna trial (user attr ``fail_reason``) and the MLflow
run (tag ``hpstudy.fail_reason``) through :class:`OutOfMemory`'s
``fail_reason`` attribute (:func:`hpstudy.track.run.failure_reason`).
"""

from __future__ import annotations

import gc
import math
import re
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

MiB = 2**20
HEADROOM = 0.9  # fraction of the available memory a batch may plan on: fragmentation, workspaces
PROBE_DIVISOR = 32  # the after-error measurement runs batches of size/32 and 2 x size/32
# torch >= 2.5 raises torch.OutOfMemoryError for every device (torch.cuda's name is an alias)
OOM_ERRORS: tuple[type[BaseException], ...] = tuple(
    {getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),
     torch.cuda.OutOfMemoryError})


class OutOfMemory(RuntimeError):
    """A trial ran out of device memory; ``fail_reason`` is the line that gets recorded."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.fail_reason = reason


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's out-of-memory error (any device)."""
    return isinstance(exc, OOM_ERRORS)


class MemoryProbe(Callback):
    """Measures a fit's CUDA memory: fixed and per-image parts per stage, the peak.

    Attributes:
        device: where the fit trains (set when it starts).
        stage: ``training``, ``validation`` or ``test`` when an exception ended the fit.
        measured: stage -> ``(fixed_bytes, per_image_bytes)``.
    """

    def __init__(self) -> None:
        self.device: torch.device | None = None
        self.stage: str | None = None
        self.measured: dict[str, tuple[float, float]] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}  # last batch shape per stage
        self._peak_before = 0
        self._step: tuple[int, int] | None = None  # (allocated before, batch) of the timed step

    @property
    def _cuda(self) -> torch.device | None:
        return self.device if self.device is not None and self.device.type == "cuda" else None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.device = trainer.strategy.root_device
        if self._cuda is not None and not self.measured:
            torch.cuda.reset_peak_memory_stats(self._cuda)

    def _shape(self, batch: Any, stage: str) -> tuple[int, ...] | None:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        if isinstance(x, torch.Tensor):
            self._shapes[stage] = tuple(x.shape)
            return self._shapes[stage]
        return None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        shape = self._shape(batch, "training")
        if self._cuda is None or "training" in self.measured or batch_idx != 1 or not shape:
            return
        self._peak_before = torch.cuda.max_memory_allocated(self._cuda)
        self._step = (torch.cuda.memory_allocated(self._cuda), shape[0])
        torch.cuda.reset_peak_memory_stats(self._cuda)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._step is None:
            return
        (fixed, n), self._step = self._step, None
        peak = torch.cuda.max_memory_allocated(self._cuda)
        self.measured["training"] = (float(fixed), max(peak - fixed, 0) / n)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx,
                                  dataloader_idx=0) -> None:
        self._shape(batch, "validation")

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx,
                            dataloader_idx=0) -> None:
        self._shape(batch, "test")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.stage = ("training" if trainer.training else "validation" if trainer.validating
                      else "test" if trainer.testing else "training")
        if is_oom(exception) and self._cuda is not None and self.stage not in self.measured:
            try:
                self._measure_after_oom(trainer, pl_module, self.stage)
            except Exception:  # noqa: BLE001 - never hide the error being handled
                pass

    def _measure_after_oom(self, trainer: Any, module: Any, stage: str) -> None:
        """Per-image and fixed memory from two small steps of the failing batch's shape."""
        shape = self._shapes.get(stage)
        if not shape or shape[0] < 2:
            return
        device, train = self._cuda, stage == "training"
        small = max(1, shape[0] // PROBE_DIVISOR)
        sizes = (small, 2 * small)
        if sizes[1] >= shape[0]:
            return
        module.zero_grad(set_to_none=True)
        gc.collect()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        peaks = []
        precision = trainer.precision_plugin
        for n in sizes:
            x = torch.zeros((n, *shape[1:]), device=device)
            torch.cuda.reset_peak_memory_stats(device)
            if train:
                module.train()
                with precision.train_step_context():
                    out = module.net(x)
                out.float().sum().backward()
            else:
                module.eval()
                with torch.no_grad(), precision.val_step_context():
                    out = module.net(x)
            del x, out
            peaks.append(torch.cuda.max_memory_allocated(device) - base)
            module.zero_grad(set_to_none=True)
        per_image = max(peaks[1] - peaks[0], 1) / (sizes[1] - sizes[0])
        fixed = float(base)
        if train:  # what training adds whatever the batch: gradients, optimizer state
            params = sum(p.numel() * p.element_size() for p in module.parameters()
                         if p.requires_grad)
            optimizers = getattr(trainer, "optimizers", None) or []
            has_state = any(len(o.state) for o in optimizers)
            fixed += params * (1 if has_state else 3)  # no state yet: assume Adam's two moments
        self.measured[stage] = (fixed, per_image)

    def peak_bytes(self) -> int | None:
        """The most CUDA memory this process allocated during the fit (None off CUDA)."""
        if self._cuda is None:
            return None
        return max(self._peak_before, torch.cuda.max_memory_allocated(self._cuda))


def release_memory() -> None:
    """Collect garbage and give cached CUDA memory back (after a run's objects are dropped).

    ``gc.collect`` first: a failed fit's frames (and their tensors) can hang in
    reference cycles through its exception; the cache can only return blocks
    nothing points to. Then ``gc.freeze``: what survived a full collection is
    the process's long-lived state (imported torch, Lightning, MLflow, Optuna,
    the open study), about 770k objects that every full collection walked
    again (0.4-0.7 s per trial on this project's 2-core machine, a quarter of
    a digits trial); frozen, the next collection walks only what the next
    run created (under a millisecond), and a run's own cycles are still freed.
    """
    gc.collect()
    gc.freeze()
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort between runs
        pass


def available_bytes(device: torch.device) -> int:
    """CUDA memory this process could hold: free + its cache, within its memory fraction."""
    free, total = torch.cuda.mem_get_info(device)
    available = free + torch.cuda.memory_reserved(device)
    get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)  # torch >= 2.8
    if get_fraction is not None:
        available = min(available, int(get_fraction(device) * total))
    return available


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / MiB:.1f} MiB"


def largest_fitting_batch(available: float, fixed: float, per_image: float) -> int:
    """Images per batch that fit in ``HEADROOM`` of ``available`` bytes after ``fixed`` ones."""
    if per_image <= 0:
        return 0
    return max(0, math.floor((HEADROOM * available - fixed) / per_image))


def oom_reason(exc: BaseException, probe: MemoryProbe | None, *, batch_size: int,
               eval_batch_size: int | None, device: torch.device | None = None,
               available: int | None = None) -> str:
    """The one-line reason of an out-of-memory failure, with the batch size that would fit.

    Args:
        exc: torch's out-of-memory error.
        probe: what the fit measured (None: nothing).
        batch_size: ``data.batch_size`` of the trial.
        eval_batch_size: ``data.eval_batch_size`` (None: four times the batch).
        device: the device the trial used (None: unknown; measured advice needs CUDA).
        available: bytes this trial could use (default: :func:`available_bytes`).
    """
    stage = (probe.stage if probe is not None else None) or "training"
    train = stage == "training"
    field = "data.batch_size" if train else "data.eval_batch_size"
    size = batch_size if train else (eval_batch_size or 4 * batch_size)
    asked = re.search(r"Tried to allocate [\d.]+ [KMGT]?i?B", str(exc))
    head = f"out_of_memory: {stage} at {field} {size}" + (f" ({asked.group(0)})" if asked else "")
    half = max(1, size // 2)
    on_cuda = device is not None and device.type == "cuda"
    measured = probe.measured.get(stage) if probe is not None else None
    if not on_cuda or measured is None:
        why = ("nothing was measured" if on_cuda
               else "device memory is not measured on the CPU")
        return f"{head}; {why}: try {field} <= {half}"
    fixed, per_image = measured
    if available is None:
        available = available_bytes(device)  # type: ignore[arg-type]
    fits = largest_fitting_batch(available, fixed, per_image)
    facts = (f"measured {_gib(per_image)} per image and {_gib(fixed)} fixed (weights, "
             f"optimizer, data) against {_gib(available)} this trial could use")
    if fits < 1:
        return f"{head}; {facts}: not even one image fits; a smaller model or fewer trials per GPU"
    if fits >= size:
        return (f"{head}; {facts}, which should fit {fits}: other processes on this GPU took "
                f"the rest; lower search.trials_per_gpu or try {field} <= {min(half, fits)}")
    pow2 = 2 ** int(math.log2(fits))
    return f"{head}; {facts}: {field} <= {fits} fits ({pow2} as a power of two)"
