"""On a CUDA device (``make gpu-check``): every device option trains, compiled graphs are reused,
a real out-of-memory error names a batch that then fits, memory does not creep over 20 trials,
GPU metrics reach MLflow, and two trials share one GPU.

Written on a machine without a GPU; every test here is marked ``gpu`` and skips without CUDA.
Tests print one line of measurements each (``pytest -rP`` shows them).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import torch.nn as nn
from conftest import tiny_study
from mlflow import MlflowClient
from optuna.trial import TrialState

from hpstudy.config import from_dict
from hpstudy.search import connect, get_storage
from hpstudy.search.objective import Objective
from hpstudy.train import OutOfMemory, check_device_options, fit, release_memory

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
REPO = Path(__file__).resolve().parents[1]
MiB, GiB = 2**20, 2**30


def _cfg(model: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
         search: dict[str, Any] | None = None, **train: Any):
    raw = tiny_study("gpu", data={"val_split": 0.25, **(data or {})},
                     train={"max_epochs": 2, "accelerator": "gpu", **train}, **(
                         {"search": search} if search else {}))
    raw["model"] = model or {"arch": "baseline_cnn", "hidden": 32, "widths": [8, 16],
                             "drop_rate": 0.0}
    return from_dict(raw)


CIFAR = {"dataset": "synthetic", "n_samples": 8192, "image_size": 32, "channels": 3,
         "subset": None}


@pytest.fixture
def memory_cap():
    """Caps this process's CUDA memory (set_per_process_memory_fraction), restored after."""
    total = torch.cuda.get_device_properties(0).total_memory

    def cap(nbytes: int) -> None:
        release_memory()
        torch.cuda.set_per_process_memory_fraction(nbytes / total, 0)

    yield cap
    torch.cuda.set_per_process_memory_fraction(1.0, 0)
    release_memory()


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_each_precision_trains_on_the_gpu(precision: str):
    cfg = _cfg(precision=precision)
    check_device_options(cfg)
    r = fit(cfg)
    assert r.state == "COMPLETE", r.failure
    assert r.metrics["gpu_peak_memory_mb"] > 0
    print(f"{precision}: val_acc {r.best['val_acc']:.3f}, peak {r.metrics['gpu_peak_memory_mb']}"
          f" MiB, epochs {[round(h['epoch_time_s'], 3) for h in r.history]} s")


def test_channels_last_cudnn_benchmark_and_matmul_precision_on_the_gpu():
    r = fit(_cfg(channels_last=True, cudnn_benchmark=True, matmul_precision="high",
                 precision="bf16-mixed"))
    assert r.state == "COMPLETE", r.failure
    conv = next(m for m in r.module.net.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_cuda and conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.backends.cudnn.benchmark is True
    assert torch.get_float32_matmul_precision() == "high"
    fit(_cfg(max_epochs=1))
    assert torch.backends.cudnn.benchmark is False  # every trial sets its own
    assert torch.get_float32_matmul_precision() == "highest"


def test_compile_is_reused_across_trials_and_matches_eager():
    eager = fit(_cfg(lr=0.02))
    first = fit(_cfg(compile=True))
    again = fit(_cfg(compile=True, lr=0.02))
    assert again.metrics["compile_time_s"] < min(1.0, first.metrics["compile_time_s"] / 5)
    for a, b in zip(eager.history, again.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=2e-2)
    print(f"compile: first {first.metrics['compile_time_s']:.1f} s, same key again "
          f"{again.metrics['compile_time_s']:.3f} s; epochs eager "
          f"{[round(h['epoch_time_s'], 3) for h in eager.history]} compiled "
          f"{[round(h['epoch_time_s'], 3) for h in again.history]}")


def test_compile_reduce_overhead_trains_with_cuda_graphs():
    r = fit(_cfg(compile="reduce-overhead", precision="bf16-mixed"))
    assert r.state == "COMPLETE", r.failure
    print(f"reduce-overhead: compile {r.metrics['compile_time_s']:.1f} s, val_acc "
          f"{r.best['val_acc']:.3f}")


def test_real_out_of_memory_names_a_batch_size_that_then_fits(memory_cap):
    memory_cap(2 * GiB)
    big = _cfg({"arch": "preact_resnet20"}, {**CIFAR, "batch_size": 4096}, max_epochs=1)
    with pytest.raises(OutOfMemory) as e:
        fit(big)
    reason = e.value.fail_reason
    print(reason)
    m = re.search(r"data\.batch_size <= (\d+) fits \((\d+) as a power of two\)$", reason)
    assert reason.startswith("out_of_memory: training at data.batch_size 4096") and m, reason
    fits, pow2 = int(m[1]), int(m[2])
    assert pow2 <= fits < 4096
    r = fit(big.concrete({"data.batch_size": pow2, "data.eval_batch_size": pow2}))
    assert r.state == "COMPLETE", r.failure
    assert r.metrics["gpu_peak_memory_mb"] < 2 * GiB / MiB
    print(f"advised {fits} ({pow2}); at {pow2} the peak was {r.metrics['gpu_peak_memory_mb']} MiB")


def test_memory_after_each_of_20_trials_does_not_creep(stores, memory_cap):
    """A quarter of the trials run out of memory for real; allocated memory stays flat."""
    memory_cap(2 * GiB)
    cfg = _cfg({"arch": "preact_resnet20"}, {**CIFAR, "n_samples": 4096},
               search={"n_trials": 20, "sampler": "random", "pruner": "none",
                       "space": {"data.batch_size": [64, 4096]},
                       "enqueue": [{"data.batch_size": 4096 if i % 4 == 3 else 64}
                                   for i in range(20)]},
               max_epochs=1, limit_train_batches=4, limit_val_batches=2)
    session = connect(cfg, stores["storage"], stores["tracking_uri"])
    allocated: list[int] = []
    session.study.optimize(Objective(session), n_trials=20, catch=(Exception,),
                           callbacks=[lambda s, t: allocated.append(torch.cuda.memory_allocated())])
    trials = session.study.get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.FAIL) == 5 and states.count(TrialState.COMPLETE) == 15
    assert all(t.user_attrs["fail_reason"].startswith("out_of_memory:") for t in trials
               if t.state == TrialState.FAIL)
    print("allocated after each of 20 trials (MiB):",
          [round(a / MiB, 2) for a in allocated])
    assert max(allocated[1:]) - allocated[1] <= 1 * MiB


