"""The Python entry points, and the composition the CLI shares with them.

Layers below compose here, at the top (DESIGN.md): run the study
(:mod:`hpstudy.search`), register its best model (:mod:`hpstudy.track.registry`),
draw its report (:mod:`hpstudy.report`). ``hpstudy run`` / ``train`` /
``ablate`` call these same functions, so a notebook gets exactly what the
command line does::

    import hpstudy
    summary = hpstudy.run("studies/quickstart.yaml", n_trials=4, max_epochs=5)
    study = hpstudy.load("quickstart")        # trials, per-epoch history, best, model()
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._proc import Interrupted, trap_signals
from ._urls import absolute_url
from .config import StudyConfig, load_study, trial_params
from .names import (
    ATTR_CHECKPOINT,
    ATTR_RUN_ID,
    DEFAULT_REPORT_DIR,
    DEFAULT_STORAGE,
    DEFAULT_TRACKING_URI,
    FAIL,
    HISTORY_KEYS,
    KIND_TRAIN,
    STORAGE_ENV,
    TAG_KIND,
    TAG_STUDY,
    TRACKING_ENV,
)

_log = logging.getLogger("hpstudy")


# ------------------------------------------------------------------ stores
def store_origin(flag: str | None, field_value: str | None, env: str, default: str,
                 flag_name: str, field_name: str, source: str) -> tuple[str, str]:
    """``(url, where it came from)``: flag > study file > environment > default."""
    if flag:
        return flag, flag_name
    if field_value:
        return field_value, f"{source}: {field_name}"
    if os.environ.get(env):
        return os.environ[env], f"${env}"
    return default, f"{field_name} (default {default})"


def preflight(cfg: StudyConfig, *, storage: str | None = None, tracking_uri: str | None = None,
              source: str = "study file", optuna_store: bool = True) -> None:
    """Check the Optuna storage and the MLflow store can be used, before either is written.

    Raises:
        ConfigError: naming the flag, field or variable the URL came from, and the cause.
    """
    from ._stores import check_storage, check_tracking
    from .train.device import check_device_options

    check_device_options(cfg, source)  # a device option this machine cannot honour: exit 2
    if optuna_store:
        check_storage(*store_origin(storage, cfg.storage, STORAGE_ENV, DEFAULT_STORAGE,
                                    "--storage", "storage", source))
    check_tracking(*store_origin(tracking_uri, cfg.tracking.uri, TRACKING_ENV,
                                 DEFAULT_TRACKING_URI, "--tracking-uri", "tracking.uri", source))
    if cfg.model.init_from:  # transfer learning: the weights exist before anything trains
        from .train.transfer import check_init_from

        check_init_from(cfg, source, tracking_uri)


# ------------------------------------------------------------------ studies
def run(study: str | Path | StudyConfig, *, overrides: dict[str, Any] | None = None,
        n_trials: int | None = None, timeout: float | None = None, workers: int | None = None,
        storage: str | None = None, tracking_uri: str | None = None, progress: bool = False,
        report: bool | None = None, **config: Any) -> Any:
    """Create or resume a study, run its trials, register the best model, write the report.

    ``hpstudy.run("studies/quickstart.yaml", n_trials=4, lr=0.01, max_epochs=5)``:
    keywords other than the options below are config overrides by alias (``lr``,
    ``batch_size``, ``max_epochs``, ``dropout``...); dotted keys go in ``overrides``.

    Args:
        study: a study file or a :class:`~hpstudy.config.StudyConfig`.
        overrides: ``{"train.max_epochs": 5, "lr": 0.01}`` (dotted keys or aliases),
            applied like ``--set``.
        n_trials: trials to run now (default ``search.n_trials``).
        timeout: seconds after which no new trial starts.
        workers: trials in parallel, one process each (default ``search.workers``, else one
            per trial slot of this machine: GPUs x ``search.trials_per_gpu``).
        storage: Optuna storage URL (argument > study file > $HPSTUDY_STORAGE > default).
        tracking_uri: MLflow URI (argument > study file > $MLFLOW_TRACKING_URI > default).
        progress: show the progress bar and one line per trial.
        report: write the dashboard (default ``report.enabled``).
        **config: more overrides by alias (``lr=0.01``); they win over ``overrides``.

    Returns:
        The :class:`~hpstudy.search.StudySummary`.

    Raises:
        ConfigError: a bad study file or override (the field is named), before
            anything is written.
    """
    overrides = {**(overrides or {}), **config} or None
    if isinstance(study, StudyConfig):
        cfg = study.with_overrides(overrides) if overrides else study
    else:
        cfg = load_study(study, overrides)
    preflight(cfg, storage=storage, tracking_uri=tracking_uri, source=str(study))
    with trap_signals():
        return run_config(cfg, n_trials=n_trials, timeout=timeout, workers=workers, storage=storage,
                          tracking_uri=tracking_uri, progress=progress, report=report)


def run_config(cfg: StudyConfig, *, n_trials: int | None = None, timeout: float | None = None,
               workers: int | None = None, storage: str | None = None,
               tracking_uri: str | None = None, progress: bool = True,
               report: bool | None = None) -> Any:
    """:func:`run` for a loaded config (what ``hpstudy run`` calls)."""
    from .search import run_parallel, run_study
    from .search.placement import plan_workers

    start = time.perf_counter()
    if progress:
        from .search.progress import header

        for line in header(cfg, n_trials, storage, tracking_uri):
            print(line, flush=True)
    kwargs: dict[str, Any] = dict(n_trials=n_trials, timeout=timeout, storage=storage,
                                  tracking_uri=tracking_uri, progress=progress)
    # --workers > search.workers > one per trial slot (GPUs x trials_per_gpu), never more
    # workers than trials; too many for the GPUs is a ConfigError before anything is written
    n_workers = len(plan_workers(cfg, workers, limit=n_trials or cfg.search.n_trials))
    if n_workers > 1:
        summary = run_parallel(cfg, workers=n_workers, **kwargs)
    else:
        summary = run_study(cfg, **kwargs)
    return finish_study(cfg, summary, report=report, start=start)


def finish_study(cfg: StudyConfig, summary: Any, *, report: bool | None = None,
                 start: float | None = None) -> Any:
    """After a study ran to its end: register the best model, write the dashboard."""
    from .track import Tracker

    tracker = Tracker(summary.tracking_uri, cfg.tracking.experiment or cfg.name)
    draw = cfg.report.enabled if report is None else report
    if cfg.tracking.register_best and draw:
        # registering (a torch.export and log_model: seconds) runs on a thread while the
        # dashboard collects the study and draws its figures; only the page's best-trial
        # section, which names the registered version, waits for it
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpstudy-register") as pool:
            registering = pool.submit(register_best_model, cfg, summary, tracker)
            summary.report_path = write_dashboard(cfg, summary.storage, tracker,
                                                  wait=registering.result)
            summary.registered_model = registering.result()
    elif cfg.tracking.register_best:
        summary.registered_model = register_best_model(cfg, summary, tracker)
    elif draw:
        summary.report_path = write_dashboard(cfg, summary.storage, tracker)
    if start is not None:
        summary.duration_s = time.perf_counter() - start
    return summary


def register_best_model(cfg: StudyConfig, summary: Any, tracker: Any) -> str | None:
    """Register the best trial's model as ``<study>-best``; returns ``models:/<name>/<version>``.

    A new version is made only when the best trial changed since the last
    registration. Returns None (with a warning) when there is no best trial,
    it left no checkpoint, or MLflow refuses: the study itself succeeded.
    """
    import optuna

    from .search import get_storage
    from .track import registry

    if summary.best_trial is None:
        return None
    study = optuna.load_study(study_name=cfg.name, storage=get_storage(summary.storage))
    best = study.best_trial
    run_id = best.user_attrs.get(ATTR_RUN_ID)
    if not run_id or ATTR_CHECKPOINT not in best.user_attrs:
        _log.warning("best trial %d left no checkpoint: no model registered", best.number)
        return None
    try:
        reg = registry.register_best(tracker, cfg.name, run_id, trial_number=best.number,
                                     metric=cfg.search.metric, value=float(best.value))
        tracker.set_tags(summary.parent_run_id, {"hpstudy.best_trial": best.number,
                                                 "hpstudy.best_run_id": run_id,
                                                 "hpstudy.registered_model": reg.model_uri})
    except Exception as e:  # noqa: BLE001 - the study itself succeeded
        _log.warning("best model not registered: %s: %s", type(e).__name__, e)
        return None
    return reg.model_uri


def write_dashboard(cfg: StudyConfig, storage_url: str, tracker: Any,
                    wait: Callable[[], Any] | None = None) -> str | None:
    """Write ``<report.dir>/<study>/index.html``, log it to the parent run, return its path.

    ``wait`` is called once the figures are drawn, before the best trial's
    section is made (it waits for the registration running meanwhile).
    Returns None (with a warning) when it cannot be written: a dashboard that
    fails to draw must not turn a finished study into a failed command.
    """
    from .inspection import best_trial_sections
    from .report import report_study  # plotly is imported only when a report is wanted

    def extra() -> Any:
        if wait is not None:
            wait()
        return best_trial_sections(cfg.name, storage_url, tracker.uri)  # [] without checkpoint

    try:
        path = report_study(cfg.name, storage_url, tracker.uri, cfg.report.dir, tracker=tracker,
                            extra=extra)
    except Exception as e:  # noqa: BLE001 - the study itself succeeded
        _log.warning("dashboard not written: %s: %s", type(e).__name__, e)
        return None
    return str(path)


# ------------------------------------------------------------------ one run
@dataclass
class TrainOutcome:
    """What ``hpstudy train`` made: the fit, its MLflow run, and the facts recorded."""

    result: Any  # hpstudy.train.FitResult
    run_id: str
    tracking_uri: str
    attrs: dict[str, Any]  # best epoch, diagnosis, test metrics...


def train(cfg: StudyConfig, tracking_uri: str | None = None,
          hooks: list[Callable[[dict[str, Any]], Any]] | None = None) -> TrainOutcome:
    """One run with the config's fixed hyperparameters (no search): ``hpstudy train``.

    Args:
        cfg: the config (its values plus any overrides).
        tracking_uri: MLflow URI (argument > study file > $MLFLOW_TRACKING_URI > default).
        hooks: extra epoch hooks (e.g. printing each epoch as it ends).
    """
    from .track import Tracker, tracked_run
    from .train import execute, uses_gpu

    tracker = Tracker(cfg.tracking_uri(tracking_uri), cfg.tracking.experiment or cfg.name,
                      cfg.tracking.artifact_location)
    name = time.strftime("train-%Y%m%d-%H%M%S")
    try:
        with tracked_run(tracker, name, tags={TAG_KIND: KIND_TRAIN, TAG_STUDY: cfg.name},
                         params=trial_params(cfg), gpu_metrics=uses_gpu(cfg)) as run:
            result = execute(cfg, [run.log_epoch, *(hooks or [])], label=f"{cfg.name}-{name}",
                             on_failure_log=run.log_artifact)
            _keep_checkpoint(tracker, run.id, result, cfg)
            attrs = run.record(result, cfg)
    except Interrupted as e:
        e.progress = f"run {name} recorded KILLED"
        raise
    return TrainOutcome(result, run.id, tracker.uri, attrs)


def _keep_checkpoint(tracker: Any, run_id: str, result: Any, cfg: StudyConfig) -> None:
    """Leave a run's kept weights as ``checkpoint/model.pt`` (for ``hpstudy inspect RUN_ID``
    and ``model.init_from: RUN_ID``), unless ``tracking.register_best`` and
    ``tracking.log_checkpoints`` are both off. A lost checkpoint never fails the run."""
    from .track import registry
    from .train import checkpoint_from_fit

    t = cfg.tracking
    if result.best_epoch is None or result.state == FAIL or not (t.register_best
                                                                   or t.log_checkpoints):
        return
    try:
        if result.module is not None and result.datamodule is not None:
            ckpt = checkpoint_from_fit(result, {"study": cfg.name})
        elif result.checkpoint is not None:
            ckpt = result.checkpoint
        else:
            return
        registry.log_checkpoint(tracker, run_id, ckpt)
    except Exception as e:  # noqa: BLE001 - the run itself succeeded
        _log.warning("run %s: checkpoint not logged: %s: %s", run_id, type(e).__name__, e)


# ------------------------------------------------------------------ ablations
def ablate(plan: Any, *, tracking_uri: str | None = None, report: bool | None = None,
           echo: Callable[[str], Any] | None = None) -> Any:
    """Run an ablation's missing cells, analyze it, write and log its report.

    Args:
        plan: from :func:`hpstudy.search.load_ablation`.
        tracking_uri: MLflow URI (argument > ablation file > base config > env > default).
        report: write ``<report.dir>/<name>/index.html`` (default ``report.enabled``).
        echo: called with one progress line per run.

    Returns:
        The :class:`~hpstudy.search.AblationSummary`.
    """
    from .search import run_ablation

    start = time.perf_counter()
    summary = run_ablation(plan, tracking_uri=tracking_uri, echo=echo)
    if plan.spec.report.enabled if report is None else report:
        summary.report_path = write_ablation_dashboard(plan, summary)
    summary.duration_s = time.perf_counter() - start
    return summary


def write_ablation_dashboard(plan: Any, summary: Any) -> str | None:
    """Write ``<report.dir>/<ablation>/index.html``, log it to the summary run, return its path.

    Returns None (with a warning) when it cannot be written: the runs are done
    and recorded; a report that fails to draw must not fail the command.
    """
    from .report import ARTIFACT_DIR, write_ablation_report
    from .track import Tracker

    overview = {
        "description": plan.spec.description,
        "MLflow experiment": f"{plan.experiment} (id {summary.experiment_id})",
        "MLflow summary run": summary.summary_run_id,
        "tracking URI": summary.tracking_uri,
    }
    try:
        path = write_ablation_report(summary.data, summary.stats, plan.design, plan.seeds,
                                     plan.spec.report.dir, overview=overview)
        Tracker(summary.tracking_uri, plan.experiment).log_artifact(
            summary.summary_run_id, path, ARTIFACT_DIR)
    except Exception as e:  # noqa: BLE001 - the ablation itself succeeded
        _log.warning("ablation report not written: %s: %s", type(e).__name__, e)
        return None
    return str(path)


# ------------------------------------------------------------------ refits
def refit(cfg: StudyConfig, *, storage: str | None = None, tracking_uri: str | None = None,
          overrides: dict[str, Any] | None = None,
          hooks: list[Callable[[dict[str, Any]], Any]] | None = None) -> Any:
    """Retrain a study's best trial on train + validation and test it once: ``hpstudy refit``.

    Args:
        cfg: the study's config (its file, or the config stored with the study).
        storage: Optuna storage URL (argument > study file > $HPSTUDY_STORAGE > default).
        tracking_uri: MLflow URI (argument > study file > $MLFLOW_TRACKING_URI > default).
        overrides: dotted keys for the refit's config (``{"data.root": "/data"}``).
        hooks: extra epoch hooks (e.g. printing each epoch).

    Returns:
        The :class:`~hpstudy.search.refit.RefitOutcome` (plan, fit, MLflow run id).
    """
    from .data import check_dataset, data_root
    from .search.refit import plan_refit, run_refit

    url, uri = cfg.storage_url(storage), cfg.tracking_uri(tracking_uri)
    plan = plan_refit(cfg, url, uri, overrides)
    d = plan.config.data  # the data is there, before the refit's run is written
    check_dataset(d.dataset, root=data_root(d.root), download=d.download, val_split=d.val_split,
                  subset=d.subset, seed=d.seed, augmentation=d.augmentation, **d.options)
    try:
        return run_refit(plan, url, uri, hooks or [])
    except Interrupted as e:
        e.progress = f"run {plan.run_name} recorded KILLED"
        raise


# ------------------------------------------------------------------ thesis reproduction
def reproduce(cells: list[str] | None = None, *, seeds: int = 1, epochs_scale: float = 1.0,
              smoke: bool = False, train: bool = True, tracking_uri: str | None = None,
              out_dir: str | Path = DEFAULT_REPORT_DIR, studies: str | Path | None = None,
              overrides: dict[str, Any] | None = None, smoke_root: str | Path | None = None,
              echo: Callable[[str], Any] | None = None) -> Any:
    """Run thesis cells with their recipes and write the comparison: ``hpstudy reproduce``.

    Args:
        cells: cell ids or shell patterns (``nin-cifar10+``, ``'preact_resnet*'``); all by default.
        seeds: seeds per cell (0..seeds-1); the table shows mean +- std over them.
        epochs_scale: fraction of each recipe's epochs (and schedule); rows become ``shortened``.
        smoke: train on generated files in the datasets' formats, a few batches per epoch
            (rows are ``smoke``, never reproductions).
        train: False only tabulates the runs already in the store.
        tracking_uri: MLflow URI (argument > $MLFLOW_TRACKING_URI > default).
        out_dir: dashboards folder: writes ``<out_dir>/reproduction/index.html`` and
            ``results.csv``.
        studies: the folder of the thesis study files and ``table_4_6.csv``.
        overrides: dotted keys for every cell's config (``{"data.root": "/data"}``).
        smoke_root: where the generated files go (default ``<data root>/hpstudy-smoke``).
        echo: called with one progress line per run.

    Returns:
        The :class:`~hpstudy.reproduce.ReproductionSummary` (rows, paths, failures).
    """
    from .data import check_dataset, data_root
    from .names import REPRODUCTION_DIR
    from .report.reproduction import write_reproduction_report
    from .reproduce import (
        load_table,
        plan_reproduction,
        run_reproduction,
        select_cells,
        write_results_csv,
        write_smoke_data,
    )

    chosen = select_cells(load_table(studies), cells)
    root = None
    if smoke:
        root = Path(smoke_root) if smoke_root else Path(data_root(None)) / "hpstudy-smoke"
        write_smoke_data(root, sorted({c.base_dataset for c in chosen}))
    plan = plan_reproduction(chosen, seeds=seeds, epochs_scale=epochs_scale, smoke_root=root,
                             folder=studies, overrides=overrides)
    if train:  # every dataset is there before the first run is written
        seen: set[str] = set()
        for cfg in plan.configs.values():
            d = cfg.data
            key = repr(sorted(d.model_dump(mode="json").items()))
            if key in seen:
                continue
            seen.add(key)
            check_dataset(d.dataset, root=data_root(d.root), download=d.download,
                          val_split=d.val_split, subset=d.subset, seed=d.seed,
                          augmentation=d.augmentation, **d.options)
    uri = tracking_uri or os.environ.get(TRACKING_ENV) or DEFAULT_TRACKING_URI
    summary = run_reproduction(plan, uri, train=train, echo=echo)
    import pandas as pd

    folder = Path(out_dir) / REPRODUCTION_DIR
    summary.csv_path = str(write_results_csv(summary.rows, folder / "results.csv"))
    overview = {"what": f"{len(plan.cells)} cell(s) x {len(plan.seeds)} seed(s), {plan.kind}",
                "MLflow experiment": f"thesis-reproduction (id {summary.experiment_id})",
                "tracking URI": summary.tracking_uri, "results CSV": summary.csv_path}
    try:
        summary.report_path = str(write_reproduction_report(
            pd.DataFrame(summary.rows), out_dir, REPRODUCTION_DIR, overview=overview))
    except Exception as e:  # noqa: BLE001 - the runs are recorded and the CSV written
        _log.warning("reproduction page not written: %s: %s", type(e).__name__, e)
    return summary


# ------------------------------------------------------------------ reading back
# A study's trials as columns a notebook wants first; the hyperparameters follow
# ``value``, the rest keeps the order below.
TRIAL_COLUMNS = ("number", "state", "value")
TRIAL_TAIL = ("verdict", "test_acc", "test_loss", "epochs", "best_epoch", "duration_s",
              "num_params", "run_id", "fail_reason")


@dataclass
class StudyResults:
    """A study read back from its stores (:func:`load`).

    Attributes:
        name: the study name.
        trials: one row per trial: ``number``, ``state``, ``value``, every
            hyperparameter (dotted names, the values the trial trained with),
            ``verdict`` (the diagnosis), ``test_acc``/``test_loss`` (when
            evaluated), ``epochs`` (trained), ``best_epoch``, ``duration_s``,
            ``num_params``, ``run_id`` (its MLflow run), ``fail_reason``.
        history: per-epoch records of every trial, long format: ``trial``,
            ``epoch``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``,
            ``lr``, ``epoch_time_s``.
        params: the hyperparameter columns of ``trials``.
        direction: ``maximize`` or ``minimize``.
        storage: the Optuna storage URL it was read from.
        tracking_uri: the MLflow store it was read from.
        study: the :class:`optuna.Study` (for Optuna's own plots).
        parent_run_id: the study's MLflow run.
    """

    name: str
    trials: Any  # pandas.DataFrame
    history: Any  # pandas.DataFrame
    params: list[str]
    direction: str
    storage: str
    tracking_uri: str
    study: Any = None
    parent_run_id: str | None = None

    @property
    def best(self) -> Any:
        """The best COMPLETE trial's row of :attr:`trials` (a pandas Series), or None."""
        done = self.trials[self.trials["state"] == "COMPLETE"].dropna(subset=["value"])
        if done.empty:
            return None
        i = done["value"].idxmax() if self.direction == "maximize" else done["value"].idxmin()
        return done.loc[i]

    def model(self, trial: int | None = None) -> Any:
        """A trained network on the CPU in eval mode, its weights loaded with ``weights_only=True``.

        Args:
            trial: a trial number whose run kept a checkpoint (every trial with
                ``tracking.log_checkpoints: true``); default: the registered
                best model ``<study>-best`` (its latest version), else the best
                trial's checkpoint.

        Returns:
            The ``torch.nn.Module``; it takes normalized images ``(N, C, S, S)``.

        Raises:
            LookupError: no registered model and no checkpoint for that trial.
        """
        from .track import Tracker
        from .track.registry import best_model_name, build_network, latest_version, load_checkpoint

        run_id = None
        if trial is None:
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=absolute_url(self.tracking_uri))
            try:
                version = latest_version(_ClientHolder(client), best_model_name(self.name))
            except Exception:  # noqa: BLE001 - no registry (or no model) is "not registered"
                version = None
            run_id = version.run_id if version is not None else None
            best = self.best
            if run_id is None and best is not None:
                trial = int(best["number"])
        if run_id is None:
            rows = self.trials[self.trials["number"] == trial]
            run_id = rows["run_id"].iloc[0] if len(rows) else None
        if not isinstance(run_id, str) or not run_id:
            raise LookupError(f"study '{self.name}': no registered model and no run with a "
                              f"checkpoint for trial {trial}")
        try:
            ckpt = load_checkpoint(Tracker.for_run(self.tracking_uri, run_id), run_id)
        except Exception as e:  # noqa: BLE001 - MLflow raises several kinds for a missing file
            raise LookupError(f"study '{self.name}': run {run_id} kept no checkpoint "
                              f"(tracking.log_checkpoints keeps one per trial): {e}") from None
        return build_network(ckpt)


