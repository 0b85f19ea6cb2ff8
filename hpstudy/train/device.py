"""Device options of a trial: checked before training, applied to the network, compile timed.

``train.precision``, ``train.channels_last``, ``train.compile``,
``train.matmul_precision`` and ``train.cudnn_benchmark`` make small models
fast on a GPU; the ones that change numerics are off by default.
:func:`check_device_options` decides, before anything is written or trained,
whether each one can work on the device this machine would train on, and
refuses with one :class:`~hpstudy.config.ConfigError` naming the field
otherwise (the CLI's exit 2). Measured on the CPU (torch 2.14, 2 cores):

* ``16-mixed``: Lightning only warns and trains in ``bf16-mixed`` instead;
  refused here, so a run never records a precision it did not use.
  ``bf16-mixed`` (autocast to bfloat16) and ``64-true`` work on the CPU.
* ``compile``: works on the CPU when a C++ compiler and Python's headers are
  there (Inductor builds C++ kernels); the baseline CNN took 53 s to compile
  with a cold cache, 10 s in a new process with Inductor's on-disk cache warm,
  and 0.05 s for the next trial in the same process. ``reduce-overhead``
  replays CUDA graphs: refused on the CPU. On a GPU it needs Triton.
* ``channels_last``, ``matmul_precision`` work everywhere (on the CPU they
  rarely help); ``cudnn_benchmark`` has no effect without cuDNN.

Compiling once per architecture and shape: ``nn.Module.compile`` compiles
the network in place (its ``state_dict`` keys do not change). Dynamo keeps
compiled code per Python code object, guarded on what it specialized on
(module types, constant attributes such as a dropout rate, input shapes and
dtypes, autocast, train/eval) and not on the module instance: the next
trial's new network with the same architecture, options and batch shapes
reuses the graphs in 0.05 s (measured above), with its own weights as graph
inputs. Everything else recompiles, and Dynamo stops compiling a function
after ``recompile_limit`` (8) variants and silently runs it eagerly, which a
long study would hit; so the process keeps one key (architecture, model
options, image and batch shapes, precision, memory format, mode) and resets
Dynamo's caches when a trial's key differs from the previous trial's
(Inductor's on-disk cache still spares part of the work). Compile time is the
first step of each (stage, batch shape) under compilation, timed with a
device sync: logged as ``compile_time_s`` and left out of ``epoch_time_s``.
"""

from __future__ import annotations

import json
import os
import shutil
import sysconfig
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from ..config import ConfigError, StudyConfig, resolve_space

# keys a search space may sample whose every value is checked against the device
DEVICE_KEYS = ("train.precision", "train.compile")


# ------------------------------------------------------------------ the device
def resolve_accelerator(accelerator: str) -> str:
    """The device kind a trial would train on here: ``cuda``, ``mps`` or ``cpu``.

    ``auto`` is Lightning's choice (a CUDA GPU, else Apple's MPS, else the CPU);
    ``gpu`` and ``cuda`` say ``cuda`` whether or not one is there
    (:func:`check_device_options` refuses them then).
    """
    if accelerator in ("gpu", "cuda"):
        return "cuda"
    if accelerator == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
    return "cpu" if accelerator in ("auto", "cpu") else accelerator


def uses_gpu(cfg: StudyConfig) -> bool:
    """Whether ``cfg`` trains on a CUDA GPU of this machine."""
    return resolve_accelerator(cfg.train.accelerator) == "cuda" and torch.cuda.is_available()


def compile_mode(value: bool | str) -> str | None:
    """``train.compile`` as a torch.compile mode (None: not compiled)."""
    if value is False:
        return None
    return "default" if value is True else str(value)


# ------------------------------------------------------------------ checks
def _cpu_compiler_problem() -> str | None:
    """Why Inductor cannot build CPU kernels here (None when it can)."""
    cxx = os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        return (f"torch.compile on the CPU builds C++ kernels and no C++ compiler ({cxx}) is on "
                "PATH: install one (apt-get install g++) or set CXX, or turn compile off")
    include = sysconfig.get_path("include")
    if not include or not (Path(include) / "Python.h").is_file():
        return (f"torch.compile on the CPU needs Python's C headers ({include}/Python.h is "
                "missing: install python3-dev), or turn compile off")
    return None


def _option_problem(key: str, value: Any, device: str) -> str | None:
    """Why ``key: value`` cannot work on ``device`` (None when it can)."""
    if key == "train.accelerator" and value in ("gpu", "cuda") and not torch.cuda.is_available():
        return "asks for a CUDA GPU and none is visible to this process: use auto or cpu"
    if key == "train.precision":
        if value == "16-mixed" and device == "cpu":
            return ("16-mixed (float16 autocast) needs a CUDA GPU; Lightning would train in "
                    "bf16-mixed instead: use bf16-mixed or 32-true on the CPU")
        if value == "bf16-mixed" and device == "cuda" and torch.cuda.is_available() \
                and not torch.cuda.is_bf16_supported():
            return (f"bf16-mixed needs a GPU with bfloat16 ({torch.cuda.get_device_name()} has "
                    "none): use 16-mixed")
    if key == "train.compile":
        mode = compile_mode(value)
        if mode is None:
            return None
        if device == "cpu":
            if mode == "reduce-overhead":
                return ("reduce-overhead replays CUDA graphs and needs a CUDA GPU: use true "
                        "(mode default) on the CPU")
            return _cpu_compiler_problem()
        if device == "cuda" and find_spec("triton") is None:
            return "torch.compile on a CUDA GPU generates Triton kernels: install triton"
    return None


