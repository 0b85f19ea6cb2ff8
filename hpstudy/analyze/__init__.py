"""Analysis: read studies back from their stores and diagnose learning curves.

Public surface:

- :func:`diagnose` -> :class:`Diagnosis` (one trial's verdict, evidence, advice),
  :class:`Thresholds`, :data:`VERDICTS`, :data:`STATUSES`, :data:`ADVICE`;
- :func:`advise` (advice naming a trial's values against its study's best trials),
  :class:`StudyContext`, :class:`TrialRecord`;
- :func:`collect` -> :class:`StudyData` (trials from Optuna, histories from MLflow);
- :func:`diagnose_study` (collect + diagnose_trials + summarize),
  :func:`diagnose_trials`, :func:`summarize` -> :class:`StudyDiagnosis`,
  :func:`format_text` (the ``hpstudy diagnose`` output);
- guided studies: :func:`collect_guide` -> :class:`GuideData` (the stages of
  ``hpstudy guide``, their outcomes and config diffs), :func:`guide_stages`;
- ablations: :class:`Design`, :func:`analyze_ablation` -> :class:`AblationStats`
  (cell means and intervals, effects, interactions), :func:`collect_ablation`
  -> :class:`AblationData`, :func:`diagnose_cells`, :func:`format_ablation`.

Imports nothing from the rest of hpstudy (DESIGN.md: analyze sits below
search/train/report).
"""

from __future__ import annotations

from .ablation import (
    AblationData,
    AblationStats,
    Design,
    analyze_ablation,
    collect_ablation,
    diagnose_cells,
    format_ablation,
    mean_ci,
)
from .advice import StudyContext, TrialRecord, advise
from .collect import HISTORY_COLUMNS, StudyData, StudyNotFoundError, collect, load_optuna_study
from .diagnose import (
    ADVICE,
    STATUSES,
    VERDICTS,
    Diagnosis,
    Thresholds,
    diagnose,
    threshold_defaults,
)
from .guide import (
    GuideData,
    GuideStage,
    collect_guide,
    flat_config,
    guide_stages,
    study_epochs,
    trial_epochs,
)
from .summary import (
    EVIDENCE_COLUMNS,
    StudyDiagnosis,
    diagnose_study,
    diagnose_trials,
    format_text,
    study_context,
    summarize,
)

__all__ = [
    "GuideData",
    "GuideStage",
    "collect_guide",
    "flat_config",
    "guide_stages",
    "study_epochs",
    "trial_epochs",
    "AblationData",
    "AblationStats",
    "Design",
    "analyze_ablation",
    "collect_ablation",
    "diagnose_cells",
    "format_ablation",
    "mean_ci",
    "ADVICE",
    "EVIDENCE_COLUMNS",
    "HISTORY_COLUMNS",
    "STATUSES",
    "VERDICTS",
    "Diagnosis",
    "StudyData",
    "StudyDiagnosis",
    "StudyNotFoundError",
    "StudyContext",
    "Thresholds",
    "TrialRecord",
    "advise",
    "collect",
    "diagnose",
    "diagnose_study",
    "diagnose_trials",
    "format_text",
    "load_optuna_study",
    "study_context",
    "summarize",
    "threshold_defaults",
]
