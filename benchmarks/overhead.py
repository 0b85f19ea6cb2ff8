"""What an hpstudy trial costs over the same training in a plain PyTorch loop.

For each workload the same model (registry builder, same init), data
(the same normalized tensors), epochs, batch size, optimizer (Adam, constant
lr) and one CPU thread are trained two ways, in interleaved repetitions
(raw, trial, raw, trial, ...) after one warm-up of each, and the medians are
compared:

* **raw**: a plain loop over tensors already in memory: ``randperm`` shuffle,
  index slices, forward/backward/step, a no-grad validation pass, loss and
  accuracy summed on the device and read once per epoch, the best epoch's
  weights copied (as a trial keeps them).
* **trial**: one trial of an open hpstudy study (Optuna SQLite storage,
  MLflow SQLite store, both created once before the repetitions): Optuna
  samples, the MLflow child run opens, Lightning trains, every epoch is
  logged and reported for pruning, the run is recorded and closed. Its epoch
  times are the run's own ``epoch_time_s``.

Printed per workload: the ratio for the epochs alone and for the whole trial,
then where the extra time goes: per step (the epochs' extra time over the
raw loop's, divided by the steps), per epoch (between-epoch work: the MLflow
log call, the Optuna report and prune decision, Lightning's epoch hooks) and
per trial (named phases, timed by wrapping hpstudy's own functions; the rest
is Lightning's fit set-up and tear-down and Optuna's bookkeeping)::

    python benchmarks/overhead.py [--repeats 5] [--only digits-b16,...] [--quick] [--write]

``--quick`` runs tiny versions (tests); ``--write`` pastes the output into
``benchmarks/README.md``. Target: whole trial <= 1.05x the raw loop.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib
import io
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _record import recorded  # noqa: E402

TARGET = 1.05


@dataclass
class Workload:
    name: str
    data: dict[str, Any]
    model: dict[str, Any]
    epochs: int
    quick_data: dict[str, Any] = field(default_factory=dict)  # merged in for --quick


DIGITS_CNN = {"arch": "baseline_cnn", "widths": [16, 32], "hidden": 64, "init": "he_normal"}
WORKLOADS = [
    Workload("digits-b16", {"dataset": "digits", "batch_size": 16}, DIGITS_CNN, 15,
             {"subset": 128}),
    Workload("digits-b64", {"dataset": "digits", "batch_size": 64}, DIGITS_CNN, 15,
             {"subset": 128}),
    Workload("baseline-28px-10k",
             {"dataset": "synthetic", "batch_size": 64, "val_split": 0.2, "image_size": 28,
              "channels": 1, "n_samples": 10000, "test_samples": 0},
             {"arch": "baseline_cnn", "init": "he_normal"}, 2, {"n_samples": 200}),
    Workload("preact_resnet20-32px",
             {"dataset": "synthetic", "batch_size": 64, "val_split": 0.2, "image_size": 32,
              "channels": 3, "n_samples": 1500, "test_samples": 0},
             {"arch": "preact_resnet20", "init": "he_normal"}, 1, {"n_samples": 100}),
]


def study_dict(w: Workload, quick: bool) -> dict[str, Any]:
    """The hpstudy side: one fixed configuration, searched over a one-value space."""
    data = {**w.data, **(w.quick_data if quick else {})}
    return {
        "name": f"overhead-{w.name}",
        "data": data,
        "model": w.model,
        "train": {"max_epochs": 1 if quick else w.epochs, "optimizer": "adam", "lr": 1e-3,
                  "scheduler": "constant", "num_threads": 1, "accelerator": "cpu"},
        "search": {"n_trials": 1000, "sampler": {"name": "tpe", "seed": 0},
                   "pruner": {"name": "median"},
                   "space": {"train.lr": {"type": "categorical", "choices": [1e-3]}}},
        "report": {"enabled": False},
    }


# ------------------------------------------------------------------ timers
class Timers:
    """Seconds spent in wrapped functions, by label (wrappers removed on exit)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr, None)
        if original is None:  # a function that no longer exists: nothing to time
            return
        raw = owner.__dict__.get(attr, original) if isinstance(owner, type) else original
        if isinstance(raw, staticmethod | classmethod):
            return

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - t0
                self.calls[label] += 1

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, raw))

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def close(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def instrument(timers: Timers) -> None:
    """Time hpstudy's own phases of a trial (names looked up, skipped when absent)."""
    import lightning.pytorch as pl
    import optuna

    # modules by full name: hpstudy.train re-exports functions named like them
    obj = importlib.import_module("hpstudy.search.objective")
    registry = importlib.import_module("hpstudy.track.registry")
    run = importlib.import_module("hpstudy.track.run")
    tracker = importlib.import_module("hpstudy.track.tracker")
    ex = importlib.import_module("hpstudy.train.execute")
    fitmod = importlib.import_module("hpstudy.train.fit")

    timers.wrap(obj.Objective, "__call__", "objective (all of the trial's own work)")
    timers.wrap(tracker.Tracker, "start_run", "MLflow: open the trial's run + params")
    timers.wrap(tracker.Tracker, "log_epoch", "MLflow: log one epoch [per epoch]")
    timers.wrap(run.TrackedRun, "record", "MLflow: record result, diagnose, close run")
    timers.wrap(registry, "log_checkpoint", "MLflow: best weights as checkpoint")
    timers.wrap(obj.Objective, "_log_history", "MLflow: study history point")
    timers.wrap(obj, "record_owner", "Optuna: record the trial's owner")
    timers.wrap(obj, "release_memory", "memory: gc.collect + CUDA cache after the trial")
    timers.wrap(ex, "fit", "fit() in all")
    timers.wrap(fitmod, "build_datamodule", "data: build the data module")
    timers.wrap(fitmod, "build_module", "data+model: prepare data, build the module")
    timers.wrap(fitmod, "build_trainer", "Lightning: build the Trainer")
    timers.wrap(pl.Trainer, "fit", "Lightning: Trainer.fit")
    timers.wrap(optuna.trial.Trial, "report", "Optuna: report [per epoch]")
    timers.wrap(optuna.trial.Trial, "should_prune", "Optuna: should_prune [per epoch]")


# ------------------------------------------------------------------ raw loop
@dataclass
class RawData:
    x: torch.Tensor
    y: torch.Tensor
    vx: torch.Tensor
    vy: torch.Tensor
    num_classes: int
    in_chans: int
    input_size: int


def raw_data(cfg: Any) -> RawData:
    """The trial's own training and validation tensors, normalized once (a script's setup)."""
    from hpstudy.train.fit import build_datamodule

    dm = build_datamodule(cfg)
    dm.prepare()
    tr, va = dm.dataloader("train"), dm.dataloader("val")
    return RawData(dm.normalize(tr.x), tr.y, dm.normalize(va.x), va.y, dm.num_classes,
                   dm.in_chans, dm.input_size)


def raw_run(cfg: Any, d: RawData) -> tuple[float, list[float], float]:
    """The plain loop: (whole run s, epoch times s, best val acc)."""
    from hpstudy.models import create_model, init_weights

    start = time.perf_counter()
    torch.manual_seed(cfg.train.seed)
    net = create_model(cfg.model.arch, num_classes=d.num_classes, in_chans=d.in_chans,
                       input_size=d.input_size, **cfg.model.kwargs())
    init_weights(net, cfg.model.init)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.train.lr)
    crit = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(cfg.train.seed)
    bs, ebs = cfg.data.batch_size, 4 * cfg.data.batch_size
    epochs: list[float] = []
    best, best_state = -1.0, None
    for _ in range(cfg.train.max_epochs):
        t0 = time.perf_counter()
        net.train()
        order = torch.randperm(len(d.y), generator=gen)
        loss_sum, correct = torch.zeros(()), torch.zeros(())
        for i in range(0, len(d.y), bs):
            idx = order[i : i + bs]
            x, y = d.x.index_select(0, idx), d.y.index_select(0, idx)
            logits = net(x)
            loss = crit(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
        net.eval()
        vloss, vcorrect = torch.zeros(()), torch.zeros(())
        with torch.no_grad():
            for i in range(0, len(d.vy), ebs):
                x, y = d.vx[i : i + ebs], d.vy[i : i + ebs]
                logits = net(x)
                vloss += crit(logits, y) * len(y)
                vcorrect += (logits.argmax(1) == y).sum()
        n, nv = len(d.y), len(d.vy)
        _, _, _, val_acc = torch.stack([loss_sum / n, correct / n, vloss / nv,
                                        vcorrect / nv]).tolist()  # one sync per epoch
        epochs.append(time.perf_counter() - t0)
        if val_acc > best:
            best = val_acc
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    del best_state
    return time.perf_counter() - start, epochs, best


# ------------------------------------------------------------------ trial
@dataclass
class TrialTiming:
    whole: float
    epochs: list[float]
    phases: dict[str, float]
    calls: dict[str, int]
    value: float | None


class TrialRunner:
    """An open study (stores created once) that runs one trial per call."""

    def __init__(self, study: dict[str, Any], root: Path, timers: Timers):
        from hpstudy.config import from_dict
        from hpstudy.search.study import connect

        self.cfg = from_dict(study)
        self.session = connect(self.cfg, f"sqlite:///{root}/optuna.db",
                               f"sqlite:///{root}/mlflow.db")
        self.timers = timers

    def run(self) -> TrialTiming:
        from hpstudy.search.objective import Objective
        from hpstudy.search.progress import Progress

        s = self.session
        bar = Progress(1, self.cfg.search.metric, enabled=False)
        self.timers.reset()
        with contextlib.redirect_stdout(io.StringIO()):
            t0 = time.perf_counter()
            s.study.optimize(Objective(s), n_trials=1, catch=(Exception,), callbacks=[bar],
                             gc_after_trial=False)
            whole = time.perf_counter() - t0
        bar.close()
        trial = s.study.get_trials(deepcopy=False)[-1]
        run_id = trial.user_attrs.get("mlflow_run_id")
        hist = s.tracker.client.get_metric_history(run_id, "epoch_time_s") if run_id else []
        epochs = [m.value for m in sorted(hist, key=lambda m: m.step)]
        return TrialTiming(whole, epochs, dict(self.timers.seconds), dict(self.timers.calls),
                           trial.value)


# ------------------------------------------------------------------ report
@dataclass
class Row:
    workload: str
    steps_per_epoch: int
    epochs: int
    raw_whole: float
    raw_epochs: float
    trial_whole: float
    trial_epochs: float
    phases: dict[str, float]
    calls: dict[str, int]
    raw_value: float
    trial_value: float | None

    @property
    def epochs_ratio(self) -> float:
        return self.trial_epochs / self.raw_epochs

    @property
    def whole_ratio(self) -> float:
        return self.trial_whole / self.raw_whole


def _median_phases(runs: list[TrialTiming]) -> tuple[dict[str, float], dict[str, int]]:
    """The phases of the repetition with the median whole time (so its parts add up)."""
    mid = sorted(runs, key=lambda r: r.whole)[(len(runs) - 1) // 2]
    return dict(mid.phases), dict(mid.calls)


def breakdown(row: Row) -> list[str]:
    """Where the trial's extra time goes: per step, per epoch, per trial."""
    p, c = row.phases, row.calls
    steps = row.steps_per_epoch * row.epochs
    lines = []
    extra_epochs = row.trial_epochs - row.raw_epochs
    lines.append(f"  per step   {1000 * extra_epochs / max(steps, 1):+8.3f} ms  "
                 f"(epochs: {row.trial_epochs:.3f}s vs raw {row.raw_epochs:.3f}s "
                 f"over {steps} train steps + validation)")
    log_epoch = p.get("MLflow: log one epoch [per epoch]", 0.0)
    n_ep = max(c.get("MLflow: log one epoch [per epoch]", row.epochs), 1)
    fit_all = p.get("Lightning: Trainer.fit", 0.0)
    between = fit_all - row.trial_epochs
    report = p.get("Optuna: report [per epoch]", 0.0) + p.get("Optuna: should_prune [per epoch]",
                                                             0.0)
    lines.append(f"  per epoch  {1000 * between / max(row.epochs, 1):8.2f} ms  "
                 f"Trainer.fit outside the epochs / epochs, of which MLflow log_epoch "
                 f"{1000 * log_epoch / n_ep:.2f} ms, Optuna report + should_prune "
                 f"{1000 * report / n_ep:.2f} ms")
    whole_extra = row.trial_whole - row.raw_whole
    lines.append(f"  per trial  {whole_extra - extra_epochs:8.3f} s   outside the epochs "
                 f"(trial {row.trial_whole:.3f}s vs raw {row.raw_whole:.3f}s in all):")
    objective = p.get("objective (all of the trial's own work)", 0.0)
    fit = p.get("fit() in all", 0.0)
    named = [k for k in p if k not in ("objective (all of the trial's own work)",
                                       "fit() in all", "Lightning: Trainer.fit")
             and "[per epoch]" not in k]
    for k in sorted(named, key=lambda k: -p[k]):
        lines.append(f"    {p[k]:7.3f} s  {k}")
    inside_fit = sum(p.get(k, 0.0) for k in ("data: build the data module",
                                             "data+model: prepare data, build the module",
                                             "Lightning: build the Trainer"))
    lines.append(f"    {fit - fit_all - inside_fit:7.3f} s  fit(): the rest (seeding, device "
                 f"checks, results, test evaluation)")
    lines.append(f"    {between:7.3f} s  Trainer.fit outside its epochs (set-up, hooks, "
                 f"tear-down)")
    top = [k for k in named if k not in ("data: build the data module",
                                         "data+model: prepare data, build the module",
                                         "Lightning: build the Trainer")]
    lines.append(f"    {objective - fit - sum(p[k] for k in top):7.3f} s  objective: the rest "
                 f"(sampling the config, user attrs)")
    lines.append(f"    {row.trial_whole - objective:7.3f} s  Optuna: ask, tell, callbacks "
                 f"(outside the objective)")
    lines.append(f"    raw run outside its epochs: {row.raw_whole - row.raw_epochs:.3f} s "
                 f"(model build, best-weight copies)")
    return lines


def measure(w: Workload, repeats: int, quick: bool, root: Path) -> Row:
    from hpstudy.config import from_dict

    study = study_dict(w, quick)
    cfg = from_dict(study)
    data = raw_data(cfg)
    timers = Timers()
    try:
        runner = TrialRunner(study, root / w.name, timers)
        instrument(timers)
        raw_run(cfg, data)  # warm-up: first-call allocations, lazy imports
        runner.run()        # warm-up: and the first trial's checkpoint (better than none)
        raws, trials = [], []
        for _ in range(repeats):  # interleaved: a busy neighbour hits both sides alike
            raws.append(raw_run(cfg, data))
            trials.append(runner.run())
    finally:
        timers.close()
    phases, calls = _median_phases(trials)
    bs = cfg.data.batch_size
    return Row(
        workload=w.name, steps_per_epoch=-(-len(data.y) // bs), epochs=cfg.train.max_epochs,
        raw_whole=statistics.median(r[0] for r in raws),
        raw_epochs=statistics.median(sum(r[1]) for r in raws),
        trial_whole=statistics.median(t.whole for t in trials),
        trial_epochs=statistics.median(sum(t.epochs) for t in trials),
        phases=phases, calls=calls, raw_value=raws[-1][2], trial_value=trials[-1].value,
    )


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated workload names")
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 epoch, 1 repeat")
    parser.add_argument("--write", action="store_true", help="paste the output into README.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = 1 if args.quick else args.repeats
    chosen = [w for w in WORKLOADS if not args.only or w.name in args.only.split(",")]
    rows: list[Row] = []
    with recorded("overhead.py", argv if argv is not None else sys.argv[1:], args.write), \
            tempfile.TemporaryDirectory(prefix="hpstudy-overhead-") as tmp:
        print(f"hpstudy trial vs a plain PyTorch loop: medians of {repeats} interleaved "
              f"repetitions, 1 thread" + (" (quick)" if args.quick else ""))
        for w in chosen:
            row = measure(copy.deepcopy(w), repeats, args.quick, Path(tmp))
            rows.append(row)
            print(f"\n{row.workload}: {row.epochs} epochs x {row.steps_per_epoch} steps; "
                  f"best val_acc raw {row.raw_value:.4f}, trial {row.trial_value:.4f}")
            print(f"  epochs only   raw {row.raw_epochs:7.3f}s  trial {row.trial_epochs:7.3f}s"
                  f"  {row.epochs_ratio:5.2f}x")
            print(f"  whole trial   raw {row.raw_whole:7.3f}s  trial {row.trial_whole:7.3f}s"
                  f"  {row.whole_ratio:5.2f}x  (target <= {TARGET:.2f}x)")
            for line in breakdown(row):
                print(line)
        print("\nsummary (trial / raw):")
        print(f"  {'workload':22s} {'epochs':>7s} {'whole':>7s}")
        for row in rows:
            print(f"  {row.workload:22s} {row.epochs_ratio:6.2f}x {row.whole_ratio:6.2f}x")
    return rows


if __name__ == "__main__":
    main()
