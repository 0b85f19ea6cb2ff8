"""The sampler and pruner defaults of a study file, exercised on real Optuna studies.

The defaults come from ``benchmarks/search_efficiency.py`` (benchmarks/README.md).
"""

from __future__ import annotations

import optuna
import pytest

from hpstudy.config import from_dict
from hpstudy.search import build_pruner, build_sampler
from hpstudy.search.objective import prune_reason

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _cfg(pruner, sampler="tpe", max_epochs=12):
    return from_dict({"name": "defaults", "train": {"max_epochs": max_epochs},
                      "search": {"pruner": pruner, "sampler": sampler}})


def _study(pruner, **kw):
    return optuna.create_study(direction="maximize", pruner=build_pruner(_cfg(pruner, **kw)),
                               sampler=optuna.samplers.RandomSampler(seed=0))


def _finish(study, values):
    """Trials that report ``values`` (epoch 1, 2...) and complete with the best of them
    (asked whether to stop at every epoch, as the objective does: SHA records its rungs)."""
    for v in values:
        t = study.ask()
        for epoch, x in enumerate(v, 1):
            t.report(x, epoch)
            t.should_prune()
        study.tell(t, max(v))


def _pruned_at(study, curve):
    """The epoch a new trial with this curve is pruned at (None: it completes)."""
    t = study.ask()
    for epoch, x in enumerate(curve, 1):
        t.report(x, epoch)
        if t.should_prune():
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
            return epoch
    study.tell(t, max(curve))
    return None


@pytest.mark.parametrize("name", ["median", "percentile"])
def test_median_prunes_from_epoch_1_after_3_trials(name):
    study = _study(name)
    _finish(study, [[0.5, 0.6, 0.7]] * 2)
    assert _pruned_at(study, [0.1, 0.1, 0.1]) is None  # 2 finished trials: no pruning yet
    _finish(study, [[0.5, 0.6, 0.7]])
    assert _pruned_at(study, [0.1, 0.1, 0.1]) == 1
    assert _pruned_at(study, [0.55, 0.2, 0.2]) == 2  # the best so far is what counts
    # the study file's options win
    study = _study({"name": name, "options": {"n_startup_trials": 1, "n_warmup_steps": 3}})
    _finish(study, [[0.5, 0.6, 0.7, 0.8]])
    assert _pruned_at(study, [0.1, 0.1, 0.1, 0.1]) == 3


def test_sha_rungs_at_1_3_9_epochs():
    study = _study("sha")
    _finish(study, [[0.9] * 12] * 3)
    epochs = [_pruned_at(study, [0.1 * (i + 1)] * 12) for i in range(6)]
    assert set(epochs) <= {1, 3, 9, None} and 1 in epochs  # never between rungs
    # good for 2 epochs, then bad: judged at the next rung, epoch 3 (Optuna's factor 4: 4)
    assert _pruned_at(study, [0.95, 0.95] + [0.1] * 10) == 3
    assert "best 1/3 of its rung" in prune_reason(_cfg("sha"), 1)
    assert "best 1/2 of" in prune_reason(_cfg({"name": "sha",
                                               "options": {"reduction_factor": 2}}), 1)


def test_hyperband_up_to_max_epochs():
    study = _study("hyperband", max_epochs=9)
    _finish(study, [[0.9] * 9] * 4)
    epochs = [_pruned_at(study, [0.1] * 9) for _ in range(6)]
    assert set(epochs) <= {1, 3, 9, None} and 1 in epochs
    assert "best 1/3 of its rung" in prune_reason(_cfg("hyperband"), 3)


def test_none_and_tpe_defaults():
    assert isinstance(build_pruner(_cfg("none")), optuna.pruners.NopPruner)
    tpe = build_sampler(_cfg("median"))
    assert isinstance(tpe, optuna.samplers.TPESampler)
    # the same seed proposes the same first trials (reproducible studies)
    a, b = (optuna.create_study(sampler=build_sampler(_cfg("median"))) for _ in range(2))
    for s in (a, b):
        s.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
