"""Refit: a study's best configuration on every training image, tested once.

A search compares trials on the validation split. The thesis then trains the
chosen configuration on all training images (train + validation) for the same
number of epochs and reports the test error of that final model. A refit does
exactly that, as a short driver over :func:`hpstudy.train.execute` and
:func:`hpstudy.track.tracked_run`:

* the best trial's concrete config (its ``config.yaml`` artifact, else the
  study's stored config with the trial's params),
* with ``data.val_split: 0`` (every training image trains), ``train.select:
  last`` (the final epoch is the model), ``train.max_epochs`` = the epochs the
  trial's reported model had seen (its best epoch under ``select: best``, the
  epochs it ran under ``select: last``), no early stopping, and
  ``train.evaluate_test: true``,
* recorded as its own MLflow run ``refit-trial-0007`` nested under the study's
  parent run (``hpstudy.kind=refit``, ``hpstudy.refit_of`` = the trial number,
  ``hpstudy.source_run_id`` = the trial's run).

Multistep milestones given as fractions are turned into the trial's epochs
first, so the refit's lr follows the trial's schedule. Cosine and one-cycle
schedules anneal over the refit's own epochs (noted in
:attr:`RefitPlan.notes`). A dataset whose protocol fixes the validation split
(SVHN's ``svhn_extra``, an ImageFolder with ``val/``) keeps it held out.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from ..config import (
    ConfigError,
    StudyConfig,
    from_dict,
    load_yaml_text,
    resolve_space,
    trial_params,
)
from ..names import (
    ATTR_BEST_EPOCH,
    ATTR_CONFIG,
    ATTR_PARENT_RUN,
    ATTR_REFIT_RUN,
    ATTR_RUN_ID,
    KIND_REFIT,
    RUNNING,
    TAG_KIND,
    TAG_REFIT_OF,
    TAG_REFIT_RUN,
    TAG_SOURCE_RUN,
    TAG_STATE,
    TAG_STUDY,
    trial_run_name,
)
from ..track import Tracker, tracked_run
from ..train import FitResult, execute, uses_gpu
from .storage import get_storage

_FIXED_VALIDATION = ("svhn_extra",)  # dataset options whose protocol fixes the validation split


@dataclass
class RefitPlan:
    """What a refit will train, decided before anything is written.

    Attributes:
        study: the study's name.
        trial: the trial retrained (the best one).
        trial_run_id: its MLflow run (None when it has none).
        parent_run_id: the study's parent MLflow run (the refit nests under it).
        source: the trial's concrete config.
        config: the refit's config.
        epochs: the refit's ``train.max_epochs``.
        notes: what differs from the trial beyond the protocol (one line each).
    """

    study: str
    trial: int
    trial_run_id: str | None
    parent_run_id: str | None
    source: StudyConfig
    config: StudyConfig
    epochs: int
    notes: list[str] = field(default_factory=list)

    @property
    def run_name(self) -> str:
        """``refit-trial-0007``."""
        return f"refit-{trial_run_name(self.trial)}"


@dataclass
class RefitOutcome:
    """A finished refit: the fit and its MLflow run."""

    plan: RefitPlan
    result: FitResult
    run_id: str
    tracking_uri: str
    attrs: dict[str, Any]


def _best_trial(study: optuna.Study, source: str) -> optuna.trial.FrozenTrial:
    try:
        return study.best_trial
    except ValueError:
        raise ConfigError(source, None, f"study '{study.study_name}' has no completed trial to "
                                        "refit (run it first)") from None


def trial_config(study: optuna.Study, trial: optuna.trial.FrozenTrial, tracker: Tracker | None,
                 source: str) -> StudyConfig:
    """The concrete config a trial trained: its ``config.yaml`` artifact, else rebuilt.

    The artifact is what ran (overrides of a resumed session included); without
    it, the study's stored config (``config_yaml`` user attr) is concretized with
    the trial's params (``allow_zero`` values below ``low`` mean 0, as sampled).
    """
    run_id = trial.user_attrs.get(ATTR_RUN_ID)
    artifact = None
    if tracker is not None and run_id:
        try:
            with tempfile.TemporaryDirectory(prefix="hpstudy-refit-") as tmp:
                path = tracker.client.download_artifacts(run_id, "config.yaml", tmp)
                artifact = Path(path).read_text(encoding="utf-8")
        except Exception:  # noqa: BLE001 - no artifact (deleted, another store): rebuild it
            artifact = None
    if artifact is not None:
        return from_dict(load_yaml_text(artifact), f"{source}: trial {trial.number} config.yaml",
                         concrete=True)
    text = study.user_attrs.get(ATTR_CONFIG)
    if not text:
        raise ConfigError(source, None, f"trial {trial.number} of study '{study.study_name}' "
                                        "has no config.yaml artifact and the study stores no "
                                        "config to rebuild it from")
    base = from_dict(load_yaml_text(text), f"{source}: stored config", concrete=True)
    space = resolve_space(base.search.space)
    params = {}
    for key, value in trial.params.items():
        p = space.get(key)
        params[key] = 0.0 if p is not None and p.allow_zero and value < p.low else value
    return base.concrete(params, source=f"{source}: trial {trial.number}")


def refit_epochs(cfg: StudyConfig, trial: optuna.trial.FrozenTrial, source: str = "study") -> int:
    """Epochs the trial's reported model had trained: best epoch (select best) or all it ran."""
    best = trial.user_attrs.get(ATTR_BEST_EPOCH)
    if cfg.train.select == "last" and trial.intermediate_values:
        return max(int(max(trial.intermediate_values)), int(best or 0))
    if best is None:
        raise ConfigError(source, f"trial {trial.number}",
                          "recorded no best epoch, so it cannot be refitted")
    return int(best)