@dataclass
class _ClientHolder:
    """What :func:`~hpstudy.track.registry.latest_version` needs of a tracker: its client."""

    client: Any


@dataclass
class AblationResults:
    """An ablation read back from MLflow (:func:`load`).

    Attributes:
        name: the ablation name.
        trials: one row per (cell, seed) run: ``cell``, ``seed``, ``state``,
            ``value`` (the ablation's metric), ``verdict``, ``run_id``,
            ``fail_reason``...
        history: per-epoch records, long format, with ``run_id``, ``cell``, ``seed``.
        metric: the compared metric (``best_val_acc``...).
        stats: cell means with 95% intervals, effects and interactions
            (:class:`~hpstudy.analyze.AblationStats`) when loaded from the
            ablation file (the design lives there); None when loaded by name.
        tracking_uri: the MLflow store it was read from.
    """

    name: str
    trials: Any
    history: Any
    metric: str
    tracking_uri: str
    stats: Any = None

    @property
    def best(self) -> Any:
        """The best COMPLETE run's row of :attr:`trials`, or None."""
        done = self.trials[self.trials["state"] == "COMPLETE"].dropna(subset=["value"])
        if done.empty:
            return None
        higher = not self.metric.endswith("loss")
        return done.loc[done["value"].idxmax() if higher else done["value"].idxmin()]

    def model(self, trial: int | None = None) -> Any:
        """Ablation runs keep no model (they answer "does it help?", not "which is best?")."""
        raise LookupError(f"ablation '{self.name}' keeps no models; train the cell you want "
                          "with `hpstudy train`")


