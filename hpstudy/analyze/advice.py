"""Advice for one trial in its study: its own hyperparameters against the best trials'.

:func:`~hpstudy.analyze.diagnose.diagnose` reads one run's curves and knows
nothing of its hyperparameters or of the other trials. :func:`advise` adds
both: it names the trial's values and a concrete next step, taken from the
study's best trials where there are some ("dropout is 0.0 here; the 3 best
trials use 0.3-0.45"), and it says when a ``good_fit`` is clearly (beyond the
noise of the validation set) worse than the study's best, pointing at that
trial and at the hyperparameters in which the two differ most.

Everything here is pure: a :class:`~hpstudy.analyze.diagnose.Diagnosis`, a
dict of flat dotted hyperparameters (``train.lr``, ``model.drop_rate``,
``train.weight_decay``, ``train.max_epochs``...) and a :class:`StudyContext`
in, a list of sentences out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .diagnose import Diagnosis, binomial_se

# hyperparameters the advice talks about, with the words it uses for them
REGULARIZERS = {"model.drop_rate": "dropout", "train.weight_decay": "weight decay",
                "train.label_smoothing": "label smoothing"}
LOG_SCALE = ("train.lr", "train.weight_decay")  # compared by ratio, not difference
LR, BATCH = "train.lr", "data.batch_size"
# what to try when the study has no better trials to point at (the course's ranges)
DEFAULT_RANGES = {"model.drop_rate": "0.2-0.5 on the dense layers",
                  "train.weight_decay": "1e-5 to 1e-3, searched on a log scale"}


@dataclass(frozen=True)
class TrialRecord:
    """What advice needs of one other trial.

    Attributes:
        number: the trial number.
        value: its objective value (``None`` if it has none, e.g. pruned or failed).
        verdict: its diagnosis verdict, if known.
        params: its hyperparameters, flat dotted keys.
        n_val: its validation images, if known (for the noise of ``value``).
        complete: finished normally (only complete trials count as "best").
    """

    number: int
    value: float | None
    verdict: str | None
    params: Mapping[str, Any]
    n_val: int | None = None
    complete: bool = True


@dataclass(frozen=True)
class StudyContext:
    """The other trials of a study, as far as advice needs them.

    Attributes:
        trials: one record per trial.
        direction: ``maximize`` or ``minimize`` (of ``metric``).
        metric: the objective's name (``val_acc``...); accuracies get binomial noise.
        top_k: how many of the best trials give the ranges advice quotes.
    """

    trials: tuple[TrialRecord, ...] = ()
    direction: str = "maximize"
    metric: str = "val_acc"
    top_k: int = 3

    @classmethod
    def from_frame(cls, trials: pd.DataFrame, *, direction: str = "maximize",
                   metric: str = "val_acc", param_names: Sequence[str] | None = None,
                   top_k: int = 3) -> StudyContext:
        """Build from a trials frame (``hpstudy.analyze.collect``'s ``trials``, optionally
        merged with ``diagnose_trials``' ``verdict`` column).

        Columns used: ``number``, ``value``; optional ``state`` (only ``COMPLETE`` rows
        count as best), ``verdict``, ``n_val``; the hyperparameters are
        ``param_names`` (default: every column with a dot in its name).
        """
        names = list(param_names) if param_names is not None else [
            c for c in trials.columns if "." in str(c)]
        records = []
        for row in trials.to_dict("records"):
            params = {k: row[k] for k in names if k in row and _present(row[k])}
            value = row.get("value")
            n_val = row.get("n_val")
            records.append(TrialRecord(
                number=int(row["number"]),
                value=float(value) if _present(value) else None,
                verdict=row.get("verdict") if isinstance(row.get("verdict"), str) else None,
                params=params,
                n_val=int(n_val) if _present(n_val) else None,
                complete=str(row.get("state", "COMPLETE")) == "COMPLETE",
            ))
        return cls(tuple(records), direction, metric, top_k)

    def ranked(self, exclude: int | None = None) -> list[TrialRecord]:
        """Complete trials with a finite value, best first (ties: lowest number)."""
        ok = [t for t in self.trials if t.complete and t.value is not None
              and math.isfinite(t.value) and t.number != exclude]
        sign = -1.0 if self.direction == "maximize" else 1.0
        return sorted(ok, key=lambda t: (sign * t.value, t.number))  # type: ignore[operator]

    def best(self, exclude: int | None = None, better_than: float | None = None
             ) -> list[TrialRecord]:
        """The ``top_k`` best complete trials other than ``exclude`` (and, given
        ``better_than``, only those with a better value: a trial is not told to copy
        worse ones)."""
        ranked = self.ranked(exclude)
        if better_than is not None and math.isfinite(better_than):
            ranked = [t for t in ranked if (t.value > better_than  # type: ignore[operator]
                                            if self.direction == "maximize"
                                            else t.value < better_than)]  # type: ignore[operator]
        return ranked[: self.top_k]


def _present(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, float) and math.isnan(v):
        return False
    return True


def _num(v: Any, digits: int = 3) -> str:
    """A hyperparameter value (3 significant digits: 0.0105, 0.478, 7.9e-06, 64)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    return "0" if v == 0 else f"{v:.{digits}g}"


def _val(v: float) -> str:
    """A metric value (4 significant digits: 0.9965)."""
    return _num(v, 4)


def _diff(x: float, scale: float) -> str:
    """A difference of metric values: points of accuracy (1 decimal, 2 below 1) or raw."""
    if scale == 100:
        return f"{100 * x:.1f} points" if abs(100 * x) >= 1 else f"{100 * x:.2f} points"
    return _num(x, 2)


def _numeric(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)
            and math.isfinite(float(v))]


