"""Trials per hour on the digits study: 1 vs 2 workers, in-process vs a process per trial.

Every row runs ``hpstudy run studies/quickstart.yaml`` the way a user does (a
fresh process, fresh stores in a temporary folder, no dashboard) and reads
the trials' start and end times back from the Optuna storage. Pruning is off
and, by default, the search space is ``none`` (every trial trains the
study's own hyperparameters), so every row does the same work per trial and
the rows differ only in how trials are run:

- ``in-process``: 1 worker, trials in the study's process (the default);
- ``2 workers sqlite``: ``--workers 2`` on the default SQLite storage;
- ``2 workers journal``: ``--workers 2`` on Optuna's JournalStorage file;
- ``isolated``: 1 worker, ``train.isolate: true`` (a process per trial).

Columns: ``wall`` the whole command; ``trials/h`` trials over wall;
``steady/h`` trials between the first trial's start and the last one's end
(start-up excluded); ``trial s`` the mean trial time; ``startup s`` from the
command's start to the first trial's start.

The last lines break down what a process per trial costs: a fresh process
importing the trial child (torch, Lightning, hpstudy), and what a process that
talks to the stores would add (importing Optuna and MLflow, opening both).

Usage::

    .venv/bin/python benchmarks/parallel.py                       # 8 trials per row
    .venv/bin/python benchmarks/parallel.py --n-trials 16 --space course
    .venv/bin/python benchmarks/parallel.py --rows in-process isolated
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "studies" / "quickstart.yaml"
ROWS: dict[str, dict[str, Any]] = {
    "in-process": {"workers": 1, "storage": "sqlite", "isolate": False},
    "2 workers sqlite": {"workers": 2, "storage": "sqlite", "isolate": False},
    "2 workers journal": {"workers": 2, "storage": "journal", "isolate": False},
    "isolated": {"workers": 1, "storage": "sqlite", "isolate": True},
}

# Timed in a fresh interpreter: what a trial process pays before training, and
# what it would add if it also opened the stores itself.
_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import hpstudy.train.child, hpstudy.train.fit, hpstudy.config  # the trial child's imports
t1 = time.perf_counter()
import optuna, mlflow
t2 = time.perf_counter()
from hpstudy.search import get_storage
from hpstudy.track import Tracker
storage, tracking = sys.argv[1], sys.argv[2]
study = optuna.load_study(study_name="quickstart", storage=get_storage(storage))
study.get_trials()
Tracker(tracking, "quickstart")
t3 = time.perf_counter()
print(json.dumps({"child_imports": t1 - t0, "optuna_mlflow_imports": t2 - t1,
                  "open_stores": t3 - t2}))
"""


def run_row(name: str, spec: dict[str, Any], n_trials: int, epochs: int | None, space: str,
            workdir: Path) -> dict[str, Any]:
    """Run one configuration and return its timings."""
    folder = workdir / name.replace(" ", "-")
    folder.mkdir(parents=True)
    storage = (f"sqlite:///{folder}/optuna.db" if spec["storage"] == "sqlite"
               else f"journal:///{folder}/optuna.log")
    tracking = f"sqlite:///{folder}/mlflow.db"
    sets = ["search.pruner.name=none", f"search.space={space}",
            f"train.isolate={str(spec['isolate']).lower()}"]
    if epochs is not None:
        sets.append(f"train.max_epochs={epochs}")
    cmd = [sys.executable, "-m", "hpstudy", "run", str(STUDY), "--n-trials", str(n_trials),
           "--workers", str(spec["workers"]), "--storage", storage, "--tracking-uri", tracking,
           "--no-report", "-q"]
    for s in sets:
        cmd += ["--set", s]
    start_wall = time.time()
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{name}: hpstudy run failed ({done.returncode}):\n{done.stdout[-3000:]}"
                         f"\n{done.stderr[-3000:]}")
    import optuna

    from hpstudy.search import get_storage

    trials = optuna.load_study(study_name="quickstart", storage=get_storage(storage)).get_trials()
    starts = [t.datetime_start.timestamp() for t in trials]
    ends = [t.datetime_complete.timestamp() for t in trials]
    durations = [e - s for s, e in zip(starts, ends, strict=True)]
    span = max(ends) - min(starts)
    states = {t.state.name for t in trials}
    return {
        "row": name, "trials": len(trials), "states": ",".join(sorted(states)), "wall": wall,
        "per_hour": 3600 * len(trials) / wall,
        "steady_per_hour": 3600 * (len(trials) / span) if span > 0 else float("nan"),
        "trial_s": statistics.mean(durations), "startup_s": min(starts) - start_wall,
        "storage": storage, "tracking": tracking,
    }


def probe(storage: str, tracking: str) -> dict[str, float]:
    """Fresh-process costs (median of 3)."""
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", _PROBE, storage, tracking], cwd=REPO,
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-trials", type=int, default=8, help="trials per row")
    ap.add_argument("--epochs", type=int, default=None, help="override train.max_epochs (15)")
    ap.add_argument("--space", default="none", help="search.space: none (fixed) or course")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    args = ap.parse_args()

    print(f"digits quickstart, {args.n_trials} trials per row, space={args.space}, "
          f"pruning off, {os.cpu_count()} CPU cores, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    results = []
    with tempfile.TemporaryDirectory(prefix="hpstudy-bench-") as tmp:
        for name in args.rows:
            r = run_row(name, ROWS[name], args.n_trials, args.epochs, args.space, Path(tmp))
            results.append(r)
            print(f"  ran {name}: {r['wall']:.1f}s", flush=True)
        costs = probe(results[0]["storage"], results[0]["tracking"])

    base = results[0]
    print()
    print(f"{'row':20s} {'trials':>6s} {'wall s':>8s} {'trials/h':>9s} {'steady/h':>9s} "
          f"{'x ' + base['row']:>14s} {'trial s':>8s} {'startup s':>9s}")
    for r in results:
        print(f"{r['row']:20s} {r['trials']:>6d} {r['wall']:>8.1f} {r['per_hour']:>9.0f} "
              f"{r['steady_per_hour']:>9.0f} {r['per_hour'] / base['per_hour']:>14.2f} "
              f"{r['trial_s']:>8.2f} {r['startup_s']:>9.1f}")
    by = {r["row"]: r for r in results}
    print()
    print(f"fresh process, trial child imports (torch, Lightning, hpstudy): "
          f"{costs['child_imports']:.2f}s")
    print(f"  + importing Optuna and MLflow: {costs['optuna_mlflow_imports']:.2f}s, "
          f"opening the SQLite stores: {costs['open_stores']:.2f}s")
    if "isolated" in by and "in-process" in by:
        extra = by["isolated"]["trial_s"] - by["in-process"]["trial_s"]
        print(f"process per trial costs {extra:.2f}s per trial "
              f"({by['isolated']['trial_s']:.2f}s vs {by['in-process']['trial_s']:.2f}s in-process, "
              f"{extra / by['in-process']['trial_s']:.0%} more)")


if __name__ == "__main__":
    main()
