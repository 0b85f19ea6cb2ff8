"""How often the diagnosis is right: real learning curves labelled by construction.

Every sample is a real training run (``hpstudy.train.fit`` with a real Lightning
Trainer) set up so that by design it ends in one regime:

* ``overfit``: a tiny training set (43-72 digits; 600 shapes with 30% wrong
  labels; 150 shapes), a big MLP or CNN, no regularization, many epochs;
* ``underfit``: a tiny model (2-3 hidden units) or heavy regularization
  (dropout 0.7 + weight decay 0.1), trained to convergence (cosine schedule);
* ``not_learning``: learning rate 1e-7 / 1e-6, or random labels (synthetic
  ``label_noise: 0.9`` with 10 classes moves 90% of the labels to another class:
  uniform labels) on a net too small to memorize them;
* ``diverged``: SGD at lr 50 or 1000, Adam at lr 50;
* ``unstable``: lr far too high for a tiny batch (Adam 0.05 batch 8, SGD 0.5-1 batch 4-8);
* ``good_fit``: a fitting model and lr, trained to convergence (cosine or step
  schedule, or early stopping);
* ``not_converged``: a constant-lr run stopped after a few epochs (``max_epochs``);
* ``pruned``: a run stopped at epoch 3-4 by an epoch hook, as Optuna's pruner
  does (status ``pruned``, reason given).

Each label is then checked with a plain criterion on the curves (below,
:func:`confirm`); a run that misses it is dropped and listed, never relabelled.
``not_converged`` is checked against the same configuration trained 3-5x longer:
training on must raise validation accuracy by 2 points or 3 standard errors.

Both the old rules (``benchmarks/_diagnose_v1.py``, a verbatim copy of the code
before the noise-aware rewrite) and the new ones (``hpstudy.analyze.diagnose``,
given each run's status, ``n_val`` and ``max_epochs``) read the same curves;
the script prints per-verdict precision and recall, macro-F1 and the confusion
tables of both, from this one run.

Usage::

    .venv/bin/python benchmarks/diagnosis_accuracy.py            # a few minutes, 2 CPU cores
    .venv/bin/python benchmarks/diagnosis_accuracy.py --quick    # one run per verdict, digits
    .venv/bin/python benchmarks/diagnosis_accuracy.py --seeds 3 --save curves.json
    .venv/bin/python benchmarks/diagnosis_accuracy.py --dataset mnist --root DATA --subset 3000

``--dataset`` swaps digits for another registry dataset in the real-image runs
(the synthetic-shape runs stay); its recipes were sized on digits, and runs
that miss their regime there are dropped, as always.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import _diagnose_v1 as old_rules  # noqa: E402

from hpstudy.analyze.diagnose import VERDICTS, diagnose  # noqa: E402

DIGITS: dict[str, Any] = {"dataset": "digits", "batch_size": 32}
SHAPES: dict[str, Any] = {"dataset": "synthetic", "n_samples": 2000, "image_size": 16,
                          "channels": 1, "test_samples": 0, "batch_size": 32}
SMALL_CNN: dict[str, Any] = {"arch": "baseline_cnn", "widths": [8, 16], "hidden": 32}
DIGITS_CNN: dict[str, Any] = {"arch": "baseline_cnn", "widths": [16, 32], "hidden": 64}


@dataclass(frozen=True)
class Recipe:
    """One designed run: its intended verdict and the config sections that produce it.

    ``long_epochs``: for ``not_converged``, the epochs of the verification run.
    ``prune_at``: for ``pruned``, the epoch at which the hook stops the run.
    """

    name: str
    label: str
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    long_epochs: int | None = None
    prune_at: int | None = None
    quick: bool = False  # part of the --quick set (one per verdict)


def recipes(real: dict[str, Any] | None = None) -> list[Recipe]:
    """Every designed run (one seed). ``real``: the data section of the real-image runs
    (default: sklearn digits; e.g. ``{"dataset": "mnist", "root": ..., "subset": 3000}``)."""
    real = {**DIGITS, **(real or {})}
    adam = {"optimizer": "adam"}
    cos = {"scheduler": "cosine"}
    few = {**real, "val_split": 0.97, "batch_size": 16}  # digits: 43 training, 1394 val
    r = [
        # good_fit: a model that fits, trained to convergence
        Recipe("good-mlp", "good_fit", real, {"arch": "mlp", "hidden": [128]},
               {**adam, **cos, "lr": 3e-3, "max_epochs": 20}, quick=True),
        Recipe("good-mlp2", "good_fit", real,
               {"arch": "mlp", "hidden": [256, 128], "drop_rate": 0.1},
               {**adam, **cos, "lr": 1e-3, "max_epochs": 25}),
        Recipe("good-cnn", "good_fit", real, {**DIGITS_CNN, "drop_rate": 0.1},
               {**adam, **cos, "lr": 3e-3, "max_epochs": 15}),
        Recipe("good-early", "good_fit", real, {"arch": "mlp", "hidden": [128]},
               {**adam, "lr": 1e-3, "max_epochs": 60,
                "early_stopping": {"enabled": True, "patience": 3}}),
        Recipe("good-step", "good_fit", real, {"arch": "mlp", "hidden": [128]},
               {"optimizer": "momentum", "lr": 0.05, "max_epochs": 24,
                "scheduler": {"name": "multistep", "milestones": [0.5, 0.75], "gamma": 0.1}}),
        Recipe("good-shapes", "good_fit", {**SHAPES, "n_classes": 4},
               {**SMALL_CNN, "widths": [16, 32], "hidden": 64, "drop_rate": 0.0},
               {**adam, **cos, "lr": 3e-3, "max_epochs": 20}),
        Recipe("good-shapes2", "good_fit", {**SHAPES, "n_classes": 2, "n_samples": 1000},
               {**SMALL_CNN, "drop_rate": 0.0}, {**adam, **cos, "lr": 3e-3, "max_epochs": 20}),
        # overfit: tiny training set, big model, no regularization, many epochs
        Recipe("over-mlp", "overfit", few, {"arch": "mlp", "hidden": [256, 256]},
               {**adam, "lr": 3e-3, "max_epochs": 30}, quick=True),
        Recipe("over-wide", "overfit", {**few, "val_split": 0.95, "batch_size": 8},
               {"arch": "mlp", "hidden": [512, 512]}, {**adam, "lr": 1e-2, "max_epochs": 40}),
        Recipe("over-shapes", "overfit", {**SHAPES, "n_samples": 600, "label_noise": 0.3},
               {"arch": "mlp", "hidden": [512, 512]}, {**adam, "lr": 3e-3, "max_epochs": 40}),
        Recipe("over-cnn", "overfit", {**SHAPES, "n_samples": 300, "val_split": 0.5},
               {**SMALL_CNN, "widths": [16, 32], "hidden": 128, "drop_rate": 0.0},
               {**adam, "lr": 3e-3, "max_epochs": 40}),
        # underfit: too little capacity or too much regularization, converged
        Recipe("under-tiny", "underfit", real, {"arch": "mlp", "hidden": [2]},
               {**adam, **cos, "lr": 1e-2, "max_epochs": 30}, quick=True),
        Recipe("under-reg", "underfit", real, {"arch": "mlp", "hidden": [64], "drop_rate": 0.7},
               {**adam, **cos, "lr": 3e-3, "weight_decay": 0.1, "max_epochs": 30}),
        Recipe("under-sgd", "underfit", real, {"arch": "mlp", "hidden": [3]},
               {"optimizer": "momentum", **cos, "lr": 0.05, "max_epochs": 30}),
        # not_learning: steps far too small, or nothing to learn
        Recipe("none-lr", "not_learning", real, {"arch": "mlp", "hidden": [64]},
               {**adam, "lr": 1e-7, "max_epochs": 15}, quick=True),
        Recipe("none-sgd", "not_learning", real, {"arch": "mlp", "hidden": [64]},
               {"optimizer": "sgd", "lr": 1e-6, "max_epochs": 15}),
        Recipe("none-random", "not_learning", {**SHAPES, "label_noise": 0.9},  # 10 classes:
               {"arch": "mlp", "hidden": [4]},  # 90% moved to another class = uniform labels
               {**adam, "lr": 1e-3, "max_epochs": 10}),
        # diverged: steps far too large
        Recipe("div-sgd", "diverged", real, {"arch": "mlp", "hidden": [64]},
               {"optimizer": "sgd", "lr": 50.0, "max_epochs": 10}, quick=True),
        Recipe("div-nan", "diverged", real, {"arch": "mlp", "hidden": [64]},
               {"optimizer": "momentum", "lr": 1e3, "max_epochs": 10}),
        Recipe("div-shapes", "diverged", SHAPES, {"arch": "mlp", "hidden": [64]},
               {**adam, "lr": 50.0, "max_epochs": 10}),
        # unstable: lr too high for a tiny batch, but not diverging
        Recipe("unstable-adam", "unstable", {**real, "batch_size": 8},
               {"arch": "mlp", "hidden": [64]}, {**adam, "lr": 0.05, "max_epochs": 15},
               quick=True),
        Recipe("unstable-sgd", "unstable", {**real, "batch_size": 8},
               {"arch": "mlp", "hidden": [64]},
               {"optimizer": "sgd", "lr": 1.0, "max_epochs": 15}),
        Recipe("unstable-sgd4", "unstable", {**real, "batch_size": 4},
               {"arch": "mlp", "hidden": [64]},
               {"optimizer": "sgd", "lr": 0.5, "max_epochs": 12}),
        # not_converged: a constant-lr run cut short (verified by training it longer)
        Recipe("short-slow", "not_converged", real, {"arch": "mlp", "hidden": [64]},
               {**adam, "lr": 1e-4, "max_epochs": 8}, long_epochs=40, quick=True),
        Recipe("short-sgd", "not_converged", real, {"arch": "mlp", "hidden": [128]},
               {"optimizer": "sgd", "lr": 0.01, "max_epochs": 5}, long_epochs=30),
        Recipe("short-cnn", "not_converged", real, DIGITS_CNN,
               {**adam, "lr": 3e-4, "max_epochs": 4}, long_epochs=12),
        Recipe("short-shapes", "not_converged", SHAPES, SMALL_CNN,
               {**adam, "lr": 1e-3, "max_epochs": 5}, long_epochs=15),
        Recipe("short-mlp-shapes", "not_converged", SHAPES, {"arch": "mlp", "hidden": [128]},
               {**adam, "lr": 3e-4, "max_epochs": 5}, long_epochs=25),
        # pruned: stopped by an epoch hook, as Optuna's pruner does
        Recipe("pruned-good", "pruned", real, {"arch": "mlp", "hidden": [128]},
               {**adam, **cos, "lr": 3e-3, "max_epochs": 20}, prune_at=3, quick=True),
        Recipe("pruned-slow", "pruned", real, {"arch": "mlp", "hidden": [64]},
               {**adam, "lr": 1e-4, "max_epochs": 20}, prune_at=3),
        Recipe("pruned-reg", "pruned", real, {"arch": "mlp", "hidden": [64], "drop_rate": 0.7},
               {**adam, **cos, "lr": 3e-3, "weight_decay": 0.1, "max_epochs": 30}, prune_at=3),
        Recipe("pruned-over", "pruned", few, {"arch": "mlp", "hidden": [256, 256]},
               {**adam, "lr": 3e-3, "max_epochs": 30}, prune_at=4),
    ]
    return r


# ------------------------------------------------------------------ running
@dataclass
class Sample:
    """One labelled learning curve and what each rule set says about it."""

    name: str
    label: str
    history: list[dict[str, Any]]
    status: str
    n_val: int
    num_classes: int
    max_epochs: int
    prune_reason: str | None = None
    confirmed: bool = True
    check: str = ""
    old: str = ""
    new: str = ""
    new_reason: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


ACCELERATOR = "cpu"  # --accelerator


def _config(rec: Recipe, seed: int, max_epochs: int | None = None) -> Any:
    from hpstudy.config import from_dict

    data = {**rec.data, "seed": seed}
    train = {**rec.train, "seed": seed, "accelerator": ACCELERATOR, "num_threads": 1}
    if max_epochs is not None:
        train["max_epochs"] = max_epochs
    return from_dict({"name": f"bench-{rec.name}", "data": data, "model": dict(rec.model),
                      "train": train, "report": {"enabled": False}})


def _fit(rec: Recipe, seed: int, max_epochs: int | None = None,
         prune_at: int | None = None) -> tuple[Any, float]:
    from hpstudy.train import fit

    def stop(record: dict[str, Any]) -> bool:  # the pruner's decision, at a fixed epoch
        return prune_at is not None and record["epoch"] >= prune_at

    t0 = time.perf_counter()
    result = fit(_config(rec, seed, max_epochs), hooks=[stop])
    return result, time.perf_counter() - t0


def run_recipe(rec: Recipe, seed: int) -> Sample:
    """Train the recipe (and its verification run) and return the labelled sample."""
    result, secs = _fit(rec, seed, prune_at=rec.prune_at)
    info = result.data_info
    reason = (f"stopped by the pruning hook at epoch {rec.prune_at}"
              if result.status == "pruned" else None)
    s = Sample(f"{rec.name}/s{seed}", rec.label, result.history, result.status,
               int(info["data.n_val"]), int(info["data.num_classes"]),
               int(rec.train["max_epochs"]), reason, seconds=secs)
    if rec.long_epochs:
        longer, secs2 = _fit(rec, seed, max_epochs=rec.long_epochs)
        s.extra["continuation"] = longer.history
        s.seconds += secs2
    s.confirmed, s.check = confirm(s)
    return s


# ------------------------------------------------------------------ label checks
def _last(xs: Sequence[float], k: int = 3) -> float:
    return statistics.fmean(xs[-k:])


def _col(h: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in h]


def confirm(s: Sample) -> tuple[bool, str]:
    """Whether the curves show the designed regime, by a plain criterion (and why).

    The criteria use fixed round numbers on the raw curves, not the diagnosis's noise
    model: they decide which runs enter the benchmark, not what a rule should say.
    """
    h, c = s.history, s.num_classes
    tl, vl = _col(h, "train_loss"), _col(h, "val_loss")
    ta, va = _col(h, "train_acc"), _col(h, "val_acc")
    finite = all(math.isfinite(x) for x in tl + vl)
    chance, ln_c = 1.0 / c, math.log(c)
    if s.label == "pruned":
        ok = s.status == "pruned" and len(h) < s.max_epochs
        return ok, f"status {s.status} after {len(h)} of {s.max_epochs} epochs"
    if s.label == "diverged":
        ok = s.status == "diverged" or (finite and max(tl) > 3 * ln_c and tl[-1] > ln_c)
        return ok, f"status {s.status}, max train loss {max(tl):.3g}, last {tl[-1]:.3g}"
    if not finite:
        return False, "a non-finite loss"
    best = max(ta + va)
    if s.label == "not_learning":
        ok = best < chance + 0.1 * (1 - chance)
        return ok, f"best accuracy {best:.3f} (chance {chance:.3f})"
    if s.label == "unstable":
        steps = list(zip(tl, tl[1:], strict=False))
        ups = sum(1 for a, b in steps if b > a)
        jump = max((b - a) / max(a, 0.01 * ln_c) for a, b in steps)  # a loss may reach 0
        learned = max(_last(ta), _last(va)) >= chance + 0.1 * (1 - chance)
        ok = ups >= len(steps) / 4 and jump >= 0.1 and learned
        return ok, (f"training loss rose in {ups} of {len(steps)} epochs, at most {jump:.0%}; "
                    f"learned beyond chance {learned}")
    if s.label == "not_converged":
        cont = s.extra["continuation"]
        later = _col(cont, "val_acc")[len(h):]
        se = math.sqrt(max(va[-1] * (1 - va[-1]), 1e-4) / s.n_val)
        gain = max(later) - va[-1] if later else 0.0
        ok = gain >= max(0.02, 3 * se)
        return ok, f"training on raised val acc by {gain:.3f} (needs {max(0.02, 3 * se):.3f})"
    third = max(2, len(tl) // 3)
    settled = (tl[-third] - tl[-1]) < 0.05 * (ln_c - min(tl))  # last third: < 5% of descent
    if s.label == "underfit":
        ok = settled and _last(ta) < 0.9 and best > chance + 0.1
        return ok, f"train acc {_last(ta):.3f}, train loss settled {settled}"
    b = vl.index(min(vl))
    rise = _last(vl) / vl[b] - 1
    gap = _last(ta) - _last(va)
    overfit = len(vl) - 1 - b >= 3 and rise >= 0.05 and gap >= 0.05 and tl[-1] < tl[b]
    if s.label == "overfit":
        return overfit, f"val loss +{rise:.1%} after epoch {b + 1}, gap {gap:.3f}"
    if s.label == "good_fit":
        # early stopping judged convergence itself; otherwise the last third must be flat
        done = settled or s.status == "early_stopped"
        ok = done and _last(ta) >= 0.9 and not overfit and max(va) - _last(va) < 0.02
        return ok, (f"train acc {_last(ta):.3f}, val loss +{rise:.1%}, gap {gap:.3f}, "
                    f"settled {done}")
    raise ValueError(f"unknown label {s.label}")


# ------------------------------------------------------------------ scoring
def judge(s: Sample) -> None:
    """Both rule sets' verdicts on the sample (the old ones never see status or n_val)."""
    s.old = old_rules.diagnose(s.history, s.num_classes).verdict
    d = diagnose(s.history, s.num_classes, status=s.status, n_val=s.n_val,
                 max_epochs=s.max_epochs, prune_reason=s.prune_reason)
    s.new, s.new_reason = d.verdict, d.reason