@dataclass
class StagedResults:
    """A study run in stages (``<study>/1-...``, ``<study>/2-...``), read back stage by stage.

    ``trials`` and ``history`` concatenate the stages' frames with a ``stage``
    column; ``best`` and ``model()`` are the last stage's.
    """

    name: str
    stages: dict[str, StudyResults]

    @property
    def guide(self) -> Any:
        """The guide's own record of its stages (rules, outcomes, evidence, config diffs):
        :class:`~hpstudy.analyze.guide.GuideData`."""
        from .analyze.guide import collect_guide

        last = self.last
        return collect_guide(self.name, last.storage, last.tracking_uri)

    @property
    def trials(self) -> Any:
        return _concat_stages({k: v.trials for k, v in self.stages.items()})

    @property
    def history(self) -> Any:
        return _concat_stages({k: v.history for k, v in self.stages.items()})

    @property
    def last(self) -> StudyResults:
        return self.stages[list(self.stages)[-1]]

    @property
    def best(self) -> Any:
        return self.last.best

    def model(self, trial: int | None = None) -> Any:
        return self.last.model(trial)


def _concat_stages(frames: dict[str, Any]) -> Any:
    import pandas as pd

    parts = [f.assign(stage=stage)[["stage", *f.columns]] for stage, f in frames.items()]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def load(study: str | Path | StudyConfig, storage: str | None = None,
         tracking_uri: str | None = None) -> StudyResults | AblationResults | StagedResults:
    """Read a study back: its trials, their per-epoch history, the best trial and its model.

    One call instead of joining ``optuna.load_study`` and ``mlflow.search_runs``::

        study = hpstudy.load("quickstart")      # or "studies/quickstart.yaml"
        study.trials.sort_values("value").tail()
        study.history[study.history.trial == study.best.number].plot(x="epoch", y="val_acc")
        net = study.model()                     # the registered best model

    Args:
        study: a study file, a :class:`~hpstudy.config.StudyConfig`, an ablation
            file, or a name: a study in the Optuna storage, an ablation in the
            MLflow store, or the prefix of a staged study's stages
            (``<study>/1-...``).
        storage: Optuna storage URL (argument > study file > $HPSTUDY_STORAGE > default).
        tracking_uri: MLflow URI (argument > study file > $MLFLOW_TRACKING_URI > default).

    Returns:
        :class:`StudyResults`, :class:`AblationResults` or :class:`StagedResults`,
        all with ``.trials``, ``.history``, ``.best`` and ``.model()``.

    Raises:
        StudyNotFoundError: nothing of that name in the stores (a KeyError).
        ConfigError: a study file that is not valid.
    """
    from .analyze import StudyNotFoundError

    if isinstance(study, StudyConfig):
        return _load_study(study.name, study.storage_url(storage), study.tracking_uri(tracking_uri))
    text = str(study)
    if Path(text).is_file() or text.endswith((".yaml", ".yml")):
        from .config import read_ablation

        if "factors" in (read_ablation(text) or {}):
            return _load_ablation_file(text, tracking_uri)
        cfg = load_study(text)
        text, storage, tracking_uri = cfg.name, cfg.storage_url(storage), \
            cfg.tracking_uri(tracking_uri)
    url = storage or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
    uri = tracking_uri or os.environ.get(TRACKING_ENV) or DEFAULT_TRACKING_URI
    try:
        return _load_study(text, url, uri)
    except StudyNotFoundError as missing:
        stages = _stage_names(text, url)
        if stages:
            return StagedResults(text, {s.removeprefix(text + "/"): _load_study(s, url, uri)
                                        for s in stages})
        found = _load_ablation_by_name(text, uri)
        if found is not None:
            return found
        raise StudyNotFoundError(f"{missing}; no staged study '{text}/...' there either, and no "
                                 f"ablation '{text}' in {uri}") from None


