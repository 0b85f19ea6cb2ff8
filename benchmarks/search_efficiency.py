"""Search efficiency: TPE with pruning against random search without pruning.

Each arm is a real hpstudy study (``hpstudy.api.run_config``: the product's
``build_sampler``/``build_pruner`` with the study file's defaults, the
``course`` search space, every trial tracked in MLflow) on fresh SQLite stores
in a temporary folder, with the same number of trials:

* ``random``: random search, no pruning (every trial trains all its epochs);
* ``median``, ``sha``, ``hyperband``: TPE with that pruner, at hpstudy's
  defaults (nothing set in ``search.sampler.options`` or
  ``search.pruner.options``).

Every arm trains with ``train.seed`` = the seed; random search samples with
that seed, the TPE arms with 1000 + the seed (with one seed, TPE's random
startup trials would replay random search's first trials).

The task is one where the hyperparameters matter and the best accuracy is not
at a ceiling: generated 12x12 grey shapes (``dataset: synthetic``),
6 classes with distractor strokes and pixel noise, 1,800 training and 600
validation images, an MLP with one hidden layer of 128, 12 epochs with a
cosine schedule: random configurations of the course space score 16-55%, so
the knobs matter and nothing saturates. An epoch takes a few hundredths of a
second, so a full run (4 arms x 5 seeds x 24 trials) takes minutes.

Every trial's epochs are counted as recorded (its ``epochs`` user attr, else
its reported values), in the order the trials ran. For each seed the target
is the best validation accuracy random search reached (its best COMPLETE
trial); each arm's *epochs to target* is the epochs spent until the end of its
first COMPLETE trial at or above that target (``-``: never within the trials).
The ratio is that against random search's own epochs to its best. The target
of the pruned TPE arms: at most 1/3 of random search's epochs, at equal or
better accuracy.

Usage::

    .venv/bin/python benchmarks/search_efficiency.py            # 4 arms x 5 seeds x 24 trials
    .venv/bin/python benchmarks/search_efficiency.py --quick    # seconds: 2 seeds x 4 trials
    .venv/bin/python benchmarks/search_efficiency.py --write    # also record it in README.md
    .venv/bin/python benchmarks/search_efficiency.py --arms random median \\
        --sampler-options '{"multivariate": true}' --pruner-options '{"n_warmup_steps": 4}'

``--sampler-options`` / ``--pruner-options`` (JSON) go into the TPE arms'
``search.sampler.options`` / ``search.pruner.options``: how the defaults were
tuned. ``--write`` replaces this script's section of ``benchmarks/README.md``
(between its markers) with the output, the machine and the date.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import machine_line, replace_section  # noqa: E402

ARMS = ("random", "median", "sha", "hyperband")
TASK: dict[str, Any] = {
    "name": "bench-efficiency",
    "data": {"dataset": "synthetic", "n_classes": 6, "image_size": 12, "channels": 1,
             "n_samples": 2400, "test_samples": 0, "val_split": 0.25, "batch_size": 64},
    "model": {"arch": "mlp", "hidden": [128]},
    "train": {"max_epochs": 12, "scheduler": "cosine", "num_threads": 1},
    "search": {"n_trials": 24, "space": "course"},
    "tracking": {"register_best": False},
    "report": {"enabled": False},
}
QUICK_TASK: dict[str, Any] = copy.deepcopy(TASK)
QUICK_TASK["data"].update(n_samples=400, val_split=0.25)
QUICK_TASK["train"]["max_epochs"] = 4
QUICK_TASK["search"]["n_trials"] = 4
TPE_SEED = 1000  # the TPE arms' sampler seed is this + the seed (the same for all three)
SECTION = "search_efficiency.py"
BEGIN, END = f"<!-- begin {SECTION} -->", f"<!-- end {SECTION} -->"  # _record's markers


@dataclass
class Arm:
    """One study's finished trials in the order they ran."""

    arm: str
    seed: int
    epochs: list[float] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)  # COMPLETE trials' objective
    states: list[str] = field(default_factory=list)
    reported: list[int] = field(default_factory=list)  # values reported to the pruner
    wall_s: float = 0.0

    @property
    def spent(self) -> float:
        return sum(self.epochs)

    @property
    def best(self) -> float | None:
        done = [v for v in self.values if v is not None]
        return max(done) if done else None

    def epochs_to(self, target: float | None) -> float | None:
        """Epochs spent until the end of the first COMPLETE trial with a value >= ``target``."""
        if target is None:
            return None
        total = 0.0
        for e, v in zip(self.epochs, self.values, strict=True):
            total += e
            if v is not None and v >= target - 1e-9:
                return total
        return None

    def mean_epochs_to(self, target: float | None) -> float | None:
        """:meth:`epochs_to` averaged over every order of these trials (random search's trials
        are exchangeable, so this is its expected cost, without the luck of one order).

        With k trials at or above ``target``, each other trial comes before the
        first of them in 1 of k + 1 orders, and the first is any of them alike.
        """
        if target is None:
            return None
        hit = [e for e, v in zip(self.epochs, self.values, strict=True)
               if v is not None and v >= target - 1e-9]
        if not hit:
            return None
        return (self.spent - sum(hit)) / (len(hit) + 1) + sum(hit) / len(hit)


