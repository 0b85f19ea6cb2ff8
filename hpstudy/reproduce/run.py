"""``hpstudy reproduce``: train thesis cells with their recipes and compare with the paper.

Every (cell, seed) is one run: :func:`hpstudy.train.execute` on the cell's
concrete config (:func:`~hpstudy.reproduce.cells.cell_config`), recorded by
:func:`hpstudy.track.tracked_run` into the MLflow experiment
``thesis-reproduction`` as ``<cell>-seed<k>`` with the tags ``hpstudy.kind=
reproduction``, ``hpstudy.cell``, ``hpstudy.seed``, ``hpstudy.smoke``,
``hpstudy.epochs_scale`` and ``hpstudy.config_hash``. Rerunning resumes: a
(cell, seed) with a FINISHED run of the same config hash is not trained again.

The results table has one row per chosen cell: the paper's error, the measured
test error (mean and sample std over the finished seeds), the parameter counts
(the paper's as printed, ours counted on the meta device), the difference in
points and whether it is within 0.5 points. A row's ``kind`` says what its
number is: ``reproduction`` (the full recipe on real data), ``shortened``
(fewer epochs), ``modified`` (``--set`` changed what is trained, not just where
or how it runs) or ``smoke`` (generated data): only reproductions get a verdict.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._proc import Interrupted
from ..config import StudyConfig, resolve_key, trial_params
from ..names import (
    COMPLETE,
    KIND_REPRODUCTION,
    REPRODUCTION_EXPERIMENT,
    RUNNING,
    TAG_CELL,
    TAG_CONFIG_HASH,
    TAG_EPOCHS_SCALE,
    TAG_KIND,
    TAG_SEED,
    TAG_SMOKE,
    TAG_STATE,
    TAG_STUDY,
)
from .cells import Cell, cell_config, recipe_config

WITHIN_POINTS = 0.5  # the bar: a reproduction within half a point of the paper
KINDS = ("reproduction", "shortened", "modified", "smoke")
# overrides that change where or how a run executes, not what it trains: a row keeps
# its "reproduction" kind with these (anything else makes it "modified")
RUN_ONLY_KEYS = ("data.root", "data.download", "data.num_workers", "data.eval_batch_size",
                 "train.accelerator", "train.devices", "train.strategy", "train.num_nodes",
                 "train.num_threads", "train.isolate", "train.deterministic",
                 "tracking.artifact_location")
RESULT_COLUMNS = (
    "cell", "network", "dataset", "kind", "n_seeds", "paper_error_pct", "error_pct",
    "error_std", "diff_points", "within_0_5", "paper_params", "params", "params_diff_pct",
    "epochs", "recipe_epochs", "study", "note", "run_ids",
)
# where files are read from and how many loader workers: not what is trained
_NOT_IN_HASH = ("data.root", "data.download", "data.num_workers")


def run_hash(cfg: StudyConfig) -> str:
    """A short fingerprint of what a run trains (resume matches it; the data root is left out)."""
    params = {k: v for k, v in trial_params(cfg).items() if k not in _NOT_IN_HASH}
    return hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_name(cell: str, seed: int) -> str:
    """``nin-cifar10+-seed0``."""
    return f"{cell}-seed{seed}"


def kind_of(smoke: bool, epochs_scale: float, modified: bool = False) -> str:
    """``smoke``, ``shortened``, ``modified`` or ``reproduction``."""
    if smoke:
        return "smoke"
    if epochs_scale != 1.0:
        return "shortened"
    return "modified" if modified else "reproduction"


def our_params(cfg: StudyConfig) -> int:
    """The cell's model's parameters, counted on the meta device (no memory, no init)."""
    import torch

    from ..data import describe_dataset
    from ..models import count_params, create_model, model_info

    meta = describe_dataset(cfg.data.dataset, **cfg.data.options)
    size = max(meta.image_size, model_info(cfg.model.arch).min_size)
    with torch.device("meta"):
        net = create_model(cfg.model.arch, num_classes=meta.num_classes, in_chans=meta.in_chans,
                           input_size=size, **cfg.model.kwargs())
    return count_params(net)


@dataclass
class ReproductionPlan:
    """The chosen cells, seeds and settings, with every run's config built and validated."""

    cells: list[Cell]
    seeds: list[int]
    epochs_scale: float = 1.0
    smoke: bool = False
    modified: bool = False  # overrides changed what is trained
    configs: dict[tuple[str, int], StudyConfig] = field(default_factory=dict)
    recipe_epochs: dict[str, int] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return kind_of(self.smoke, self.epochs_scale, self.modified)

    def runs(self) -> list[tuple[Cell, int]]:
        return [(c, s) for c in self.cells for s in self.seeds]