def test_gpu_metrics_reach_the_run(tmp_path: Path, monkeypatch):
    from hpstudy.api import train

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    cfg = _cfg({"arch": "preact_resnet20"}, {**CIFAR, "batch_size": 128}, max_epochs=3)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    outcome = train(cfg, uri)
    run = MlflowClient(uri).get_run(outcome.run_id)
    keys = set(run.data.metrics)
    assert {"system/gpu_0_utilization_percentage", "system/gpu_0_memory_usage_megabytes",
            "system/gpu_0_memory_usage_percentage", "gpu_peak_memory_mb"} <= keys, keys
    assert not [k for k in keys if k.startswith("system/gpu_1")]  # only the GPU it sees
    history = MlflowClient(uri).get_metric_history(outcome.run_id,
                                                   "system/gpu_0_utilization_percentage")
    print(f"system metrics: {len(history)} samples, utilization "
          f"{[m.value for m in history]} %")


def test_two_trials_share_one_gpu(stores, write_study):
    raw = tiny_study("gpupack", data={**CIFAR, "batch_size": 128},
                     train={"max_epochs": 2, "accelerator": "gpu"})
    raw["model"] = {"arch": "preact_resnet20"}
    path = write_study(raw)
    env = {**os.environ, "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"),
                                                       str(REPO)]))}
    out = subprocess.run([sys.executable, "-m", "hpstudy", "run", str(path), "--trials-per-gpu",
                          "2", "--n-trials", "4", "--no-report", "-q", "--storage",
                          stores["storage"], "--tracking-uri", stores["tracking_uri"]],
                         cwd=REPO, capture_output=True, text=True, timeout=400, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    trials = optuna.load_study(study_name="gpupack",
                               storage=get_storage(stores["storage"])).get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    client = MlflowClient(stores["tracking_uri"])
    exp = client.get_experiment_by_name("gpupack")
    runs = client.search_runs([exp.experiment_id], "tags.`hpstudy.kind` = 'trial'")
    placements = {r.data.tags["hpstudy.placement"] for r in runs}
    assert all(p.startswith("GPU 0 (shared by 2 trials)") for p in placements), placements
    assert all("gpu_peak_memory_mb" in r.data.metrics for r in runs)
    print("placements:", placements, "trial seconds:",
          [round((t.datetime_complete - t.datetime_start).total_seconds(), 1) for t in trials])
