"""The results table as files and text: the CSV beside the page, and the printed table."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from .run import RESULT_COLUMNS


def write_results_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write the rows (``RESULT_COLUMNS``; empty cells for values not measured) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(RESULT_COLUMNS), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else r.get(k) for k in RESULT_COLUMNS})
    tmp.replace(path)
    return path


def _measured(r: dict[str, Any]) -> str:
    if not r.get("n_seeds"):
        return "not run yet"
    std = f" ± {r['error_std']:.2f}" if r["n_seeds"] > 1 else ""
    return f"{r['error_pct']:.2f}{std}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table (readable on a terminal too): paper vs ours, cell by cell."""
    head = ("cell", "paper %", "ours %", "seeds", "diff (points)", "within 0.5",
            "params paper / ours", "epochs", "kind")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        diff = "" if r.get("diff_points") is None else f"{r['diff_points']:+.2f}"
        lines.append("| " + " | ".join([
            r["cell"], f"{r['paper_error_pct']:.2f}", _measured(r), str(r.get("n_seeds") or 0),
            diff, r.get("within_0_5") or "",
            f"{r['paper_params']:,} / {r['params']:,} ({r['params_diff_pct']:+.1f}%)",
            f"{r['epochs']}/{r['recipe_epochs']}", r["kind"],
        ]) + " |")
    return "\n".join(lines)
