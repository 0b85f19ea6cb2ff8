"""Device memory of a trial: per-image measurement, out-of-memory advice, release between trials.

A CUDA out-of-memory error ends the trial FAIL with a one-line reason that
starts ``out_of_memory:`` and names the batch size that would fit, worked
out from what this model measurably needs:

* :class:`MemoryProbe` reads the CUDA caching allocator around the second
  training step (the first one creates the optimizer's state): the memory
  allocated before it is the fixed part (weights, gradients, optimizer state,
  the dataset on the device), the peak during it minus that, divided by the
  batch, the per-image part (activations kept for the backward pass).
* At the error, the memory this trial could have had is what the device has
  free plus what this process holds in its cache (other trials on the same
  GPU keep theirs); 90% of it, less the fixed part, over the per-image part is
  the largest batch that fits.
* On the CPU, or when the error comes before a step was measured, nothing is
  measured: the advice halves the batch.

The reason reaches the Optuna trial (user attr ``fail_reason``) and the MLflow
run (tag ``hpstudy.fail_reason``) through :class:`OutOfMemory`'s
``fail_reason`` attribute (:func:`hpstudy.track.run.failure_reason`).
"""

from __future__ import annotations

import gc
import math
import re

import torch
from lightning.pytorch.callbacks import Callback

MiB = 2**20
HEADROOM = 0.9  # fraction of the available memory a batch may plan on: fragmentation, workspaces
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
    """Measures a fit's CUDA memory: fixed and per-image parts, the peak, the failing stage.

    Attributes:
        fixed_bytes: allocated before the second training step (None until measured).
        per_image_bytes: peak during that step above ``fixed_bytes``, per image.
        stage: ``training``, ``validation`` or ``test`` when an exception ended the fit.
    """

    def __init__(self) -> None:
        self.device: torch.device | None = None  # where the fit trains (set when it starts)
        self.fixed_bytes: int | None = None
        self.per_image_bytes: float | None = None
        self.stage: str | None = None
        self._peak_before = 0
        self._batch: int | None = None

    @property
    def _cuda(self) -> torch.device | None:
        return self.device if self.device is not None and self.device.type == "cuda" else None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.device = trainer.strategy.root_device
        if self._cuda is not None and self.fixed_bytes is None:
            torch.cuda.reset_peak_memory_stats(self._cuda)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._cuda is None or self.per_image_bytes is not None or batch_idx != 1:
            return
        self._peak_before = torch.cuda.max_memory_allocated(self._cuda)
        self.fixed_bytes = torch.cuda.memory_allocated(self._cuda)
        torch.cuda.reset_peak_memory_stats(self._cuda)
        self._batch = int(batch[0].shape[0])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._batch is None or self.fixed_bytes is None:
            return
        peak = torch.cuda.max_memory_allocated(self._cuda)
        self.per_image_bytes = max(peak - self.fixed_bytes, 0) / self._batch
        self._batch = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.stage = ("training" if trainer.training else "validation" if trainer.validating
                      else "test" if trainer.testing else "training")

    def peak_bytes(self) -> int | None:
        """The most CUDA memory this process allocated during the fit (None off CUDA)."""
        if self._cuda is None:
            return None
        return max(self._peak_before, torch.cuda.max_memory_allocated(self._cuda))


def release_memory() -> None:
    """Collect garbage and give cached CUDA memory back (after a run's objects are dropped).

    ``gc.collect`` first: a failed fit's frames (and their tensors) can hang in
    reference cycles through its exception; the cache can only return blocks
    nothing points to.
    """
    gc.collect()
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort between runs
        pass


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / MiB:.1f} MiB"


def largest_fitting_batch(available: float, fixed: float, per_image: float) -> int:
    """Images per batch that fit in ``HEADROOM`` of ``available`` bytes after ``fixed`` ones."""
    if per_image <= 0:
        return 0
    return max(0, math.floor((HEADROOM * available - fixed) / per_image))


def oom_reason(exc: BaseException, probe: MemoryProbe | None, *, batch_size: int,
               eval_batch_size: int | None, device: torch.device | None = None) -> str:
    """The one-line reason of an out-of-memory failure, with the batch size that would fit.

    Args:
        exc: torch's out-of-memory error.
        probe: what the fit measured (None: nothing).
        batch_size: ``data.batch_size`` of the trial.
        eval_batch_size: ``data.eval_batch_size`` (None: four times the batch).
        device: the CUDA device the trial used (None: not a CUDA device).
    """
    stage = (probe.stage if probe is not None else None) or "training"
    train = stage == "training"
    field = "data.batch_size" if train else "data.eval_batch_size"
    size = batch_size if train else (eval_batch_size or 4 * batch_size)
    asked = re.search(r"Tried to allocate [\d.]+ [KMGT]?i?B", str(exc))
    head = f"out_of_memory: {stage} at {field} {size}" + (f" ({asked.group(0)})" if asked else "")
    half = max(1, size // 2)
    measured = probe is not None and probe.per_image_bytes and probe.fixed_bytes is not None
    if device is None or device.type != "cuda" or not measured:
        why = ("device memory is not measured on the CPU" if device is None or
               device.type != "cuda" else "the error came before a training step was measured")
        return f"{head}; {why}: try {field} <= {half}"
    free, _total = torch.cuda.mem_get_info(device)
    available = free + torch.cuda.memory_reserved(device)
    fixed, per_image = float(probe.fixed_bytes), float(probe.per_image_bytes)  # type: ignore[arg-type]
    fits = largest_fitting_batch(available, fixed, per_image)
    facts = (f"measured {_gib(per_image)} per image (training) and {_gib(fixed)} fixed "
             f"(weights, optimizer, data) against {_gib(available)} this trial could use")
    if fits < 1:
        return f"{head}; {facts}: not even one image fits; a smaller model or fewer trials per GPU"
    if fits >= size:
        return (f"{head}; {facts}, which should fit {fits}: other processes on this GPU took the "
                f"rest; lower search.trials_per_gpu or try {field} <= {min(half, fits)}")
    pow2 = 2 ** int(math.log2(fits))
    return f"{head}; {facts}: {field} <= {fits} fits ({pow2} as a power of two)"
