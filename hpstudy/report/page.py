"""Pieces every hpstudy page shares: sections, the figure-section builder, badges,
key-value and plain tables, and the self-contained page writer.

A page is a list of :class:`Section`; :func:`render_html` embeds plotly.js once
with every figure, and :func:`write_page` writes it atomically. A figure that
cannot be drawn becomes a note under its title instead of sinking the page.
"""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from .figures import NO_VERDICT_COLOR, VERDICT_COLORS

ARTIFACT_DIR = "dashboard"  # where a page lands among its MLflow run's artifacts
_PLOT_CONFIG = {"displaylogo": False, "responsive": True}
_CARD_CONFIG = {"displaylogo": False, "responsive": True, "displayModeBar": False}  # small cards


class Section(NamedTuple):
    """One block of the page: a figure, or HTML, or a note saying why neither could be drawn.

    ``figures`` are small multiples, laid out in a grid of cards that wraps at any
    page width (at least 320 px a card).
    """

    key: str
    title: str
    figure: go.Figure | None = None
    body: str = ""  # trusted HTML built here (escaped already)
    note: str = ""
    figures: tuple[go.Figure, ...] = ()
    head: str = ""  # trusted HTML shown above the figure(s)


def figure_section(key: str, title: str, build: Callable[[], go.Figure], *,
                   height: int | None = 450, body: str = "", head: str = "",
                   empty: str = "nothing to draw yet (no completed run has this data)") -> Section:
    """Build a figure; one that cannot be drawn (too few trials, no data) gets a note.

    Args:
        key: the section's anchor.
        title: its heading.
        build: draws the figure (may raise: the message becomes the note).
        height: pixels, unless the figure sets its own (None: plotly's default).
        body: trusted HTML shown under the figure (or the note).
        head: trusted HTML shown above it (e.g. the sample size behind it).
        empty: the note for a figure without data.
    """
    try:
        fig = build()
    except Exception as e:  # noqa: BLE001 - one plot must not sink the page
        return Section(key, title, body=body, note=f"not drawn: {e}", head=head)
    if not fig.data:
        return Section(key, title, body=body, note=empty, head=head)
    if fig.layout.height is None and height is not None:
        fig.update_layout(height=height)
    return Section(key, title, figure=fig, body=body, head=head)


def grid_section(key: str, title: str, build: Callable[[], Sequence[go.Figure]], *,
                 body: str = "", head: str = "",
                 empty: str = "nothing to draw yet (no completed run has this data)") -> Section:
    """Small multiples in a wrapping grid; like :func:`figure_section`, a failure is a note."""
    try:
        figs = tuple(f for f in build() if f.data)
    except Exception as e:  # noqa: BLE001 - one plot must not sink the page
        return Section(key, title, body=body, note=f"not drawn: {e}", head=head)
    if not figs:
        return Section(key, title, body=body, note=empty, head=head)
    return Section(key, title, body=body, figures=figs, head=head)


def badge(verdict: object) -> str:
    """A coloured verdict label (grey "no verdict" when there is none)."""
    if not isinstance(verdict, str) or not verdict:
        return f'<span class="badge" style="background:{NO_VERDICT_COLOR}">no verdict</span>'
    color = VERDICT_COLORS.get(verdict, NO_VERDICT_COLOR)
    return f'<span class="badge" style="background:{color}">{html.escape(verdict)}</span>'


def kv_table(rows: Sequence[tuple[str, str]], *, stamp: bool = True) -> str:
    """A two-column facts table (values are trusted HTML); ``stamp`` adds the generation time."""
    rows = list(rows)
    if stamp:
        rows.append(("generated", _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")))
    return '<table class="kv">' + "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>"
                                          for k, v in rows) + "</table>"


def table(head: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "diag") -> str:
    """A table with escaped headings and trusted-HTML cells."""
    out = [f'<table class="{cls}"><thead><tr>', *(f"<th>{html.escape(h)}</th>" for h in head),
           "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows]
    return "".join(out) + "</tbody></table>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;
background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}header h1{margin:0;font-size:22px}
nav{padding:6px 24px;background:#eceff1;font-size:14px}nav a{margin-right:14px;color:#1565c0}
main{padding:8px 24px 40px}section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;
margin:14px 0;padding:10px 16px}h2{font-size:18px;margin:6px 0 8px}
.note{color:#777;font-style:italic}.caption{color:#555;margin:2px 0 8px}table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #e6e6e6;padding:4px 8px;text-align:left;vertical-align:top}
table.diag td ul{margin:4px 0 0 16px;padding:0}table.kv th{width:180px;color:#555}
.badge{color:#fff;border-radius:10px;padding:1px 8px;font-size:12px;white-space:nowrap}
.badge.none{background:#bbb}
.warn{background:#fff3e0;border-left:4px solid #ef6c00;padding:6px 10px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:10px}
.grid .card{min-width:0;border:1px solid #eee;border-radius:4px;overflow:hidden}
.wide{overflow-x:auto}details>summary{cursor:pointer;font-weight:600;margin:6px 0}
"""


# figures are drawn while the page is still being laid out (before the scrollbar appears,
# before the grid settles): fit each to its final container once everything is loaded
_RESIZE = ("<script>window.addEventListener('load',function(){document.querySelectorAll("
           "'.js-plotly-plot').forEach(function(g){Plotly.Plots.resize(g);});});</script>")


def render_html(title: str, sections: list[Section]) -> str:
    """The page: plotly.js once in <head>, then each section's figure div and HTML."""
    nav = "".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    blocks = []
    for s in sections:
        parts = [f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>', s.head]
        if s.figures:
            parts.append('<div class="grid">' + "".join(
                '<div class="card">' + pio.to_html(
                    f, full_html=False, include_plotlyjs=False, div_id=f"fig-{s.key}-{i}",
                    config=_CARD_CONFIG, default_height=f"{f.layout.height or 300}px")
                + "</div>" for i, f in enumerate(s.figures)) + "</div>")
        if s.figure is not None:
            parts.append(pio.to_html(s.figure, full_html=False, include_plotlyjs=False,
                                     div_id=f"fig-{s.key}", config=_PLOT_CONFIG,
                                     default_height=f"{s.figure.layout.height}px"))
        if s.note:
            parts.append(f'<p class="note">{html.escape(s.note)}</p>')
        parts.append(s.body)
        parts.append("</section>")
        blocks.append("".join(parts))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<header><h1>{html.escape(title)}</h1></header><nav>{nav}</nav><main>"
        + "".join(blocks) + f"</main>{_RESIZE}</body></html>\n"
    )


def write_page(page: str, out_dir: str | Path, name: str) -> Path:
    """Write ``<out_dir>/<name>/index.html`` atomically and return its path."""
    path = Path(out_dir) / name / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)  # a browser open on the old report never sees half a file
    return path


