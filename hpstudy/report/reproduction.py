"""The thesis reproduction page: the paper's error beside ours, cell by cell.

Input is the results table of ``hpstudy reproduce`` as a DataFrame (one row per
cell: ``cell``, ``kind``, ``paper_error_pct``, ``error_pct``, ``error_std``,
``n_seeds``, parameter counts, ``note``...). The figure follows the
``_info`` / ``_draw`` / ``plot_`` split (STYLE.md): a dot per cell for the
paper, a dot with a +-std bar for our mean, on a log axis (0.3% to 35%).
Rows that are not reproductions (``smoke`` on generated data, ``shortened``
or ``modified`` recipes) are drawn in other colours and marked in the table;
they never get a verdict.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import plotly.graph_objects as go

from .page import Section, figure_section, kv_table, render_html, table, write_page

PAPER_COLOR = "#263238"
KIND_COLORS = {"reproduction": "#1565c0", "shortened": "#ff7f0e", "modified": "#8e24aa",
               "smoke": "#9e9e9e"}
_REQUIRED = ("cell", "kind", "paper_error_pct", "error_pct", "error_std", "n_seeds")


def _num(v: object) -> float | None:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class ReproductionInfo(NamedTuple):
    """What the comparison figure draws; cells in table order, measured ones only where finite."""

    cells: tuple[str, ...]  # every row, top to bottom
    paper: tuple[float, ...]
    measured: tuple[tuple[str, float, float, str], ...]  # (cell, mean %, std %, kind)


def _reproduction_info(df: pd.DataFrame) -> ReproductionInfo:
    """Validate the results table and keep what the figure needs."""
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"results table lacks column(s) {', '.join(missing)}")
    cells, paper, measured = [], [], []
    for r in df.itertuples(index=False):
        p = _num(r.paper_error_pct)
        if p is None or p <= 0:
            continue
        cells.append(str(r.cell))
        paper.append(p)
        m = _num(r.error_pct)
        if m is not None and m > 0 and (_num(r.n_seeds) or 0) > 0:
            measured.append((str(r.cell), m, _num(r.error_std) or 0.0, str(r.kind)))
    return ReproductionInfo(tuple(cells), tuple(paper), tuple(measured))


def _draw_reproduction(info: ReproductionInfo) -> go.Figure:
    fig = go.Figure()
    if not info.cells:
        return fig
    fig.add_trace(go.Scatter(x=list(info.paper), y=list(info.cells), mode="markers",
                             name="thesis (Table 4.6)",
                             marker={"symbol": "diamond", "size": 10, "color": PAPER_COLOR},
                             hovertemplate="%{y}: paper %{x:.2f}%<extra></extra>"))
    for kind, color in KIND_COLORS.items():
        rows = [m for m in info.measured if m[3] == kind]
        if not rows:
            continue
        fig.add_trace(go.Scatter(
            x=[m[1] for m in rows], y=[m[0] for m in rows], mode="markers",
            name=f"ours ({kind})", marker={"size": 9, "color": color},
            error_x={"type": "data", "array": [m[2] for m in rows], "visible": True},
            hovertemplate="%{y}: ours %{x:.2f}% +- %{error_x.array:.2f}<extra>" + kind
                          + "</extra>"))
    fig.update_layout(
        xaxis={"title": "test error (%), log scale", "type": "log"},
        yaxis={"autorange": "reversed", "categoryorder": "array",
               "categoryarray": list(info.cells)},
        height=max(320, 22 * len(info.cells) + 120), legend={"orientation": "h", "y": 1.04},
        margin={"l": 200})
    return fig


def plot_reproduction(df: pd.DataFrame) -> go.Figure:
    """Paper vs measured test error per cell (log axis; +-std over seeds)."""
    return _draw_reproduction(_reproduction_info(df))


def _fmt(v: object, spec: str = ".2f") -> str:
    f = _num(v)
    return "" if f is None else format(f, spec)


def _row_html(r: pd.Series) -> list[str]:
    kind = str(r["kind"])
    color = KIND_COLORS.get(kind, "#9e9e9e")
    measured = "not run yet" if not _num(r["n_seeds"]) else \
        f"{_fmt(r['error_pct'])} &plusmn; {_fmt(r['error_std'])}"
    within = str(r.get("within_0_5") or "")
    verdict = {"yes": "&#10003; yes", "no": "&#10007; no"}.get(within, "")
    return [
        html.escape(str(r["cell"])), html.escape(str(r.get("network", ""))),
        _fmt(r["paper_error_pct"]), measured, str(int(_num(r["n_seeds"]) or 0)),
        _fmt(r.get("diff_points"), "+.2f"), verdict,
        f"{int(_num(r.get('paper_params')) or 0):,}", f"{int(_num(r.get('params')) or 0):,}",
        _fmt(r.get("params_diff_pct"), "+.1f"),
        f"{_fmt(r.get('epochs'), '.0f')} / {_fmt(r.get('recipe_epochs'), '.0f')}",
        f'<span class="badge" style="background:{color}">{html.escape(kind)}</span>',
        html.escape(str(r.get("note") or "")),
    ]


HEAD = ("cell", "network", "paper error %", "ours % (mean ± std)", "seeds", "diff (points)",
        "within 0.5", "paper params", "our params", "params diff %", "epochs / recipe",
        "kind", "note")


def reproduction_sections(df: pd.DataFrame, overview: dict[str, str] | None = None
                          ) -> list[Section]:
    """Overview, the comparison figure, and the table (every row marked with its kind)."""
    kinds = sorted(set(df["kind"])) if len(df) else []
    facts = [(k, html.escape(str(v))) for k, v in (overview or {}).items()]
    facts.append(("cells", str(len(df))))
    facts.append(("measured", str(int((df["n_seeds"] > 0).sum())) if len(df) else "0"))
    if "smoke" in kinds:
        facts.append(("WARNING", "<b>smoke rows ran on generated data with a fraction of the "
                                 "epochs: they test the pipeline and say nothing about the "
                                 "thesis. They are not reproductions.</b>"))
    if "shortened" in kinds:
        facts.append(("note", "shortened rows trained a fraction of the recipe's epochs: "
                              "not reproductions"))
    if "modified" in kinds:
        facts.append(("note", "modified rows ran the recipe with --set changes to what is "
                              "trained: not reproductions"))
    body = table(HEAD, [_row_html(r) for _, r in df.iterrows()])
    return [
        Section("overview", "Overview", body=kv_table(facts)),
        figure_section("errors", "Test error: thesis vs ours", lambda: plot_reproduction(df),
                       height=None, empty="no cell has a measured error yet"),
        Section("table", "Cells", body=body),
    ]


def write_reproduction_report(df: pd.DataFrame, out_dir: str | Path = "dashboards",
                              name: str = "reproduction", *,
                              overview: dict[str, str] | None = None) -> Path:
    """Write ``<out_dir>/<name>/index.html`` and return its path."""
    page = render_html("hpstudy: thesis reproduction (Table 4.6)",
                       reproduction_sections(df, overview))
    return write_page(page, out_dir, name)
