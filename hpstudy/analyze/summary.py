"""Study-level reading: every trial's diagnosis, the verdict counts, and what sets the
overfit trials apart from the good fits.

``diagnose_trials(data)`` re-reads every trial's learning curves (so changed
thresholds apply to old studies), with the trial's status (a pruned trial is
``pruned``), its validation-set size and epoch budget from its run's params;
a trial without a history keeps the diagnosis stored when it ended. Its advice
is :func:`~hpstudy.analyze.advice.advise`'s: the trial's own values against
the study's best trials. ``summarize(table, data)`` counts verdicts and
compares the hyperparameters of the ``overfit`` and ``good_fit`` groups:
numeric ones by Cliff's delta (how often an overfit trial's value is above a
good fit's, minus below; -1..1), categorical ones by the total variation
distance between the two groups' value shares (0..1). Both are 0 when the
groups do not differ and 1 when they do not overlap, so one column ranks them.
A hyperparameter with one value across both groups (a constant ``num_params``)
is left out. Below :data:`MIN_GROUP` trials in a group the comparison carries a
caveat (:func:`comparison_caveat`) with the smallest p-value such groups allow.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .advice import StudyContext, advise
from .collect import StudyData
from .diagnose import STATUSES, VERDICTS, Diagnosis, diagnose

MIN_GROUP = 5
"""Trials per group below which the overfit-vs-good_fit comparison is an anecdote: with
fewer, one trial more or less flips a difference, and even groups that do not overlap
at all are hard to tell from chance (3 vs 3: the smallest two-sided rank-test p is 0.1)."""

EVIDENCE_COLUMNS = ("epochs", "best_epoch", "val_loss_min_epoch", "final_train_acc",
                    "best_val_acc", "gap", "val_loss_rise", "train_loss_slope", "noise",
                    "certainty")
TABLE_COLUMNS = ("number", "state", "value", "verdict", "reason", *EVIDENCE_COLUMNS, "advice")


def _num_classes(data: StudyData) -> int | None:
    """The study's class count as stored with its diagnoses (the most common one)."""
    known = [int(x) for x in data.trials["num_classes"].dropna()]
    return Counter(known).most_common(1)[0][0] if known else None


def trial_status(state: Any, status: Any) -> str:
    """How a trial's run ended (``FitResult.status``), from its stored status or its state."""
    if isinstance(status, str) and status in STATUSES:
        return status
    return "pruned" if state == "PRUNED" else "completed"


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) \
            else None
    except (TypeError, ValueError):
        return None


