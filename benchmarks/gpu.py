"""GPU throughput of hpstudy's fast path: images/s, GPU busy fraction, trials/hour per GPU.

Three parts, each printed as a table (and written to ``--json FILE``):

1. **images/s** of real ``hpstudy`` fits (``hpstudy.train.fit``: data on the
   device, Lightning, the epoch recorder) for the baseline CNN on MNIST-sized
   data (28x28x1) and ``preact_resnet20`` on CIFAR-sized data (32x32x3), both
   drawn by the ``synthetic`` dataset, in ``32-true`` and ``bf16-mixed``, with
   and without ``train.compile`` (compiled rows also use ``channels_last``).
   images/s counts the training images of the epochs after the first, over
   their ``epoch_time_s`` (which excludes compiling); ``busy`` is the mean of
   NVML's utilization (the fraction of time a kernel ran) sampled every 50 ms
   over those epochs; ``compile s`` is the trial's ``compile_time_s``.
   Target: preact_resnet20 >= 80% busy.
2. **trials/hour** with 1, 2 and 4 trials per GPU on a small model: ``hpstudy
   run --trials-per-gpu k`` as a user runs it (fresh process and stores),
   counted between the first trial's start and the last one's end (worker
   start-up excluded). Target: 4 per GPU >= 3x the trials/hour of 1.
3. **MNIST recipe**: the baseline CNN to >= 99.3% test accuracy within 15 s of
   training, on real MNIST when its files are under ``--data-root``
   (``$HPSTUDY_DATA``); skipped with a line saying so otherwise.

On a machine without a GPU, ``--quick`` still runs part 1 on small data
(``32-true`` and ``bf16-mixed`` without compile) and says which parts it
skips and why, so a test can run it and it cannot rot.

Usage::

    python benchmarks/gpu.py --quick                # about 4 minutes on one GPU (make gpu-check)
    python benchmarks/gpu.py --json results.json    # the full grid
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_BUSY = 0.80  # preact_resnet20 on one modern GPU
TARGET_PACKING = 3.0  # trials/hour at 4 per GPU over 1 per GPU
TARGET_MNIST_ACC, TARGET_MNIST_S = 0.993, 15.0

MODELS = {
    # name: (model section, synthetic data options, batch size)
    "baseline_cnn": ({"arch": "baseline_cnn"}, {"image_size": 28, "channels": 1}, 128),
    "preact_resnet20": ({"arch": "preact_resnet20"}, {"image_size": 32, "channels": 3}, 128),
}


# ------------------------------------------------------------------ GPU busy
class BusySampler:
    """Samples NVML's utilization of this process's first GPU every ``interval`` seconds."""

    def __init__(self, interval: float = 0.05):
        from hpstudy.track.system import visible_gpu_handles

        self.handle = visible_gpu_handles()[0]
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import pynvml

        while not self._stop.wait(self.interval):
            util = pynvml.nvmlDeviceGetUtilizationRates(self.handle).gpu
            self.samples.append((time.perf_counter(), util / 100.0))

    def __enter__(self) -> BusySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def busy(self, start: float, end: float) -> float | None:
        values = [u for t, u in self.samples if start <= t <= end]
        return statistics.fmean(values) if values else None


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _config(name: str, model: dict[str, Any], data: dict[str, Any], batch: int, epochs: int,
            **train: Any) -> Any:
    from hpstudy.config import from_dict

    return from_dict({
        "name": name,
        "data": {"dataset": "synthetic", "batch_size": batch, "val_split": 0.1, **data},
        "model": model,
        "train": {"max_epochs": epochs, "optimizer": "nesterov", "lr": 0.05, **train},
        "search": {"space": "none"},
        "report": {"enabled": False},
    })


# ------------------------------------------------------------------ 1. images/s
def throughput(model: str, precision: str, compile_: bool, *, n_samples: int,
               epochs: int) -> dict[str, Any]:
    """One fit; images/s over the epochs after the first, GPU busy over the same span."""
    from hpstudy.train import fit, release_memory

    section, data, batch = MODELS[model]
    cfg = _config("bench-gpu", section, {**data, "n_samples": n_samples}, batch, epochs,
                  precision=precision, compile=compile_, channels_last=compile_,
                  matmul_precision="high" if _gpu() else "highest")
    marks: list[float] = []

    def mark(record: dict[str, Any]) -> None:
        marks.append(time.perf_counter())

    if _gpu():
        with BusySampler() as sampler:
            result = fit(cfg, [mark])
        busy = sampler.busy(marks[0], marks[-1]) if len(marks) > 1 else None
    else:
        result, busy = fit(cfg, [mark]), None
    n_train = int(result.data_info["data.n_train"])
    steady = result.history[1:] or result.history
    seconds = sum(r["epoch_time_s"] for r in steady)
    row = {"model": model, "precision": precision, "compile": compile_,
           "images_per_s": n_train * len(steady) / seconds, "busy": busy,
           "compile_s": result.metrics.get("compile_time_s"),
           "val_acc": result.history[-1]["val_acc"],
           "peak_mb": result.metrics.get("gpu_peak_memory_mb")}
    del result
    release_memory()
    return row


def print_throughput(rows: list[dict[str, Any]]) -> None:
    print(f"{'model':<16} {'precision':<10} {'compile':<8} {'images/s':>10} {'busy':>6} "
          f"{'compile s':>9} {'peak MiB':>9}")
    for r in rows:
        busy = "n/a" if r["busy"] is None else f"{r['busy']:.0%}"
        comp = "-" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
        peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        print(f"{r['model']:<16} {r['precision']:<10} {'on' if r['compile'] else 'off':<8} "
              f"{r['images_per_s']:>10.0f} {busy:>6} {comp:>9} {peak:>9}", flush=True)
    resnet = [r["busy"] for r in rows if r["model"] == "preact_resnet20" and r["busy"]]
    if resnet:
        best = max(resnet)
        print(f"preact_resnet20 busiest: {best:.0%} (target >= {TARGET_BUSY:.0%}: "
              f"{'met' if best >= TARGET_BUSY else 'MISSED'})")


# ------------------------------------------------------------------ 2. trials/hour
def trials_per_hour(k: int, n_trials: int, folder: Path) -> dict[str, Any]:
    """``hpstudy run --trials-per-gpu k`` on a small model; steady trials/hour."""
    import optuna
    import yaml

    from hpstudy.search import get_storage

    name = f"pack{k}"
    study = {
        "name": name,
        "data": {"dataset": "synthetic", "n_samples": 4096, "image_size": 28, "channels": 1,
                 "batch_size": 128},
        "model": {"arch": "baseline_cnn"},
        "train": {"max_epochs": 3, "optimizer": "nesterov", "lr": 0.05},
        "search": {"space": "none", "pruner": "none"},
        "tracking": {"register_best": False},
        "report": {"enabled": False},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    storage = f"sqlite:///{folder}/{name}-optuna.db"
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "hpstudy", "run", str(path), "--trials-per-gpu", str(k),
         "--n-trials", str(n_trials), "--no-report", "-q", "--storage", storage,
         "--tracking-uri", f"sqlite:///{folder}/{name}-mlflow.db"],
        cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"hpstudy run --trials-per-gpu {k} failed:\n{out.stdout}{out.stderr}")
    trials = optuna.load_study(study_name=name, storage=get_storage(storage)).get_trials()
    first = min(t.datetime_start for t in trials)
    last = max(t.datetime_complete for t in trials)
    steady = (last - first).total_seconds()
    return {"trials_per_gpu": k, "n_trials": len(trials), "wall_s": wall,
            "trials_per_hour": 3600 * len(trials) / steady,
            "mean_trial_s": statistics.fmean(
                (t.datetime_complete - t.datetime_start).total_seconds() for t in trials)}


def print_packing(rows: list[dict[str, Any]]) -> None:
    print(f"{'trials/GPU':>10} {'trials':>6} {'trials/h':>9} {'x of 1':>7} {'trial s':>8} "
          f"{'wall s':>7}")
    base = rows[0]["trials_per_hour"]
    for r in rows:
        print(f"{r['trials_per_gpu']:>10} {r['n_trials']:>6} {r['trials_per_hour']:>9.0f} "
              f"{r['trials_per_hour'] / base:>7.2f} {r['mean_trial_s']:>8.1f} "
              f"{r['wall_s']:>7.1f}", flush=True)
    four = [r for r in rows if r["trials_per_gpu"] == 4]
    if four:
        ratio = four[0]["trials_per_hour"] / base
        print(f"4 per GPU: {ratio:.2f}x the trials/hour of 1 (target >= {TARGET_PACKING:.0f}x: "
              f"{'met' if ratio >= TARGET_PACKING else 'MISSED'})")


# ------------------------------------------------------------------ 3. MNIST
def mnist_recipe(root: str | None) -> dict[str, Any] | None:
    """The baseline CNN on real MNIST, trained on all 60k images, tested once; None if absent."""
    from hpstudy.config import from_dict
    from hpstudy.data import DatasetError, check_dataset, data_root
    from hpstudy.train import fit

    try:
        check_dataset("mnist", root=data_root(root))
    except DatasetError as e:
        print(f"MNIST recipe: skipped: {str(e).splitlines()[0]}")
        return None
    cfg = from_dict({
        "name": "bench-mnist",
        "data": {"dataset": "mnist", "root": root, "val_split": 0, "batch_size": 256},
        "model": {"arch": "baseline_cnn", "drop_rate": 0.5, "init": "he_normal"},
        # the thesis recipe shortened: one-cycle over 12 epochs at batch 256
        "train": {"max_epochs": 12, "optimizer": "nesterov", "lr": 0.2, "momentum": 0.9,
                  "weight_decay": 1e-5, "scheduler": "onecycle", "select": "last",
                  "evaluate_test": True, "precision": "bf16-mixed", "channels_last": True,
                  "compile": True, "matmul_precision": "high"},
        "search": {"space": "none"},
        "report": {"enabled": False},
    })
    result = fit(cfg)
    seconds = sum(r["epoch_time_s"] for r in result.history)
    acc = (result.test or {}).get("test_acc", float("nan"))
    ok = acc >= TARGET_MNIST_ACC and seconds <= TARGET_MNIST_S
    print(f"MNIST recipe: test accuracy {acc:.4f} after {seconds:.1f} s of training "
          f"({len(result.history)} epochs; compile {result.metrics.get('compile_time_s', 0):.1f} s"
          f" apart); target >= {TARGET_MNIST_ACC:.1%} within {TARGET_MNIST_S:.0f} s: "
          f"{'met' if ok else 'MISSED'}")
    return {"test_acc": acc, "train_s": seconds, "epochs": len(result.history)}


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, fewer rows")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--data-root", default=None, help="where MNIST's files are")
    parser.add_argument("--parts", nargs="+", default=["throughput", "packing", "mnist"],
                        choices=["throughput", "packing", "mnist"])
    args = parser.parse_args(argv)

    import torch

    gpu = _gpu()
    where = (f"{torch.cuda.get_device_name(0)}" if gpu else f"cpu ({os.cpu_count()} cores)")
    print(f"hpstudy GPU benchmark{' (quick)' if args.quick else ''} on {where}, torch "
          f"{torch.__version__}, {time.strftime('%Y-%m-%d')}", flush=True)
    results: dict[str, Any] = {"device": where, "torch": torch.__version__,
                                "date": time.strftime("%Y-%m-%d"), "quick": args.quick}

    if "throughput" in args.parts:
        if gpu:
            n, epochs = (16384, 3) if args.quick else (50000, 4)
            grid = [(p, c) for p in ("32-true", "bf16-mixed") for c in (False, True)]
            if args.quick:  # one compiled row per model: compiling is the slow part
                grid = [("32-true", False), ("bf16-mixed", False), ("bf16-mixed", True)]
        else:
            n, epochs = 512, 2
            grid = [("32-true", False), ("bf16-mixed", False)]
            print("images/s: on the CPU with small data; GPU busy: n/a (no GPU); compiled rows: "
                  "skipped on the CPU (a cold compile takes 35-80 s here)")
        rows = [throughput(m, p, c, n_samples=n, epochs=epochs) for m in MODELS for p, c in grid]
        print_throughput(rows)
        results["throughput"] = rows

    if "packing" in args.parts:
        if gpu:
            ks = (1, 2, 4)
            with tempfile.TemporaryDirectory(prefix="hpstudy-bench-gpu-") as tmp:
                rows = [trials_per_hour(k, (2 if args.quick else 4) * max(k, 2), Path(tmp))
                        for k in ks]
            print_packing(rows)
            results["packing"] = rows
        else:
            print("trials/hour per GPU: skipped: no GPU (benchmarks/parallel.py measures "
                  "workers on the CPU)")

    if "mnist" in args.parts:
        if gpu:
            results["mnist"] = mnist_recipe(args.data_root)
        else:
            print("MNIST recipe: skipped: no GPU (its target is 15 s of training on one)")

    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
