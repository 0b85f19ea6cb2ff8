"""Read a guided study back: its stage studies, their outcomes, and what each one changed.

``collect_guide(study, storage, tracking_uri)`` finds the stage studies
``<study>/1-anything``, ``/2-everything``, ``/3-right-thing`` (those that
exist), collects each like any study (:func:`~hpstudy.analyze.collect`), and
adds what ``hpstudy guide`` stored on them: the outcome under the stage's rule,
the winner, the overrides it handed on, the epochs spent, the lr range test,
the budget and the study file's config. :meth:`GuideData.changes` is each
stage's config diff (the config after it against the config before it).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from ..names import (
    ATTR_EPOCHS,
    ATTR_GUIDE_BUDGET,
    ATTR_GUIDE_CONFIG,
    ATTR_GUIDE_LR_RANGE,
    ATTR_GUIDE_OUTCOME,
    ATTR_GUIDE_RESULT,
    GUIDE_STAGES,
    stage_study_name,
)
from .collect import StudyData, StudyNotFoundError, collect, load_optuna_study

CONFIG_SECTIONS = ("data", "model", "train")  # what a stage's config diff compares
STAGE_TITLES = {
    "1-anything": "learn anything",
    "2-everything": "learn everything",
    "3-right-thing": "learn the right thing",
}
STAGE_GOALS = {
    "1-anything": "beat chance on the training set with a rough setup (an lr range test, then "
                  "lr, batch size and init for a few epochs)",
    "2-everything": "fit the training set: regularization off, capacity grown and the lr moved "
                    "as each trial's diagnosis says (Adam family)",
    "3-right-thing": "regularize until validation follows (dropout, weight decay, "
                     "augmentation, batch norm, early stopping), then refine with momentum SGD",
}


def trial_epochs(user_attrs: Mapping[str, object], intermediate: Sequence[object] | int) -> float:
    """Epochs a finished trial trained: its ``epochs`` attr, else its reported epochs.

    A trial that crashed before it was recorded has no ``epochs`` attr; the
    epochs it reported to the pruner are the best count left.
    """
    reported = intermediate if isinstance(intermediate, int) else len(intermediate)
    value = user_attrs.get(ATTR_EPOCHS)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(max(value, reported))
    return float(reported)


def study_epochs(study: optuna.Study) -> float:
    """Epochs a (stage) study spent: its trials', plus its lr range test's if it ran one."""
    total = sum(trial_epochs(t.user_attrs, t.intermediate_values)
                for t in study.get_trials(deepcopy=False))
    lr = study.user_attrs.get(ATTR_GUIDE_LR_RANGE)
    if isinstance(lr, dict):
        total += float(lr.get("epochs") or 0.0)
    return float(total)


def guide_stages(study_name: str, storage: str | optuna.storages.BaseStorage) -> list[str]:
    """The stage keys of ``study_name``'s guide found in ``storage`` (empty: no guide)."""
    if isinstance(storage, str) and storage.startswith("journal:///"):
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(
            JournalFileBackend(storage.removeprefix("journal:///")))
    names = set(optuna.get_all_study_names(storage=storage))
    return [s for s in GUIDE_STAGES if stage_study_name(study_name, s) in names]


@dataclass
class GuideStage:
    """One stage of a guide as read back.

    Attributes:
        stage: ``1-anything``, ``2-everything`` or ``3-right-thing``.
        data: the stage study, collected (trials, histories, run params).
        outcome: ``accepted``, ``failed``, or None (not finished: running or interrupted).
        result: what the guide recorded: ``rule``, ``target``, ``evidence``, ``line``,
            ``winner``, ``value``, ``overrides``, ``carry``, ``advice``, ``diagnosis``,
            ``epochs``, ``share``.
        epochs: epochs spent (trials and, for stage 1, the lr range test).
    """

    stage: str
    data: StudyData
    outcome: str | None
    result: dict[str, Any]
    epochs: float

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def winner(self) -> int | None:
        w = self.result.get("winner")
        return int(w) if isinstance(w, int) else None

    def focus(self) -> int | None:
        """The trial that stands for the stage: its winner, else its best trial."""
        if self.winner is not None:
            return self.winner
        t = self.data.trials
        done = t[(t["state"] == "COMPLETE") & t["value"].notna()]
        if not len(done):
            return None
        best = done.sort_values(["value", "number"],
                                ascending=[self.data.direction == "minimize", True]).iloc[0]
        return int(best["number"])

    def history(self) -> list[dict[str, Any]]:
        """Per-epoch records of :meth:`focus` (empty when there is none)."""
        n = self.focus()
        return [] if n is None else self.data.history(n)