def diagnose_trials(data: StudyData, num_classes: int | None = None,
                    **thresholds: Any) -> pd.DataFrame:
    """One row per trial: verdict, reason, evidence columns and advice.

    Each trial is diagnosed with its status (``status`` user attr, else ``pruned`` for
    a PRUNED trial), its ``prune_reason`` user attr, ``data.n_val`` and
    ``train.max_epochs`` from its run's params, and the study's metric as
    ``monitor``; its advice names its hyperparameters against the study's best
    trials (:func:`~hpstudy.analyze.advice.advise`).

    Args:
        data: from :func:`~hpstudy.analyze.collect`.
        num_classes: override the class count (default: the one stored with
            each trial's diagnosis).
        **thresholds: any :class:`~hpstudy.analyze.diagnose.Thresholds` field.

    Returns:
        Columns :data:`TABLE_COLUMNS`; ``advice`` holds a list of strings;
        ``verdict`` is ``None`` for a trial with neither a history nor a stored
        diagnosis (its ``reason`` then says why, e.g. the failure).
    """
    default_classes = num_classes or _num_classes(data)
    trial_hist = set(data.histories["trial"].unique()) if len(data.histories) else set()
    mode = "max" if data.direction == "maximize" else "min"
    diags: dict[int, Diagnosis | None] = {}
    for t in data.trials.itertuples(index=False):
        number = int(t.number)
        classes = num_classes or (int(t.num_classes) if pd.notna(t.num_classes) else None) \
            or default_classes
        run = data.run_params.get(number, {})
        prune = getattr(t, "prune_reason", None)
        diag: Diagnosis | None = None
        if number in trial_hist and classes is not None:
            diag = diagnose(data.history(number), classes,
                            status=trial_status(t.state, t.status),
                            n_val=_int_or_none(run.get("data.n_val")),
                            max_epochs=_int_or_none(run.get("train.max_epochs")),
                            prune_reason=prune if isinstance(prune, str) else None,
                            monitor=data.metric, mode=mode, **thresholds)
        elif number in data.diagnoses:
            diag = Diagnosis.from_dict(data.diagnoses[number])
        diags[number] = diag
    context = study_context(data, {n: d.verdict for n, d in diags.items() if d is not None})
    rows = []
    for t in data.trials.itertuples(index=False):
        number = int(t.number)
        diag = diags[number]
        row: dict[str, Any] = {"number": number, "state": t.state, "value": t.value}
        if diag is None:
            why = t.fail_reason if isinstance(t.fail_reason, str) else "no epoch recorded"
            row.update(verdict=None, reason=why, advice=[])
        else:
            advice = advise(diag, trial_config(data, number), context, number=number)
            row.update(verdict=diag.verdict, reason=diag.reason, advice=advice)
            row.update({k: diag.evidence.get(k) for k in EVIDENCE_COLUMNS})
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    # object, not pandas' string dtype: a missing verdict stays None rather than NaN
    table["verdict"] = pd.Series([r["verdict"] for r in rows], index=table.index, dtype=object)
    return table


def trial_config(data: StudyData, number: int) -> dict[str, Any]:
    """A trial's hyperparameters as flat dotted keys: its run's params (the whole
    concrete config), overlaid with the searched values of the trials frame."""
    out = {k: v for k, v in data.run_params.get(number, {}).items()
           if isinstance(v, int | float | str | bool)}
    row = data.trials[data.trials["number"] == number]
    if len(row):
        for k in data.param_names:
            v = row.iloc[0][k]
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                out[k] = v.item() if hasattr(v, "item") else v
    return out


def study_context(data: StudyData, verdicts: dict[int, str] | None = None,
                  top_k: int = 3) -> StudyContext:
    """The :class:`~hpstudy.analyze.advice.StudyContext` of a collected study."""
    frame = data.trials[["number", "state", "value"]].copy()
    frame["verdict"] = [(verdicts or {}).get(int(n)) for n in frame["number"]]
    frame["n_val"] = [_int_or_none(data.run_params.get(int(n), {}).get("data.n_val"))
                      for n in frame["number"]]
    configs = [trial_config(data, int(n)) for n in frame["number"]]
    keys = sorted({k for c in configs for k in c})
    params = pd.DataFrame([{k: c.get(k) for k in keys} for c in configs], index=frame.index,
                          columns=keys)
    frame = pd.concat([frame, params], axis=1)
    return StudyContext.from_frame(frame, direction=data.direction, metric=data.metric,
                                   param_names=keys, top_k=top_k)


@dataclass
class StudyDiagnosis:
    """Counts per verdict and the hyperparameters that differ between overfit and good fits.

    Attributes:
        counts: verdict -> number of trials, every verdict present (0 included),
            in :data:`~hpstudy.analyze.diagnose.VERDICTS` order.
        undiagnosed: trials without a verdict (failed before their first epoch).
        n_overfit, n_good_fit: sizes of the two compared groups.
        differences: one row per hyperparameter: ``param``, ``kind``
            (``numeric``/``categorical``), ``overfit`` and ``good_fit`` (median or
            most common value), ``effect`` (0..1, larger = more different) and
            ``note`` (e.g. ``higher in overfit``); sorted by ``effect``, largest first.
            Empty unless both groups have a trial.
    """

    counts: dict[str, int]
    undiagnosed: int
    n_overfit: int
    n_good_fit: int
    differences: pd.DataFrame = field(default_factory=pd.DataFrame)


