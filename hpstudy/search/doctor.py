"""``hpstudy doctor``: does the Optuna study agree with its MLflow experiment? Repair what it can.

The Optuna study is the source of truth for trials and their states; MLflow
holds one run per trial. After crashes, kills or manual edits they can drift.
:func:`examine` lists every disagreement as a :class:`Finding`;
:func:`repair` fixes the ones that can be fixed without guessing:

- ``missing_run``: a trial without a run -> a run is created (params, state, reason);
- ``duplicate_runs``: several runs for one trial -> the one the trial names is
  kept, the others are deleted (MLflow's soft delete: restorable);
- ``state_mismatch``: the run's state differs from the trial's -> the run takes
  the trial's state;
- ``stale_running``: a RUNNING trial whose process is provably gone (same host)
  -> the trial becomes FAIL with the reason and its run FAILED;
- ``orphan_run``: a trial run of this study whose trial does not exist -> ended
  FAILED and tagged ``hpstudy.orphan``;
- ``parent_counts``: the study run's counts differ from the study -> logged anew;
- ``no_parent_run``: the study has no parent run -> one is created.

A RUNNING trial owned by another host cannot be checked from here: it is
reported (``running_elsewhere``) and left to the heartbeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from .._proc import owner_gone
from ..names import (
    ATTR_FAIL_REASON,
    ATTR_PARENT_RUN,
    ATTR_RUN_ID,
    COMPLETE,
    FAIL,
    KIND_TRIAL,
    PRUNED,
    RUNNING,
    STATE_TO_RUN_STATUS,
    SYSATTR_OWNER,
    TAG_FAIL_REASON,
    TAG_KIND,
    TAG_STATE,
    TAG_STUDY,
    TAG_TRIAL_NUMBER,
)
from ..track import Tracker
from .storage import fail_trial, get_storage

_OPTUNA_TO_STATE = {TrialState.COMPLETE: COMPLETE, TrialState.PRUNED: PRUNED,
                    TrialState.FAIL: FAIL, TrialState.RUNNING: RUNNING}


@dataclass
class Finding:
    """One disagreement between the study and its runs."""

    kind: str
    trial: int | None
    detail: str
    fixable: bool = True
    fixed: bool = False
    data: dict[str, Any] = field(default_factory=dict, repr=False)

    def line(self) -> str:
        who = f"trial {self.trial}" if self.trial is not None else "study"
        mark = "fixed" if self.fixed else ("fixable with --fix" if self.fixable else "left alone")
        return f"{self.kind:17s} {who:10s} {self.detail} [{mark}]"


def _run_state(run: Any) -> str:
    tag = run.data.tags.get(TAG_STATE)
    if tag:
        return tag
    return {"FINISHED": COMPLETE, "FAILED": FAIL, "KILLED": "KILLED"}.get(run.info.status, RUNNING)


def _trial_runs(tracker: Tracker, study_name: str) -> list[Any]:
    return tracker.client.search_runs(
        [tracker.experiment_id],
        filter_string=f"tags.`{TAG_STUDY}` = '{study_name}' and tags.`{TAG_KIND}` = '{KIND_TRIAL}'",
        max_results=50000)


def examine(study: optuna.Study, tracker: Tracker) -> list[Finding]:
    """Every disagreement between ``study`` and the runs in ``tracker``'s experiment."""
    findings: list[Finding] = []
    name = study.study_name
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    runs_by_number: dict[int, list[Any]] = {}
    for r in _trial_runs(tracker, name):
        if r.data.tags.get("hpstudy.orphan") == "true":
            continue  # reported and closed before
        try:
            number = int(r.data.tags[TAG_TRIAL_NUMBER])
        except (KeyError, ValueError):
            continue
        runs_by_number.setdefault(number, []).append(r)

    for number, t in sorted(trials.items()):
        if t.state == TrialState.WAITING:
            continue
        runs = runs_by_number.get(number, [])
        named = t.user_attrs.get(ATTR_RUN_ID)
        if not runs:
            findings.append(Finding("missing_run", number, f"{t.state.name} trial has no run"))
            continue
        keep = next((r for r in runs if r.info.run_id == named), runs[0])
        if len(runs) > 1:
            extra = [r.info.run_id for r in runs if r is not keep]
            findings.append(Finding("duplicate_runs", number,
                                    f"{len(runs)} runs; keeping {keep.info.run_id}",
                                    data={"delete": extra, "keep": keep.info.run_id}))
        if t.state == TrialState.RUNNING:
            owner = t.system_attrs.get(SYSATTR_OWNER)
            if owner_gone(owner):
                findings.append(Finding(
                    "stale_running", number,
                    f"RUNNING, but its process {owner['pid']} on {owner['host']} is gone",
                    data={"run_id": keep.info.run_id}))
            else:
                where = f" on {owner['host']}" if isinstance(owner, dict) else ""
                findings.append(Finding("running_elsewhere", number,
                                        f"RUNNING{where}; its heartbeat decides", fixable=False))
            continue
        want = _OPTUNA_TO_STATE.get(t.state)
        have = _run_state(keep)
        status_ok = keep.info.status == STATE_TO_RUN_STATUS.get(want or "", keep.info.status)
        if want is not None and (have != want or not status_ok):
            findings.append(Finding("state_mismatch", number,
                                    f"trial {t.state.name}, run {have} ({keep.info.status})",
                                    data={"run_id": keep.info.run_id, "state": want,
                                          "reason": t.user_attrs.get(ATTR_FAIL_REASON)}))

    for number, runs in sorted(runs_by_number.items()):
        if number not in trials:
            for r in runs:
                findings.append(Finding("orphan_run", number,
                                        f"run {r.info.run_id} has no trial in the study",
                                        data={"run_id": r.info.run_id}))

    parent = study.user_attrs.get(ATTR_PARENT_RUN)
    if not parent:
        findings.append(Finding("no_parent_run", None, "the study names no MLflow study run"))
    else:
        try:
            metrics = tracker.client.get_run(parent).data.metrics
        except Exception:  # noqa: BLE001 - a deleted or foreign run id
            findings.append(Finding("no_parent_run", None, f"study run {parent} is gone"))
        else:
            counts = _counts(trials.values())
            wrong = {k: v for k, v in counts.items() if metrics.get(k) != v}
            if wrong:
                findings.append(Finding(
                    "parent_counts", None,
                    ", ".join(f"{k} {metrics.get(k, 'missing')} (study: {v})"
                              for k, v in wrong.items()),
                    data={"run_id": parent, "counts": counts}))
    return findings


