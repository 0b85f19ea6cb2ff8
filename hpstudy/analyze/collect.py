"""Gather a study from its stores into pandas: trials from Optuna, learning curves from MLflow.

``collect(study_name, storage_url, tracking_uri)`` returns a :class:`StudyData`:

- ``trials``: one row per Optuna trial: ``number``, ``state``, ``value``,
  ``duration_s``, the user attrs (``mlflow_run_id``, ``diagnosis``,
  ``best_epoch``, ``num_params``, ``status``, ``fail_reason``, ``prune_reason``,
  ``num_classes``) and one column per hyperparameter under its dotted name
  (``train.lr``...), holding the value the trial trained with: an
  ``allow_zero`` entry's "off" decade (Optuna's coordinate below ``low``) is 0.
- ``space``: each searched hyperparameter's :class:`ParamSpec` (kind, bounds,
  log scale, choices, the ``allow_zero`` limit), for plots and the next round.
- ``run_params``: each trial's full concrete config and data facts as logged
  to its MLflow run (``train.max_epochs``, ``data.n_val``...), values parsed.
- ``histories``: the per-epoch records of every trial that has any, long
  format: ``trial`` plus the history keys (``epoch``, ``train_loss``...).

A trial's history is read from its child run's ``history.csv`` artifact
(written when the trial ends) or, for a trial that never got there, from the
run's per-epoch metrics. Trials are matched to runs by the ``mlflow_run_id``
user attr, else by the run tags ``optuna.study_name``/``optuna.trial_number``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlparse

import optuna
import pandas as pd

from .._urls import absolute_url
from ..names import ATTR_ZERO_BELOW

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                   "epoch_time_s")
PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study user attr set by hpstudy.search (DESIGN.md)
_ATTR_COLUMNS = ("mlflow_run_id", "diagnosis", "best_epoch", "num_params", "status",
                 "fail_reason", "prune_reason")
CONFIG_ATTR = "config_yaml"  # study user attr set by hpstudy.search: the base config
_log = logging.getLogger("hpstudy")


class StudyNotFoundError(KeyError):
    """No study of that name in the storage."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "study not found"


class ParamSpec(NamedTuple):
    """One searched hyperparameter as the study sampled it.

    Attributes:
        name: the dotted key (``train.lr``).
        kind: ``float``, ``int`` or ``categorical``.
        log: sampled on a log scale.
        low, high: the bounds (None for categorical); for an ``allow_zero`` entry
            ``low`` is the entry's own low (values below it were 0).
        choices: the categorical choices (empty otherwise).
        step: the step of a stepped entry (None otherwise).
        zero_below: ``allow_zero``: Optuna values below this trained as exactly 0.
    """

    name: str
    kind: str
    log: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    step: float | None = None
    zero_below: float | None = None


def zero_below(study: optuna.Study) -> dict[str, float]:
    """``allow_zero`` entries: param -> the low below which a sampled value means 0.

    From the study's ``zero_below`` attr (written by the search), else the
    explicit entries of the config stored with the study (an older study).
    """
    stored = study.user_attrs.get(ATTR_ZERO_BELOW)
    if isinstance(stored, dict):
        return {str(k): float(v) for k, v in stored.items()}
    text = study.user_attrs.get(CONFIG_ATTR)
    if not isinstance(text, str):
        return {}
    import yaml

    try:
        space = ((yaml.safe_load(text) or {}).get("search") or {}).get("space")
    except (yaml.YAMLError, AttributeError):
        return {}
    out: dict[str, float] = {}
    names = {n for t in study.get_trials(deepcopy=False) for n in t.params}
    for key, spec in (space.items() if isinstance(space, dict) else ()):
        if isinstance(spec, dict) and spec.get("allow_zero") and spec.get("low"):
            # an alias (weight_decay) names the dotted key it ends (train.weight_decay)
            for name in names:
                if name == key or name.endswith("." + key):
                    out[name] = float(spec["low"])
    return out


def param_space(study: optuna.Study, zero: dict[str, float] | None = None
                ) -> dict[str, ParamSpec]:
    """Each searched parameter's :class:`ParamSpec`, from the trials' distributions (the
    latest trial that sampled it)."""
    zero = zero_below(study) if zero is None else zero
    out: dict[str, ParamSpec] = {}
    for t in study.get_trials(deepcopy=False):
        for name, d in t.distributions.items():
            if isinstance(d, optuna.distributions.CategoricalDistribution):
                out[name] = ParamSpec(name, "categorical", choices=tuple(d.choices))
                continue
            kind = "int" if isinstance(d, optuna.distributions.IntDistribution) else "float"
            step = d.step if kind == "float" or d.step != 1 else None
            z = zero.get(name)
            out[name] = ParamSpec(name, kind, bool(d.log), z if z is not None else d.low,
                                  d.high, (), step, z)
    return dict(sorted(out.items()))


def _effective_params(trials: pd.DataFrame, zero: dict[str, float]) -> None:
    """An ``allow_zero`` entry's values below its low trained as exactly 0."""
    for name, low in zero.items():
        if name in trials.columns:
            col = trials[name]
            trials[name] = [0.0 if isinstance(v, int | float) and not isinstance(v, bool)
                            and v < low else v for v in col]


