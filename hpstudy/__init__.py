"""hpstudy: hyperparameter studies on image classifiers.

Optuna searches, Lightning trains, MLflow keeps every run, Plotly draws the
dashboards. See README.md and ``hpstudy --help``.
"""

__version__ = "0.1.0"