def cliffs_delta(a: list[float], b: list[float]) -> float:
    """P(a > b) - P(a < b) over all pairs: -1..1, 0 when the groups overlap evenly."""
    if not a or not b:
        return 0.0
    gt = sum(1 for x in a for y in b if x > y)
    lt = sum(1 for x in a for y in b if x < y)
    return (gt - lt) / (len(a) * len(b))


def _tvd(a: list[Any], b: list[Any]) -> float:
    ca, cb = Counter(map(str, a)), Counter(map(str, b))
    keys = set(ca) | set(cb)
    return 0.5 * sum(abs(ca[k] / len(a) - cb[k] / len(b)) for k in keys)


def _mode(values: list[Any]) -> Any:
    return Counter(map(str, values)).most_common(1)[0][0]


def compare_groups(over: pd.DataFrame, good: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per column, how the ``over`` rows differ from the ``good`` rows (see the module doc)."""
    rows = []
    for col in columns:
        a = [v for v in over[col].tolist() if v is not None and not _isnan(v)]
        b = [v for v in good[col].tolist() if v is not None and not _isnan(v)]
        if not a or not b:
            continue
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in a + b)
        if numeric:
            d = cliffs_delta([float(x) for x in a], [float(x) for x in b])
            ma, mb = _median(a), _median(b)
            note = ("higher in overfit" if d > 0 else "lower in overfit") if d else "no difference"
            rows.append({"param": col, "kind": "numeric", "overfit": ma, "good_fit": mb,
                         "effect": abs(d), "note": note})
        else:
            e = _tvd(a, b)
            note = (f"overfit mostly {_mode(a)}, good_fit mostly {_mode(b)}" if e
                    else "no difference")
            rows.append({"param": col, "kind": "categorical", "overfit": _mode(a),
                         "good_fit": _mode(b), "effect": e, "note": note})
    df = pd.DataFrame(rows, columns=["param", "kind", "overfit", "good_fit", "effect", "note"])
    return df.sort_values(["effect", "param"], ascending=[False, True], ignore_index=True)


def _constant(over: pd.DataFrame, good: pd.DataFrame, col: str) -> bool:
    """One value across both groups: nothing to compare."""
    vals = {str(v) for v in [*over[col].tolist(), *good[col].tolist()]
            if v is not None and not _isnan(v)}
    return len(vals) <= 1


def min_p_value(n1: int, n2: int) -> float:
    """The smallest two-sided p-value a rank test (Mann-Whitney) can give two groups of
    ``n1`` and ``n2``: groups that do not overlap at all, ``2 / C(n1 + n2, n1)``."""
    if n1 < 1 or n2 < 1:
        return 1.0
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def comparison_caveat(n_overfit: int, n_good_fit: int) -> str:
    """A warning when a group is smaller than :data:`MIN_GROUP` (empty otherwise)."""
    small = min(n_overfit, n_good_fit)
    if small >= MIN_GROUP or small == 0:
        return ""
    p = min_p_value(n_overfit, n_good_fit)
    return (f"{n_overfit} overfit vs {n_good_fit} good_fit: with fewer than {MIN_GROUP} trials "
            f"in a group these differences are anecdotes, not evidence; even groups that do "
            f"not overlap at all would give p = {p:.2g} at best (two-sided rank test)")


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _median(xs: list[Any]) -> float:
    s = sorted(float(x) for x in xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def summarize(table: pd.DataFrame, data: StudyData) -> StudyDiagnosis:
    """Verdict counts and the overfit-vs-good_fit comparison of hyperparameters.

    Args:
        table: from :func:`diagnose_trials`.
        data: the same study's :class:`~hpstudy.analyze.collect.StudyData`;
            its hyperparameters and ``num_params`` (capacity) are compared.
    """
    verdicts = table["verdict"]
    counts = {v: int((verdicts == v).sum()) for v in VERDICTS}
    merged = table[["number", "verdict"]].merge(data.trials, on="number", how="left")
    over = merged[merged["verdict"] == "overfit"]
    good = merged[merged["verdict"] == "good_fit"]
    cols = [c for c in [*data.param_names, "num_params"] if c in merged.columns
            and not _constant(over, good, c)]
    diffs = compare_groups(over, good, cols)  # empty unless both groups have a trial
    return StudyDiagnosis(counts=counts, undiagnosed=int(verdicts.isna().sum()),
                          n_overfit=len(over), n_good_fit=len(good), differences=diffs)


# ------------------------------------------------------------------ text
def _cell(v: Any, key: str = "") -> str:
    if v is None or _isnan(v):
        return "-"
    if key in ("final_train_acc", "best_val_acc", "gap", "val_loss_rise", "train_loss_slope",
               "noise") and isinstance(v, float):
        return f"{100 * v:+.1f}%" if key in ("gap", "train_loss_slope") else f"{100 * v:.1f}%"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e12 else f"{v:.4g}"
    return str(v)


def format_text(table: pd.DataFrame, summary: StudyDiagnosis, width: int = 100) -> str:
    """The ``hpstudy diagnose`` output: a trial table, then the study-level summary."""
    import textwrap

    cols = [("trial", "number"), ("state", "state"), ("value", "value"),
            ("verdict", "verdict"), ("epochs", "epochs"), ("best", "best_epoch"),
            ("vl_min", "val_loss_min_epoch"),
            ("train_acc", "final_train_acc"), ("val_acc", "best_val_acc"), ("gap", "gap"),
            ("val_rise", "val_loss_rise"), ("slope", "train_loss_slope"), ("noise", "noise")]
    cells = [[_cell(r[k], k) for _, k in cols] for r in table.to_dict("records")]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, (h, _) in enumerate(cols)]
    lines = ["  ".join(h.ljust(w) for (h, _), w in zip(cols, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    indent = " " * 4
    for row, r in zip(cells, table.to_dict("records"), strict=True):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        lines.extend(textwrap.wrap(f"why: {r['reason']}", width, initial_indent=indent,
                                   subsequent_indent=indent + "     "))
        for a in r["advice"]:
            lines.extend(textwrap.wrap(f"try: {a}", width, initial_indent=indent,
                                       subsequent_indent=indent + "     "))
    lines.append("")
    total = len(table)
    counts = ", ".join(f"{v} {n}" for v, n in summary.counts.items() if n)
    if counts:
        lines.append(f"{total} trials: {counts}" + (
            f", {summary.undiagnosed} without a verdict" if summary.undiagnosed else ""))
    else:
        lines.append(f"{total} trials, none with a verdict (no learning curve was recorded)")
    if summary.n_overfit and summary.n_good_fit:
        lines.append(f"overfit (n={summary.n_overfit}) vs good_fit (n={summary.n_good_fit}), "
                     "largest differences first (effect 0..1; hyperparameters with one value "
                     "in both groups left out):")
        caveat = comparison_caveat(summary.n_overfit, summary.n_good_fit)
        if caveat:
            lines.extend(textwrap.wrap(f"caution: {caveat}", width, initial_indent="  ",
                                       subsequent_indent="  "))
        for d in summary.differences.to_dict("records"):
            lines.append(f"  {d['param']:28s} overfit {_cell(d['overfit']):>10s}  "
                         f"good_fit {_cell(d['good_fit']):>10s}  effect {d['effect']:.2f}  "
                         f"{d['note']}")
    else:
        lines.append("overfit vs good_fit: needs at least one trial of each to compare "
                     f"(have {summary.n_overfit} overfit, {summary.n_good_fit} good_fit)")
    return "\n".join(lines)


def diagnose_study(study_name: str, storage_url: str, tracking_uri: str | None,
                   **thresholds: Any) -> tuple[pd.DataFrame, StudyDiagnosis]:
    """Collect a study and diagnose it: the per-trial table and the study summary.

    Raises:
        StudyNotFoundError: no study of that name in the storage (a KeyError).
        TypeError: an unknown threshold name.
    """
    from .collect import collect

    data = collect(study_name, storage_url, tracking_uri)
    table = diagnose_trials(data, **thresholds)
    return table, summarize(table, data)
