"""Device options on the CPU: each one works or is refused (exit 2, naming the field) before
training; torch.compile compiles once per architecture and shape and its time is kept apart;
out of memory fails the trial with advice and the study goes on; nothing about GPUs is logged."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
import torch
import torch.nn as nn
from conftest import run_cli, tiny_study
from mlflow import MlflowClient
from optuna.trial import TrialState

from hpstudy.config import ConfigError, from_dict
from hpstudy.models import _registry
from hpstudy.search import get_storage, run_study
from hpstudy.track.run import failure_reason
from hpstudy.train import OutOfMemory, TrialProcessError, fit
from hpstudy.train import device as dev
from hpstudy.train.memory import MemoryProbe, largest_fitting_batch, oom_reason

CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU's refusals")


# ------------------------------------------------------------------ config
def test_schema_of_the_device_options():
    cfg = from_dict(tiny_study("opts"))
    t = cfg.train
    assert (t.channels_last, t.compile, t.matmul_precision, t.cudnn_benchmark) == (
        False, False, "highest", False)  # nothing that changes numerics is on by default
    assert cfg.search.trials_per_gpu == 1 and cfg.search.workers is None
    for value, mode in [(True, "default"), (False, None), ("max-autotune", "max-autotune")]:
        assert dev.compile_mode(cfg.concrete({"train.compile": value}).train.compile) == mode
    bad = [({"compile": "fast"}, "train.compile: must be true, false or a torch.compile mode"),
           ({"matmul_precision": "low"}, "train.matmul_precision"),
           ({"cudnn_benchmark": True, "deterministic": True}, "rules out")]
    for train, fragment in bad:
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            from_dict(tiny_study("opts", train=train))


# ------------------------------------------------------------------ refusals
REFUSED_ON_CPU = [
    ("16-mixed", ["--set", "train.precision=16-mixed"],
     "error: study.yaml: train.precision: 16-mixed (float16 autocast) needs a CUDA GPU"),
    ("reduce-overhead", ["--set", "train.compile=reduce-overhead"],
     "error: study.yaml: train.compile: reduce-overhead replays CUDA graphs and needs a CUDA GPU"),
    ("accelerator gpu", ["--set", "train.accelerator=gpu"],
     "error: study.yaml: train.accelerator: asks for a CUDA GPU and none is visible"),
    ("space value", ["--set", "search.space={train.precision: [32-true, 16-mixed]}"],
     "error: study.yaml: search.space.train.precision: value '16-mixed': 16-mixed"),
]


@CPU_ONLY
@pytest.mark.parametrize(("args", "line"), [c[1:] for c in REFUSED_ON_CPU],
                         ids=[c[0] for c in REFUSED_ON_CPU])
def test_cpu_refuses_what_cannot_work_with_exit_2_before_anything_is_written(
        args, line, tmp_path, monkeypatch, capsys, write_study):
    path = write_study(tiny_study("refuse"), "study.yaml")
    assert path == tmp_path / "study.yaml"
    code, out, err = run_cli("run", "study.yaml", *args, "--storage",
                             f"sqlite:///{tmp_path}/o.db", "--tracking-uri",
                             f"sqlite:///{tmp_path}/m.db", monkeypatch=monkeypatch,
                             cwd=tmp_path, capsys=capsys)
    (got,) = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and got.startswith(line), (code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]  # no store written


@CPU_ONLY
def test_ablate_refuses_too(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    ablation = Path(__file__).resolve().parents[1] / "studies/ablations/quick_digits.yaml"
    code, _, err = run_cli("ablate", str(ablation), "--set", "train.precision=16-mixed",
                           "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
                           monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 2 and "train.precision: 16-mixed (float16 autocast) needs a CUDA GPU" in err
    assert list(tmp_path.iterdir()) == []


@CPU_ONLY
def test_compile_without_a_cxx_compiler_is_refused_naming_the_field(monkeypatch):
    cfg = from_dict(tiny_study("nocxx", train={"compile": True}))
    dev.check_device_options(cfg)  # gcc is here
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    with pytest.raises(ConfigError) as e:
        dev.check_device_options(cfg, "s.yaml")
    assert str(e.value).startswith("s.yaml: train.compile: torch.compile on the CPU builds C++ "
                                   "kernels and no C++ compiler (/nonexistent/g++) is on PATH")
    with pytest.raises(ConfigError, match="train.compile"):  # fit checks too, before training
        fit(cfg)


# ------------------------------------------------------------------ options that work
def _tiny(cnn: bool = True, **train: Any) -> Any:
    # val_split 0.25 of 256 images, batch 64: every batch has one shape per stage
    model = ({"arch": "baseline_cnn", "hidden": 16, "widths": [4, 8]} if cnn
             else {"arch": "mlp", "hidden": [32], "drop_rate": 0.0})
    raw = tiny_study("opts", data={"val_split": 0.25}, train={"max_epochs": 2, **train})
    raw["model"] = model
    return from_dict(raw)


@CPU_ONLY
def test_bf16_channels_last_matmul_precision_and_benchmark_work_on_the_cpu():
    plain = fit(_tiny())
    assert plain.state == "COMPLETE" and plain.metrics == {}  # no GPU facts on the CPU
    r = fit(_tiny(precision="bf16-mixed", channels_last=True, matmul_precision="medium",
                  cudnn_benchmark=True))
    assert r.state == "COMPLETE"
    assert torch.get_float32_matmul_precision() == "medium"
    conv = next(m for m in r.module.net.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # bf16 autocast changes the numbers, a little
    assert r.history[0]["train_loss"] != plain.history[0]["train_loss"]
    assert abs(r.history[-1]["train_loss"] - plain.history[-1]["train_loss"]) < 0.1
    fit(_tiny(max_epochs=1))
    assert torch.get_float32_matmul_precision() == "highest"  # set per trial, no leak
    assert fit(_tiny(precision="64-true", max_epochs=1)).state == "COMPLETE"


@CPU_ONLY
def test_compile_once_per_architecture_and_shape_its_time_apart_from_the_epochs():
    """Measured here (an MLP, no dropout: compiled dropout draws other random numbers):
    about 35 s for the first compile with a cold Inductor cache, 1-4 s warm, about 0.01 s
    for the next trial of the same key."""
    eager = fit(_tiny(False, lr=0.02))
    first = fit(_tiny(False, compile=True))
    again = fit(_tiny(False, compile=True, lr=0.02))  # same architecture and shapes: reused
    assert first.metrics["compile_time_s"] > 0.5
    assert again.metrics["compile_time_s"] < min(0.5, first.metrics["compile_time_s"] / 5)
    # compile time is not in the epochs: the first epoch is no slower than its compile
    assert first.history[0]["epoch_time_s"] < first.metrics["compile_time_s"]
    # the reused graphs compute with the new trial's own weights: same numbers as eager
    for a, b in zip(eager.history, again.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=1e-6)
    # the compiled network keeps plain state_dict keys (checkpoints, registration)
    assert set(again.module.net.state_dict()) == set(eager.module.net.state_dict())


def test_compile_key_changes_with_what_the_graphs_depend_on_only():
    cfg = _tiny(False, compile=True)
    module = type("M", (), {"hparams": {"model": cfg.to_dict()["model"], "num_classes": 10,
                                        "in_chans": 1, "input_size": 8}})()
    key = dev.compile_key(module, cfg)
    assert dev.compile_key(module, cfg.concrete({"train.lr": 0.5, "train.seed": 3})) == key
    for change in [{"data.batch_size": 32}, {"train.precision": "bf16-mixed"},
                   {"train.channels_last": True}, {"train.compile": "max-autotune"}]:
        assert dev.compile_key(module, cfg.concrete(change)) != key, change
    other = type("M", (), {"hparams": {**module.hparams, "model": {"arch": "mlp"}}})()
    assert dev.compile_key(other, cfg) != key


def test_nothing_about_gpus_is_logged_on_the_cpu(tmp_path):
    from hpstudy.api import train
    from hpstudy.track.system import start_gpu_monitor

    cfg = from_dict(tiny_study("cpu-metrics", train={"max_epochs": 1}))
    assert dev.uses_gpu(cfg) is (torch.cuda.is_available())
    uri = f"sqlite:///{tmp_path}/m.db"
    outcome = train(cfg, uri)
    keys = set(MlflowClient(uri).get_run(outcome.run_id).data.metrics)
    if not torch.cuda.is_available():
        assert not [k for k in keys if k.startswith(("system/", "gpu_", "compile"))], keys
        # asked anyway (no NVML here): no monitor, no error, the run goes on
        assert start_gpu_monitor(outcome.run_id, uri) is None


# ------------------------------------------------------------------ out of memory
def _oom(message: str = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
         "capacity of 79.10 GiB") -> BaseException:
    return torch.OutOfMemoryError(message)


def test_out_of_memory_in_a_real_fit_becomes_a_reason_with_a_smaller_batch():
    def hook(record: dict[str, Any]) -> None:
        if record["epoch"] == 2:
            raise _oom()

    cfg = from_dict(tiny_study("oom", train={"max_epochs": 3}))
    with pytest.raises(OutOfMemory) as e:
        fit(cfg, [hook])
    reason = e.value.fail_reason
    # epoch hooks run when validation ends: the failing stage is validation, at 4 x 64 images
    assert reason == ("out_of_memory: validation at data.eval_batch_size 256 (Tried to allocate "
                      "2.00 GiB); device memory is not measured on the CPU: try "
                      "data.eval_batch_size <= 128")
    assert failure_reason(e.value) == reason  # recorded as is, no class name in front
    assert e.value.__context__ is None  # the fit's frames are not kept alive by the error


def test_the_advice_from_measured_memory():
    gib, mib = 2**30, 2**20
    # 10 GiB usable of which 90% planned: (9 - 1) GiB / 64 MiB per image = 128 images
    assert largest_fitting_batch(10 * gib, 1 * gib, 64 * mib) == 128
    assert largest_fitting_batch(1 * gib, 2 * gib, mib) == 0
    cuda = torch.device("cuda", 0)
    probe = MemoryProbe()
    probe.stage, probe.measured = "training", {"training": (1 * gib, 64 * mib)}
    assert oom_reason(_oom(), probe, batch_size=512, eval_batch_size=None, device=cuda,
                      available=10 * gib) == (
        "out_of_memory: training at data.batch_size 512 (Tried to allocate 2.00 GiB); measured "
        "64.0 MiB per image and 1.00 GiB fixed (weights, optimizer, data) against 10.00 GiB "
        "this trial could use: data.batch_size <= 128 fits (128 as a power of two)")
    # the measurement says it fits: someone else holds the memory
    assert oom_reason(_oom(), probe, batch_size=64, eval_batch_size=None, device=cuda,
                      available=10 * gib).endswith(
        "which should fit 128: other processes on this GPU took the rest; lower "
        "search.trials_per_gpu or try data.batch_size <= 32")
    probe.measured = {"training": (12 * gib, mib)}
    assert "not even one image fits" in oom_reason(_oom(), probe, batch_size=8,
                                                   eval_batch_size=None, device=cuda,
                                                   available=10 * gib)
    assert oom_reason(_oom("CUDA out of memory."), None, batch_size=100,
                      eval_batch_size=None, device=cuda) == (
        "out_of_memory: training at data.batch_size 100; nothing was measured: try "
        "data.batch_size <= 50")


def test_a_failed_childs_own_reason_is_recorded_as_is():
    plain = TrialProcessError("ValueError: boom", 1)
    assert failure_reason(plain) == "TrialProcessError: ValueError: boom"
    plain.fail_reason = "out_of_memory: training at data.batch_size 64; try 32"
    assert failure_reason(plain) == "out_of_memory: training at data.batch_size 64; try 32"


class _MemoryBound(nn.Module):
    """Acts as if a training batch above ``limit`` images did not fit on the device."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, input_size: int = 8,
                 limit: int = 64, drop_rate: float = 0.0, act_layer: str = "relu",
                 norm_layer: str = "none"):
        super().__init__()
        self.limit = limit
        self.fc = nn.Linear(in_chans * input_size * input_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] > self.limit:
            raise _oom(f"CUDA out of memory. Tried to allocate {x.shape[0] // 8}.00 MiB.")
        return self.fc(x.flatten(1))