@dataclass
class GuideData:
    """A guided study: its stages (in order, those that exist) and the guide's records.

    Attributes:
        name: the study's name (stages are ``<name>/<stage>``).
        stages: stage key -> :class:`GuideStage`.
        base: the study file's config as plain data (what stage 1 started from).
        budget: ``total``, ``weights`` and the ``plan`` split printed up front.
        lr_range: stage 1's lr range test (``lrs``, ``losses``, ``smoothed``, ``low``,
            ``high``, ``lr_min_loss``, ``lr_steepest``, ``note``, ``epochs``...), if it ran.
    """

    name: str
    stages: dict[str, GuideStage]
    base: dict[str, Any]
    budget: dict[str, Any] = field(default_factory=dict)
    lr_range: dict[str, Any] | None = None

    @property
    def spent(self) -> dict[str, float]:
        """Epochs spent per stage."""
        return {k: s.epochs for k, s in self.stages.items()}

    @property
    def stopped(self) -> str | None:
        """The stage whose rule failed last, if the guide stopped there."""
        for k, s in self.stages.items():
            if s.outcome != "accepted":
                return k if s.outcome == "failed" else None
        return None

    def config_after(self, stage: str | None) -> dict[str, Any]:
        """The config (plain data) after ``stage``'s carry (None: the study file's)."""
        d = copy.deepcopy(self.base)
        if stage is None or stage not in self.stages:
            return d
        carry = self.stages[stage].result.get("carry") or {}
        for key, value in carry.items():
            set_path(d, key, value)
        return d

    def changes(self, stage: str) -> list[tuple[str, Any, Any]]:
        """``(key, before, after)`` for every data/model/train value ``stage`` changed.

        Before: the config after the previous stage (the study file's for the
        first); after: with this stage's winner applied. Empty for a stage
        without a winner.
        """
        if stage not in self.stages or self.stages[stage].winner is None:
            return []
        i = GUIDE_STAGES.index(stage)
        prev = GUIDE_STAGES[i - 1] if i else None
        before, after = flat_config(self.config_after(prev)), flat_config(self.config_after(stage))
        keys = [k for k in after if before.get(k) != after[k]]
        keys += [k for k in before if k not in after]
        return [(k, before.get(k), after.get(k)) for k in keys]


def set_path(d: dict[str, Any], key: str, value: Any) -> None:
    """``d[a][b] = value`` for ``key='a.b'`` (creating tables; a whole section replaces)."""
    parts = key.split(".")
    node = d
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = copy.deepcopy(value)


def flat_config(d: Mapping[str, Any]) -> dict[str, Any]:
    """The data/model/train sections as flat dotted keys (lists kept as values)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping) and node:
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            out[prefix] = node

    for section in CONFIG_SECTIONS:
        if section in d:
            walk(d[section], section)
    return out


def _base_config(studies: Sequence[optuna.Study]) -> dict[str, Any]:
    import yaml

    for s in studies:
        text = s.user_attrs.get(ATTR_GUIDE_CONFIG)
        if isinstance(text, str):
            try:
                return yaml.safe_load(text) or {}
            except yaml.YAMLError:
                continue
    return {}


def collect_guide(study_name: str, storage_url: str | optuna.storages.BaseStorage,
                  tracking_uri: str | None) -> GuideData:
    """Read a guided study: every stage study that exists, with the guide's records.

    Args:
        study_name: the study's name (the study file's ``name``).
        storage_url: Optuna storage URL or storage object.
        tracking_uri: MLflow URI (None: no learning curves are read).

    Raises:
        StudyNotFoundError: no stage study of ``study_name`` in the storage.
    """
    found = guide_stages(study_name, storage_url)
    if not found:
        raise StudyNotFoundError(f"no guided study named '{study_name}' (no stage study "
                                 f"'{stage_study_name(study_name, GUIDE_STAGES[0])}')")
    stages: dict[str, GuideStage] = {}
    studies = []
    for key in found:
        name = stage_study_name(study_name, key)
        study = load_optuna_study(name, storage_url)
        studies.append(study)
        data = collect(name, storage_url, tracking_uri)
        result = study.user_attrs.get(ATTR_GUIDE_RESULT)
        stages[key] = GuideStage(key, data, study.user_attrs.get(ATTR_GUIDE_OUTCOME),
                                 dict(result) if isinstance(result, dict) else {},
                                 study_epochs(study))
    lr = next((s.user_attrs.get(ATTR_GUIDE_LR_RANGE) for s in studies
               if isinstance(s.user_attrs.get(ATTR_GUIDE_LR_RANGE), dict)), None)
    budget = next((s.user_attrs.get(ATTR_GUIDE_BUDGET) for s in reversed(studies)
                   if isinstance(s.user_attrs.get(ATTR_GUIDE_BUDGET), dict)), {})
    return GuideData(study_name, stages, _base_config(studies), dict(budget),
                     dict(lr) if lr else None)