def scores(labels: Sequence[str], preds: Sequence[str], classes: Sequence[str]
           ) -> tuple[dict[str, tuple[float, float, float, int]], float]:
    """Per class (precision, recall, F1, support) and the macro-F1 over ``classes``.

    A class never predicted has precision 0 (its F1 is then 0 unless it has no support).
    """
    out = {}
    for k in classes:
        tp = sum(1 for y, p in zip(labels, preds, strict=True) if y == k and p == k)
        n_pred = sum(1 for p in preds if p == k)
        n_true = sum(1 for y in labels if y == k)
        prec = tp / n_pred if n_pred else 0.0
        rec = tp / n_true if n_true else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out[k] = (prec, rec, f1, n_true)
    return out, statistics.fmean(v[2] for v in out.values())


def confusion(labels: Sequence[str], preds: Sequence[str], rows: Sequence[str],
              cols: Sequence[str]) -> str:
    """A text confusion table: one row per label, one column per verdict."""
    short = {v: v.replace("not_", "n_").replace("_fit", "")[:9] for v in cols}
    head = "label \\ verdict".ljust(16) + "".join(short[c].rjust(10) for c in cols)
    lines = [head]
    for r in rows:
        cells = [sum(1 for y, p in zip(labels, preds, strict=True) if y == r and p == c)
                 for c in cols]
        lines.append(r.ljust(16) + "".join((str(x) if x else ".").rjust(10) for x in cells))
    return "\n".join(lines)


