"""hpstudy: hyperparameter studies on image classifiers.

Optuna searches, Lightning trains, MLflow keeps every run, Plotly draws the
dashboards. See README.md and ``hpstudy --help``. In Python::

    import hpstudy
    summary = hpstudy.run("studies/quickstart.yaml", n_trials=4)
    study = hpstudy.load("quickstart")   # .trials, .history, .best, .model()
"""

import os as _os
from typing import Any as _Any

# MLflow draws a progress bar for every artifact download (each trial's
# history.csv when a report is drawn): noise on a terminal. A user's own
# setting of the variable wins.
_os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

__version__ = "0.1.0"


def run(study: _Any, **kwargs: _Any) -> _Any:
    """Run a study end to end; returns its summary (see :func:`hpstudy.api.run`).

    ``hpstudy.run("studies/quickstart.yaml", n_trials=4, lr=0.01)``: options
    (``n_trials``, ``timeout``, ``workers``, ``storage``, ``tracking_uri``,
    ``progress``, ``report``), config aliases as keywords, dotted keys in
    ``overrides={"train.scheduler.name": "cosine"}``.
    """
    from .api import run as _run

    return _run(study, **kwargs)


def load(study: _Any, storage: str | None = None, tracking_uri: str | None = None) -> _Any:
    """Read a study back: ``.trials``, ``.history``, ``.best``, ``.model()``
    (see :func:`hpstudy.api.load`)."""
    from .api import load as _load

    return _load(study, storage=storage, tracking_uri=tracking_uri)
