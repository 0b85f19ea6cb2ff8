"""hpstudy: hyperparameter studies on image classifiers.

Optuna searches, Lightning trains, MLflow keeps every run, Plotly draws the
dashboards. See README.md and ``hpstudy --help``.
"""

import os as _os

# MLflow draws a progress bar for every artifact download (each trial's
# history.csv when a report is drawn): noise on a terminal. A user's own
# setting of the variable wins.
_os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

__version__ = "0.1.0"
