"""The thesis's Table 4.6 as data, and the config that reproduces each of its cells.

``studies/thesis/table_4_6.csv`` is the project's copy of the reference: one
row per cell (network x dataset) with the published test error, the printed
parameter count, the source table, a note on known inconsistencies, and where
its recipe lives: ``study`` (a file in ``studies/thesis/``) and ``recipe`` (the
index of its entry in that file's ``search.enqueue``).

A cell's reproduction config is that study with that enqueued recipe applied
(validated like any study), then the thesis's final protocol: every training
image trains (``data.val_split: 0``; SVHN keeps its fixed validation of 400 +
200 images per class, as in the thesis), the final epoch is the model
(``train.select: last``), no early stopping, and the test split is evaluated
once. ``epochs_scale`` shortens the recipe and its schedule alike; ``smoke``
points it at generated files and cuts the data to a few batches.
"""

from __future__ import annotations

import csv
import difflib
import fnmatch
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import SEED_KEYS, ConfigError, StudyConfig, load_study, resolve_key
from .smoke import SMOKE_SVHN_VAL

TABLE_FILE = "table_4_6.csv"
COLUMNS = ("cell", "network", "arch", "depth", "params", "dataset", "error_pct", "source",
           "study", "recipe", "note")
_FIXED_VALIDATION = ("svhn_extra",)  # dataset options whose protocol fixes the validation split

# smoke runs: a few batches of a few images per epoch, whatever the recipe
SMOKE_BATCH = 8  # images per batch (the recipe's, when smaller)
SMOKE_BATCHES = 2  # training batches per epoch


def thesis_dir(folder: str | Path | None = None) -> Path:
    """``studies/thesis``: ``folder``, else under the working directory, else beside the package."""
    if folder is not None:
        return Path(folder)
    here = Path("studies") / "thesis"
    if (here / TABLE_FILE).is_file():
        return here
    return Path(__file__).resolve().parents[2] / "studies" / "thesis"


@dataclass(frozen=True)
class Cell:
    """One cell of Table 4.6 and where its recipe lives."""

    id: str  # "nin-cifar10+"
    network: str  # as printed: "NiN", "ResNet-65 (bottleneck)"
    arch: str  # registry name
    depth: int
    params: int  # as printed in the thesis
    dataset: str  # "cifar10+" ("+": with augmentation)
    error_pct: float  # published test error, %
    source: str  # "thesis Table 4.6"
    study: str  # study file stem in studies/thesis
    recipe: int  # index into that file's search.enqueue
    note: str = ""

    @property
    def augmented(self) -> bool:
        return self.dataset.endswith("+")

    @property
    def base_dataset(self) -> str:
        """The dataset's registry name (``cifar10`` for ``cifar10+``)."""
        return self.dataset.rstrip("+")


def load_table(folder: str | Path | None = None) -> list[Cell]:
    """The reference cells, in the table's order.

    Raises:
        ConfigError: a missing file, a missing column or a value of the wrong type.
    """
    path = thesis_dir(folder) / TABLE_FILE
    if not path.is_file():
        raise ConfigError(str(path), None, "no such file (the thesis reference table)")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(str(path), ", ".join(missing), "missing column(s)")
        cells = []
        for line, row in enumerate(reader, start=2):
            try:
                cells.append(Cell(
                    id=row["cell"], network=row["network"], arch=row["arch"],
                    depth=int(row["depth"]), params=int(row["params"]), dataset=row["dataset"],
                    error_pct=float(row["error_pct"]), source=row["source"], study=row["study"],
                    recipe=int(row["recipe"]), note=row["note"] or ""))
            except (TypeError, ValueError) as e:
                raise ConfigError(str(path), f"line {line}", f"bad value: {e}") from None
    ids = [c.id for c in cells]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(str(path), "cell", f"duplicate cell(s): {', '.join(dupes)}")
    return cells