def plan_reproduction(cells: list[Cell], *, seeds: int = 1, epochs_scale: float = 1.0,
                      smoke_root: str | Path | None = None, folder: str | Path | None = None,
                      overrides: dict[str, Any] | None = None) -> ReproductionPlan:
    """Build and validate the config of every (cell, seed); nothing is written.

    Raises:
        ConfigError: a bad table, study file, setting or override (naming it).
    """
    from ..config import ConfigError

    if seeds < 1:
        raise ConfigError("--seeds", None, f"must be at least 1 (got {seeds})")
    if not 0 < epochs_scale <= 1:
        raise ConfigError("--epochs-scale", None, f"must be in (0, 1] (got {epochs_scale:g})")
    plan = ReproductionPlan(list(cells), list(range(seeds)), epochs_scale, smoke_root is not None)
    plan.modified = any(resolve_key(k) not in RUN_ONLY_KEYS for k in overrides or {})
    for cell in plan.cells:
        for seed in plan.seeds:
            plan.configs[(cell.id, seed)] = cell_config(
                cell, seed, folder=folder, epochs_scale=epochs_scale, smoke_root=smoke_root,
                overrides=overrides)
        plan.recipe_epochs[cell.id] = recipe_config(cell, folder).train.max_epochs
    return plan


@dataclass
class ReproductionSummary:
    """What ``hpstudy reproduce`` prints at the end."""

    plan: ReproductionPlan
    rows: list[dict[str, Any]]
    tracking_uri: str
    experiment_id: str
    ran: int = 0
    resumed: int = 0
    failed: list[str] = field(default_factory=list)  # "<run name>: <reason>"
    csv_path: str | None = None
    report_path: str | None = None
    duration_s: float = 0.0


def _tracker(tracking_uri: str) -> Any:
    from ..track import Tracker

    return Tracker(tracking_uri, REPRODUCTION_EXPERIMENT)


def finished_runs(tracker: Any, plan: ReproductionPlan) -> dict[tuple[str, int], Any]:
    """``(cell, seed) -> MLflow run`` of FINISHED, COMPLETE runs of the plan's exact configs."""
    wanted = {key: run_hash(cfg) for key, cfg in plan.configs.items()}
    out: dict[tuple[str, int], Any] = {}
    runs = tracker.client.search_runs(
        [tracker.experiment_id],
        filter_string=f"tags.`{TAG_KIND}` = '{KIND_REPRODUCTION}' and attributes.status = "
                      "'FINISHED'",
        max_results=50000, order_by=["attributes.start_time DESC"])
    for run in runs:
        tags = run.data.tags
        try:
            key = (tags[TAG_CELL], int(tags[TAG_SEED]))
        except (KeyError, ValueError):
            continue
        if tags.get(TAG_STATE) == COMPLETE and wanted.get(key) == tags.get(TAG_CONFIG_HASH):
            out.setdefault(key, run)  # the newest one
    return out


def _train(tracker: Any, plan: ReproductionPlan, cell: Cell, seed: int) -> str | None:
    """Train one (cell, seed) into its own run; returns a failure reason or None."""
    from ..track import tracked_run
    from ..track.run import failure_reason
    from ..train import execute, uses_gpu

    cfg = plan.configs[(cell.id, seed)]
    tags = {TAG_KIND: KIND_REPRODUCTION, TAG_CELL: cell.id, TAG_SEED: seed,
            TAG_CONFIG_HASH: run_hash(cfg), TAG_SMOKE: str(plan.smoke).lower(),
            TAG_EPOCHS_SCALE: plan.epochs_scale, TAG_STUDY: cfg.name, TAG_STATE: RUNNING,
            "hpstudy.paper_error_pct": cell.error_pct}
    name = run_name(cell.id, seed)
    try:
        with tracked_run(tracker, name, tags=tags, params=trial_params(cfg),
                         gpu_metrics=uses_gpu(cfg)) as run:
            result = execute(cfg, [run.log_epoch], label=f"reproduce-{name}",
                             on_failure_log=run.log_artifact)
            run.record(result, cfg)
    except Exception as e:  # noqa: BLE001 - one cell failing must not end the others
        return failure_reason(e)
    if result.state != COMPLETE:
        return result.failure or result.status
    if not result.test:
        return "no test split was evaluated"
    return None