def study_config(base: dict[str, Any], arm: str, seed: int, sampler_options: dict[str, Any],
                 pruner_options: dict[str, Any]) -> Any:
    """The arm's study config: random without pruning, or TPE with the arm's pruner."""
    from hpstudy.config import from_dict

    raw = copy.deepcopy(base)
    raw["name"] = f"{base['name']}-{arm}-s{seed}"
    raw["train"]["seed"] = seed
    if arm == "random":
        raw["search"].update(sampler={"name": "random", "seed": seed}, pruner="none")
    else:
        # another seed than random search's: TPE's random startup trials would otherwise
        # replay random search's first trials, and both would find the same configs
        raw["search"].update(sampler={"name": "tpe", "seed": TPE_SEED + seed,
                                      "options": sampler_options},
                             pruner={"name": arm, "options": pruner_options})
    return from_dict(raw, f"benchmark {arm}")


def run_arm(cfg: Any, arm: str, seed: int, folder: Path) -> Arm:
    """Run the study through the product's API; read its trials back from the storage."""
    import optuna

    from hpstudy.analyze import trial_epochs
    from hpstudy.api import run_config
    from hpstudy.search import get_storage

    storage = f"sqlite:///{folder}/optuna.db"
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the study's one line per trial
        run_config(cfg, storage=storage, tracking_uri=f"sqlite:///{folder}/mlflow.db",
                   progress=False, report=False)
    out = Arm(arm, seed, wall_s=time.perf_counter() - start)
    study = optuna.load_study(study_name=cfg.name, storage=get_storage(storage))
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        out.epochs.append(trial_epochs(t.user_attrs, t.intermediate_values))
        out.values.append(t.value if t.state.name == "COMPLETE" else None)
        out.states.append(t.state.name)
        out.reported.append(len(t.intermediate_values))
    return out


@dataclass
class Row:
    """One arm on one seed, against random search on the same seed."""

    arm: str
    seed: int
    target: float | None  # random search's best
    best: float | None
    to_target: float | None
    spent: float
    ratio: float | None  # to_target / random's epochs to its best
    ratio_avg: float | None  # to_target / random's epochs to its best averaged over orders
    n_complete: int
    n_pruned: int


def rows_of(results: dict[int, dict[str, Arm]]) -> list[Row]:
    out = []
    for seed, arms in results.items():
        rnd = arms.get("random")
        target = rnd.best if rnd else None
        base = rnd.epochs_to(target) if rnd else None
        avg = rnd.mean_epochs_to(target) if rnd else None
        for name, a in arms.items():
            to = a.epochs_to(target)
            out.append(Row(name, seed, target, a.best, to, a.spent,
                           to / base if to is not None and base else None,
                           to / avg if to is not None and avg else None,
                           a.states.count("COMPLETE"), a.states.count("PRUNED")))
    return out


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _median(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def report(rows: list[Row], arms: list[str]) -> str:
    head = (f"{'arm':9s} {'seed':>4s} | {'best':>6s} {'target':>6s} {'epochs to':>9s} "
            f"{'ratio':>5s} {'vs avg':>6s} | {'spent':>5s} {'complete':>8s} {'pruned':>6s}")
    lines = ["target = random search's best val acc on that seed; epochs to = epochs until the "
             "first COMPLETE trial at or above it ('-': never);",
             "ratio = that / random search's epochs to its best as it ran; vs avg = that / "
             "random search's, averaged over every order of its trials", head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.arm:9s} {r.seed:4d} | {_f(r.best):>6s} {_f(r.target):>6s} "
                     f"{_f(r.to_target, 0):>9s} {_f(r.ratio, 2):>5s} {_f(r.ratio_avg, 2):>6s} | "
                     f"{r.spent:5.0f} {r.n_complete:8d} {r.n_pruned:6d}")
    lines += ["", "medians over seeds; an arm that never reached the target counts its whole "
                  "spend there (a lower bound)",
              f"{'arm':9s} | {'best':>6s} {'epochs to':>9s} {'spent':>5s} {'ratio':>5s} "
              f"{'vs avg':>6s} | {'reached':>7s} {'ratio<=1/3':>10s} {'vs avg<=1/3':>11s}"]
    rnd = {r.seed: r for r in rows if r.arm == "random"}
    for arm in arms:
        rs = [r for r in rows if r.arm == arm]
        to = [r.to_target if r.to_target is not None else r.spent for r in rs]
        ratios, avgs = [], []
        for t, r in zip(to, rs, strict=True):
            base = rnd[r.seed]
            if base.to_target:
                ratios.append(t / base.to_target)
                # random's order-averaged epochs = its epochs as run / its own vs-avg ratio
                avgs.append(t / (base.to_target / base.ratio_avg) if base.ratio_avg else None)
        reached = sum(r.to_target is not None for r in rs)
        third = sum(r.ratio is not None and r.ratio <= 1 / 3 + 1e-9 for r in rs)
        third_avg = sum(r.ratio_avg is not None and r.ratio_avg <= 1 / 3 + 1e-9 for r in rs)
        lines.append(f"{arm:9s} | {_f(_median([r.best for r in rs])):>6s} "
                     f"{_f(_median(to), 0):>9s} {_f(_median([r.spent for r in rs]), 0):>5s} "
                     f"{_f(_median(ratios), 2):>5s} {_f(_median(avgs), 2):>6s} | "
                     f"{reached:>4d}/{len(rs):<2d} {third:>8d}/{len(rs)} "
                     f"{third_avg:>9d}/{len(rs)}")
    return "\n".join(lines)


