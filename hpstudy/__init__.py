"""hpstudy: hyperparameter studies on image classifiers.

Optuna searches, Lightning trains, MLflow keeps every run, Plotly draws the
dashboards. See README.md and ``hpstudy --help``. In Python::

    import hpstudy
    summary = hpstudy.run("studies/quickstart.yaml", n_trials=4)
"""

import os as _os
from typing import Any as _Any

# MLflow draws a progress bar for every artifact download (each trial's
# history.csv when a report is drawn): noise on a terminal. A user's own
# setting of the variable wins.
_os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

__version__ = "0.1.0"


def run(study: _Any, **kwargs: _Any) -> _Any:
    """Run a study end to end (see :func:`hpstudy.api.run`)."""
    from .api import run as _run

    return _run(study, **kwargs)
