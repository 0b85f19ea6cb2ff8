"""The terminal view of a running study: a progress bar and one line per finished trial."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from ..names import ATTR_DIAGNOSIS, ATTR_FAIL_REASON


class Progress:
    """A tqdm bar: trials done/pruned/failed and the best value so far (an Optuna callback)."""

    def __init__(self, total: int | None, metric: str, enabled: bool = True):
        from tqdm.auto import tqdm

        self.metric = metric
        self.bar = tqdm(total=total, unit="trial", dynamic_ncols=True, disable=not enabled,
                        desc="trials")
        self.counts = {"done": 0, "pruned": 0, "failed": 0}

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        key = {TrialState.COMPLETE: "done", TrialState.PRUNED: "pruned",
               TrialState.FAIL: "failed"}.get(trial.state)
        if key:
            self.counts[key] += 1
        post = dict(self.counts)
        try:
            post["best"] = f"{study.best_value:.4f}"
        except ValueError:
            pass
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)
        value = f"{self.metric}={trial.value:.4f}" if trial.value is not None else ""
        why = trial.user_attrs.get(ATTR_FAIL_REASON, "") if trial.state == TrialState.FAIL else ""
        diag = trial.user_attrs.get(ATTR_DIAGNOSIS, "")
        self.bar.write(f"trial {trial.number:4d} {trial.state.name:8s} {value} {diag} {why}".rstrip())

    def show(self, study: optuna.Study, seen: set[int]) -> None:
        """Report every finished trial of ``study`` not in ``seen`` (trials of other processes)."""
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                          TrialState.FAIL)):
            if t.number not in seen:
                seen.add(t.number)
                self(study, t)

    def close(self) -> None:
        self.bar.close()
