"""Run a guide: three linked Optuna studies, one MLflow parent run each, one epoch budget.

For each stage in order: find its study (``<study>/<stage>``); an accepted
stage is reused as it is (its winner's carry is read back); any other stage
runs (a stage that failed or was interrupted continues its own Optuna study:
its earlier trials count toward its rule and its epochs toward the budget).
A stage is a short driver over :func:`hpstudy.search.run_study` with a
:class:`GuideObjective` (it maps sampled values to the trial's config) and a
callback that stops launching trials once the stage's share of the budget,
or the budget itself, could be exceeded by the next one.

When a stage's rule fails the guide stops there and returns; the caller
(``hpstudy guide``) prints the diagnosis and the advice and exits 3, and the
same command resumes at that stage. Stage records live in the stage study's
user attrs (``guide_*``) and in tags of its parent run (``hpstudy.guide``,
``hpstudy.stage``, ``hpstudy.stage_outcome``, ``_rule``, ``_target``,
``_evidence``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from .._proc import Interrupted
from ..analyze.guide import study_epochs as stage_epochs
from ..config import StudyConfig
from ..names import (
    ATTR_GUIDE,
    ATTR_GUIDE_BUDGET,
    ATTR_GUIDE_CONFIG,
    ATTR_GUIDE_LR_RANGE,
    ATTR_GUIDE_OUTCOME,
    ATTR_GUIDE_OVERRIDES,
    ATTR_GUIDE_PART,
    ATTR_GUIDE_RESULT,
    ATTR_GUIDE_SGD,
    ATTR_GUIDE_STAGE,
    GUIDE_CONFIG_ARTIFACT,
    LR_RANGE_ARTIFACT,
    STAGE_ARTIFACT,
    TAG_GUIDE,
    TAG_LR_RANGE,
    TAG_LR_RANGE_NOTE,
    TAG_STAGE,
    TAG_STAGE_EVIDENCE,
    TAG_STAGE_OUTCOME,
    TAG_STAGE_OVERRIDES,
    TAG_STAGE_RULE,
    TAG_STAGE_TARGET,
    TAG_STAGE_WINNER,
    stage_study_name,
)
from ..search import Objective, StudySession, close_study, connect, get_storage, run_study
from ..search import space as _space
from . import rules
from .budget import Budget, fmt_epochs, fmt_split, trial_epochs
from .lr_range import LrRange, sweep
from .stages import (
    GOALS,
    PART_SEARCH,
    PART_SGD,
    REG_OFF,
    STAGES,
    TITLES,
    WIDTH_SCALE,
    GuidePlan,
    StagePart,
    apply_layers,
    growth,
    next_step,
    sgd_band,
    stage1_part,
    stage2_part,
    stage3_search_part,
    stage3_sgd_part,
)

ACCEPTED, FAILED = "accepted", "failed"
MAX_FAILS_IN_A_ROW = 5  # trials failing at once (a config that cannot build) end the part
Echo = Callable[[str], Any]


# ------------------------------------------------------------------ results
@dataclass
class StageResult:
    """One stage's outcome, as printed, logged and stored.

    Attributes:
        stage: ``1-anything`` ...
        study: its Optuna study name (``<study>/<stage>``).
        outcome: ``accepted`` or ``failed``.
        rule, target: the acceptance rule and its target, in words.
        evidence: the numbers behind the outcome.
        line: one sentence with the outcome and its numbers.
        winner: the winning trial's number (None when failed).
        value: its objective value.
        overrides: what the winner changed (dotted keys: what this stage hands on).
        carry: every override handed on so far (the study file's config + these).
        advice: the course's advice when the stage failed.
        diagnosis: ``trial N: verdict: reason`` of the trial the outcome rests on.
        epochs: epochs the stage spent (all its attempts).
        share: the epochs it was given the last time it ran.
        parent_run_id: its MLflow parent run.
        reused: accepted earlier and not run again.
    """

    stage: str
    study: str
    outcome: str
    rule: str
    target: str
    evidence: dict[str, Any]
    line: str
    winner: int | None = None
    value: float | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    carry: dict[str, Any] = field(default_factory=dict)
    advice: list[str] = field(default_factory=list)
    diagnosis: str | None = None
    epochs: float = 0.0
    share: float | None = None
    parent_run_id: str | None = None
    reused: bool = False

    @property
    def accepted(self) -> bool:
        return self.outcome == ACCEPTED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageResult:
        keys = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in keys})


@dataclass
class GuideSummary:
    """What ``hpstudy guide`` prints at the end.

    Attributes:
        name: the study's name (stages are ``<name>/<stage>``).
        storage, tracking_uri, experiment: where the stages are.
        budget: total epochs; ``plan``: the split printed up front; ``spent``: per stage.
        stages: the result of every stage that ran or was reused, in order.
        stopped: the stage whose rule failed (None: all accepted).
        final: the overrides of the last accepted stage on the study file's config.
        final_yaml: that config as YAML (what the guide recommends).
        report_path: the guide's dashboard, when written.
        duration_s: wall time of this command.
    """

    name: str
    storage: str
    tracking_uri: str
    experiment: str
    budget: float
    plan: dict[str, float]
    spent: dict[str, float]
    stages: list[StageResult] = field(default_factory=list)
    stopped: StageResult | None = None
    final: dict[str, Any] = field(default_factory=dict)
    final_yaml: str = ""
    report_path: str | None = None
    duration_s: float = 0.0

    @property
    def used(self) -> float:
        return sum(self.spent.values())


# ------------------------------------------------------------------ the objective
def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


class GuideObjective(Objective):
    """The study objective with the stage part's mapping from sampled values to the config.

    The trial trains ``base`` (the study file's config with the earlier stages'
    carry) with the part's prefix and transformed values, then the part's
    settings; the overrides it applied (what it would hand on) are stored in
    its ``guide_overrides`` user attr.
    """

    def __init__(self, session: StudySession, base: StudyConfig, part: StagePart):
        super().__init__(session)
        self.base, self.part = base, part

    def trial_config(self, trial: optuna.Trial) -> StudyConfig:
        sampled = _space.suggest(trial, self.space)
        overrides = dict(self.part.prefix)
        for key, value in self.part.transform(sampled).items():
            overrides[key] = value
        overrides = _jsonable(overrides)
        trial.set_user_attr(ATTR_GUIDE_OVERRIDES, overrides)
        trial.set_user_attr(ATTR_GUIDE_PART, self.part.part)
        return apply_layers(self.base, overrides, self.part.settings,
                            source=f"trial {trial.number}")


class _PartStop:
    """Optuna callback: count each trial's epochs; stop when the next could overrun.

    Stops the study when the part's allowance or the whole budget has fewer
    epochs left than one trial takes, when ``accept`` says a trial met the
    stage's rule, or after ``MAX_FAILS_IN_A_ROW`` failures in a row.
    """

    def __init__(self, budget: Budget, stage: str, allowance: float, per_trial: int,
                 accept: Callable[[rules.TrialView], bool] | None = None):
        self.budget, self.stage, self.allowance, self.per_trial = budget, stage, allowance, per_trial
        self.accept = accept
        self.spent = 0.0
        self.fails = 0
        self.reason: str | None = None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        epochs = trial_epochs(trial.user_attrs, trial.intermediate_values)
        self.spent += epochs
        self.budget.add(self.stage, epochs)
        self.fails = self.fails + 1 if trial.state == TrialState.FAIL else 0
        if self.accept is not None and self.accept(rules.TrialView.from_trial(trial)):
            self.reason = f"trial {trial.number} met the rule"
        elif self.fails >= MAX_FAILS_IN_A_ROW:
            self.reason = f"{self.fails} trials failed in a row"
        elif min(self.allowance - self.spent, self.budget.left) < self.per_trial:
            self.reason = "its share of the budget is spent"
        if self.reason:
            study.stop()


# ------------------------------------------------------------------ the guide
def _load(store: Any, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=store)
    except KeyError:
        return None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


def fmt_overrides(d: dict[str, Any]) -> str:
    """``train.lr=0.0031, data.batch_size=32`` (a model section: its arch and arguments)."""
    return ", ".join(f"{k}={_fmt(v)}" for k, v in d.items()) or "nothing"


class Guide:
    """One ``hpstudy guide`` command: runs or reuses each stage in turn.

    Args:
        plan: from :func:`~hpstudy.guide.stages.plan_guide`.
        storage: Optuna storage URL (flag > study file > $HPSTUDY_STORAGE > default).
        tracking_uri: MLflow URI (flag > study file > $MLFLOW_TRACKING_URI > default).
        progress: show each stage's progress bar and one line per trial.
        echo: called with each line of the guide's own account.
    """

    def __init__(self, plan: GuidePlan, *, storage: str | None = None,
                 tracking_uri: str | None = None, progress: bool = True,
                 echo: Echo | None = None):
        self.plan, self.progress = plan, progress
        self.echo: Echo = echo or (lambda line: None)
        self.storage = plan.cfg.storage_url(storage)
        self.tracking_uri = plan.cfg.tracking_uri(tracking_uri)
        self.store = get_storage(self.storage)
        self.budget = Budget(plan.budget, dict(plan.weights))
        self.maximize = plan.cfg.direction == "maximize"
        self.metric = plan.cfg.search.metric
        self._announced: set[tuple[str, str]] = set()

    # ------------------------------------------------------------ helpers
    def study_name(self, stage: str) -> str:
        return stage_study_name(self.plan.name, stage)

    def _line(self, head: str, text: str) -> None:
        self.echo(f"  {head:<10s} {text}")

    def _session_config(self, part: StagePart, base: StudyConfig) -> StudyConfig:
        """The config ``run_study`` gets: the stage's settings, space, pruner; the stage's name.

        The name (``<study>/<stage>``) is set without validation: the study-file
        pattern has no ``/``; trials are built from ``base``, whose name is valid.
        """
        p = self.plan
        cfg = apply_layers(base, part.settings, {
            "search.space": {k: v.model_dump(mode="json", exclude_none=True)
                             for k, v in part.space.items()},
            "search.enqueue": part.enqueue,
            "search.pruner": part.pruner,
            "search.n_trials": None,
            "search.timeout": None,
            "search.workers": 1,
            "tracking.experiment": p.experiment,
            # stage 3's improving trials keep their weights (its winner is the guide's model)
            "tracking.register_best": (part.stage == STAGES[-1]
                                       and p.cfg.tracking.register_best),
            "report.enabled": False,
            "guide": {},
        }, source=f"guide stage {part.stage}")
        return cfg.model_copy(update={"name": self.study_name(part.stage)})

    def _open(self, part: StagePart, base: StudyConfig) -> StudySession:
        """Open (create) the stage's study and parent run, and label both as the guide's."""
        session = connect(self._session_config(part, base), self.storage, self.tracking_uri)
        p = self.plan
        attrs = {ATTR_GUIDE: p.name, ATTR_GUIDE_STAGE: part.stage,
                 ATTR_GUIDE_CONFIG: p.cfg.to_yaml(),
                 ATTR_GUIDE_BUDGET: {"total": p.budget, "weights": p.weights,
                                     "plan": self.budget.plan()}}
        for k, v in attrs.items():
            if session.study.user_attrs.get(k) != v:
                session.study.set_user_attr(k, v)
        session.tracker.set_tags(session.parent_run_id, {TAG_GUIDE: p.name, TAG_STAGE: part.stage})
        return session

    def _part(self, part: StagePart, base: StudyConfig, allowance: float, cap: int | None,
              accept: Callable[[rules.TrialView], bool] | None = None) -> _PartStop:
        """Run trials of one part while its allowance, the budget and its trial cap last."""
        per = self.plan.epochs(part.stage)
        stop = _PartStop(self.budget, part.stage, allowance, per, accept)
        left = min(allowance, self.budget.left)
        if left < per or cap == 0:
            stop.reason = ("its share of the budget is spent" if left < per
                           else "its trials have run")
            return stop
        n = int(left)  # a trial trains at least one epoch
        if cap is not None:
            n = min(n, cap)
        if (part.stage, part.part) not in self._announced:
            self._announced.add((part.stage, part.part))
            self._line("search", part.note)
        run_study(self._session_config(part, base), n_trials=n, storage=self.storage,
                  tracking_uri=self.tracking_uri, progress=self.progress,
                  objective=lambda s: GuideObjective(s, base, part), callbacks=[stop])
        return stop

    def _at_least_one(self, stage: str, allowance: float) -> float:
        """``allowance``, raised to one trial when the budget still leaves one trial to
        each later stage (the lr range test can eat a small first share)."""
        per = self.plan.epochs(stage)
        later = sum(self.plan.epochs(s) for s in STAGES[STAGES.index(stage) + 1:])
        if allowance < per and self.budget.left - later >= per:
            return float(per)
        return allowance

    def _views(self, stage: str, part: str | None = None) -> list[rules.TrialView]:
        study = _load(self.store, self.study_name(stage))
        if study is None:
            return []
        views = [rules.TrialView.from_trial(t) for t in study.get_trials(deepcopy=False)
                 if t.state.is_finished()]
        return [v for v in views if part is None or v.part in (part, None)]

    # ------------------------------------------------------------ stages
    def run(self) -> GuideSummary:
        """Run (or reuse) every stage until one fails its rule or all are accepted."""
        start = time.perf_counter()
        p = self.plan
        studies = {s: _load(self.store, self.study_name(s)) for s in STAGES}
        for s, study in studies.items():
            if study is not None:
                self.budget.add(s, stage_epochs(study))
        summary = GuideSummary(p.name, self.storage, self.tracking_uri, p.experiment, p.budget,
                               self.budget.plan(), self.budget.spent)
        self.echo(f"guide        {p.name}: budget {fmt_epochs(p.budget)} epochs "
                  f"({fmt_split(summary.plan)})" + (f"; {fmt_epochs(self.budget.used)} spent "
                                                    "before" if self.budget.used else ""))
        self.echo(f"             stages {', '.join(self.study_name(s) for s in STAGES)} in "
                  f"experiment {p.experiment}")
        carry: dict[str, Any] = {}
        floors = {s: float(p.epochs(s)) for s in STAGES}
        for stage in STAGES:
            self.echo("")
            self.echo(f"{stage:<12s} {TITLES[stage]}: {GOALS[stage]}")
            study = studies[stage]
            if study is not None and study.user_attrs.get(ATTR_GUIDE_OUTCOME) == ACCEPTED:
                result = StageResult.from_dict(study.user_attrs[ATTR_GUIDE_RESULT])
                result.reused, result.epochs = True, self.budget.spent[stage]
                self._line("outcome", f"accepted earlier: {result.line} (not run again)")
                self._line("hands on", fmt_overrides(result.overrides))
            else:
                share = self.budget.split_from(stage, floors)[stage]
                self._line("share", f"{fmt_epochs(share)} epochs of the {fmt_epochs(self.budget.left)}"
                                    " left")
                try:
                    result = self._stage(stage, carry, share)
                except Interrupted as e:  # the same command resumes: no --n-trials to add
                    e.remaining = None
                    e.progress = (f"stage {stage}: {e.progress or 'no trial finished'}; the "
                                  "stages accepted before are kept")
                    raise
                self._report(result)
            summary.stages.append(result)
            if not result.accepted:
                summary.stopped = result
                break
            carry = result.carry
            rest = STAGES[STAGES.index(stage) + 1:]
            if rest and not result.reused:
                self._line("epochs", f"{fmt_epochs(result.epochs)} spent; "
                                     f"{fmt_epochs(self.budget.left)} left: "
                                     f"{fmt_split(self.budget.split_from(rest[0], floors))}")
        summary.spent = dict(self.budget.spent)
        summary.final = carry
        summary.final_yaml = apply_layers(p.cfg, carry).to_yaml() if carry else p.cfg.to_yaml()
        summary.duration_s = time.perf_counter() - start
        return summary

    def _stage(self, stage: str, carry: dict[str, Any], share: float) -> StageResult:
        base = apply_layers(self.plan.cfg, carry)
        if stage == "1-anything":
            return self._anything(base, carry, share)
        if stage == "2-everything":
            return self._everything(base, carry, share)
        return self._right_thing(base, carry, share)

    def _anything(self, base: StudyConfig, carry: dict[str, Any], share: float) -> StageResult:
        p, stage = self.plan, "1-anything"
        a = p.cfg.guide.anything
        lr, fresh = self._lr_range(base)
        subset = _subset(a.subset, int(lr.extra.get("n_train") or 0), p.cfg.data.subset)
        part = stage1_part(p, (lr.low, lr.high), subset)
        session = self._open(part, base)
        if fresh:
            session.study.set_user_attr(ATTR_GUIDE_LR_RANGE, lr.to_dict())
            self.budget.add(stage, lr.epochs)
            _log_lr_range(session, lr)
        allowance = self._at_least_one(stage, share - (lr.epochs if fresh else 0.0))
        done = len(self._views(stage))
        self._part(part, base, allowance, max(0, a.trials - done))
        views = self._views(stage)
        j = rules.judge_anything(views, chance_margin=a.chance_margin, num_classes=None,
                                 maximize=self.maximize, metric=self.metric)
        return self._finish(session, stage, j, carry, share)

    def _lr_range(self, base: StudyConfig) -> tuple[LrRange, bool]:
        """Stage 1's lr range test: the stored one, or a new one at the reference batch
        (then ``True``: it is not yet stored nor counted)."""
        p = self.plan
        study = _load(self.store, self.study_name("1-anything"))
        stored = study.user_attrs.get(ATTR_GUIDE_LR_RANGE) if study is not None else None
        if stored is not None:
            lr = LrRange.from_dict(stored)
            self._line("lr range", f"stored test: {lr.note}")
            return lr, False
        r = p.cfg.guide.lr_range
        cfg = apply_layers(base, {"train.optimizer": p.optimizer, **REG_OFF,
                                  "train.scheduler": "constant",
                                  "data.batch_size": p.batch_ref, "train.evaluate_test": False})
        lr = sweep(cfg, min_lr=r.min_lr, max_lr=r.max_lr, steps=r.steps, bounds=p.lr_bounds,
                   decades=r.decades)
        self._line("lr range", f"{len(lr.lrs)} steps of {p.optimizer} at batch {p.batch_ref} "
                               f"({fmt_epochs(lr.epochs)} epochs): {lr.note}")
        return lr, True

    def _everything(self, base: StudyConfig, carry: dict[str, Any], share: float) -> StageResult:
        """Stage 2, one trial at a time: each next trial follows the last one's diagnosis
        (:func:`~hpstudy.guide.stages.next_step`) until one fits or the share is spent."""
        p, stage = self.plan, "2-everything"
        ev = p.cfg.guide.everything
        part = stage2_part(p, base)
        session = self._open(part, base)
        ladder = growth(p.capacity, base)
        band = (part.space["train.lr"].low, part.space["train.lr"].high)
        views = self._views(stage)
        cap = None if ev.trials is None else max(0, ev.trials - len(views))
        spent = 0.0
        while not any(rules.fits(v, ev.train_acc) for v in views) and cap != 0:
            if views:  # the next trial answers the last one's diagnosis
                last = max(views, key=lambda v: v.number)
                verdict = None if last.state == "FAIL" else last.verdict
                step, why = next_step(last.params, verdict, ladder, band,
                                      [v.params for v in views])
                self._line("next", f"trial {last.number} ({verdict or last.state.lower()}, "
                                   f"training accuracy {rules.pct(last.train_acc)}): {why}")
                if step is not None:
                    session.study.enqueue_trial(step, skip_if_exists=True)
            stop = self._part(part, base, share - spent, 1,
                              accept=lambda v: rules.fits(v, ev.train_acc))
            spent += stop.spent
            if stop.spent == 0 or min(share - spent, self.budget.left) < p.epochs(stage):
                break
            cap = None if cap is None else cap - 1
            views = self._views(stage)
        views = self._views(stage)
        what = (f"width x {p.capacity[WIDTH_SCALE].choices}" if WIDTH_SCALE in p.capacity
                else ", ".join(p.capacity))
        j = rules.judge_everything(views, target=ev.train_acc, epochs=p.epochs(stage),
                                   capacity=what, maximize=self.maximize, metric=self.metric)
        return self._finish(session, stage, j, carry, share)

    def _right_thing(self, base: StudyConfig, carry: dict[str, Any], share: float
                     ) -> StageResult:
        p, stage = self.plan, "3-right-thing"
        rt = p.cfg.guide.right_thing
        per = p.epochs(stage)
        baseline, baseline_trial = self._baseline()
        part = stage3_search_part(p, base)
        session = self._open(part, base)
        views = self._views(stage, PART_SEARCH)
        sgd_left = max(0, rt.sgd_trials - len(self._views(stage, PART_SGD)))
        reserve = max(0.0, min(sgd_left * per, share - per))
        cap = None if rt.trials is None else max(0, rt.trials - len(views))
        spent = self._part(part, base, share - reserve, cap).spent
        views = self._views(stage, PART_SEARCH)
        j = rules.judge_right_thing(views, baseline=baseline, baseline_trial=baseline_trial,
                                    maximize=self.maximize, metric=self.metric)
        head = j.winner or rules.best(rules.complete(views), self.maximize)
        if sgd_left and head is not None:
            sgd = self._sgd_part(session, base, head)
            spent += self._part(sgd, base, share - spent, sgd_left).spent
        if rt.trials is None and share - spent >= per:  # the refinement left epochs: search on
            self._part(part, base, share - spent, None)
        views = self._views(stage)
        j = rules.judge_right_thing(views, baseline=baseline, baseline_trial=baseline_trial,
                                    maximize=self.maximize, metric=self.metric)
        return self._finish(session, stage, j, carry, share)

    def _sgd_part(self, session: StudySession, base: StudyConfig, head: rules.TrialView
                  ) -> StagePart:
        """The refinement around ``head`` (its band is stored: a resumed part keeps it)."""
        stored = session.study.user_attrs.get(ATTR_GUIDE_SGD)
        if isinstance(stored, dict):
            overrides, band = stored["overrides"], tuple(stored["band"])
        else:
            overrides = head.overrides
            winner = apply_layers(base, overrides)
            lo, hi, _ = sgd_band(self.plan, winner)
            band = (lo, hi)
            session.study.set_user_attr(ATTR_GUIDE_SGD, {"trial": head.number,
                                                         "overrides": overrides,
                                                         "band": list(band)})
        winner = apply_layers(base, overrides)
        return stage3_sgd_part(self.plan, winner, overrides, band)  # type: ignore[arg-type]

    def _baseline(self) -> tuple[float | None, int | None]:
        study = _load(self.store, self.study_name("2-everything"))
        res = study.user_attrs.get(ATTR_GUIDE_RESULT) if study is not None else None
        if not isinstance(res, dict):
            return None, None
        return res.get("value"), res.get("winner")

    # ------------------------------------------------------------ records
    def _finish(self, session: StudySession, stage: str, j: rules.Judgement,
                carry: dict[str, Any], share: float) -> StageResult:
        """Record the stage's outcome on its study and parent run; return it."""
        w = j.winner
        result = StageResult(
            stage=stage, study=self.study_name(stage), outcome=ACCEPTED if j.accepted else FAILED,
            rule=j.rule, target=j.target, evidence=_clean(j.evidence), line=j.line,
            winner=w.number if w else None, value=w.value if w else None,
            overrides=dict(w.overrides) if w else {},
            carry={**carry, **(w.overrides if w else {})}, advice=list(j.advice),
            diagnosis=j.diagnosis, epochs=self.budget.spent[stage], share=share,
            parent_run_id=session.parent_run_id)
        study = session.study
        study.set_user_attr(ATTR_GUIDE_RESULT, _clean(result.to_dict()))
        study.set_user_attr(ATTR_GUIDE_OUTCOME, result.outcome)
        t = session.tracker
        t.set_tags(session.parent_run_id, {
            TAG_GUIDE: self.plan.name, TAG_STAGE: stage, TAG_STAGE_OUTCOME: result.outcome,
            TAG_STAGE_RULE: j.rule, TAG_STAGE_TARGET: j.target, TAG_STAGE_EVIDENCE: j.line,
            TAG_STAGE_WINNER: result.winner if result.winner is not None else "none",
            TAG_STAGE_OVERRIDES: json.dumps(result.overrides)})
        nums = {f"stage_{k}": float(v) for k, v in j.evidence.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
        t.log_metrics(session.parent_run_id, {**nums, "stage_epochs": result.epochs})
        t.log_text(session.parent_run_id, json.dumps(_clean(result.to_dict()), indent=1),
                   STAGE_ARTIFACT)
        if stage == STAGES[-1] and result.accepted:
            t.log_text(session.parent_run_id, apply_layers(self.plan.cfg, result.carry).to_yaml(),
                       GUIDE_CONFIG_ARTIFACT)
        close_study(session, "FINISHED")
        return result

    def _report(self, r: StageResult) -> None:
        self._line("rule", r.rule)
        self._line("target", r.target)
        self._line("outcome", f"{r.outcome}: {r.line}")
        if r.accepted:
            self._line("hands on", fmt_overrides(r.overrides))
        else:
            if r.diagnosis:
                self._line("diagnosis", r.diagnosis)
            for i, a in enumerate(r.advice):
                self._line("advice" if i == 0 else "", f"- {a}")


def _subset(fraction: float | None, n_train: int, file_subset: int | None) -> int | None:
    """Stage 1's training images: a fraction (< 1) or a count of the training split."""
    if fraction is None or n_train <= 0:
        return file_subset
    n = int(round(fraction * n_train)) if fraction < 1 else int(fraction)
    return None if n >= n_train else max(1, n)


def _clean(v: Any) -> Any:
    """JSON-ready: tuples to lists, non-finite floats to None."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _log_lr_range(session: StudySession, lr: LrRange) -> None:
    """The lr range test on stage 1's run: the loss-vs-lr figure and the curve as CSV."""
    import logging

    t, rid = session.tracker, session.parent_run_id
    rows = ["lr,loss,smoothed"] + [f"{a:.6g},{b:.6g},{c:.6g}"
                                   for a, b, c in zip(lr.lrs, lr.losses, lr.smoothed, strict=False)]
    t.log_text(rid, "\n".join(rows) + "\n", f"{LR_RANGE_ARTIFACT}.csv")
    t.set_tags(rid, {TAG_LR_RANGE: f"{lr.low:.4g}..{lr.high:.4g}", TAG_LR_RANGE_NOTE: lr.note})
    t.log_metrics(rid, {"lr_range_low": lr.low, "lr_range_high": lr.high,
                        "lr_range_epochs": lr.epochs,
                        **({"lr_min_loss": lr.lr_min_loss} if lr.lr_min_loss else {})})
    try:  # the figure needs plotly (report layer); the curve is logged either way
        from ..report.guide import plot_lr_range

        t.client.log_figure(rid, plot_lr_range(lr.to_dict()), f"{LR_RANGE_ARTIFACT}.html")
    except Exception as e:  # noqa: BLE001 - a figure must not stop the guide
        logging.getLogger("hpstudy").warning("lr range figure not logged: %s", e)


def run_guide(plan: GuidePlan, *, storage: str | None = None, tracking_uri: str | None = None,
              progress: bool = True, echo: Echo | None = None) -> GuideSummary:
    """Run the guide of ``plan`` (see :class:`Guide`); returns its summary.

    A stage that fails its rule ends the run: ``summary.stopped`` holds it,
    with its diagnosis and advice. Running it again resumes at that stage.
    """
    return Guide(plan, storage=storage, tracking_uri=tracking_uri, progress=progress,
                 echo=echo).run()


__all__ = ["ACCEPTED", "FAILED", "Guide", "GuideObjective", "GuideSummary", "StageResult",
           "run_guide", "stage_epochs"]
