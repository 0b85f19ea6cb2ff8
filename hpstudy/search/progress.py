"""The terminal view of a running study: a header, a progress bar, one line per finished trial.

Everything fits an 80-column terminal: the bar has a fixed, short layout
(``7/24 |####    | 00:31<00:52 5 complete 1 pruned 0 failed best 0.9931``)
and a trial's line is cut to the terminal's width::

    trial    7 COMPLETE  val_acc 0.9931  good_fit       15 epochs    3.2s
    trial    8 PRUNED    val_acc(0.8417) underfit        4 epochs    0.9s
    trial    9 FAIL      val_acc -       diverged        2 epochs    0.4s  non-finite loss

A pruned trial's value is its last reported one, in parentheses: it is not an
objective value (Optuna records none for a pruned trial).
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

import optuna
from optuna.trial import TrialState

from ..names import ATTR_DIAGNOSIS, ATTR_EPOCHS, ATTR_FAIL_REASON

_BAR_FORMAT = "{n_fmt}/{total_fmt} |{bar}| {elapsed}<{remaining}{postfix}"
_BAR_FORMAT_OPEN = "{n_fmt} trials | {elapsed}{postfix}"  # no total (a timeout only)


def _width() -> int:
    """The terminal's columns (``$COLUMNS`` when stdout is not a terminal), at least 40."""
    return max(shutil.get_terminal_size((80, 24)).columns, 40)


def trial_line(trial: optuna.trial.FrozenTrial, metric: str, width: int | None = None) -> str:
    """One finished trial: number, state, value, verdict, epochs, duration, and why it failed."""
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        value = f"{metric} {trial.value:.4f} "
    elif trial.intermediate_values:
        last = trial.intermediate_values[max(trial.intermediate_values)]
        value = f"{metric}({last:.4f})"
    else:
        value = f"{metric} -      "
    epochs = trial.user_attrs.get(ATTR_EPOCHS)
    if epochs is None:
        epochs = len(trial.intermediate_values)
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    took = f"{duration:7.1f}s" if duration is not None else "       -"
    verdict = str(trial.user_attrs.get(ATTR_DIAGNOSIS) or "-")
    line = (f"trial {trial.number:4d} {trial.state.name:9s} {value} {verdict:14s}"
            f"{int(epochs):3d} epochs {took}")
    if trial.state == TrialState.FAIL:
        line += f"  {trial.user_attrs.get(ATTR_FAIL_REASON, '')}"
    width = width or _width()
    return line if len(line) < width else line[: width - 4] + "..."


class Progress:
    """The study's progress bar and per-trial lines (an Optuna callback).

    Args:
        total: trials to run now (None: until a timeout).
        metric: the objective's name, for the lines.
        enabled: draw the bar (on stderr); the header and trial lines are always printed.
    """

    def __init__(self, total: int | None, metric: str, enabled: bool = True):
        from tqdm.auto import tqdm

        self.metric = metric
        self.bar = tqdm(total=total, unit="trial", dynamic_ncols=True, disable=not enabled,
                        bar_format=_BAR_FORMAT if total else _BAR_FORMAT_OPEN,
                        file=sys.stderr)
        self.counts = {"complete": 0, "pruned": 0, "failed": 0}
        self.best: float | None = None

    def write(self, line: str) -> None:
        """A line above the bar (stdout, flushed)."""
        self.bar.write(line, file=sys.stdout)
        sys.stdout.flush()

    def start(self, session: Any) -> None:
        """Say what a resumed study has done so far (a new study says nothing more)."""
        trials = session.study.get_trials(deepcopy=False)
        if not trials:
            return
        count = {s: sum(t.state == s for t in trials) for s in
                 (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        line = (f"resuming     after {len(trials)} trials ({count[TrialState.COMPLETE]} complete, "
                f"{count[TrialState.PRUNED]} pruned, {count[TrialState.FAIL]} failed)")
        try:
            line += f", best {session.study.best_value:.4f}"
        except ValueError:
            pass
        self.write(line)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        key = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
               TrialState.FAIL: "failed"}.get(trial.state)
        if key:
            self.counts[key] += 1
        try:
            self.best = study.best_value
        except ValueError:
            pass
        c = self.counts
        post = f"{c['complete']} complete {c['pruned']} pruned {c['failed']} failed"
        if self.best is not None:
            post += f" best {self.best:.4f}"
        self.bar.set_postfix_str(post, refresh=False)
        self.bar.update(1)
        self.write(trial_line(trial, self.metric))

    def show(self, study: optuna.Study, seen: set[int]) -> None:
        """Report every finished trial of ``study`` not in ``seen`` (trials of other processes)."""
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                          TrialState.FAIL)):
            if t.number not in seen:
                seen.add(t.number)
                self(study, t)

    def close(self) -> None:
        self.bar.close()


def header(cfg: Any, n_trials: int | None, storage: str | None = None,
           tracking_uri: str | None = None) -> list[str]:
    """The study and its stores, before they are opened (what ``hpstudy run`` prints first)."""
    n = n_trials if n_trials is not None else cfg.search.n_trials
    todo = f"{n} trials to run" if n else "trials until the timeout"
    return [f"study        {cfg.name}: {todo}, {cfg.direction} {cfg.search.metric}",
            f"optuna       {safe_url(cfg.storage_url(storage))}",
            f"mlflow       {safe_url(cfg.tracking_uri(tracking_uri))}, experiment "
            f"{cfg.tracking.experiment or cfg.name}"]


def safe_url(url: str) -> str:
    """``url`` without a password (``postgresql://user:***@host/db``)."""
    head, sep, tail = url.partition("://")
    if not sep or "@" not in tail:
        return url
    cred, _, rest = tail.rpartition("@")
    user = cred.split(":", 1)[0]
    return f"{head}://{user}:***@{rest}" if ":" in cred else url
