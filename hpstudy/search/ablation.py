"""Ablations: does each change help alone, and combined with the others?

An ablation file names a base study config, the factors to vary (each with two
or more named levels), a design and the seeds::

    name: mnist_dropout_schedule
    base: ../thesis/mnist_baseline.yaml     # a study file (relative to this file) or inline
    overrides: {train.max_epochs: 30}       # applied to the base for every cell
    factors:
      dropout: {off: 0.0, on: 0.5}          # shorthand: the factor name is a config key/alias
      batch_norm:                           # one config key, a value per level
        key: model.norm_layer
        levels: {off: none, on: batch}
      schedule:                             # several keys per level
        levels:
          constant: {train.scheduler: constant}
          step: {train.scheduler: {name: multistep, milestones: [20], gamma: 0.1}}
        baseline: constant                  # default: the first level
        full: step                          # one_at_a_time's full level; default: the last
    design: one_at_a_time                   # or full_factorial
    seeds: [0, 1, 2]
    metric: best_val_acc                    # best_val_loss, test_acc, test_loss

Every cell x seed is one run: the base config with the cell's overrides and
``train.seed`` = ``data.seed`` = the seed, trained by :func:`hpstudy.train.fit`
and logged like any hpstudy run (params, per-epoch metrics, ``config.yaml``,
``history.csv``, diagnosis) into the ablation's MLflow experiment, nested under
one summary run that holds the statistics and the report. Rerunning the same
command resumes: a (cell, seed) with a FINISHED run of the same concrete config
(tag ``hpstudy.config_hash``) is not run again; a failed one is.

Every problem in the file, and every cell's concrete config, is checked before
anything is written (:class:`~hpstudy.config.ConfigError`, exit 2 in the CLI).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..analyze.ablation import (
    DESIGNS,
    METRICS,
    AblationData,
    AblationStats,
    Cell,
    Design,
    analyze_ablation,
    collect_ablation,
    search_ablation_runs,
    stats_json,
)
from ..config import (
    ConfigError,
    ReportConfig,
    StudyConfig,
    apply_overrides,
    from_dict,
    parse_set,
    read_yaml,
    resolve_key,
    trial_params,
)
from ..track import Tracker
from ..train import FitResult, fit
from .study import record_fit

_log = logging.getLogger("hpstudy")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$"  # no '=' or ',': names build cell ids
SUMMARY_KIND = "ablation_summary"  # hpstudy.kind of the run holding statistics and report
RUN_KIND = "ablation"
SEED_KEYS = ("train.seed", "data.seed")  # set per run from `seeds:`
ABLATION_SET_KEYS = ("seeds", "design", "metric")  # --set keys that change the ablation itself


# ------------------------------------------------------------------ YAML
class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: ``on``/``off``/``yes``/``no`` stay strings.

    Level names like ``off: 0.0, on: 0.5`` are the natural way to write an
    ablation; YAML 1.1 would turn them into ``False``/``True``.
    """


_Yaml12Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))