@dataclass
class StudyData:
    """A study as DataFrames, plus the Optuna study for Optuna's own plots.

    Attributes:
        name: the study name.
        study: the loaded :class:`optuna.Study`.
        trials: one row per trial (see the module docstring).
        histories: per-epoch records, long format, column ``trial`` = trial number.
        param_names: the hyperparameter columns of ``trials``, sorted.
        direction: ``maximize`` or ``minimize``.
        parent_run_id: the study's parent MLflow run (None if none was found).
        tracking_uri: where the runs were read from (None: MLflow was not read).
        diagnoses: per-trial diagnosis dicts stored in Optuna (``diagnosis_detail``).
        run_params: per-trial params of its MLflow run, values parsed (the whole
            concrete config as flat dotted keys, plus ``data.n_val``...).
        metric: the study's objective metric (``search.metric`` of the stored config;
            ``val_acc`` when unknown).
        space: each searched hyperparameter's :class:`ParamSpec`.
    """

    name: str
    study: optuna.Study
    trials: pd.DataFrame
    histories: pd.DataFrame
    param_names: list[str]
    direction: str
    parent_run_id: str | None = None
    tracking_uri: str | None = None
    diagnoses: dict[int, dict[str, Any]] = field(default_factory=dict)
    run_params: dict[int, dict[str, Any]] = field(default_factory=dict)
    metric: str = "val_acc"
    space: dict[str, ParamSpec] = field(default_factory=dict)

    def history(self, number: int) -> list[dict[str, Any]]:
        """One trial's per-epoch records as a list of dicts (what ``diagnose`` reads)."""
        h = self.histories
        rows = h[h["trial"] == number].sort_values("epoch")
        return rows.drop(columns="trial").to_dict("records")


def load_optuna_study(study_name: str, storage: str | optuna.storages.BaseStorage
                      ) -> optuna.Study:
    """Load a study by name from a storage URL (``sqlite:///``, ``postgresql://``,
    ``journal:///path``) or a storage object.

    Raises:
        StudyNotFoundError: no study of that name in the storage.
    """
    where = storage if isinstance(storage, str) else type(storage).__name__
    if isinstance(storage, str) and storage.startswith("journal:///"):
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(
            JournalFileBackend(storage.removeprefix("journal:///")))
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise StudyNotFoundError(f"no study named '{study_name}' in {where}") from None


def trials_frame(study: optuna.Study) -> tuple[pd.DataFrame, list[str]]:
    """One row per trial with state, value, user attrs and dotted-name params."""
    rows: list[dict[str, Any]] = []
    names: set[str] = set()
    for t in study.get_trials(deepcopy=False):
        dur = t.duration.total_seconds() if t.duration is not None else None
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            "value": t.value if t.values is not None and len(t.values) == 1 else None,
            "duration_s": dur,
        }
        for k in _ATTR_COLUMNS:
            row[k] = t.user_attrs.get(k)
        detail = t.user_attrs.get("diagnosis_detail")
        row["num_classes"] = (detail or {}).get("evidence", {}).get("num_classes")
        row.update(t.params)
        names.update(t.params)
        rows.append(row)
    cols = ["number", "state", "value", "duration_s", *_ATTR_COLUMNS, "num_classes"]
    df = pd.DataFrame(rows, columns=[*cols, *sorted(names)])
    return df, sorted(names)


def _runs_by_trial(client: Any, study_name: str) -> dict[int, str]:
    """trial number -> run id, from the child runs' tags (any experiment)."""
    runs = client.search_runs(
        experiment_ids=[e.experiment_id for e in client.search_experiments()],
        filter_string=(f"tags.`optuna.study_name` = '{study_name}' and "
                       "tags.`hpstudy.kind` = 'trial'"),
        max_results=50000,
    )
    out: dict[int, str] = {}
    for r in runs:
        num = r.data.tags.get("optuna.trial_number")
        if num is not None and num.isdigit():
            out.setdefault(int(num), r.info.run_id)
    return out