def _load_study(name: str, storage: str, tracking_uri: str) -> StudyResults:
    import pandas as pd

    from .analyze import collect
    from .search import get_storage

    data = collect(name, get_storage(storage), tracking_uri)
    t = data.trials.rename(columns={"diagnosis": "verdict", "mlflow_run_id": "run_id"})
    by_number = {tr.number: tr for tr in data.study.get_trials(deepcopy=False)}
    attrs = [by_number[int(n)].user_attrs for n in t["number"]]
    for key in ("test_acc", "test_loss"):
        t[key] = [a.get(key) for a in attrs]
    epochs = data.histories.groupby("trial")["epoch"].max() if len(data.histories) else {}
    t["epochs"] = [a.get("epochs", epochs.get(int(n)) if len(epochs) else None)
                   for a, n in zip(attrs, t["number"], strict=True)]
    t = t.drop(columns=[c for c in ("status", "num_classes") if c in t.columns])
    head = [*TRIAL_COLUMNS, *data.param_names]
    tail = [c for c in TRIAL_TAIL if c in t.columns]
    t = t[[*head, *tail, *[c for c in t.columns if c not in head and c not in tail]]]
    t = t.astype({"epochs": "Int64", "best_epoch": "Int64"}).reset_index(drop=True)
    history = data.histories.reset_index(drop=True) if len(data.histories) else pd.DataFrame(
        columns=["trial", *HISTORY_KEYS])
    return StudyResults(name, t, history, list(data.param_names), data.direction, storage,
                        tracking_uri, data.study, data.parent_run_id)


