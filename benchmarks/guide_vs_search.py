"""Guided tuning against a plain TPE search of the same space, with the same epoch budget.

For each dataset and seed, two runs start from the same study config, each on
fresh stores in a temporary folder:

* **search**: ``hpstudy run``'s study (TPE, the study's pruner) over the study's
  space, launching trials until the next one could take it past the budget;
* **guide**: ``hpstudy guide`` on the same study file and budget (lr range test,
  then the three stages).

Every trial's epochs are counted as they were trained (pruned and
early-stopped trials count what they ran; the lr range test counts its steps
as a fraction of an epoch), in the order they ran. The table gives each run's
best validation accuracy, the epochs the search spent until its best trial
ended, and the epochs the guide spent until one of its trials first matched
the search's final best (a trial validated on a stage-1 subset, a smaller
validation set, cannot match it; its epochs count). The target of the guide is
at most half the search's epochs. Test accuracy of each run's best trial is
shown where the config evaluates it (never used to select).

Built-in studies (the search space is ``course_full`` plus the conv widths
``model.widths`` and the dense width ``model.hidden``, which the guide searches
as its capacity in stage 2, so both search the same knobs):

* ``digits``: scikit-learn's 1,797 8x8 digits, a small thesis-baseline CNN,
  budget 12 x 15 = 180 epochs;
* ``shapes``: generated 16x16 grey shapes, 20 classes with distractor strokes
  and pixel noise (``dataset: synthetic``), 900 training images, the same CNN:
  harder, lower accuracy; budget 24 x 15 = 360 epochs; stage 2 (and so stage 3)
  trains 30 epochs, to a training accuracy of 0.9.

Other datasets (image classification in general): ``--study FILE`` takes any
study file as the base, ``--set key=value`` changes every base config
(``--set data.dataset=cifar10 --set data.root=DATA``), ``--accelerator gpu``.

Usage::

    .venv/bin/python benchmarks/guide_vs_search.py                  # digits + shapes, 3 seeds
    .venv/bin/python benchmarks/guide_vs_search.py --quick          # a tiny smoke run
    .venv/bin/python benchmarks/guide_vs_search.py --datasets digits --seeds 0 1
    .venv/bin/python benchmarks/guide_vs_search.py --study studies/my_cifar.yaml --seeds 0 \\
        --set data.root=/data --accelerator gpu --budget-epochs 400
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
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

# capacity: the conv widths and the dense width, searched by both (the guide in stage 2)
_CAPACITY = {"model.widths": [[8, 16], [16, 32], [32, 64]], "model.hidden": [32, 64, 128, 256]}
_SEARCH = {"n_trials": 12, "metric": "val_acc", "sampler": {"name": "tpe", "seed": 0},
           "pruner": {"name": "median", "options": {"n_startup_trials": 4, "n_warmup_steps": 4}},
           "space": {"preset": "course_full", **_CAPACITY}}
_TRAIN = {"max_epochs": 15, "optimizer": "adam", "lr": 1e-3, "scheduler": "cosine",
          "num_threads": 1, "evaluate_test": True}
_MODEL = {"arch": "baseline_cnn", "widths": [16, 32], "hidden": 64, "init": "he_normal"}
STUDIES: dict[str, dict[str, Any]] = {
    "digits": {
        "name": "bench-digits",
        "data": {"dataset": "digits", "val_split": 0.2, "batch_size": 64},
        "model": _MODEL, "train": _TRAIN, "search": _SEARCH,
        "guide": {"everything": {"capacity": _CAPACITY}},
    },
    # 20 classes of noisy shapes from 900 training images: a hard set. Stage 2 trains 30
    # epochs (its advice on a first run: "train longer") to a training accuracy of 0.9 (the
    # diagnosis's fit_acc: lower it for hard sets); the budget is 24 x 15 epochs
    "shapes": {
        "name": "bench-shapes",
        "data": {"dataset": "synthetic", "n_classes": 20, "image_size": 16, "channels": 1,
                 "n_samples": 1200, "test_samples": 600, "val_split": 0.25, "batch_size": 64},
        "model": _MODEL, "train": _TRAIN, "search": {**_SEARCH, "n_trials": 24},
        "guide": {"everything": {"capacity": _CAPACITY, "epochs": 30, "train_acc": 0.9}},
    },
}
QUICK: dict[str, Any] = {
    "name": "bench-quick",
    "data": {"dataset": "digits", "val_split": 0.2, "batch_size": 64, "subset": 480},
    "model": {"arch": "mlp", "hidden": [32], "init": "he_normal"},
    "train": {"max_epochs": 3, "optimizer": "adam", "lr": 1e-3, "num_threads": 1},
    "search": {"n_trials": 6, "sampler": {"name": "tpe", "seed": 0}, "pruner": "none",
               "space": {"preset": "course", "model.hidden": [[16], [32], [64]]}},
    "guide": {"budget_epochs": 18, "lr_range": {"steps": 10},
              "anything": {"trials": 2, "epochs": 2},
              "everything": {"train_acc": 0.5, "trials": 1,
                             "capacity": {"model.hidden": [[16], [32], [64]]}},
              "right_thing": {"sgd_trials": 1}},
}


@dataclass
class Run:
    """One run's trials in the order they ran: epochs and objective of each."""

    kind: str
    epochs: list[float] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)
    counts: list[bool] = field(default_factory=list)  # whether a trial can "reach" the target
    tests: list[float | None] = field(default_factory=list)
    note: str = ""
    wall_s: float = 0.0
    n_val: int | None = None  # validation images of the search's trials

    @property
    def spent(self) -> float:
        return sum(self.epochs)

    def best(self) -> tuple[float | None, int | None]:
        """(best value among the counted trials, its index)."""
        best, at = None, None
        for i, (v, ok) in enumerate(zip(self.values, self.counts, strict=True)):
            if ok and v is not None and (best is None or v > best):
                best, at = v, i
        return best, at

    def epochs_to(self, target: float) -> float | None:
        """Epochs spent until the end of the first counted trial with a value >= ``target``."""
        total = 0.0
        for e, v, ok in zip(self.epochs, self.values, self.counts, strict=True):
            total += e
            if ok and v is not None and v >= target - 1e-9:
                return total
        return None