def _counts(trials: Any) -> dict[str, float]:
    ts = list(trials)
    return {"n_trials": float(len(ts)),
            "n_complete": float(sum(t.state == TrialState.COMPLETE for t in ts)),
            "n_pruned": float(sum(t.state == TrialState.PRUNED for t in ts)),
            "n_failed": float(sum(t.state == TrialState.FAIL for t in ts))}


def repair(study: optuna.Study, storage: optuna.storages.BaseStorage, tracker: Tracker,
           findings: list[Finding]) -> list[Finding]:
    """Fix every fixable finding (see the module docstring); returns them, ``fixed`` set."""
    name = study.study_name
    parent = study.user_attrs.get(ATTR_PARENT_RUN)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    # the study run's counts last, from the trials as the other repairs left them
    for f in sorted(findings, key=lambda f: f.kind == "parent_counts"):
        if not f.fixable:
            continue
        if f.kind == "no_parent_run":
            parent = tracker.study_run(name)
            study.set_user_attr(ATTR_PARENT_RUN, parent)
        elif f.kind == "missing_run" and f.trial is not None:
            t = trials[f.trial]
            run_id = tracker.start_trial(parent, name, t.number, dict(t.params)) if parent else \
                tracker.start_run(f"trial-{t.number:04d}", {TAG_KIND: KIND_TRIAL, TAG_STUDY: name,
                                                           TAG_TRIAL_NUMBER: t.number}, t.params)
            state = _OPTUNA_TO_STATE.get(t.state, FAIL)
            tags = {TAG_FAIL_REASON: t.user_attrs.get(ATTR_FAIL_REASON, "run recreated by doctor")}
            if t.value is not None:
                tracker.log_metrics(run_id, {"best_" + _metric(study): t.value})
            tracker.end_run(run_id, state, tags if state == FAIL else None)
        elif f.kind == "duplicate_runs":
            for run_id in f.data["delete"]:
                tracker.client.delete_run(run_id)
        elif f.kind == "state_mismatch":
            tags = {TAG_FAIL_REASON: f.data["reason"]} if f.data.get("reason") else None
            tracker.end_run(f.data["run_id"], f.data["state"], tags)
        elif f.kind == "stale_running" and f.trial is not None:
            reason = f"worker lost: {f.detail.split('but ', 1)[-1]} (doctor)"
            fail_trial(storage, name, f.trial, reason)
            tracker.end_run(f.data["run_id"], FAIL, {TAG_FAIL_REASON: reason})
        elif f.kind == "orphan_run":
            tracker.end_run(f.data["run_id"], FAIL,
                            {TAG_FAIL_REASON: "orphan: no such trial in the Optuna study",
                             "hpstudy.orphan": "true"})
        elif f.kind == "parent_counts":
            counts = _counts(study.get_trials(deepcopy=False))
            tracker.log_metrics(f.data["run_id"], counts, step=int(counts["n_trials"]))
        f.fixed = True
    return findings


def _metric(study: optuna.Study) -> str:
    return "val_loss" if study.direction == optuna.study.StudyDirection.MINIMIZE else "val_acc"


def doctor(study_name: str, storage_url: str, tracking_uri: str, experiment: str | None = None,
           fix: bool = False) -> list[Finding]:
    """Examine (and with ``fix``, repair) one study; returns the findings.

    Raises:
        KeyError: no study of that name in the storage.
    """
    storage = get_storage(storage_url)
    study = optuna.load_study(study_name=study_name, storage=storage)
    tracker = Tracker(tracking_uri, experiment or study_name)
    findings = examine(study, tracker)
    if fix:
        repair(study, storage, tracker, findings)
        # what is left after the repairs (a re-examination proves them)
        left = [f for f in examine(study, tracker) if f.fixable]
        for f in findings:
            f.fixed = f.fixable and not any(g.kind == f.kind and g.trial == f.trial for g in left)
    return findings