def _stage_names(prefix: str, storage: str) -> list[str]:
    """Names of the studies ``<prefix>/<stage>`` in the storage, in stage order."""
    import optuna

    from .search import get_storage

    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(get_storage(storage),
                                                                      include_best_trial=False)]
    except Exception:  # noqa: BLE001 - an unreadable storage has no stages
        return []
    return sorted(n for n in names if n.startswith(prefix + "/"))


def _ablation_results(name: str, data: Any, metric: str, tracking_uri: str,
                      stats: Any = None) -> AblationResults:
    runs = data.runs.rename(columns={"diagnosis": "verdict", "reason": "fail_reason"})
    return AblationResults(name, runs.reset_index(drop=True),
                           data.histories.reset_index(drop=True), metric, tracking_uri, stats)


def _load_ablation_file(path: str, tracking_uri: str | None) -> AblationResults:
    from mlflow import MlflowClient

    from .analyze import StudyNotFoundError, analyze_ablation, collect_ablation
    from .search import load_ablation

    plan = load_ablation(path)
    uri = plan.tracking_uri(tracking_uri)
    exp = MlflowClient(tracking_uri=absolute_url(uri)).get_experiment_by_name(plan.experiment)
    if exp is None:
        raise StudyNotFoundError(f"no experiment '{plan.experiment}' in {uri}: run "
                                 f"`hpstudy ablate {path}` first")
    data = collect_ablation(uri, exp.experiment_id, plan.name, plan.spec.metric)
    stats = analyze_ablation(data.runs, plan.design, plan.spec.metric) if len(data.runs) else None
    return _ablation_results(plan.name, data, plan.spec.metric, uri, stats)