def _n_val(t: Any) -> int | None:
    ev = (t.user_attrs.get("diagnosis_detail") or {}).get("evidence") or {}
    return ev.get("n_val")


def _trial_rows(study: Any, n_val: int | None = None
                ) -> tuple[list[float], list[float | None], list[bool], list[float | None]]:
    """Epochs, values, whether each can match the target (``n_val``: only trials validated
    on that many images, i.e. not on a stage-1 subset), test accuracies; in trial order."""
    from hpstudy.analyze import trial_epochs

    ep, vals, ok, tests = [], [], [], []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if not t.state.is_finished():
            continue
        ep.append(trial_epochs(t.user_attrs, t.intermediate_values))
        vals.append(t.value if t.state.name == "COMPLETE" else None)
        ok.append(n_val is None or _n_val(t) in (None, n_val))
        tests.append(t.user_attrs.get("test_acc"))
    return ep, vals, ok, tests


class _Budget:
    """Optuna callback for the plain search: stop before a trial could overrun the budget."""

    def __init__(self, budget: float, per_trial: int):
        self.budget, self.per_trial, self.spent = budget, per_trial, 0.0

    def __call__(self, study: Any, trial: Any) -> None:
        from hpstudy.analyze import trial_epochs

        self.spent += trial_epochs(trial.user_attrs, trial.intermediate_values)
        if self.budget - self.spent < self.per_trial:
            study.stop()


def run_search(cfg: Any, budget: float, stores: dict[str, str]) -> Run:
    import optuna

    from hpstudy.search import get_storage, run_study

    start = time.perf_counter()
    cb = _Budget(budget, cfg.train.max_epochs)
    run_study(cfg, n_trials=int(budget), progress=False, callbacks=[cb], **stores)
    study = optuna.load_study(study_name=cfg.name, storage=get_storage(stores["storage"]))
    run = Run("search", *_trial_rows(study))
    run.n_val = next((_n_val(t) for t in study.get_trials(deepcopy=False) if _n_val(t)), None)
    run.wall_s = time.perf_counter() - start
    return run