def _parent_run(client: Any, study: optuna.Study) -> str | None:
    rid = study.user_attrs.get(PARENT_RUN_ATTR)
    if rid:
        return rid
    runs = client.search_runs(
        experiment_ids=[e.experiment_id for e in client.search_experiments()],
        filter_string=(f"tags.`optuna.study_name` = '{study.study_name}' and "
                       "tags.`hpstudy.kind` = 'study'"),
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a progress bar per download; one per trial is noise on a terminal."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _read_history_csv(client: Any, run: Any, tmp: Path) -> pd.DataFrame | None:
    uri = run.info.artifact_uri or ""
    if uri.startswith("file:"):  # local store: read in place, no copy
        path = Path(unquote(urlparse(uri).path)) / "history.csv"
        return pd.read_csv(path) if path.is_file() else None
    try:
        with _no_progress_bar():
            return pd.read_csv(client.download_artifacts(run.info.run_id, "history.csv",
                                                         str(tmp)))
    except Exception:  # noqa: BLE001 - not logged (yet): the trial is running or crashed
        return None


def read_history(client: Any, run_id: str, tmp: Path, run: Any = None) -> pd.DataFrame:
    """A run's per-epoch history: ``history.csv`` if logged, else its metric histories."""
    run = run or client.get_run(run_id)
    df = _read_history_csv(client, run, tmp)
    if df is not None and len(df):
        return df
    series: dict[str, dict[int, float]] = {}
    for key in HISTORY_COLUMNS[1:]:
        for m in client.get_metric_history(run_id, key):
            series.setdefault(key, {})[int(m.step)] = float(m.value)
    if not series:
        return pd.DataFrame(columns=list(HISTORY_COLUMNS))
    df = pd.DataFrame(series).rename_axis("epoch").reset_index().sort_values("epoch")
    return df[df["epoch"] >= 1]  # step 0 holds nothing per-epoch


def _param_value(text: str) -> Any:
    """An MLflow param string back to a value (``"0.0"`` -> 0.0, ``"adam"`` -> ``"adam"``)."""
    try:
        return json.loads(text)
    except ValueError:
        return {"True": True, "False": False, "None": None}.get(text, text)


def _concrete_params(trials: pd.DataFrame, i: int, run_params: dict[str, str],
                     names: list[str]) -> None:
    """Replace Optuna's search coordinates by what the trial trained with.

    They differ where the space maps values (``allow_zero``: the bottom decade of
    a log range means exactly 0); the run's params hold the concrete config.
    """
    for name in names:
        if name in run_params and pd.notna(trials.at[i, name]):
            value = _param_value(run_params[name])
            if isinstance(value, int | float | str | bool):
                trials.at[i, name] = value


def collect(study_name: str, storage_url: str | optuna.storages.BaseStorage,
            tracking_uri: str | None) -> StudyData:
    """Read a study's trials (Optuna) and per-epoch histories (MLflow).

    Args:
        study_name: the Optuna study name (= the study file's ``name``).
        storage_url: Optuna storage URL or storage object.
        tracking_uri: MLflow tracking URI; ``None`` skips MLflow (no histories).

    Returns:
        The :class:`StudyData`.

    Raises:
        StudyNotFoundError: no study of that name in the storage (a KeyError).
    """
    study = load_optuna_study(study_name, storage_url)
    trials, params = trials_frame(study)
    zero = zero_below(study)
    _effective_params(trials, zero)
    diagnoses = {t.number: t.user_attrs["diagnosis_detail"]
                 for t in study.get_trials(deepcopy=False)
                 if isinstance(t.user_attrs.get("diagnosis_detail"), dict)}
    parts: list[pd.DataFrame] = []
    run_params: dict[int, dict[str, Any]] = {}
    parent = None
    if tracking_uri is not None:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=absolute_url(tracking_uri))
        parent = _parent_run(client, study)
        by_tag = _runs_by_trial(client, study_name)
        with tempfile.TemporaryDirectory(prefix="hpstudy-collect-") as tmp:
            for i in trials.index:
                number, run_id = int(trials.at[i, "number"]), trials.at[i, "mlflow_run_id"]
                rid = run_id if isinstance(run_id, str) and run_id else by_tag.get(number)
                if rid is None:
                    continue
                try:
                    run = client.get_run(rid)
                    h = read_history(client, rid, Path(tmp) / rid, run)
                except Exception as e:  # noqa: BLE001 - a deleted run must not hide the rest
                    _log.warning("trial %s: no history from run %s (%s)", number, rid, e)
                    continue
                trials.at[i, "mlflow_run_id"] = rid
                _concrete_params(trials, i, run.data.params, params)
                run_params[number] = {k: _param_value(v) for k, v in run.data.params.items()}
                if len(h):
                    h = h.reindex(columns=list(HISTORY_COLUMNS))
                    h.insert(0, "trial", number)
                    parts.append(h)
    histories = (pd.concat(parts, ignore_index=True) if parts
                 else pd.DataFrame(columns=["trial", *HISTORY_COLUMNS]))
    histories = histories.astype({"trial": int, "epoch": int}) if len(histories) else histories
    return StudyData(
        name=study_name,
        study=study,
        trials=trials,
        histories=histories,
        param_names=params,
        direction=study.directions[0].name.lower(),  # hpstudy studies have one objective
        parent_run_id=parent,
        tracking_uri=tracking_uri,
        diagnoses=diagnoses,
        run_params=run_params,
        metric=_study_metric(study),
        space=param_space(study, zero),
    )


def _study_metric(study: optuna.Study) -> str:
    """``search.metric`` of the config stored with the study (``val_acc`` if absent)."""
    text = study.user_attrs.get(CONFIG_ATTR)
    if not isinstance(text, str):
        return "val_acc"
    import yaml

    try:
        metric = (yaml.safe_load(text) or {}).get("search", {}).get("metric")
    except (yaml.YAMLError, AttributeError):
        return "val_acc"
    return metric if isinstance(metric, str) else "val_acc"