def check_device_options(cfg: StudyConfig, source: str = "study file", *,
                         space: bool = True) -> None:
    """Refuse device options that cannot work on this machine, before anything is written.

    Checks the study's own values and, with ``space``, every value its search
    space can give them (``search.space.train.precision: [32-true, 16-mixed]``
    on the CPU is refused, not left to fail half the trials).

    Raises:
        ConfigError: naming ``source``, the field, and what to use instead.
    """
    t = cfg.train
    device = resolve_accelerator(t.accelerator)
    for key, value in (("train.accelerator", t.accelerator), ("train.precision", t.precision),
                       ("train.compile", t.compile)):
        problem = _option_problem(key, value, device)
        if problem:
            raise ConfigError(source, key, problem)
    if not space:
        return
    entries = resolve_space(cfg.search.space, source)
    for key in DEVICE_KEYS:
        if key in entries:
            for value in entries[key].probe_values():
                problem = _option_problem(key, value, device)
                if problem:
                    raise ConfigError(source, f"search.space.{key}", f"value {value!r}: {problem}")


# ------------------------------------------------------------------ applying
def configure_process(cfg: StudyConfig) -> None:
    """Process-wide switches of a trial, set explicitly every trial (none leaks to the next)."""
    t = cfg.train
    torch.set_float32_matmul_precision(t.matmul_precision)
    # deterministic: Lightning turns benchmark off itself; the config refuses both together
    torch.backends.cudnn.benchmark = bool(t.cudnn_benchmark)


def _channels_last_input(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: 4-d inputs in channels-last memory format (a module-level function:
    the network stays picklable)."""
    x = args[0]
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return args


_last_compile_key: str | None = None


def compile_key(module: Any, cfg: StudyConfig) -> str:
    """What a compiled network's graphs depend on, as one string."""
    hp = module.hparams
    d, t = cfg.data, cfg.train
    return json.dumps({"model": hp["model"], "num_classes": hp["num_classes"],
                       "in_chans": hp["in_chans"], "input_size": hp["input_size"],
                       "batch_size": d.batch_size, "eval_batch_size": d.eval_batch_size,
                       "precision": t.precision, "channels_last": t.channels_last,
                       "mode": compile_mode(t.compile)}, sort_keys=True, default=str)


def prepare_network(module: Any, cfg: StudyConfig) -> bool:
    """Apply ``channels_last`` and ``compile`` to ``module.net`` in place.

    Returns:
        Whether the network is compiled (its first steps per shape then compile).
    """
    global _last_compile_key
    t = cfg.train
    net = module.net
    if t.channels_last:
        net.to(memory_format=torch.channels_last)
        net.register_forward_pre_hook(_channels_last_input)
    mode = compile_mode(t.compile)
    if mode is None:
        return False
    key = compile_key(module, cfg)
    if _last_compile_key is not None and key != _last_compile_key:
        # another architecture or shape: drop the previous trial's graphs before Dynamo's
        # recompile limit turns compilation off for the rest of the study
        torch.compiler.reset()
    _last_compile_key = key
    net.compile(mode=None if mode == "default" else mode)
    return True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class CompileClock(Callback):
    """Times the first step of each (stage, batch shape): where a compiled network compiles.

    ``total_s`` is the whole compile time of the fit; :meth:`take_epoch` hands
    the part spent in the current epoch to the epoch recorder, which leaves it
    out of ``epoch_time_s``. Each timed step syncs the device twice; every
    other step runs untouched.
    """

    def __init__(self) -> None:
        self.total_s = 0.0
        self._epoch_s = 0.0
        self._seen: set[tuple[str, tuple[int, ...]]] = set()
        self._t0: float | None = None

    def take_epoch(self) -> float:
        """Compile seconds since the last call (the recorder's epoch)."""
        value, self._epoch_s = self._epoch_s, 0.0
        return value

    def _start(self, batch: Any, stage: str) -> None:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        if not isinstance(x, torch.Tensor):
            return
        key = (stage, tuple(x.shape))
        if key in self._seen:
            return
        self._seen.add(key)
        _sync(x.device)
        self._t0 = time.perf_counter()

    def _end(self, pl_module: Any) -> None:
        if self._t0 is None:
            return
        _sync(pl_module.device)
        dt = time.perf_counter() - self._t0
        self._t0 = None
        self.total_s += dt
        self._epoch_s += dt

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start(batch, "train")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._end(pl_module)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx,
                                  dataloader_idx=0):
        self._start(batch, "eval")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx=0):
        self._end(pl_module)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._start(batch, "eval")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                          dataloader_idx=0):
        self._end(pl_module)