def run_guided(cfg: Any, budget: float, stores: dict[str, str], n_val: int | None) -> Run:
    import optuna

    from hpstudy.guide import STAGES, plan_guide, run_guide
    from hpstudy.names import ATTR_GUIDE_LR_RANGE, stage_study_name
    from hpstudy.search import get_storage

    start = time.perf_counter()
    plan = plan_guide(cfg, "benchmark", budget)
    summary = run_guide(plan, progress=False, **stores)
    run = Run("guide")
    store = get_storage(stores["storage"])
    for stage in STAGES:
        try:
            study = optuna.load_study(study_name=stage_study_name(cfg.name, stage), storage=store)
        except KeyError:
            continue
        lr = study.user_attrs.get(ATTR_GUIDE_LR_RANGE)
        if isinstance(lr, dict):  # the range test ran before stage 1's trials
            run.epochs.append(float(lr.get("epochs") or 0.0))
            run.values.append(None)
            run.counts.append(False)
            run.tests.append(None)
        # a stage-1 subset has a smaller validation set: its trials cannot match the target
        ep, vals, ok, tests = _trial_rows(study, n_val)
        run.epochs += ep
        run.values += vals
        run.counts += ok
        run.tests += tests
    if summary.stopped is not None:
        run.note = f"stopped at {summary.stopped.stage}: {summary.stopped.line}"
    run.wall_s = time.perf_counter() - start
    return run


@dataclass
class Row:
    dataset: str
    seed: int
    budget: float
    search_best: float | None
    search_to_best: float | None
    search_spent: float
    search_test: float | None
    guide_best: float | None
    guide_to_search_best: float | None
    guide_spent: float
    guide_test: float | None
    ratio: float | None
    note: str = ""
    wall_s: tuple[float, float] = (0.0, 0.0)


def compare(dataset: str, base: dict[str, Any], seed: int, budget: float | None,
            overrides: dict[str, Any], keep: Path | None) -> Row:
    from hpstudy.config import apply_overrides, from_dict

    raw = copy.deepcopy(base)
    raw.setdefault("search", {}).setdefault("sampler", {})
    raw["search"]["sampler"] = {**(raw["search"]["sampler"] if isinstance(
        raw["search"]["sampler"], dict) else {"name": raw["search"]["sampler"]}), "seed": seed}
    raw.setdefault("train", {})["seed"] = seed
    raw.setdefault("tracking", {})["register_best"] = False
    raw.setdefault("report", {})["enabled"] = False
    cfg = from_dict(raw, f"benchmark {dataset}")
    if overrides:
        cfg = apply_overrides(cfg.to_dict(), overrides, source="--set")
    if budget is None:
        budget = cfg.guide.budget_epochs or float((cfg.search.n_trials or 20)
                                                  * cfg.train.max_epochs)
    with tempfile.TemporaryDirectory(prefix="hpstudy-guide-bench-") as tmp:
        folder = keep / f"{dataset}-seed{seed}" if keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        stores = {"storage": f"sqlite:///{folder}/optuna.db",
                  "tracking_uri": f"sqlite:///{folder}/mlflow.db"}
        search = run_search(cfg, budget, stores)
        guide = run_guided(cfg, budget, stores, search.n_val)
    s_best, s_at = search.best()
    g_best, g_at = guide.best()
    s_to = search.epochs_to(s_best) if s_best is not None else None
    g_to = guide.epochs_to(s_best) if s_best is not None else None
    return Row(dataset, seed, budget, s_best, s_to, search.spent,
               search.tests[s_at] if s_at is not None else None, g_best, g_to, guide.spent,
               guide.tests[g_at] if g_at is not None else None,
               (g_to / s_to) if g_to is not None and s_to else None, guide.note,
               (search.wall_s, guide.wall_s))


