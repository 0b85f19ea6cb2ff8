"""Guided tuning: the course's three milestones as three linked studies (``hpstudy guide``).

1. **learn anything** (``<study>/1-anything``): an lr range test, then a short
   search over lr (by orders of magnitude, inside the range found), batch size
   (powers of 2, lr scaled with it) and init, on a subset for few epochs;
   accepted when training accuracy beats chance by a stated margin.
2. **learn everything** (``<study>/2-everything``): regularization off; capacity
   and an Adam-family optimizer; accepted when a trial fits the training set
   (training accuracy 0.99, diagnosis overfit or good_fit).
3. **learn the right thing** (``<study>/3-right-thing``): dropout, weight decay,
   safe augmentation, batch norm and early stopping on stage 2's winner, then
   a short momentum-SGD refinement; accepted when validation follows training
   at least as well as stage 2's winner.

Public surface: :func:`plan_guide` -> :class:`GuidePlan` (checks the ``guide:``
section, exit 2 on bad input), :func:`run_guide` -> :class:`GuideSummary`
(:class:`StageResult` per stage), :class:`Budget`, :func:`sweep` /
:func:`find_range` (the lr range test), and the rules in :mod:`.rules`.

Sits above :mod:`hpstudy.search` (each stage is a study run by ``run_study``);
it imports :mod:`hpstudy.report` only to draw the lr range figure it logs.
"""

from __future__ import annotations

from .budget import Budget, split
from .lr_range import LrRange, find_range, sweep
from .rules import Judgement, TrialView
from .runner import (
    ACCEPTED,
    FAILED,
    Guide,
    GuideObjective,
    GuideSummary,
    StageResult,
    fmt_overrides,
    run_guide,
    stage_epochs,
)
from .stages import (
    GOALS,
    LR_BASE,
    STAGES,
    TITLES,
    WIDTH_SCALE,
    GuidePlan,
    plan_guide,
    scale_width,
    width_knobs,
)

__all__ = [
    "ACCEPTED",
    "FAILED",
    "GOALS",
    "LR_BASE",
    "STAGES",
    "TITLES",
    "WIDTH_SCALE",
    "Budget",
    "Guide",
    "GuideObjective",
    "GuidePlan",
    "GuideSummary",
    "Judgement",
    "LrRange",
    "StageResult",
    "TrialView",
    "find_range",
    "fmt_overrides",
    "plan_guide",
    "run_guide",
    "scale_width",
    "split",
    "stage_epochs",
    "sweep",
    "width_knobs",
]