def select_cells(cells: list[Cell], patterns: list[str] | None) -> list[Cell]:
    """The cells named by ``patterns`` (ids or shell patterns: ``'preact_resnet*'``,
    ``'*-svhn'``), in table order; all of them for none.

    Raises:
        ConfigError: a pattern that matches no cell (with the closest ids).
    """
    if not patterns:
        return list(cells)
    ids = [c.id for c in cells]
    chosen: set[str] = set()
    for p in patterns:
        hits = [i for i in ids if fnmatch.fnmatchcase(i, p)]
        if not hits:
            close = difflib.get_close_matches(p, ids, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else \
                "; see studies/thesis/table_4_6.csv for the 36 cells"
            raise ConfigError("CELL", p, f"no cell matches{hint}")
        chosen.update(hits)
    return [c for c in cells if c.id in chosen]


@functools.lru_cache(maxsize=64)
def _study(path: str, mtime_ns: int) -> StudyConfig:
    return load_study(path)  # validates the file once, its space and enqueued recipes included


def study_config(cell: Cell, folder: str | Path | None = None) -> StudyConfig:
    """The validated study file that holds the cell's recipe (read once per file version)."""
    path = thesis_dir(folder) / f"{cell.study}.yaml"
    if not path.is_file():
        raise ConfigError(str(thesis_dir(folder) / TABLE_FILE), f"{cell.id}.study",
                          f"no study file {path}")
    return _study(str(path), path.stat().st_mtime_ns)


def recipe_overrides(cell: Cell, folder: str | Path | None = None) -> dict[str, Any]:
    """The dotted values of the cell's enqueued thesis recipe."""
    cfg = study_config(cell, folder)
    if not 0 <= cell.recipe < len(cfg.search.enqueue):
        raise ConfigError(str(thesis_dir(folder) / TABLE_FILE), f"{cell.id}.recipe",
                          f"{cell.study}.yaml enqueues {len(cfg.search.enqueue)} recipe(s), "
                          f"not an entry {cell.recipe}")
    return {resolve_key(k): v for k, v in cfg.search.enqueue[cell.recipe].items()}


def recipe_config(cell: Cell, folder: str | Path | None = None) -> StudyConfig:
    """The cell's study with its enqueued thesis recipe applied, searching nothing.

    Validated as a whole study (model built on the meta device, augmentation
    checked) with an empty space: the file's space was validated when it was read.
    """
    params = {**recipe_overrides(cell, folder), "search.space": "none", "search.enqueue": []}
    return study_config(cell, folder).with_overrides(
        params, source=f"{cell.study}.yaml: search.enqueue[{cell.recipe}]")


def scaled_epochs(value: float, scale: float) -> int:
    """``round(value * scale)``, at least 1 (an epoch count or an absolute milestone)."""
    return max(1, int(round(value * scale)))


def protocol_overrides(cfg: StudyConfig, *, epochs_scale: float = 1.0,
                       smoke_root: str | Path | None = None) -> dict[str, Any]:
    """Dotted values that turn a recipe into its final-protocol run (see the module docstring)."""
    fixed = any(cfg.data.options.get(k) for k in _FIXED_VALIDATION)
    out: dict[str, Any] = {
        "train.select": "last", "train.evaluate_test": True,
        "train.early_stopping.enabled": False, "search.space": "none", "search.enqueue": [],
    }
    if not fixed:
        out["data.val_split"] = 0
    if epochs_scale != 1.0:
        t = cfg.train
        out["train.max_epochs"] = scaled_epochs(t.max_epochs, epochs_scale)
        s = t.scheduler
        if s.milestones:
            ms, last = [], 0
            for m in s.milestones:  # fractions stay fractions; epochs scale and stay increasing
                m2 = m if m < 1 else max(scaled_epochs(m, epochs_scale), last + 1)
                ms.append(m2)
                last = m2 if m >= 1 else last
            out["train.scheduler.milestones"] = ms
        if s.name == "step":
            out["train.scheduler.step_size"] = scaled_epochs(s.step_size, epochs_scale)
    if smoke_root is not None:
        out["data.root"] = str(smoke_root)
        out["data.download"] = False
        out["data.batch_size"] = min(cfg.data.batch_size, SMOKE_BATCH)
        out["train.limit_train_batches"] = SMOKE_BATCHES
        if fixed:  # the same protocol, per class, on the few generated images
            out.update({f"data.{k}": v for k, v in SMOKE_SVHN_VAL.items()})
    return out


def cell_config(cell: Cell, seed: int = 0, *, folder: str | Path | None = None,
                epochs_scale: float = 1.0, smoke_root: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> StudyConfig:
    """The concrete config of one reproduction run of ``cell`` with ``seed``.

    Args:
        cell: the table cell.
        seed: ``train.seed`` and ``data.seed``.
        folder: ``studies/thesis`` (default: :func:`thesis_dir`).
        epochs_scale: fraction of the recipe's epochs (milestones and step size scale alike).
        smoke_root: a data root of generated files (:func:`write_smoke_data`); cuts the data.
        overrides: dotted values applied last (``--set``: data root, accelerator...).
    """
    recipe = recipe_config(cell, folder)
    params = protocol_overrides(recipe, epochs_scale=epochs_scale, smoke_root=smoke_root)
    params.update({k: seed for k in SEED_KEYS})
    if overrides:
        params.update(overrides)
    return recipe.with_overrides(params, source=f"cell {cell.id}")