def _f(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) and digits else f"{x:.0f}"


def _ms(xs: list[float], digits: int = 4) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} +- {statistics.stdev(xs):.{digits}f}"


def report(rows: list[Row]) -> str:
    head = (f"{'dataset':8s} {'seed':>4s} {'budget':>6s} | {'search best':>11s} {'epochs':>6s} "
            f"{'spent':>5s} {'test':>6s} | {'guide best':>10s} {'epochs to':>9s} {'spent':>5s} "
            f"{'test':>6s} | {'ratio':>5s}")
    lines = ["epochs: search = until its best trial ended; guide = until a trial first matched "
             "the search's final best ('-': never)", head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.dataset:8s} {r.seed:4d} {r.budget:6.0f} | {_f(r.search_best):>11s} "
            f"{_f(r.search_to_best, 0):>6s} {_f(r.search_spent, 0):>5s} {_f(r.search_test):>6s} | "
            f"{_f(r.guide_best):>10s} {_f(r.guide_to_search_best, 1):>9s} "
            f"{_f(r.guide_spent, 0):>5s} {_f(r.guide_test):>6s} | {_f(r.ratio, 2):>5s}"
            + (f"  ({r.note})" if r.note else ""))
    lines.append("")
    for ds in dict.fromkeys(r.dataset for r in rows):
        rs = [r for r in rows if r.dataset == ds]
        reached = [r for r in rs if r.ratio is not None]
        half = sum(r.ratio <= 0.5 for r in reached)
        lines.append(
            f"{ds}: best val acc search {_ms([r.search_best for r in rs])}, guide "
            f"{_ms([r.guide_best for r in rs])} over {len(rs)} seed(s); the guide matched the "
            f"search's best in {len(reached)} of {len(rs)}, with at most half its epochs in "
            f"{half}; epochs ratio guide/search {_ms([r.ratio for r in reached], 2)}")
    wall = sum(sum(r.wall_s) for r in rows)
    lines.append(f"wall time {wall:.0f}s (search {sum(r.wall_s[0] for r in rows):.0f}s, guide "
                 f"{sum(r.wall_s[1] for r in rows):.0f}s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    """Run the comparison, print the table, return its rows."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny run: digits subset, one seed")
    p.add_argument("--datasets", nargs="+", default=None, choices=sorted(STUDIES),
                   help="built-in studies (default: digits shapes)")
    p.add_argument("--study", type=Path, default=None, help="a study file as the base instead")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 (quick: 0)")
    p.add_argument("--budget-epochs", type=float, default=None,
                   help="epochs for each run (default: guide.budget_epochs, else "
                        "search.n_trials x train.max_epochs)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="override a base-config key: --set data.root=DATA (repeatable)")
    p.add_argument("--accelerator", default=None, help="train.accelerator (cpu, gpu, auto)")
    p.add_argument("--keep", type=Path, default=None, help="keep the stores in this folder")
    p.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    args = p.parse_args(argv)

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    from hpstudy.config import parse_set, read_yaml

    overrides = parse_set(args.overrides)
    if args.accelerator:
        overrides["train.accelerator"] = args.accelerator
    if args.study:
        bases = {args.study.stem: read_yaml(args.study)}
    elif args.quick:
        bases = {"quick": QUICK}
    else:
        bases = {d: STUDIES[d] for d in (args.datasets or ["digits", "shapes"])}
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    rows = []
    for name, base in bases.items():
        for seed in seeds:
            row = compare(name, base, seed, args.budget_epochs, overrides, args.keep)
            rows.append(row)
            print(f"[{name} seed {seed}] search best {_f(row.search_best)} after "
                  f"{_f(row.search_to_best, 0)} epochs; guide best {_f(row.guide_best)}, "
                  f"matched it after {_f(row.guide_to_search_best, 1)} epochs "
                  f"({row.wall_s[0]:.0f}s + {row.wall_s[1]:.0f}s)", flush=True)
    print()
    print(report(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return rows


if __name__ == "__main__":
    main()
