"""Where the wall time of ``hpstudy run studies/quickstart.yaml`` goes.

Runs the quickstart the way a user does (``hpstudy run``, a fresh process,
fresh stores in a temporary folder, one CPU thread) and prints the fraction
of its wall time spent in training epochs (the sum of every trial's
``epoch_time_s``) and where the rest goes: interpreter start and imports,
store creation (Optuna storage, MLflow store, the study's parent run), each
trial's work outside its epochs, Optuna between trials, closing the study,
registering the best model and drawing the dashboard. Phases are timed in
the child process by wrapping hpstudy's own functions::

    python benchmarks/study_overhead.py [--quick] [--write]

``--quick`` runs 2 trials of 2 epochs (tests); ``--write`` pastes the output
into ``benchmarks/README.md``. Target: >= 85% of the wall time in epochs.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _record import recorded  # noqa: E402

TARGET = 0.85

# (module, owner attribute or "", function, label): hpstudy's own phases
PHASES = [
    ("hpstudy.search.study", "", "connect", "stores: open Optuna + MLflow, parent run"),
    ("hpstudy.search.study", "", "close_study", "close the study (parent run results)"),
    ("hpstudy.search.objective", "Objective", "__call__", "trials: the objective"),
    ("hpstudy.api", "", "register_best_model", "register the best model"),
    ("hpstudy.api", "", "write_dashboard", "dashboard: collect, draw, write, log"),
    ("hpstudy.api", "", "finish_study", "finish: registration + dashboard"),
    ("hpstudy.search.study", "", "run_study", "run_study in all"),
]


def _child(out: str, argv: list[str]) -> None:
    """In the measured process: import, run the CLI, dump the phase times as JSON."""
    started = time.time()
    t0 = time.perf_counter()
    import lightning.pytorch  # noqa: F401
    import mlflow  # noqa: F401
    import optuna  # noqa: F401
    import torch  # noqa: F401

    import hpstudy.api  # noqa: F401
    import hpstudy.cli as cli
    import hpstudy.search.objective  # noqa: F401
    import hpstudy.search.study  # noqa: F401

    imports = time.perf_counter() - t0
    seconds: dict[str, float] = defaultdict(float)
    for mod, owner_name, fn, label in PHASES:
        module = importlib.import_module(mod)
        owner = getattr(module, owner_name) if owner_name else module
        original = getattr(owner, fn)

        def timed(*a: Any, _f: Any = original, _l: str = label, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                seconds[_l] += time.perf_counter() - t

        setattr(owner, fn, functools.wraps(original)(timed))
    # run_study and finish_study are looked up where they are called
    search = importlib.import_module("hpstudy.search")
    search.run_study = hpstudy.search.study.run_study
    t1 = time.perf_counter()
    code = 0
    try:
        cli.main(["run", *argv])
    except SystemExit as e:
        code = int(e.code or 0)
    main_s = time.perf_counter() - t1
    # the epochs: every trial's epoch_time_s, from its MLflow run
    from mlflow import MlflowClient

    client = MlflowClient("sqlite:///mlruns/mlflow.db")
    exp = client.get_experiment_by_name("quickstart")
    epochs, n_epochs, n_trials = 0.0, 0, 0
    for r in client.search_runs([exp.experiment_id], "tags.`hpstudy.kind` = 'trial'",
                                max_results=10_000):
        n_trials += 1
        for m in client.get_metric_history(r.info.run_id, "epoch_time_s"):
            epochs += m.value
            n_epochs += 1
    Path(out).write_text(json.dumps({
        "started": started, "imports": imports, "main": main_s, "code": code,
        "phases": dict(seconds), "epochs": epochs, "n_epochs": n_epochs, "n_trials": n_trials,
    }))


def measure(quick: bool) -> dict[str, Any]:
    """Run the quickstart in a fresh process in a temporary folder; its phase times."""
    argv = [str(ROOT / "studies" / "quickstart.yaml"), "-q"]
    if quick:
        argv += ["--n-trials", "2", "--set", "train.max_epochs=2"]
    with tempfile.TemporaryDirectory(prefix="hpstudy-study-overhead-") as tmp:
        out = Path(tmp) / "phases.json"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "80",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("HPSTUDY_STORAGE", None)
        start_wall = time.time()
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", str(out), "--", *argv],
                              cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            raise SystemExit(f"hpstudy run failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr[-3000:]}")
        data = json.loads(out.read_text())
    data["wall"] = wall
    data["interpreter"] = data["started"] - start_wall
    data["stdout"] = proc.stdout
    return data


def report(d: dict[str, Any]) -> dict[str, float]:
    """Print the breakdown; returns the seconds per phase (they add up to the wall time)."""
    p = defaultdict(float, d["phases"])
    wall, epochs = d["wall"], d["epochs"]
    trials = p["trials: the objective"]
    run_study = p["run_study in all"]
    connect, close = p["stores: open Optuna + MLflow, parent run"], \
        p["close the study (parent run results)"]
    finish = p["finish: registration + dashboard"]
    register = p["register the best model"]
    dashboard = p["dashboard: collect, draw, write, log"]
    parts = {
        "training epochs": epochs,
        "interpreter start": d["interpreter"],
        "imports (torch, Lightning, MLflow, Optuna, hpstudy)": d["imports"],
        "CLI before the study (config, checks, header)": d["main"] - run_study - finish,
        "stores: open Optuna + MLflow, parent run": connect,
        "per trial outside its epochs (setup, tracking, Optuna hooks)": trials - epochs,
        "Optuna between trials (sampler, progress)": run_study - connect - close - trials,
        "close the study (parent run results)": close,
        "register the best model": register,
        "dashboard: collect, draw, write, log": dashboard,
        "finish: the rest (overlap when concurrent is negative)": finish - register - dashboard,
    }
    parts["process exit and the rest"] = wall - sum(parts.values())
    n = max(d["n_trials"], 1)
    print(f"quickstart: {d['n_trials']} trials, {d['n_epochs']} epochs, wall {wall:.1f}s; "
          f"in epochs {epochs:.1f}s = {100 * epochs / wall:.1f}% (target >= "
          f"{100 * TARGET:.0f}%)")
    for k, v in parts.items():
        extra = f"  ({1000 * v / n:.0f} ms per trial)" if k.startswith(("per trial",
                                                                          "Optuna between")) else ""
        print(f"  {v:7.2f}s {100 * v / wall:5.1f}%  {k}{extra}")
    return parts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 trials of 2 epochs")
    parser.add_argument("--write", action="store_true", help="paste the output into README.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.rest)
        return {}
    with recorded("study_overhead.py", argv if argv is not None else sys.argv[1:], args.write):
        d = measure(args.quick)
        print("hpstudy run studies/quickstart.yaml -q" + (" (quick: 2 trials of 2 epochs)"
                                                          if args.quick else ""))
        d["parts"] = report(d)
    return d


if __name__ == "__main__":
    main()