def _load_ablation_by_name(name: str, tracking_uri: str) -> AblationResults | None:
    """An ablation found by its summary run (tags ``hpstudy.ablation``, metric, design)."""
    import json

    from mlflow import MlflowClient

    from .analyze import Design, analyze_ablation, collect_ablation
    from .names import KIND_ABLATION_SUMMARY, TAG_ABLATION

    client = MlflowClient(tracking_uri=absolute_url(tracking_uri))
    try:
        runs = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            filter_string=f"tags.`{TAG_KIND}` = '{KIND_ABLATION_SUMMARY}' and "
                          f"tags.`{TAG_ABLATION}` = '{name}'", max_results=1)
    except Exception:  # noqa: BLE001 - an empty or unreadable store has no ablation
        return None
    if not runs:
        return None
    tags = runs[0].data.tags
    metric = tags.get("hpstudy.metric") or "best_val_acc"
    data = collect_ablation(tracking_uri, runs[0].info.experiment_id, name, metric)
    stats = None
    if tags.get("hpstudy.design") and len(data.runs):
        d = json.loads(tags["hpstudy.design"])
        design = Design(d["kind"], {k: tuple(v) for k, v in d["factors"].items()},
                        d["baseline"], d["full"])
        stats = analyze_ablation(data.runs, design, metric)
    return _ablation_results(name, data, metric, tracking_uri, stats)