def read_ablation_yaml(path: str | Path) -> dict[str, Any]:
    """Load an ablation file (YAML 1.2 booleans), raising :class:`ConfigError` naming it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(path), None, "no such ablation file")
    try:
        raw = yaml.load(p.read_text(), Loader=_Yaml12Loader)  # a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        raise ConfigError(str(path), where, f"not valid YAML: {getattr(e, 'problem', e)}") \
            from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), None, "an ablation file must be a YAML mapping")
    return raw


# ------------------------------------------------------------------ schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _level_name(k: Any) -> str:
    return str(k).lower() if isinstance(k, bool) else str(k)


class Factor(_Strict):
    """One factor: level name -> a value of ``key``, or a mapping of dotted keys to values.

    Attributes:
        key: the config key (dotted or an alias) every level sets; None when each
            level is a mapping ``{dotted.key: value}``.
        levels: level name -> value (or mapping), in order.
        baseline: the baseline level (default: the first).
        full: the level in one_at_a_time's full configuration (default: the last
            non-baseline level).
        description: free text (what the factor tests).
    """

    key: str | None = None
    levels: dict[str, Any]
    baseline: str | None = None
    full: str | None = None
    description: str = ""

    @field_validator("levels", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        return {_level_name(k): x for k, x in v.items()} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _consistent(self) -> Factor:
        if len(self.levels) < 2:
            raise ValueError("a factor needs two or more levels")
        for name in self.levels:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"level name {name!r} must be letters, digits, _ . + - "
                                 "(no '=' or ',')")
        if self.baseline is None:
            self.baseline = next(iter(self.levels))
        elif self.baseline not in self.levels:
            raise ValueError(f"baseline {self.baseline!r} is not a level "
                             f"(levels: {', '.join(self.levels)})")
        if self.full is None:
            self.full = [lv for lv in self.levels if lv != self.baseline][-1]
        elif self.full not in self.levels or self.full == self.baseline:
            raise ValueError(f"full {self.full!r} must be a level other than the baseline")
        for name in self.levels:
            for key in self.overrides(name):  # raises for a malformed level
                if key in SEED_KEYS or key == "name":
                    raise ValueError(f"level {name!r} sets {key}: seeds come from `seeds:` "
                                     "and the run name from the ablation")
        return self

    def overrides(self, level: str) -> dict[str, Any]:
        """The level's dotted-key overrides (aliases resolved)."""
        value = self.levels[level]
        if self.key is not None:
            return {resolve_key(self.key): value}
        if not isinstance(value, dict) or not value:
            raise ValueError(f"level {level!r} must map config keys to values "
                             "({model.arch: nin, ...}) unless the factor names its `key:`")
        return {resolve_key(str(k)): v for k, v in value.items()}


class AblationTracking(_Strict):
    """``tracking:`` where the ablation's runs go."""

    uri: str | None = None  # None: the base config's, $MLFLOW_TRACKING_URI, or the default
    experiment: str | None = None  # None: the ablation name
    artifact_location: str | None = None