def run_reproduction(plan: ReproductionPlan, tracking_uri: str, *, train: bool = True,
                     echo: Callable[[str], Any] | None = None) -> ReproductionSummary:
    """Train every missing (cell, seed) of the plan, then tabulate all of its finished runs.

    Args:
        plan: from :func:`plan_reproduction`.
        tracking_uri: the MLflow store.
        train: False tabulates the runs already there (``--no-train``).
        echo: called with one progress line per run.
    """
    from ..train import release_memory

    say = echo or (lambda _line: None)
    start = time.perf_counter()
    tracker = _tracker(tracking_uri)
    done = finished_runs(tracker, plan)
    todo = [(c, s) for c, s in plan.runs() if (c.id, s) not in done] if train else []
    summary = ReproductionSummary(plan, [], tracker.uri, tracker.experiment_id,
                                  resumed=len(plan.runs()) - len(todo) if train else 0)
    if train:
        say(f"reproduce    {len(plan.cells)} cell(s) x {len(plan.seeds)} seed(s), {plan.kind}: "
            f"{len(done)} already finished, {len(todo)} to run")
    try:
        for i, (cell, seed) in enumerate(todo, start=1):
            t0 = time.perf_counter()
            reason = _train(tracker, plan, cell, seed)
            name = run_name(cell.id, seed)
            if reason:
                summary.failed.append(f"{name}: {reason}")
                say(f"[{i}/{len(todo)}] {name}: FAILED ({reason})")
            else:
                summary.ran += 1
                say(f"[{i}/{len(todo)}] {name}: done ({time.perf_counter() - t0:.1f}s)")
            release_memory()
    except Interrupted as e:
        e.progress = f"{summary.ran} run(s) finished now (finished runs are kept)"
        raise
    runs = finished_runs(tracker, plan)
    for cell in plan.cells:
        found = [runs[(cell.id, s)] for s in plan.seeds if (cell.id, s) in runs]
        errors = [100.0 * (1.0 - r.data.metrics.get("test_acc", math.nan)) for r in found]
        summary.rows.append(result_row(cell, plan, errors, [r.info.run_id for r in found]))
    summary.duration_s = time.perf_counter() - start
    return summary


def result_row(cell: Cell, plan: ReproductionPlan, errors: list[float],
               run_ids: list[str] | None = None) -> dict[str, Any]:
    """One row of the results table (measured columns empty when no run finished).

    Args:
        cell: the table cell.
        plan: the plan (kind, configs, recipe epochs).
        errors: measured test errors in %, one per finished seed (non-finite ones dropped).
        run_ids: the runs they come from.
    """
    errors = [e for e in errors if math.isfinite(e)]
    cfg = plan.configs[(cell.id, plan.seeds[0])]
    params = our_params(cfg)
    mean = statistics.fmean(errors) if errors else None
    std = statistics.stdev(errors) if len(errors) > 1 else (0.0 if errors else None)
    diff = None if mean is None else mean - cell.error_pct
    within = "" if diff is None or plan.kind != "reproduction" else \
        ("yes" if abs(diff) <= WITHIN_POINTS else "no")
    return {
        "cell": cell.id, "network": cell.network, "dataset": cell.dataset, "kind": plan.kind,
        "n_seeds": len(errors), "paper_error_pct": cell.error_pct,
        "error_pct": None if mean is None else round(mean, 4),
        "error_std": None if std is None else round(std, 4),
        "diff_points": None if diff is None else round(diff, 4), "within_0_5": within,
        "paper_params": cell.params, "params": params,
        "params_diff_pct": round(100.0 * (params / cell.params - 1.0), 2),
        "epochs": cfg.train.max_epochs, "recipe_epochs": plan.recipe_epochs[cell.id],
        "study": cell.study, "note": cell.note,
        "run_ids": " ".join(run_ids or []),
    }
