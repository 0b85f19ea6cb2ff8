"""The stages' acceptance rules: which trial wins a stage, and whether the stage is passed.

Each rule reads the stage's trials as :class:`TrialView` records (state,
objective value, the diagnosis of the trial's curves) and returns a
:class:`Judgement`: accepted or not, the rule and its target in words, the
numbers it rests on, the winner, and, when it fails, the course's advice
with the run's own numbers. "Training accuracy" is the diagnosis's
``final_train_acc``: the mean training accuracy over the last epochs of the
run (at most 3, at most a third of them), as measured during training.

* 1-anything: a complete trial's training accuracy is at least chance plus
  ``chance_margin`` of the headroom above chance; the trial with the highest
  training accuracy wins (milestone 1 is about optimization: its lr, batch
  size and init are the ones that learned most).
* 2-everything: a complete trial reaches the target training accuracy (0.99) and
  its diagnosis is ``overfit`` or ``good_fit`` (it fits the training set, and
  its curves have settled); the best such trial by the study metric wins. If
  none does, capacity or training length is the problem.
* 3-right-thing: a complete trial's validation follows its training
  (diagnosis ``good_fit``, ``not_converged`` or ``underfit``: not ``overfit``,
  ``unstable``, ``diverged``) and its objective is at least stage 2's winner's,
  less one binomial standard error of the validation set for an accuracy; the
  best such trial wins.

Pure functions of plain records: nothing here trains or reads a store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..analyze.diagnose import ADVICE, binomial_se
from ..names import (
    ATTR_DIAGNOSIS_DETAIL,
    ATTR_GUIDE_OVERRIDES,
    ATTR_GUIDE_PART,
    ATTR_RUN_ID,
)
from .budget import trial_epochs

FITS = ("overfit", "good_fit")  # stage 2: the training set is fit and the curves settled
FOLLOWS = ("good_fit", "not_converged", "underfit")  # stage 3: validation follows training


@dataclass(frozen=True)
class TrialView:
    """What the rules read of one trial."""

    number: int
    state: str
    value: float | None
    verdict: str | None = None
    reason: str = ""
    advice: tuple[str, ...] = ()
    train_acc: float | None = None
    val_acc: float | None = None
    num_classes: int | None = None
    n_val: int | None = None
    epochs: float = 0.0
    overrides: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    part: str | None = None
    run_id: str | None = None

    @classmethod
    def from_trial(cls, t: Any) -> TrialView:
        """From an Optuna ``FrozenTrial`` (user attrs written by the objective)."""
        attrs = t.user_attrs
        detail = attrs.get(ATTR_DIAGNOSIS_DETAIL) or {}
        ev = detail.get("evidence") or {}
        value = t.value if t.values is not None and len(t.values) == 1 else None
        return cls(
            number=t.number, state=t.state.name, value=value, verdict=detail.get("verdict"),
            reason=detail.get("reason", ""), advice=tuple(detail.get("advice", ())),
            train_acc=_num(ev.get("final_train_acc")), val_acc=_num(ev.get("best_val_acc")),
            num_classes=ev.get("num_classes"),
            n_val=ev.get("n_val") if isinstance(ev.get("n_val"), int) else None,
            epochs=trial_epochs(attrs, t.intermediate_values),
            overrides=dict(attrs.get(ATTR_GUIDE_OVERRIDES) or {}), params=dict(t.params),
            part=attrs.get(ATTR_GUIDE_PART), run_id=attrs.get(ATTR_RUN_ID),
        )


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


@dataclass(frozen=True)
class Judgement:
    """A stage's outcome under its rule.

    Attributes:
        accepted: the rule is met.
        rule: the rule in words.
        target: the number it compares with, in words.
        evidence: the numbers behind the outcome (plain JSON data).
        line: one sentence: the outcome and its numbers.
        winner: the winning trial (None when the rule failed).
        examined: the trial a failure is explained by (its diagnosis and advice).
        advice: what to try next when the rule failed (the course's, with numbers).
    """

    accepted: bool
    rule: str
    target: str
    evidence: dict[str, Any]
    line: str
    winner: TrialView | None = None
    examined: TrialView | None = None
    advice: list[str] = field(default_factory=list)

    @property
    def diagnosis(self) -> str | None:
        t = self.winner or self.examined
        if t is None or not t.verdict:
            return None
        return f"trial {t.number}: {t.verdict}: {t.reason}"


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _better(a: float, b: float, maximize: bool) -> bool:
    return a > b if maximize else a < b


def best(trials: Iterable[TrialView], maximize: bool = True) -> TrialView | None:
    """The trial with the best objective (ties: the lowest number)."""
    ok = [t for t in trials if t.value is not None and math.isfinite(t.value)]
    if not ok:
        return None
    sign = -1.0 if maximize else 1.0
    return min(ok, key=lambda t: (sign * t.value, t.number))  # type: ignore[operator]


def complete(trials: Iterable[TrialView]) -> list[TrialView]:
    return [t for t in trials if t.state == "COMPLETE"]


def _top_train(trials: Sequence[TrialView]) -> TrialView | None:
    known = [t for t in trials if t.train_acc is not None]
    return max(known, key=lambda t: (t.train_acc, -t.number)) if known else None


def _counts(trials: Sequence[TrialView]) -> dict[str, int]:
    out = {"trials": len(trials)}
    for s in ("COMPLETE", "PRUNED", "FAIL"):
        out[s.lower()] = sum(t.state == s for t in trials)
    return out


# ------------------------------------------------------------------ stage 1
def judge_anything(trials: Sequence[TrialView], *, chance_margin: float, num_classes: int | None,
                   maximize: bool = True, metric: str = "val_acc") -> Judgement:
    """Stage 1: a rough setup beats chance on the training set (see the module docstring)."""
    done = complete(trials)
    k = num_classes or next((t.num_classes for t in trials if t.num_classes), None) or 2
    chance = 1.0 / k
    bar = chance + chance_margin * (1.0 - chance)
    rule = (f"training accuracy (mean of the last epochs) beats chance ({pct(chance)} for {k} "
            f"classes) by {chance_margin:g} of the headroom; the trial that learned most (the "
            "highest training accuracy) wins")
    target = f"training accuracy >= {pct(bar)}"
    passing = [t for t in done if t.train_acc is not None and t.train_acc >= bar]
    top = _top_train(done)
    evidence: dict[str, Any] = {"chance": chance, "bar": bar, "num_classes": k,
                                "best_train_acc": top.train_acc if top else None,
                                "best_train_trial": top.number if top else None,
                                "passing": len(passing), **_counts(trials)}
    # milestone 1 is about optimization: its lr, batch and init are the ones that learned most
    winner = max(passing, key=lambda t: (t.train_acc, -t.number)) if passing else None
    if winner is not None:
        evidence.update(train_acc=winner.train_acc, value=winner.value, winner=winner.number)
        line = (f"trial {winner.number}: training accuracy {pct(winner.train_acc)} >= "
                f"{pct(bar)} ({metric} {winner.value:.4f}, {winner.verdict or 'no verdict'}); "
                f"{len(passing)} of {len(done)} complete trials beat chance")
        return Judgement(True, rule, target, evidence, line, winner=winner)
    examined = top or best(trials, maximize) or (trials[0] if trials else None)
    if top is None:
        line = f"no trial completed ({_counts(trials)}): nothing was learned that can be judged"
    else:
        line = (f"nothing learned: the best training accuracy is {pct(top.train_acc)} "
                f"(trial {top.number}, {top.verdict or 'no verdict'}), below {pct(bar)}")
    advice = ["When stuck, reduce the learning rate: try the lower decade of the range test's "
              "range (guide.lr_range.decades: 3 searches one more decade down)."]
    advice += list(_own_advice(examined) or ADVICE["not_learning"])
    advice.append("Give it more to learn from: raise guide.anything.epochs or "
                  "guide.anything.subset.")
    return Judgement(False, rule, target, evidence, line, examined=examined,
                     advice=_unique(advice))


# ------------------------------------------------------------------ stage 2
def fits(t: TrialView, target: float) -> bool:
    """Stage 2's rule for one trial: complete, training accuracy at the target, fit or overfit."""
    return (t.state == "COMPLETE" and t.train_acc is not None and t.train_acc >= target
            and t.verdict in FITS)


def judge_everything(trials: Sequence[TrialView], *, target: float, epochs: int,
                     capacity: str, maximize: bool = True, metric: str = "val_acc"
                     ) -> Judgement:
    """Stage 2: some configuration fits the training set (see the module docstring).

    Args:
        trials: the stage's trials.
        target: training accuracy to reach (fraction).
        epochs: epochs per trial (named in the advice).
        capacity: what was searched for capacity, in words (named in the advice).
        maximize: the study metric's direction.
        metric: the study metric's name.
    """
    done = complete(trials)
    rule = (f"training accuracy reaches {pct(target)} with regularization off and the "
            f"diagnosis reads {' or '.join(FITS)}; the best such trial by {metric} wins")
    tgt = f"training accuracy >= {pct(target)}, verdict {'/'.join(FITS)}"
    passing = [t for t in done if fits(t, target)]
    top = _top_train(done)
    evidence: dict[str, Any] = {"target": target, "best_train_acc": top.train_acc if top else None,
                                "best_train_trial": top.number if top else None,
                                "passing": len(passing), **_counts(trials)}
    winner = best(passing, maximize)
    if winner is not None:
        evidence.update(train_acc=winner.train_acc, value=winner.value, winner=winner.number,
                        verdict=winner.verdict)
        line = (f"trial {winner.number} fits the training set: training accuracy "
                f"{pct(winner.train_acc)}, {winner.verdict}, {metric} {winner.value:.4f}")
        return Judgement(True, rule, tgt, evidence, line, winner=winner)
    if top is None:
        line = f"no trial completed ({_counts(trials)})"
    elif top.train_acc is not None and top.train_acc >= target:
        line = (f"trial {top.number} reached {pct(top.train_acc)} training accuracy but reads "
                f"{top.verdict}, not {' or '.join(FITS)}: its curves have not settled")
    else:
        line = (f"no configuration fit the training set: the best training accuracy is "
                f"{pct(top.train_acc)} (trial {top.number}, {top.verdict or 'no verdict'}), "
                f"below {pct(target)}: capacity or training length is the problem")
    advice = [f"Raise capacity: {capacity} was searched; allow larger values "
              "(guide.everything.width_scales, or guide.everything.capacity).",
              f"Train longer: {epochs} epochs per trial (guide.everything.epochs).",
              *_own_advice(top)]
    return Judgement(False, rule, tgt, evidence, line, examined=top, advice=_unique(advice))


# ------------------------------------------------------------------ stage 3
def judge_right_thing(trials: Sequence[TrialView], *, baseline: float | None,
                      baseline_trial: int | None = None, maximize: bool = True,
                      metric: str = "val_acc") -> Judgement:
    """Stage 3: validation follows training, at least as well as stage 2's winner.

    "As well" allows the noise of the validation set: an accuracy one binomial
    standard error below stage 2's (on the trials' validation images) still
    counts. Stage 2's value is the best of its trials, picked after the fact;
    a regularized trial one image short of it has not lost anything.

    Args:
        trials: the stage's trials (both parts).
        baseline: stage 2's winning objective value (None: no floor).
        baseline_trial: its trial number in stage 2 (named in the evidence).
        maximize: the study metric's direction.
        metric: the study metric's name.
    """
    done = complete(trials)
    n_val = next((t.n_val for t in trials if t.n_val), None)
    slack = 0.0
    if baseline is not None and metric.endswith("acc") and n_val:
        slack = binomial_se(baseline, n_val)
    floor_value = None if baseline is None else (baseline - slack if maximize
                                                 else baseline + slack)
    floor = ""
    if baseline is not None:
        floor = (f"{metric} {'>=' if maximize else '<='} stage 2's {baseline:.4f}"
                 + (f" - {slack:.4f} (one standard error on {n_val} validation images)"
                    if slack else ""))
    rule = (f"validation follows training (diagnosis {', '.join(FOLLOWS)}: not overfit, "
            f"unstable or diverged)" + (f" and {floor}" if floor else "")
            + f"; the best such trial by {metric} wins")
    target = floor or "a trial whose validation follows training"
    reach = [t for t in done if t.value is not None and (
        floor_value is None or not _better(floor_value, t.value, maximize))]
    passing = [t for t in reach if t.verdict in FOLLOWS]
    top = best(done, maximize)
    evidence: dict[str, Any] = {"baseline": baseline, "baseline_trial": baseline_trial,
                                "floor": floor_value, "n_val": n_val,
                                "best_value": top.value if top else None,
                                "best_trial": top.number if top else None,
                                "best_verdict": top.verdict if top else None,
                                "reaching": len(reach), "passing": len(passing),
                                "overfit": sum(t.verdict == "overfit" for t in done),
                                **_counts(trials)}
    winner = best(passing, maximize)
    if winner is not None:
        evidence.update(value=winner.value, winner=winner.number, verdict=winner.verdict,
                        train_acc=winner.train_acc)
        line = (f"trial {winner.number}: {metric} {winner.value:.4f} ({winner.verdict}, training "
                f"accuracy {pct(winner.train_acc)})"
                + (f" vs stage 2's {baseline:.4f}" if baseline is not None else ""))
        if top is not None and top.number != winner.number:
            line += (f"; trial {top.number} scored {top.value:.4f} but reads {top.verdict}, so "
                     "it is not taken")
        return Judgement(True, rule, target, evidence, line, winner=winner)
    if not reach:
        line = (f"regularization cost accuracy: the best trial (#{top.number}) reached "
                f"{top.value:.4f}, below stage 2's {baseline:.4f}"
                + (f" less its noise ({floor_value:.4f})" if slack else "")
                if top and baseline is not None
                else f"no trial completed ({_counts(trials)})")
        advice = ["Search weaker regularization (narrower guide.right_thing.space ranges) or "
                  "train longer (guide.right_thing.epochs): the regularized trials stayed "
                  "below the unregularized winner.",
                  *_own_advice(top)]
        return Judgement(False, rule, target, evidence, line, examined=top,
                         advice=_unique(advice))
    examined = best(reach, maximize)
    line = (f"validation does not follow yet: every trial at stage 2's level reads "
            f"{', '.join(sorted({t.verdict or 'no verdict' for t in reach}))} (best: trial "
            f"{examined.number}, {metric} {examined.value:.4f})")  # type: ignore[union-attr]
    advice = [*ADVICE["overfit"], *_own_advice(examined)]
    return Judgement(False, rule, target, evidence, line, examined=examined,
                     advice=_unique(advice))


def _own_advice(t: TrialView | None) -> tuple[str, ...]:
    """A trial's own advice, where it says what to change (not for good fits or pruned runs)."""
    return t.advice if t is not None and t.verdict not in ("good_fit", "pruned") else ()


def _unique(lines: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(x for x in lines if x))