def write_section(readme: Path, text: str) -> None:
    """Replace this script's section of ``readme`` (between its markers), or append it."""
    old = readme.read_text() if readme.exists() else "# Benchmarks\n"
    readme.write_text(replace_section(old, SECTION, text))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the arms, print the tables; return the studies' trials and the rows."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="seconds: 2 seeds, 4 trials of 4 epochs")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0..4 (quick: 0 1)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--n-trials", type=int, default=None, help="trials per study (default 24)")
    p.add_argument("--sampler-options", type=json.loads, default={},
                   help="JSON for the TPE arms' search.sampler.options")
    p.add_argument("--pruner-options", type=json.loads, default={},
                   help="JSON for the TPE arms' search.pruner.options")
    p.add_argument("--write", action="store_true",
                   help="replace this script's section of benchmarks/README.md with the output")
    p.add_argument("--json", type=Path, default=None, help="write every arm's trials as JSON")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep the stores in this folder (seed<N>/optuna.db, mlflow.db)")
    p.add_argument("--readme", type=Path, default=REPO / "benchmarks" / "README.md",
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if "random" not in args.arms:
        p.error("--arms needs random (its best is every arm's target)")

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import torch

    torch.set_num_threads(1)
    base = copy.deepcopy(QUICK_TASK if args.quick else TASK)
    if args.n_trials:
        base["search"]["n_trials"] = args.n_trials
    seeds = args.seeds if args.seeds is not None else ([0, 1] if args.quick else list(range(5)))
    arms = [a for a in ARMS if a in args.arms]
    results: dict[int, dict[str, Arm]] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hpstudy-efficiency-") as tmp:
        for seed in seeds:
            folder = (args.keep or Path(tmp)) / f"seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            for arm in arms:
                cfg = study_config(base, arm, seed, args.sampler_options, args.pruner_options)
                a = run_arm(cfg, arm, seed, folder)
                results.setdefault(seed, {})[arm] = a
                print(f"[seed {seed} {arm:9s}] best {_f(a.best)}, {a.spent:.0f} epochs, "
                      f"{a.states.count('PRUNED')} pruned ({a.wall_s:.0f}s)", flush=True)
    rows = rows_of(results)
    d = base["data"]
    opts = ""
    if args.sampler_options or args.pruner_options:
        opts = (f"; TPE arms with sampler options {json.dumps(args.sampler_options)}, pruner "
                f"options {json.dumps(args.pruner_options)}")
    text = "\n".join([
        f"hpstudy search efficiency{' (quick)' if args.quick else ''}: {machine_line()}",
        f"task: synthetic shapes {d['image_size']}x{d['image_size']}, {d['n_classes']} classes, "
        f"{d['n_samples']} images ({d['val_split']:g} validation), MLP "
        f"{base['model']['hidden']}, {base['train']['max_epochs']} epochs; space "
        f"'{base['search']['space']}'; {base['search']['n_trials']} trials per study; seeds "
        f"{' '.join(map(str, seeds))}{opts}",
        report(rows, arms),
        f"wall time {time.perf_counter() - start:.0f}s",
    ])
    print()
    print(text)
    if args.json:
        args.json.write_text(json.dumps({str(s): {k: asdict(a) for k, a in arms.items()}
                                         for s, arms in results.items()}, indent=1))
    if args.write:
        write_section(args.readme, "```\n" + text + "\n```")
        print(f"wrote {args.readme}")
    return {"results": results, "rows": rows, "text": text}


if __name__ == "__main__":
    main()