def report(samples: list[Sample], seconds: float, args: argparse.Namespace) -> str:
    """The printed result: table, macro-F1 side by side, confusions, dropped runs."""
    kept = [s for s in samples if s.confirmed]
    labels = [s.label for s in kept]
    classes = [v for v in VERDICTS if v in labels]
    old, m_old = scores(labels, [s.old for s in kept], classes)
    new, m_new = scores(labels, [s.new for s in kept], classes)
    out = [f"diagnosis accuracy: {len(kept)} labelled runs ({len(samples) - len(kept)} dropped),"
           f" seeds {args.seeds}, {'quick' if args.quick else 'full'} set, "
           f"real images: {args.dataset}, "
           f"{seconds:.0f} s of training and diagnosis",
           "",
           f"{'verdict':15s}{'n':>4s}   {'old: prec':>9s}{'recall':>8s}{'F1':>6s}"
           f"   {'new: prec':>9s}{'recall':>8s}{'F1':>6s}"]
    for k in classes:
        po, ro, fo, n = old[k]
        pn, rn, fn, _ = new[k]
        out.append(f"{k:15s}{n:4d}   {po:9.2f}{ro:8.2f}{fo:6.2f}   {pn:9.2f}{rn:8.2f}{fn:6.2f}")
    out.append(f"{'macro-F1':15s}{len(kept):4d}   {'':9s}{'':8s}{m_old:6.2f}   "
               f"{'':9s}{'':8s}{m_new:6.2f}")
    cols_old = [v for v in old_rules.VERDICTS]
    out += ["", "confusion, old rules (rows: label, columns: verdict)",
            confusion(labels, [s.old for s in kept], classes, cols_old),
            "", "confusion, new rules",
            confusion(labels, [s.new for s in kept], classes, list(VERDICTS))]
    wrong = [s for s in kept if s.new != s.label]
    if wrong:
        out += ["", "new rules, wrong calls:"]
        out += [f"  {s.name} ({s.label} -> {s.new}): {s.new_reason}" for s in wrong]
    dropped = [s for s in samples if not s.confirmed]
    if dropped:
        out += ["", "dropped (label not confirmed by its criterion):"]
        out += [f"  {s.name} ({s.label}): {s.check}" for s in dropped]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the report, return the headline numbers."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one run per verdict, digits only")
    p.add_argument("--seeds", type=int, default=None, help="seeds per recipe (default 2; quick 1)")
    p.add_argument("--save", type=Path, default=None, help="write every curve and verdict (JSON)")
    p.add_argument("--dataset", default="digits",
                   help="registry dataset for the real-image runs (default digits)")
    p.add_argument("--root", default=None, help="data folder of --dataset")
    p.add_argument("--subset", type=int, default=None,
                   help="training images kept of --dataset (large sets on a CPU)")
    p.add_argument("--accelerator", default="cpu", help="cpu (default), gpu, auto")
    args = p.parse_args(argv)
    global ACCELERATOR
    ACCELERATOR = args.accelerator
    real: dict[str, Any] = {"dataset": args.dataset}
    if args.root:
        real["root"] = args.root
    if args.subset:
        real["subset"] = args.subset
    args.seeds = args.seeds or (1 if args.quick else 2)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    chosen = [r for r in recipes(real) if r.quick or not args.quick]
    t0 = time.perf_counter()
    samples = []
    for seed in range(args.seeds):
        for rec in chosen:
            s = run_recipe(rec, seed)
            judge(s)
            samples.append(s)
            print(f"  {s.name:24s} {s.label:14s} {s.seconds:5.1f}s  old {s.old:13s} "
                  f"new {s.new:14s}{'' if s.confirmed else '  (dropped: ' + s.check + ')'}",
                  file=sys.stderr, flush=True)
    seconds = time.perf_counter() - t0
    print(report(samples, seconds, args))
    kept = [s for s in samples if s.confirmed]
    classes = [v for v in VERDICTS if v in {s.label for s in kept}]
    result = {
        "samples": len(samples), "kept": len(kept), "seconds": seconds,
        "macro_f1_old": scores([s.label for s in kept], [s.old for s in kept], classes)[1],
        "macro_f1_new": scores([s.label for s in kept], [s.new for s in kept], classes)[1],
    }
    if args.save:
        args.save.write_text(json.dumps([{
            "name": s.name, "label": s.label, "confirmed": s.confirmed, "check": s.check,
            "status": s.status, "n_val": s.n_val, "num_classes": s.num_classes,
            "max_epochs": s.max_epochs, "prune_reason": s.prune_reason, "old": s.old,
            "new": s.new, "history": s.history} for s in samples], default=float))
    return result


if __name__ == "__main__":
    main()