def _span(key: str, best: Sequence[TrialRecord]) -> tuple[float, float] | None:
    vals = _numeric(t.params.get(key) for t in best)
    return (min(vals), max(vals)) if vals else None


def _span_txt(lo: float, hi: float) -> str:
    return _num(lo) if lo == hi else f"{_num(lo)}-{_num(hi)}"


def _who(best: Sequence[TrialRecord]) -> str:
    """``the 3 best trials (#1, #2, #3) use`` / ``the better trial (#4) uses``."""
    ids = ", ".join(f"#{t.number}" for t in best)
    return f"the better trial ({ids}) uses" if len(best) == 1 else \
        f"the {len(best)} best trials ({ids}) use"


def _compare(key: str, mine: Any, best: Sequence[TrialRecord], want: str) -> str | None:
    """A sentence if ``mine`` lies on the ``want`` side (``higher``/``lower``) of
    the best trials' range for ``key``, else None."""
    span = _span(key, best)
    if span is None or not isinstance(mine, int | float) or isinstance(mine, bool):
        return None
    lo, hi = span
    if (want == "higher" and mine < lo) or (want == "lower" and mine > hi):
        verb = "raise" if want == "higher" else "lower"
        return (f"{key} is {_num(mine)} here; {_who(best)} {_span_txt(lo, hi)}: "
                f"{verb} it into that range.")
    return None


def _metric_noise(metric: str, diag: Diagnosis, a: float, b: float,
                  n_a: int | None, n_b: int | None) -> float | None:
    """Standard error of the difference of two trials' metric values, or None if unknown."""
    ev = diag.evidence
    n_a = n_a or ev.get("n_val")
    n_b = n_b or n_a
    if metric.endswith("acc") and n_a and n_b:
        return math.sqrt(binomial_se(a, int(n_a)) ** 2 + binomial_se(b, int(n_b)) ** 2)
    if metric.endswith("loss"):
        parts = [x for x in (ev.get("val_loss_noise"), ev.get("val_loss_resolution"))
                 if isinstance(x, int | float)]
        return math.sqrt(2) * max(parts) if parts else None
    return None


def _differences(mine: Mapping[str, Any], other: Mapping[str, Any], k: int = 3) -> list[str]:
    """The ``k`` hyperparameters in which ``other`` differs most from ``mine``, as text."""
    scored = []
    for key in sorted(set(mine) & set(other)):
        a, b = mine[key], other[key]
        if a == b:
            continue
        if isinstance(a, int | float) and isinstance(b, int | float) and not (
                isinstance(a, bool) or isinstance(b, bool)):
            if key in LOG_SCALE and a > 0 and b > 0:
                size = abs(math.log10(b / a))
            else:
                size = abs(b - a) / max(abs(a), abs(b), 1e-12)
        else:
            size = 1.0  # a different category
        scored.append((size, key, a, b))
    scored.sort(key=lambda s: (-s[0], s[1]))
    return [f"{key} {_num(b)} vs {_num(a)} here" for _, key, a, b in scored[:k]]