# ------------------------------------------------------------------ guided tuning
def guide(study: str | Path | StudyConfig, *, overrides: dict[str, Any] | None = None,
          budget_epochs: float | None = None, storage: str | None = None,
          tracking_uri: str | None = None, progress: bool = False, report: bool | None = None,
          echo: Callable[[str], Any] | None = None) -> Any:
    """Guided tuning: the course's three milestones as three linked studies (``hpstudy guide``).

    Args:
        study: a study file or a :class:`~hpstudy.config.StudyConfig`.
        overrides: dotted keys applied like ``--set`` (``{"guide.budget_epochs": 120}``).
        budget_epochs: total training epochs of all stages (over ``guide.budget_epochs``).
        storage: Optuna storage URL (argument > study file > $HPSTUDY_STORAGE > default).
        tracking_uri: MLflow URI (argument > study file > $MLFLOW_TRACKING_URI > default).
        progress: show each stage's progress bar and one line per trial.
        report: write the guide's page (default ``report.enabled``).
        echo: called with each line of the guide's account (default: none).

    Returns:
        The :class:`~hpstudy.guide.GuideSummary`; ``summary.stopped`` is the stage whose
        rule failed (None when all three were accepted).
    """
    from .guide import plan_guide

    if isinstance(study, StudyConfig):
        cfg = study.with_overrides(overrides) if overrides else study
    else:
        cfg = load_study(study, overrides)
    plan = plan_guide(cfg, str(study) if not isinstance(study, StudyConfig) else cfg.name,
                      budget_epochs)
    preflight(cfg, storage=storage, tracking_uri=tracking_uri, source=str(study))
    with trap_signals():
        return run_guide_plan(plan, storage=storage, tracking_uri=tracking_uri,
                              progress=progress, report=report, echo=echo)


def run_guide_plan(plan: Any, *, storage: str | None = None, tracking_uri: str | None = None,
                   progress: bool = True, report: bool | None = None,
                   echo: Callable[[str], Any] | None = None) -> Any:
    """:func:`guide` for a checked plan (what ``hpstudy guide`` calls): run, then the page."""
    from .guide import run_guide

    summary = run_guide(plan, storage=storage, tracking_uri=tracking_uri, progress=progress,
                        echo=echo)
    if plan.cfg.report.enabled if report is None else report:
        summary.report_path = write_guide_dashboard(plan.cfg, summary)
    return summary


def write_guide_dashboard(cfg: StudyConfig, summary: Any) -> str | None:
    """Write ``<report.dir>/<study>/guide/index.html``, log it, return its path (None on failure)."""
    from .report import report_guide

    try:
        path = report_guide(cfg.name, summary.storage, summary.tracking_uri, cfg.report.dir)
    except Exception as e:  # noqa: BLE001 - the stages ran and are recorded
        _log.warning("guide page not written: %s: %s", type(e).__name__, e)
        return None
    return str(path)