class AblationFile(_Strict):
    """A whole ablation file (see the module docstring)."""

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    description: str = ""
    base: str | dict[str, Any]
    overrides: dict[str, Any] = Field(default_factory=dict)
    factors: dict[str, Factor] = Field(min_length=1)
    design: Literal[DESIGNS] = "one_at_a_time"  # type: ignore[valid-type]
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    metric: Literal[METRICS] = "best_val_acc"  # type: ignore[valid-type]
    tracking: AblationTracking = Field(default_factory=AblationTracking)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @field_validator("factors", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        """``dropout: {off: 0.0, on: 0.5}`` -> ``{key: dropout, levels: {...}}``;
        ``arch: {nin: {model.arch: nin}, ...}`` -> ``{levels: {...}}``."""
        if not isinstance(v, dict):
            return v
        out: dict[str, Any] = {}
        for name, spec in v.items():
            name = str(name)
            if isinstance(spec, dict) and "levels" not in spec:
                values = list(spec.values())
                if all(isinstance(x, dict) for x in values):
                    spec = {"levels": spec}
                elif not any(isinstance(x, dict) for x in values):
                    if "." not in resolve_key(name):
                        raise ValueError(
                            f"factor {name!r}: its levels are plain values, so its name must be "
                            "a config key or alias (dropout, lr, augmentation, scheduler...) or "
                            "it needs `key:` and `levels:`")
                    spec = {"key": name, "levels": spec}
                else:
                    raise ValueError(f"factor {name!r}: levels mix plain values and mappings; "
                                     "use `key:` + `levels:` or a mapping for every level")
            out[name] = spec
        return out

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        if any(s < 0 for s in v):
            raise ValueError("seeds must be >= 0")
        return v

    @field_validator("factors")
    @classmethod
    def _no_conflicts(cls, factors: dict[str, Factor]) -> dict[str, Factor]:
        owner: dict[str, str] = {}
        for fname, f in factors.items():
            if not re.match(NAME_PATTERN, fname):
                raise ValueError(f"factor name {fname!r} must be letters, digits, _ . + - "
                                 "(no '=' or ',')")
            keys = {k for lv in f.levels for k in f.overrides(lv)}
            for k in keys:
                other = next((o for ok, o in owner.items() if _overlap(k, ok) and o != fname),
                             None)
                if other:
                    raise ValueError(f"factors {other!r} and {fname!r} both set {k}: "
                                     "a cell's config would depend on their order")
                owner[k] = fname
        return factors

    def factor_keys(self) -> dict[str, str]:
        """Every config key a factor sets -> the factor."""
        return {k: n for n, f in self.factors.items() for lv in f.levels
                for k in f.overrides(lv)}


def _overlap(a: str, b: str) -> bool:
    """``train.scheduler`` and ``train.scheduler.name`` touch the same setting."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _error_of(e: ValidationError) -> tuple[str, str]:
    err = e.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err.get("loc", ()) if not str(p).startswith("function-"))
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key"
    elif err.get("type") == "literal_error" or (
            "input" in err and not isinstance(err["input"], dict | list)
            and err.get("type") != "missing"):
        msg = f"{msg} (got {err.get('input')!r})"
    return loc or "(top level)", msg


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
        return self.configs[cell].with_overrides(
            {k: seed for k in SEED_KEYS}, source=f"{self.source}: cell {cell}, seed {seed}")

    def config_hash(self, cell: str, seed: int) -> str:
        key = (cell, seed)
        if key not in self._hashes:
            self._hashes[key] = config_hash(self.config(cell, seed))
        return self._hashes[key]

    def hashes(self) -> dict[tuple[str, int], str]:
        """``(cell, seed) -> config hash`` of every planned run."""
        return {(c.id, s): self.config_hash(c.id, s) for c in self.cells for s in self.seeds}

    def datasets(self) -> list[tuple[str, str | None, bool, dict[str, Any]]]:
        """Distinct (dataset, root, download, options) the cells read."""
        seen: dict[str, tuple[str, str | None, bool, dict[str, Any]]] = {}
        for cfg in self.configs.values():
            d = cfg.data
            item = (d.dataset, d.root, d.download, d.options)
            seen.setdefault(json.dumps(item, sort_keys=True, default=str), item)
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
        spec = AblationFile.model_validate(raw)
    except ValidationError as e:
        loc, msg = _error_of(e)
        src = source if not top or loc.split(".")[0] not in top else "--set"
        raise ConfigError(src, loc, msg) from None

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
        base = apply_overrides(base.to_dict(), base_set,
                               source="--set " + " ".join(f"{k}={v}" for k, v in base_set.items()))
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
    return AblationPlan(spec, source, design, base, cells, configs)


def load_ablation(path: str | Path, overrides: list[str] | dict[str, Any] | None = None
                  ) -> AblationPlan:
    """Read and validate an ablation file (see :func:`plan_ablation`)."""
    raw = read_ablation_yaml(path)
    return plan_ablation(raw, str(path), overrides, folder=Path(path).resolve().parent)


def check_data(plan: AblationPlan) -> None:
    """Every data set the cells read is on this machine (or downloadable); raises DatasetError."""
    from ..data import check_dataset, data_root

    for dataset, root, download, options in plan.datasets():
        check_dataset(dataset, root=data_root(root), download=download, **options)


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
        filter_string=(f"tags.`hpstudy.kind` = '{SUMMARY_KIND}' and "
                       f"tags.`hpstudy.ablation` = '{plan.name}'"),
        max_results=1, order_by=["attributes.start_time ASC"])
    if found:
        run_id = found[0].info.run_id
        tracker.client.update_run(run_id, status="RUNNING")
    else:
        run_id = tracker.start_run(plan.name, {"hpstudy.kind": SUMMARY_KIND,
                                               "hpstudy.ablation": plan.name}, {})
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
               seed: int) -> tuple[str, FitResult | None, str | None]:
    """Train one (cell, seed) into its own MLflow run: (run id, result, failure reason)."""
    cfg = plan.config(cell.id, seed)
    tags: dict[str, Any] = {
        "hpstudy.kind": RUN_KIND, "hpstudy.ablation": plan.name, "hpstudy.cell": cell.id,
        "hpstudy.cell_label": cell.label, "hpstudy.seed": seed,
        "hpstudy.config_hash": plan.config_hash(cell.id, seed), "hpstudy.state": "RUNNING",
        **{f"hpstudy.factor.{f}": lv for f, lv in cell.levels.items()},
    }
    run_id = tracker.start_run(run_name(cell.id, seed), tags, trial_params(cfg), parent_id=parent)
    try:
        result = fit(cfg, hooks=[lambda r: tracker.log_epoch(run_id, r)])
    except KeyboardInterrupt:
        tracker.end_run(run_id, "KILLED", {"hpstudy.fail_reason": "interrupted"})
        raise
    except Exception as e:  # noqa: BLE001 - one run failing must not end the ablation
        reason = f"{type(e).__name__}: {e}"[:1000]
        tracker.end_run(run_id, "FAIL", {"hpstudy.fail_reason": reason})
        return run_id, None, reason
    tracker.log_params(run_id, {"model.num_params": result.num_params, **result.data_info})
    state = "FAIL" if result.status == "diverged" else "COMPLETE"
    record_fit(tracker, run_id, result, cfg, state)
    return run_id, result, result.reason if state == "FAIL" else None


def _free() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort between runs
        pass


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
                 report: bool | None = None, echo: Callable[[str], Any] | None = None
                 ) -> AblationSummary:
    """Train every missing (cell, seed), then analyze, log and report the ablation.

    Args:
        plan: from :func:`load_ablation` / :func:`plan_ablation`.
        tracking_uri: MLflow URI (flag > ablation file > base config > env > default).
        report: write ``<report.dir>/<name>/index.html`` (default ``report.enabled``).
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
    failed = 0
    status = "FINISHED"
    try:
        for i, (cell, seed) in enumerate(todo, start=1):
            t0 = time.perf_counter()
            _, result, reason = _train_run(plan, tracker, parent, cell, seed)
            failed += reason is not None
            verdict = ""
            if result is not None and result.datamodule is not None and result.history:
                verdict = _verdict(result)
            outcome = f"FAILED ({reason})" if reason else \
                f"{_fmt_value(result, plan.spec.metric)} {verdict}".strip()
            say(f"[{i}/{len(todo)}] {run_name(cell.id, seed)}: {outcome} "
                f"({time.perf_counter() - t0:.1f}s)")
            del result
            _free()
    except KeyboardInterrupt:
        status = "KILLED"
        tracker.client.set_terminated(parent, status=status)
        raise

    data = collect_ablation(tracker.uri, tracker.experiment_id, plan.name, plan.spec.metric,
                            expected=plan.hashes())
    stats = analyze_ablation(data.runs, plan.design, plan.spec.metric)
    if data.stale:
        stats.notes.append(f"{data.stale} earlier run(s) of this ablation outside the current "
                           "plan (other seeds or cells, or a changed config) were left out")
    _log_stats(tracker, parent, stats, data)
    summary = AblationSummary(plan.name, tracker.uri, tracker.experiment_id, parent, total,
                              len(todo), total - len(todo), failed, stats, data)
    if plan.spec.report.enabled if report is None else report:
        summary.report_path = write_ablation_dashboard(plan, summary, tracker)
    tracker.client.set_terminated(parent, status=status)
    summary.duration_s = time.perf_counter() - start
    return summary


def _verdict(result: FitResult) -> str:
    from ..analyze import diagnose

    try:
        return diagnose(result.history, result.datamodule.num_classes).verdict  # type: ignore[union-attr]
    except ValueError:
        return ""


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


def write_ablation_dashboard(plan: AblationPlan, summary: AblationSummary,
                             tracker: Tracker) -> str | None:
    """Write ``<report.dir>/<ablation>/index.html``, log it to the summary run, return its path.

    Returns None (with a warning) when it cannot be written: the runs are done
    and recorded; a report that fails to draw must not fail the command.
    """
    from ..report.ablation import ARTIFACT_DIR, write_ablation_report

    overview = {
        "description": plan.spec.description,
        "MLflow experiment": f"{plan.experiment} (id {summary.experiment_id})",
        "MLflow summary run": summary.summary_run_id,
        "tracking URI": summary.tracking_uri,
    }
    try:
        path = write_ablation_report(summary.data, summary.stats, plan.design, plan.seeds,
                                     plan.spec.report.dir, overview=overview)
        tracker.log_artifact(summary.summary_run_id, path, ARTIFACT_DIR)
    except Exception as e:  # noqa: BLE001 - the ablation itself succeeded
        _log.warning("ablation report not written: %s: %s", type(e).__name__, e)
        return None
    return str(path)