def refit_config(source: StudyConfig, epochs: int, overrides: dict[str, Any] | None = None
                 ) -> tuple[StudyConfig, list[str]]:
    """The refit's config from a trial's concrete config, and notes on what changed.

    Args:
        source: the trial's concrete config.
        epochs: ``train.max_epochs`` of the refit.
        overrides: dotted keys applied last (``--set``: data root, accelerator...).
    """
    notes: list[str] = []
    t = source.train
    params: dict[str, Any] = {
        "data.val_split": 0, "train.select": "last", "train.max_epochs": epochs,
        "train.evaluate_test": True, "train.early_stopping.enabled": False,
        "search.space": "none", "search.enqueue": [],
    }
    s = t.scheduler
    if s.name == "multistep" and any(m < 1 for m in s.milestones):
        # fractions of the trial's epochs -> those epochs, so the lr follows the trial's
        params["train.scheduler.milestones"] = [
            int(round(m * t.max_epochs)) if m < 1 else m for m in s.milestones]
    if s.name == "multistep" and not s.milestones and s.gammas is None and s.values is None:
        params["train.scheduler.milestones"] = [int(t.max_epochs * 0.5), int(t.max_epochs * 0.75)]
    if s.name in ("cosine", "onecycle") and epochs != t.max_epochs:
        notes.append(f"the {s.name} schedule anneals over the refit's {epochs} epochs (the trial "
                     f"annealed over {t.max_epochs})")
    if s.name == "plateau":
        params["train.scheduler.name"] = "constant"
        notes.append("the plateau scheduler watched validation loss; the refit keeps the lr "
                     "constant")
    fixed = [k for k in _FIXED_VALIDATION if source.data.options.get(k)]
    if fixed:
        notes.append(f"data.{fixed[0]} fixes the validation split: it stays held out")
    cfg = source.concrete({**params, **(overrides or {})}, source="refit")
    return cfg, notes


def plan_refit(cfg: StudyConfig, storage_url: str, tracking_uri: str,
               overrides: dict[str, Any] | None = None, source: str | None = None) -> RefitPlan:
    """Read the study and decide the refit (nothing is written).

    Args:
        cfg: the study's config (from its file or its storage).
        storage_url: the Optuna storage holding the study.
        tracking_uri: the MLflow store holding its runs.
        overrides: ``--set`` values for the refit's config.
        source: how messages name the study (file or name).

    Raises:
        ConfigError: no such study, no completed trial, or a config that cannot be rebuilt.
    """
    source = source or cfg.name
    try:
        study = optuna.load_study(study_name=cfg.name, storage=get_storage(storage_url))
    except KeyError:
        raise ConfigError(source, None, f"no study '{cfg.name}' in {storage_url} (run it first)") \
            from None
    best = _best_trial(study, source)
    tracker = Tracker(tracking_uri, cfg.tracking.experiment or cfg.name,
                      cfg.tracking.artifact_location)
    trial_cfg = trial_config(study, best, tracker, source)
    epochs = refit_epochs(trial_cfg, best, source)
    config, notes = refit_config(trial_cfg, epochs, overrides)
    return RefitPlan(cfg.name, best.number, best.user_attrs.get(ATTR_RUN_ID),
                     study.user_attrs.get(ATTR_PARENT_RUN), trial_cfg, config, epochs, notes)


def run_refit(plan: RefitPlan, storage_url: str, tracking_uri: str,
              hooks: Sequence[Callable[[dict[str, Any]], Any]] = ()) -> RefitOutcome:
    """Train the refit into its own MLflow run under the study's run; link it both ways.

    The study's parent run gets the tag ``hpstudy.refit_run_id`` and the Optuna
    study the user attr ``refit_run_id`` (the latest refit).
    """
    cfg = plan.config
    tracker = Tracker(tracking_uri, cfg.tracking.experiment or cfg.name,
                      cfg.tracking.artifact_location)
    tags: dict[str, Any] = {TAG_KIND: KIND_REFIT, TAG_STUDY: plan.study, TAG_REFIT_OF: plan.trial,
                            TAG_STATE: RUNNING}
    if plan.trial_run_id:
        tags[TAG_SOURCE_RUN] = plan.trial_run_id
    with tracked_run(tracker, plan.run_name, tags=tags, params=trial_params(cfg),
                     parent_id=plan.parent_run_id, gpu_metrics=uses_gpu(cfg)) as run:
        result = execute(cfg, [run.log_epoch, *hooks], label=f"{plan.study}-{plan.run_name}",
                         on_failure_log=run.log_artifact)
        attrs = run.record(result, cfg)
    if plan.parent_run_id:
        tracker.set_tags(plan.parent_run_id, {TAG_REFIT_RUN: run.id})
    study = optuna.load_study(study_name=plan.study, storage=get_storage(storage_url))
    study.set_user_attr(ATTR_REFIT_RUN, run.id)
    return RefitOutcome(plan, result, run.id, tracker.uri, attrs)