def advise(diagnosis: Diagnosis, params: Mapping[str, Any],
           context: StudyContext | None = None, *, number: int | None = None,
           value: float | None = None, noise_factor: float = 3.0) -> list[str]:
    """Advice for this trial, in this study: its values named, a concrete next step first.

    Args:
        diagnosis: the trial's :class:`~hpstudy.analyze.diagnose.Diagnosis`.
        params: the trial's hyperparameters, flat dotted keys (``train.lr``...).
        context: the study's other trials (None: advice from this trial alone).
        number: this trial's number (left out of "the best trials").
        value: this trial's objective value (default: from ``context`` by ``number``,
            else the diagnosis's ``best_value``).
        noise_factor: how many standard errors make a difference "clear".

    Returns:
        Sentences, most specific first; the diagnosis's own advice follows, less what
        the specific sentences already say.
    """
    v = diagnosis.verdict
    ctx = context or StudyContext()
    if value is None and number is not None:
        value = next((t.value for t in ctx.trials if t.number == number), None)
    if value is None:
        value = diagnosis.evidence.get("best_value")
    best = ctx.best(exclude=number, better_than=value)
    specific: list[str] = []
    covered: set[str] = set()  # topics of ADVICE lines the specific ones replace

    if v == "overfit":
        for key, word in REGULARIZERS.items():
            if key not in params:
                continue
            line = _compare(key, params[key], best, "higher")
            # no better trial to quote: the course's range
            if line is None and key in DEFAULT_RANGES and _span(key, best) is None:
                verb = "raise" if params[key] else "add"
                line = f"{key} is {_num(params[key])} here: {verb} {word} ({DEFAULT_RANGES[key]})."
            if line:
                specific.append(line)
                covered.add(word)
    elif v == "underfit":
        for key in REGULARIZERS:
            if key in params:
                line = _compare(key, params[key], best, "lower")
                if line:
                    specific.append(line)
        for want in ("higher", "lower"):
            line = _compare(LR, params.get(LR), best, want)
            if line:
                specific.append(line)
                covered.add("learning rate")
        # a knob already where the better trials have it is not what holds this one back
        for key, topic in ((LR, "learning rate"), (BATCH, "batch size")):
            span = _span(key, best)
            mine = params.get(key)
            if span and isinstance(mine, int | float) and span[0] <= mine <= span[1]:
                covered.add(topic)
    elif v == "not_converged":  # the diagnosis already says which curve and how many epochs
        line = _compare(LR, params.get(LR), best, "higher")
        if line:
            specific.append(line)
            covered.add("or raise the learning rate")
    elif v in ("unstable", "diverged"):
        lr = params.get(LR)
        line = _compare(LR, lr, best, "lower")
        if line:
            specific.append(line)
        elif isinstance(lr, int | float) and lr > 0:
            step = 10 if v == "diverged" else 3
            specific.append(f"{LR} is {_num(lr)} here: lower it to {_num(lr / step)} or below.")
        covered.add("learning rate")
        if v == "unstable":
            line = _compare(BATCH, params.get(BATCH), best, "higher")
            if line:
                specific.append(line)
                covered.add("larger batch")
    elif v == "not_learning":
        lr = params.get(LR)
        span = _span(LR, best)
        if isinstance(lr, int | float) and lr > 0 and span and not span[0] <= lr <= span[1]:
            off = abs(math.log10(lr / (span[0] if lr < span[0] else span[1])))
            specific.append(f"{LR} is {_num(lr)} here, {off:.1f} orders of magnitude off; "
                            f"{_who(best)} {_span_txt(*span)}: move it into that range.")
            covered.add("learning rate")
    elif v == "good_fit":
        specific += _good_fit_lines(diagnosis, params, ctx, number, value, noise_factor)
        covered.add("compare")
    elif v == "pruned":
        pruned = sum(1 for t in ctx.trials if t.verdict == "pruned")
        if ctx.trials and pruned:
            n = diagnosis.evidence.get("epochs")
            total = diagnosis.evidence.get("max_epochs") or n
            specific.append(f"It ran {n} of {total} epochs, one of {pruned} pruned trials out of "
                            f"{len(ctx.trials)}: if good configurations are among them, raise "
                            "the pruner's warm-up (n_warmup_steps).")
            covered.add("warm-up")

    rest = [a for a in diagnosis.advice if not _covers(covered, a)]
    return specific + rest


def _covers(topics: set[str], line: str) -> bool:
    low = line.lower()
    return any(t in low for t in topics)


def _good_fit_lines(diag: Diagnosis, params: Mapping[str, Any], ctx: StudyContext,
                    number: int | None, value: float | None, noise_factor: float) -> list[str]:
    """Where a good fit stands against the study's best trial."""
    ranked = ctx.ranked(exclude=number)
    metric = ctx.metric
    if not ranked or value is None or not math.isfinite(value):
        return ["Keep it as the baseline; change one thing at a time and test each change "
                "alone and combined (ablation)."]
    top = ranked[0]
    assert top.value is not None  # ranked() keeps finite values only
    better = top.value - value if ctx.direction == "maximize" else value - top.value
    se = _metric_noise(metric, diag, value, top.value, diag.evidence.get("n_val"), top.n_val)
    scale = 100 if metric.endswith("acc") else 1
    if better <= 0:
        return [f"The study's best so far ({metric} {_val(value)}; next best #{top.number} at "
                f"{_val(top.value)}): keep it as the baseline and test one change at a time "
                "(ablation)."]
    noise_txt = f"noise {_diff(se, scale)}" if se else "noise unknown"
    if se and better > noise_factor * se:
        diffs = _differences(params, top.params)
        where = f"; it differs most in {', '.join(diffs)}" if diffs else ""
        return [f"Clearly worse than the best trial: {metric} {_val(value)} vs "
                f"#{top.number}'s {_val(top.value)} ({_diff(better, scale)} apart, "
                f"{noise_txt}){where}. Start from #{top.number} rather than from this one."]
    return [f"Within noise of the best trial #{top.number} ({metric} {_val(value)} vs "
            f"{_val(top.value)}, {_diff(better, scale)} apart, {noise_txt}): either can be "
            "the baseline; test one change at a time (ablation)."]


__all__ = ["StudyContext", "TrialRecord", "advise"]
