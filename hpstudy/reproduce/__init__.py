"""Reproducing the thesis's Table 4.6: the reference cells as data, their configs, the runs.

Public surface: :func:`load_table`, :class:`Cell`, :func:`select_cells`,
:func:`cell_config`, :func:`plan_reproduction`, :func:`run_reproduction`,
:class:`ReproductionSummary`, :func:`write_results_csv`, :func:`format_table`,
:func:`write_smoke_data`. ``hpstudy reproduce`` composes them with the report
page in :mod:`hpstudy.api`.
"""

from __future__ import annotations

from .cells import Cell, cell_config, load_table, recipe_config, select_cells, thesis_dir
from .run import (
    RESULT_COLUMNS,
    WITHIN_POINTS,
    ReproductionPlan,
    ReproductionSummary,
    plan_reproduction,
    run_hash,
    run_reproduction,
)
from .smoke import write_smoke_data
from .table import format_table, write_results_csv

__all__ = [
    "RESULT_COLUMNS",
    "WITHIN_POINTS",
    "Cell",
    "ReproductionPlan",
    "ReproductionSummary",
    "cell_config",
    "format_table",
    "load_table",
    "plan_reproduction",
    "recipe_config",
    "run_hash",
    "run_reproduction",
    "select_cells",
    "thesis_dir",
    "write_results_csv",
    "write_smoke_data",
]
