"""Dashboards: pure figure builders (DataFrame -> plotly Figure) and the HTML writer.

Public surface: :func:`report_study` (collect + write + log to MLflow),
:func:`write_report`, :func:`render_html`, and the figures
:func:`plot_learning_curves`, :func:`plot_gap`, :func:`plot_verdict_counts`, and the
hyperparameter figures read from the values as trained: :func:`plot_slices` (one small
figure per hyperparameter), :func:`plot_parallel`, :func:`plot_importances`.
Ablation reports: :func:`write_ablation_report` and the figures
:func:`plot_cell_bars`, :func:`plot_effects`, :func:`plot_interaction`,
:func:`plot_cell_curves`. Guided studies: :func:`report_guide` / :func:`write_guide_report` and the figures
:func:`plot_lr_range`, :func:`plot_stage_fits`, :func:`plot_stage_epochs`.
Imports only :mod:`hpstudy.analyze` from hpstudy (DESIGN.md).
"""

from __future__ import annotations

from .ablation import (
    plot_cell_bars,
    plot_cell_curves,
    plot_effects,
    plot_interaction,
    write_ablation_report,
)
from .figures import (
    VERDICT_COLORS,
    contour_params,
    plot_gap,
    plot_learning_curves,
    plot_verdict_counts,
)
from .guide import (
    build_guide_sections,
    plot_lr_range,
    plot_stage_epochs,
    plot_stage_fits,
    report_guide,
    write_guide_report,
)
from .html import build_sections, report_study, write_report
from .page import (
    ARTIFACT_DIR,
    Section,
    badge,
    figure_section,
    grid_section,
    kv_table,
    render_html,
    write_page,
)
from .params import plot_importances, plot_parallel, plot_slices

__all__ = [
    "build_guide_sections",
    "plot_lr_range",
    "plot_stage_epochs",
    "plot_stage_fits",
    "report_guide",
    "write_guide_report",
    "plot_cell_bars",
    "plot_cell_curves",
    "plot_effects",
    "plot_interaction",
    "write_ablation_report",
    "ARTIFACT_DIR",
    "VERDICT_COLORS",
    "Section",
    "build_sections",
    "contour_params",
    "plot_gap",
    "plot_learning_curves",
    "plot_verdict_counts",
    "render_html",
    "report_study",
    "write_report",
    "badge",
    "figure_section",
    "grid_section",
    "plot_importances",
    "plot_parallel",
    "plot_slices",
    "kv_table",
    "write_page",
]