@pytest.fixture
def memory_bound_model() -> Iterator[str]:
    name = "memory_bound_test"
    _registry.register_model(name, family="test", native_size=8, min_size=1)(_MemoryBound)
    try:
        yield name
    finally:
        _registry._MODELS.pop(name)  # no public unregister; other tests walk the registry


def test_out_of_memory_fails_the_trial_with_advice_and_the_study_goes_on(
        stores, memory_bound_model):
    raw = tiny_study("oomstudy", search={
        "n_trials": 3, "space": {"data.batch_size": [32, 64, 128]},
        "enqueue": [{"data.batch_size": 128}, {"data.batch_size": 32}]})
    raw["model"] = {"arch": memory_bound_model}
    cfg = from_dict(raw)
    run_study(cfg, n_trials=2, progress=False, **stores)
    storage = get_storage(stores["storage"])
    failed, done = optuna.load_study(study_name="oomstudy", storage=storage).get_trials()
    assert failed.state == TrialState.FAIL and done.state == TrialState.COMPLETE
    assert math.isfinite(done.value)
    reason = failed.user_attrs["fail_reason"]
    assert reason.startswith("out_of_memory: training at data.batch_size 128 (Tried to "
                             "allocate 16.00 MiB)"), reason
    advised = int(re.search(r"data\.batch_size <= (\d+)$", reason).group(1))
    assert advised < 128
    client = MlflowClient(stores["tracking_uri"])
    run = client.get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["hpstudy.fail_reason"] == reason
    # the advice works: a trial at the batch it names trains
    assert advised == 64  # half, nothing being measured on the CPU
    raw["search"]["enqueue"] = [{"data.batch_size": advised}]
    run_study(from_dict(raw), n_trials=1, progress=False, **stores)
    last = optuna.load_study(study_name="oomstudy", storage=storage).get_trials()[-1]
    assert last.params["data.batch_size"] == advised and last.state == TrialState.COMPLETE
