"""Ablations: does each change help alone, and combined with the others?

The file's schema lives with the config stack (:mod:`hpstudy.config.ablation`);
this module plans the cells and runs them. Every cell x seed is one run: the
base config with the cell's overrides and ``train.seed`` = ``data.seed`` = the
seed, run by :func:`hpstudy.train.execute` (in a child process when the cell
asks for isolation, several devices or DDP) and recorded by
:func:`hpstudy.track.tracked_run` like any hpstudy run (params, per-epoch
metrics, ``config.yaml``, ``history.csv``, diagnosis) into the ablation's
MLflow experiment, nested under one summary run that holds the statistics.
Rerunning the same command resumes: a (cell, seed) with a FINISHED run of the
same concrete config (tag ``hpstudy.config_hash``) is not run again; a failed
one is.

Every problem in the file, and every cell's concrete config, is checked before
anything is written (:class:`~hpstudy.config.ConfigError`, exit 2 in the CLI).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._proc import Interrupted
from ..analyze.ablation import (
    AblationData,
    AblationStats,
    Cell,
    Design,
    analyze_ablation,
    collect_ablation,
    diagnose_cells,
    search_ablation_runs,
    stats_json,
)
from ..config import (
    ABLATION_SET_KEYS,
    SEED_KEYS,
    AblationFile,
    ConfigError,
    StudyConfig,
    apply_overrides,
    from_dict,
    parse_ablation,
    parse_set,
    read_ablation,
    read_yaml,
    resolve_key,
    set_source,
    trial_params,
)
from ..config.ablation import _overlap
from ..names import (
    ATTR_DIAGNOSIS,
    KIND_ABLATION,
    KIND_ABLATION_SUMMARY,
    RUNNING,
    TAG_ABLATION,
    TAG_CELL,
    TAG_CELL_LABEL,
    TAG_CONFIG_HASH,
    TAG_FACTOR_PREFIX,
    TAG_KIND,
    TAG_SEED,
    TAG_STATE,
)
from ..track import Tracker, tracked_run
from ..track.run import failure_reason
from ..train import FitResult, execute, release_memory, uses_gpu
from .study import end_status

SUMMARY_KIND = KIND_ABLATION_SUMMARY  # hpstudy.kind of the run holding statistics and report
RUN_KIND = KIND_ABLATION


# ------------------------------------------------------------------ plan
def config_hash(cfg: StudyConfig) -> str:
    """A short fingerprint of a run's hyperparameters (resume matches it)."""
    text = json.dumps(trial_params(cfg), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass
class AblationPlan:
    """A validated ablation: the design, its cells and every run's concrete config.

    Attributes:
        spec: the parsed file.
        source: where it came from (file path, for messages).
        design: factors, levels, baselines for the statistics.
        base: the base study config with ``overrides`` and ``--set`` applied.
        cells: the cells to train, in order.
        configs: cell id -> its concrete config (seeds set per run by :meth:`config`).
    """

    spec: AblationFile
    source: str
    design: Design
    base: StudyConfig
    cells: list[Cell]
    configs: dict[str, StudyConfig]
    _hashes: dict[tuple[str, int], str] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def experiment(self) -> str:
        return self.spec.tracking.experiment or self.spec.name

    @property
    def seeds(self) -> list[int]:
        return list(self.spec.seeds)

    def tracking_uri(self, flag: str | None = None) -> str:
        """Flag > ablation file > base study file > $MLFLOW_TRACKING_URI > default."""
        return self.base.tracking_uri(flag or self.spec.tracking.uri)

    def config(self, cell: str, seed: int) -> StudyConfig:
        """The concrete config of one run."""
        return self.configs[cell].concrete(
            {k: seed for k in SEED_KEYS}, source=f"{self.source}: cell {cell}, seed {seed}")

    def config_hash(self, cell: str, seed: int) -> str:
        key = (cell, seed)
        if key not in self._hashes:
            self._hashes[key] = config_hash(self.config(cell, seed))
        return self._hashes[key]

    def hashes(self) -> dict[tuple[str, int], str]:
        """``(cell, seed) -> config hash`` of every planned run."""
        return {(c.id, s): self.config_hash(c.id, s) for c in self.cells for s in self.seeds}

    def data_sections(self) -> list[Any]:
        """The distinct ``data:`` sections the cells read (a DataConfig each)."""
        seen: dict[str, Any] = {}
        for cfg in self.configs.values():
            seen.setdefault(json.dumps(cfg.to_dict()["data"], sort_keys=True), cfg.data)
        return list(seen.values())


def _split_set(items: list[str] | dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set`` items -> (ablation-level values, base-config overrides)."""
    values = parse_set(items) if isinstance(items, list) else dict(items or {})
    top = {k: v for k, v in values.items() if k in ABLATION_SET_KEYS}
    rest = {k: v for k, v in values.items() if k not in ABLATION_SET_KEYS}
    return top, rest


def _base_raw(spec: AblationFile, source: str, folder: Path | None) -> tuple[dict[str, Any], str]:
    if isinstance(spec.base, dict):
        return spec.base, f"{source}: base"
    p = Path(spec.base)
    if not p.is_absolute() and folder is not None and (folder / p).is_file():
        p = folder / p  # relative to the ablation file, like an include
    if not p.is_file():
        raise ConfigError(source, "base", f"no such study file: {spec.base}")
    return read_yaml(p), str(p)


def plan_ablation(raw: dict[str, Any], source: str = "<ablation>",
                  overrides: list[str] | dict[str, Any] | None = None,
                  folder: Path | None = None) -> AblationPlan:
    """Validate an ablation and every cell's concrete config; nothing is written.

    Args:
        raw: the parsed ablation file.
        source: its name in messages (the path).
        overrides: ``--set`` items: ``seeds``, ``design`` and ``metric`` change the
            ablation; any other key overrides the base config of every cell (a
            key a factor sets cannot be overridden).
        folder: where a relative ``base:`` path is looked up first.

    Raises:
        ConfigError: naming the file (or flag, or cell), the field and the problem.
    """
    top, base_set = _split_set(overrides)
    raw = {**raw, **top}
    try:
        spec = parse_ablation(raw, source)
    except ConfigError as e:
        if top and e.field and e.field.split(".")[0] in top:
            raise ConfigError("--set", e.field, e.message) from None
        raise

    fkeys = spec.factor_keys()
    for src, given in ((f"{source}: overrides", spec.overrides), ("--set", base_set)):
        for k in given:
            key = resolve_key(k)
            if key in SEED_KEYS:
                raise ConfigError(src, k, "seeds come from the ablation's `seeds:` list")
            hit = next((f for fk, f in fkeys.items() if _overlap(key, fk)), None)
            if hit:
                raise ConfigError(src, k, f"factor {hit!r} sets this key; change its levels "
                                          "instead")

    base_raw, base_src = _base_raw(spec, source, folder)
    base = from_dict(base_raw, base_src)
    if spec.overrides:
        base = apply_overrides(base.to_dict(), spec.overrides, source=f"{source}: overrides")
    if base_set:
        base = apply_overrides(base.to_dict(), base_set, source=set_source(base_set))
    if spec.metric.startswith("test_") and not base.train.evaluate_test:
        raise ConfigError(source, "metric", f"{spec.metric} needs train.evaluate_test: true in "
                                            "the base config (or overrides)")

    design = Design(
        kind=spec.design,
        factors={n: tuple(f.levels) for n, f in spec.factors.items()},
        baseline={n: str(f.baseline) for n, f in spec.factors.items()},
        full={n: str(f.full) for n, f in spec.factors.items()},
    )
    cells = design.cells()
    # An ablation searches nothing: no space (which also spares validating the base's
    # space once per run), and the best epoch is picked by the metric compared.
    fixed: dict[str, Any] = {"name": spec.name, "search.space": "none", "search.enqueue": []}
    if spec.metric == "best_val_loss":
        fixed.update({"search.metric": "val_loss", "search.direction": "minimize"})
    elif spec.metric == "best_val_acc":
        fixed.update({"search.metric": "val_acc", "search.direction": "maximize"})
    configs: dict[str, StudyConfig] = {}
    for c in cells:
        ov: dict[str, Any] = dict(fixed)
        for fname, level in c.levels.items():
            ov.update(spec.factors[fname].overrides(level))
        configs[c.id] = apply_overrides(base.to_dict(), ov, source=f"{source}: cell {c.id}")
        if configs[c.id].data.val_split == 0 and spec.metric.startswith("best_val"):
            raise ConfigError(source, "metric", f"{spec.metric} needs validation images, and "
                                                f"cell {c.id} has data.val_split: 0; compare "
                                                "test_acc (with train.evaluate_test: true)")
    return AblationPlan(spec, source, design, base, cells, configs)


def load_ablation(path: str | Path, overrides: list[str] | dict[str, Any] | None = None
                  ) -> AblationPlan:
    """Read and validate an ablation file (see :func:`plan_ablation`)."""
    raw = read_ablation(path)
    return plan_ablation(raw, str(path), overrides, folder=Path(path).resolve().parent)


def check_data(plan: AblationPlan) -> None:
    """Every data set the cells read is on this machine (or downloadable); raises DatasetError."""
    from ..data import check_dataset, data_root

    for d in plan.data_sections():
        check_dataset(d.dataset, root=data_root(d.root), download=d.download,
                      val_split=d.val_split, subset=d.subset, seed=d.seed,
                      augmentation=d.augmentation, **d.options)


# ------------------------------------------------------------------ running
@dataclass
class AblationSummary:
    """What ``hpstudy ablate`` prints at the end."""

    name: str
    tracking_uri: str
    experiment_id: str
    summary_run_id: str
    planned: int
    ran: int
    resumed: int
    failed: int
    stats: AblationStats
    data: AblationData
    report_path: str | None = None
    duration_s: float = 0.0


def run_name(cell: str, seed: int) -> str:
    """``cell-dropout=on,schedule=step-seed1``."""
    return f"cell-{cell}-seed{seed}"


def _summary_run(tracker: Tracker, plan: AblationPlan) -> str:
    """The ablation's summary run (found by tags, else created); marked RUNNING."""
    found = tracker.client.search_runs(
        [tracker.experiment_id],
        filter_string=(f"tags.`{TAG_KIND}` = '{SUMMARY_KIND}' and "
                       f"tags.`{TAG_ABLATION}` = '{plan.name}'"),
        max_results=1, order_by=["attributes.start_time ASC"])
    if found:
        run_id = found[0].info.run_id
        tracker.client.update_run(run_id, status="RUNNING")
    else:
        run_id = tracker.start_run(plan.name, {TAG_KIND: SUMMARY_KIND, TAG_ABLATION: plan.name},
                                   {})
    # tags, not params: a resumed ablation may change its seeds, and params are immutable
    tracker.set_tags(run_id, {"hpstudy.design": json.dumps(plan.design.to_dict()),
                              "hpstudy.seeds": json.dumps(plan.seeds),
                              "hpstudy.metric": plan.spec.metric,
                              "mlflow.note.content": plan.spec.description or plan.name})
    spec = plan.spec.model_dump(mode="json")
    tracker.log_text(run_id, yaml.safe_dump(spec, sort_keys=False), "ablation.yaml")
    tracker.log_text(run_id, plan.base.to_yaml(), "base_config.yaml")
    return run_id


def finished_runs(tracker: Tracker, plan: AblationPlan) -> dict[tuple[str, int], str]:
    """``(cell, seed) -> run id`` of FINISHED runs whose concrete config is unchanged."""
    hashes = plan.hashes()
    out: dict[tuple[str, int], str] = {}
    for run in search_ablation_runs(tracker.client, tracker.experiment_id, plan.name,
                                    finished_only=True):
        tags = run.data.tags
        try:
            key = (tags["hpstudy.cell"], int(tags["hpstudy.seed"]))
        except (KeyError, ValueError):
            continue
        if hashes.get(key) == tags.get("hpstudy.config_hash"):
            out.setdefault(key, run.info.run_id)
    return out


def _train_run(plan: AblationPlan, tracker: Tracker, parent: str, cell: Cell,
               seed: int) -> tuple[FitResult | None, str | None, str | None]:
    """Train one (cell, seed) into its own MLflow run: (result, verdict, failure reason)."""
    cfg = plan.config(cell.id, seed)
    tags: dict[str, Any] = {
        TAG_KIND: RUN_KIND, TAG_ABLATION: plan.name, TAG_CELL: cell.id,
        TAG_CELL_LABEL: cell.label, TAG_SEED: seed,
        TAG_CONFIG_HASH: plan.config_hash(cell.id, seed), TAG_STATE: RUNNING,
        **{f"{TAG_FACTOR_PREFIX}{f}": lv for f, lv in cell.levels.items()},
    }
    name = run_name(cell.id, seed)
    try:
        with tracked_run(tracker, name, tags=tags, params=trial_params(cfg),
                         parent_id=parent, gpu_metrics=uses_gpu(cfg)) as run:
            result = execute(cfg, [run.log_epoch], label=f"{plan.name}-{name}",
                             on_failure_log=run.log_artifact)
            attrs = run.record(result, cfg)
    except Exception as e:  # noqa: BLE001 - one run failing must not end the ablation
        return None, None, failure_reason(e)
    return result, attrs.get(ATTR_DIAGNOSIS), result.failure


def _fmt_value(result: FitResult | None, metric: str) -> str:
    """``best_val_acc 0.9812`` for a progress line (empty when the run has no such value)."""
    if result is None:
        return ""
    if metric.startswith("test_"):
        value = (result.test or {}).get(metric)
    else:  # best_val_acc -> the val_acc of the best epoch
        value = result.best.get(metric.removeprefix("best_"))
    return f"{metric} {value:.4f}" if isinstance(value, float) and math.isfinite(value) else ""


def run_ablation(plan: AblationPlan, *, tracking_uri: str | None = None,
                 echo: Callable[[str], Any] | None = None) -> AblationSummary:
    """Train every missing (cell, seed), then analyze the ablation and log its statistics.

    Args:
        plan: from :func:`load_ablation` / :func:`plan_ablation`.
        tracking_uri: MLflow URI (flag > ablation file > base config > env > default).
        echo: called with one line per run (progress); None prints nothing.

    Returns:
        The :class:`AblationSummary` (statistics included).
    """
    say = echo or (lambda _line: None)
    start = time.perf_counter()
    tracker = Tracker(plan.tracking_uri(tracking_uri), plan.experiment,
                      plan.spec.tracking.artifact_location)
    parent = _summary_run(tracker, plan)
    done = finished_runs(tracker, plan)
    todo = [(c, s) for c in plan.cells for s in plan.seeds if (c.id, s) not in done]
    total = len(plan.cells) * len(plan.seeds)
    say(f"ablation     {plan.name}: {len(plan.cells)} cells x {len(plan.seeds)} seeds = "
        f"{total} runs, {total - len(todo)} already finished, {len(todo)} to run")
    failed = finished = 0
    try:
        for i, (cell, seed) in enumerate(todo, start=1):
            t0 = time.perf_counter()
            result, verdict, reason = _train_run(plan, tracker, parent, cell, seed)
            failed += reason is not None
            outcome = f"FAILED ({reason})" if reason else \
                f"{_fmt_value(result, plan.spec.metric)} {verdict or ''}".strip()
            say(f"[{i}/{len(todo)}] {run_name(cell.id, seed)}: {outcome} "
                f"({time.perf_counter() - t0:.1f}s)")
            finished = i
            del result
            release_memory()
    except BaseException as e:
        # a signal or a crash between runs: the summary run is not FINISHED (resume reopens it)
        tracker.client.set_terminated(parent, status=end_status(e))
        if isinstance(e, Interrupted):
            e.progress = (f"{finished} of {len(todo)} run(s) finished now, the running one "
                          "recorded KILLED (finished runs are kept)")
        raise

    data = collect_ablation(tracker.uri, tracker.experiment_id, plan.name, plan.spec.metric,
                            expected=plan.hashes())
    diagnosis = diagnose_cells(data.runs, data.histories, plan.design, data.num_classes,
                               data.n_val)
    stats = analyze_ablation(data.runs, plan.design, plan.spec.metric, n_val=data.n_val,
                             diagnosis=diagnosis)
    if data.stale:
        stats.notes.append(f"{data.stale} earlier run(s) of this ablation outside the current "
                           "plan (other seeds or cells, or a changed config) were left out")
    _log_stats(tracker, parent, stats, data)
    tracker.client.set_terminated(parent, status="FINISHED")
    summary = AblationSummary(plan.name, tracker.uri, tracker.experiment_id, parent, total,
                              len(todo), total - len(todo), failed, stats, data)
    summary.duration_s = time.perf_counter() - start
    return summary


def _log_stats(tracker: Tracker, run_id: str, stats: AblationStats, data: AblationData) -> None:
    """Statistics on the summary run: counts as metrics, tables as artifacts."""
    runs = data.runs
    n_ok = int((runs["state"] == "COMPLETE").sum()) if len(runs) else 0
    tracker.log_metrics(run_id, {"n_runs": len(runs), "n_complete": n_ok,
                                 "n_failed": len(runs) - n_ok}, step=0)
    tracker.log_text(run_id, stats_json(stats), "ablation/stats.json")
    for name, frame in (("cells", stats.cells), ("effects", stats.effects),
                        ("interactions", stats.interactions), ("runs", runs)):
        tracker.log_text(run_id, frame.to_csv(index=False), f"ablation/{name}.csv")
