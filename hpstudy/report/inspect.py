"""The inspection page of a trained model: figures of what it predicts and what it learned.

Each figure follows the ``_info`` / ``_draw`` / ``plot_`` split of
:mod:`hpstudy.report.figures`: a pure ``_<plot>_info(...) -> NamedTuple``
from arrays (validated, non-finite values dropped; tests compare them
exactly), a ``_draw_<plot>(info) -> go.Figure`` and a short ``plot_<plot>``.

* confusion matrix (counts; colour = share of the true class);
* per-class accuracy;
* the most confident mistakes: image tiles with class-probability bars
  (thesis section 5.1.2);
* first-layer filters as an image grid (each filter scaled on its own,
  mid-grey = 0);
* class activation maps over example images, or a note for networks without
  a global-average-pooling head.

:func:`inspection_sections` composes them for a page (or for the study
report); :func:`write_inspection` writes ``<out>/<name>/index.html`` with the
data beside it (``predictions.csv``, ``confusion.csv``, ``per_class.csv``,
``summary.json``).
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analyze.inspect import Inspection
from .page import Section, figure_section, kv_table, render_html, write_page

RGB = tuple[tuple[tuple[int, int, int], ...], ...]  # rows of (r, g, b) pixels
SPLIT_NAMES = {"val": "validation", "test": "test", "train": "training"}


def _rgb(image: np.ndarray) -> RGB:
    """``(H, W)`` or ``(H, W, C)`` uint8 -> rows of (r, g, b) tuples (grey repeated)."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif a.shape[-1] != 3:
        a = np.repeat(a.mean(axis=-1, keepdims=True).round().astype(np.uint8), 3, axis=-1)
    return tuple(tuple((int(p[0]), int(p[1]), int(p[2])) for p in row) for row in a)


def _finite_rows(probs: np.ndarray) -> np.ndarray:
    return np.isfinite(probs).all(axis=1) if len(probs) else np.zeros(0, dtype=bool)


# ----------------------------------------------------------------- confusion
class ConfusionInfo(NamedTuple):
    class_names: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]  # counts[true][predicted]
    n: int


def _confusion_info(labels: np.ndarray, probs: np.ndarray,
                    class_names: list[str]) -> ConfusionInfo:
    """Counts of (true, predicted) pairs; images with non-finite probabilities are dropped."""
    k = len(class_names)
    if probs.ndim != 2 or probs.shape[1] != k or len(probs) != len(labels):
        raise ValueError(f"probs must be (N, {k}) for N = {len(labels)} labels")
    ok = _finite_rows(probs)
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (labels[ok], probs[ok].argmax(axis=1)), 1)
    return ConfusionInfo(tuple(class_names), tuple(tuple(int(v) for v in r) for r in m),
                         int(ok.sum()))


def _draw_confusion(info: ConfusionInfo, split: str = "val") -> go.Figure:
    counts = np.asarray(info.counts, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    names = list(info.class_names)
    fig = go.Figure(go.Heatmap(
        z=share, x=names, y=names, text=np.asarray(info.counts), texttemplate="%{text}",
        colorscale="Blues", zmin=0, zmax=1, colorbar={"title": "share"},
        hovertemplate="true %{y}<br>predicted %{x}<br>%{text} images (%{z:.1%})<extra></extra>",
    ))
    side = max(380, min(900, 40 * len(names) + 160))
    fig.update_layout(
        title=f"Confusion matrix: {info.n} {SPLIT_NAMES.get(split, split)} images "
              "(colour: share of the true class)",
        xaxis={"title": "predicted", "type": "category"},
        yaxis={"title": "true", "type": "category", "autorange": "reversed"},
        height=side, margin={"t": 60})
    return fig


def plot_confusion(labels: np.ndarray, probs: np.ndarray, class_names: list[str],
                   split: str = "val") -> go.Figure:
    """The confusion matrix: true class (rows) x predicted class (columns)."""
    return _draw_confusion(_confusion_info(labels, probs, class_names), split)


# ----------------------------------------------------------------- per class
class PerClassInfo(NamedTuple):
    class_names: tuple[str, ...]
    accuracy: tuple[float, ...]
    support: tuple[int, ...]
    overall: float


def _per_class_info(labels: np.ndarray, probs: np.ndarray,
                    class_names: list[str]) -> PerClassInfo:
    """Accuracy of each class that has images (classes without any are left out)."""
    c = _confusion_info(labels, probs, class_names)
    m = np.asarray(c.counts)
    support = m.sum(axis=1)
    keep = [i for i in range(len(class_names)) if support[i] > 0]
    overall = float(np.trace(m) / m.sum()) if m.sum() else math.nan
    return PerClassInfo(tuple(class_names[i] for i in keep),
                        tuple(float(m[i, i] / support[i]) for i in keep),
                        tuple(int(support[i]) for i in keep), overall)


def _draw_per_class(info: PerClassInfo) -> go.Figure:
    fig = go.Figure(go.Bar(
        x=list(info.class_names), y=list(info.accuracy),
        text=[f"{a:.0%}" for a in info.accuracy], textposition="auto",
        customdata=list(info.support), marker={"color": "#1f77b4"},
        hovertemplate="%{x}: %{y:.2%} of %{customdata} images<extra></extra>"))
    if math.isfinite(info.overall):
        fig.add_hline(y=info.overall, line={"color": "#d62728", "dash": "dash"},
                      annotation_text=f"overall {info.overall:.2%}")
    fig.update_layout(title="Accuracy per class", xaxis={"type": "category", "title": "class"},
                      yaxis={"title": "accuracy", "range": [0, 1.05]}, height=380,
                      margin={"t": 60})
    return fig


def plot_per_class(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> go.Figure:
    """A bar per class: the share of its images classified correctly."""
    return _draw_per_class(_per_class_info(labels, probs, class_names))


# ----------------------------------------------------------------- mistakes
class MistakeTile(NamedTuple):
    index: int  # position among the inspected images
    true: str
    predicted: str
    confidence: float  # probability of the predicted class
    true_prob: float
    classes: tuple[str, ...]  # the most probable classes, best first (true class included)
    probs: tuple[float, ...]
    image: RGB


class MistakesInfo(NamedTuple):
    tiles: tuple[MistakeTile, ...]
    n_mistakes: int
    n: int


def _mistakes_info(labels: np.ndarray, probs: np.ndarray, images: np.ndarray,
                   class_names: list[str], k: int = 12, top: int = 4) -> MistakesInfo:
    """The ``k`` wrong predictions made with the highest confidence, most confident first
    (ties by index), each with its ``top`` most probable classes plus the true one."""
    ok = _finite_rows(probs)
    idx = np.flatnonzero(ok)
    pred = probs[idx].argmax(axis=1)
    wrong = idx[pred != labels[idx]]
    conf = probs[wrong, probs[wrong].argmax(axis=1)]
    order = sorted(range(len(wrong)), key=lambda j: (-float(conf[j]), int(wrong[j])))
    tiles = []
    for j in order[:k]:
        i = int(wrong[j])
        p = probs[i]
        ranked = sorted(range(len(p)), key=lambda c: (-float(p[c]), c))[:top]
        if int(labels[i]) not in ranked:
            ranked.append(int(labels[i]))
        tiles.append(MistakeTile(
            i, class_names[int(labels[i])], class_names[ranked[0]], float(p[ranked[0]]),
            float(p[int(labels[i])]), tuple(class_names[c] for c in ranked),
            tuple(float(p[c]) for c in ranked), _rgb(images[i])))
    return MistakesInfo(tuple(tiles), len(wrong), int(ok.sum()))


_PER_ROW = 3  # mistakes per row: image + bars each


def _draw_mistakes(info: MistakesInfo) -> go.Figure:
    if not info.tiles:
        return go.Figure()
    rows = math.ceil(len(info.tiles) / _PER_ROW)
    titles: list[str] = []
    for r in range(rows):
        for c in range(_PER_ROW):
            j = r * _PER_ROW + c
            t = info.tiles[j] if j < len(info.tiles) else None
            titles += ["", f"#{t.index}: true {t.true}, predicted {t.predicted}" if t else ""]
    fig = make_subplots(rows=rows, cols=2 * _PER_ROW, subplot_titles=titles,
                        column_widths=[0.1, 0.23] * _PER_ROW, horizontal_spacing=0.015,
                        vertical_spacing=0.16 / rows)
    for j, t in enumerate(info.tiles):
        r, c = j // _PER_ROW + 1, 2 * (j % _PER_ROW) + 1
        fig.add_trace(go.Image(z=t.image, hovertemplate=f"image #{t.index}<extra></extra>"),
                      row=r, col=c)
        colors = ["#2ca02c" if n == t.true else "#d62728" if n == t.predicted else "#9e9e9e"
                  for n in t.classes]
        fig.add_trace(go.Bar(
            x=list(t.probs), y=list(t.classes), orientation="h", marker={"color": colors},
            text=[f"{n} {p:.0%}" for n, p in zip(t.classes, t.probs, strict=True)],
            textposition="outside", cliponaxis=False, textfont={"size": 10}, showlegend=False,
            hovertemplate="%{y}: %{x:.3f}<extra></extra>"), row=r, col=c + 1)
        fig.update_xaxes(range=[0, 1.7], showticklabels=False, showgrid=False, row=r, col=c + 1)
        fig.update_yaxes(autorange="reversed", type="category", showticklabels=False,
                         row=r, col=c + 1)
        fig.update_xaxes(showticklabels=False, row=r, col=c)
        fig.update_yaxes(showticklabels=False, row=r, col=c)
    fig.update_layout(
        title=f"The {len(info.tiles)} most confident of {info.n_mistakes} mistakes among "
              f"{info.n} images (green: true class, red: predicted)",
        height=70 + 170 * rows, margin={"t": 80, "b": 10, "l": 20, "r": 20}, showlegend=False)
    return fig


def plot_mistakes(labels: np.ndarray, probs: np.ndarray, images: np.ndarray,
                  class_names: list[str], k: int = 12) -> go.Figure:
    """The most confident mistakes as image tiles with class-probability bars."""
    return _draw_mistakes(_mistakes_info(labels, probs, images, class_names, k))


# ----------------------------------------------------------------- filters
class FiltersInfo(NamedTuple):
    layer: str
    shape: tuple[int, ...]  # (F, C, k, k) of the weights drawn
    rows: int
    cols: int
    mosaic: RGB  # the grid: one tile per filter, 1 px white lines between


def _filters_info(weights: np.ndarray, layer: str = "") -> FiltersInfo:
    """First-layer weights ``(F, C, k, k)`` as one image grid.

    Each filter is scaled on its own around zero (``0.5 + w / (2 max|w|)``:
    mid-grey = 0, white = its largest positive weight, black = the most
    negative); three input channels are drawn as colour, any other count as
    the mean over channels. Filters with non-finite weights are left out.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4:
        raise ValueError(f"weights must be (F, C, k, k), got shape {w.shape}")
    w = w[np.isfinite(w).reshape(len(w), -1).all(axis=1)]
    if not len(w):
        raise ValueError("no finite filter weights")
    f, c, kh, kw = w.shape
    if c != 3:
        w = w.mean(axis=1, keepdims=True)
    scale = np.abs(w).reshape(f, -1).max(axis=1)
    scale[scale == 0] = 1.0
    tiles = 0.5 + w / (2 * scale[:, None, None, None])
    tiles = np.round(tiles * 255).clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    cols = math.ceil(math.sqrt(f))
    rows = math.ceil(f / cols)
    mosaic = np.full((rows * (kh + 1) - 1, cols * (kw + 1) - 1, tiles.shape[-1]), 255, np.uint8)
    for i in range(f):
        r, q = divmod(i, cols)
        mosaic[r * (kh + 1):r * (kh + 1) + kh, q * (kw + 1):q * (kw + 1) + kw] = tiles[i]
    return FiltersInfo(layer, tuple(int(s) for s in np.asarray(weights).shape), rows, cols,
                       _rgb(mosaic))


def _draw_filters(info: FiltersInfo) -> go.Figure:
    fig = go.Figure(go.Image(z=info.mosaic, hoverinfo="skip"))
    f, c, kh, kw = info.shape
    h, w = len(info.mosaic), len(info.mosaic[0])
    px = max(4, min(40, 520 // max(h, w)))  # screen pixels per weight
    fig.update_layout(
        title={"text": f"{info.layer}: {f} filters<br><sup>{kh}x{kw}, "
                       f"{'colour' if c == 3 else 'grey (mean over input channels)' if c > 1 else 'grey'}"
                       "; each scaled on its own, mid-grey = 0</sup>"},
        width=max(640, w * px + 60), height=h * px + 130, margin={"t": 90, "l": 30, "r": 30})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    return fig


def plot_filters(weights: np.ndarray, layer: str = "") -> go.Figure:
    """The first layer's filters as a grid of small images."""
    return _draw_filters(_filters_info(weights, layer))


# ----------------------------------------------------------------- CAMs
class CamTile(NamedTuple):
    index: int
    true: str
    predicted: str
    confidence: float
    cls: str  # the class whose map is drawn
    image: RGB
    heat: tuple[tuple[float, ...], ...]  # the map scaled to [0, 1] per image


class CamsInfo(NamedTuple):
    tiles: tuple[CamTile, ...]


def _cams_info(cams: np.ndarray, index: np.ndarray, classes: np.ndarray, labels: np.ndarray,
               probs: np.ndarray, images: np.ndarray, class_names: list[str]) -> CamsInfo:
    """One tile per map: the image, and its map scaled to [0, 1] (min to max; a constant
    map is all 0). Maps or images with non-finite values are left out."""
    tiles = []
    for m, i, k in zip(cams, index.tolist(), classes.tolist(), strict=True):
        m = np.asarray(m, dtype=np.float64)
        if not np.isfinite(m).all() or not np.isfinite(probs[i]).all():
            continue
        span = m.max() - m.min()
        heat = (m - m.min()) / span if span > 0 else np.zeros_like(m)
        p = int(probs[i].argmax())
        tiles.append(CamTile(int(i), class_names[int(labels[i])], class_names[p],
                             float(probs[i][p]), class_names[int(k)], _rgb(images[i]),
                             tuple(tuple(round(float(v), 4) for v in row) for row in heat)))
    return CamsInfo(tuple(tiles))


_CAM_COLS = 4


def _draw_cams(info: CamsInfo) -> go.Figure:
    if not info.tiles:
        return go.Figure()
    rows = math.ceil(len(info.tiles) / _CAM_COLS)
    titles = [f"#{t.index} {t.true}: map of {t.cls} ({t.confidence:.0%})" for t in info.tiles]
    fig = make_subplots(rows=rows, cols=_CAM_COLS, subplot_titles=titles,
                        horizontal_spacing=0.03, vertical_spacing=0.1 / rows)
    for j, t in enumerate(info.tiles):
        r, c = j // _CAM_COLS + 1, j % _CAM_COLS + 1
        fig.add_trace(go.Image(z=t.image, hoverinfo="skip"), row=r, col=c)
        fig.add_trace(go.Heatmap(z=t.heat, colorscale="Jet", zmin=0, zmax=1, opacity=0.45,
                                 showscale=False, hovertemplate="%{z:.2f}<extra></extra>"),
                      row=r, col=c)
        fig.update_xaxes(visible=False, row=r, col=c)
        fig.update_yaxes(visible=False, autorange="reversed", row=r, col=c)
    fig.update_layout(title="Class activation maps of the predicted class (red: where the "
                            "evidence for it lies)", height=60 + 260 * rows,
                      margin={"t": 80, "l": 20, "r": 20})
    return fig


def plot_cams(cams: np.ndarray, index: np.ndarray, classes: np.ndarray, labels: np.ndarray,
              probs: np.ndarray, images: np.ndarray, class_names: list[str]) -> go.Figure:
    """Class activation maps over their images."""
    return _draw_cams(_cams_info(cams, index, classes, labels, probs, images, class_names))


# ----------------------------------------------------------------- page
def inspection_sections(insp: Inspection, prefix: str = "inspect",
                        title: str = "Inspection") -> list[Section]:
    """The page's blocks: facts, confusion, per-class accuracy, mistakes, filters, CAMs."""
    split = SPLIT_NAMES.get(insp.split, insp.split)
    facts = [(k, html.escape(v)) for k, v in insp.facts]
    facts.append(("accuracy", f"{insp.accuracy:.4f} on {len(insp.labels)} {split} images"))
    sections = [
        Section(prefix, title, body=kv_table(facts)),
        figure_section(f"{prefix}-confusion", "Confusion matrix",
                       lambda: plot_confusion(insp.labels, insp.probs, insp.class_names,
                                              insp.split), height=None),
        figure_section(f"{prefix}-per-class", "Accuracy per class",
                       lambda: plot_per_class(insp.labels, insp.probs, insp.class_names),
                       height=None),
        figure_section(f"{prefix}-mistakes", "Most confident mistakes",
                       lambda: plot_mistakes(insp.labels, insp.probs, insp.images,
                                             insp.class_names), height=None,
                       empty=f"no mistakes on these {len(insp.labels)} images"),
    ]
    if insp.filters is not None:
        sections.append(figure_section(f"{prefix}-filters", "First-layer filters",
                                       lambda: plot_filters(insp.filters, insp.filters_layer),
                                       height=None))
    else:
        sections.append(Section(f"{prefix}-filters", "First-layer filters",
                                note=insp.filters_note or "no first layer to draw"))
    if insp.cams is not None:
        sections.append(figure_section(
            f"{prefix}-cams", "Class activation maps",
            lambda: plot_cams(insp.cams, insp.cam_index, insp.cam_class, insp.labels,
                              insp.probs, insp.images, insp.class_names), height=None))
    else:
        sections.append(Section(f"{prefix}-cams", "Class activation maps", note=insp.cam_note))
    return sections


def summary(insp: Inspection) -> dict[str, Any]:
    """The numbers of the page as plain data (``summary.json``)."""
    per = _per_class_info(insp.labels, insp.probs, insp.class_names)
    mistakes = _mistakes_info(insp.labels, insp.probs, insp.images, insp.class_names)
    return {
        "title": insp.title, "split": insp.split, "n_images": int(len(insp.labels)),
        "accuracy": insp.accuracy, "facts": dict(insp.facts),
        "per_class": {n: {"accuracy": a, "support": s}
                      for n, a, s in zip(per.class_names, per.accuracy, per.support, strict=True)},
        "most_confident_mistakes": [
            {"index": t.index, "true": t.true, "predicted": t.predicted,
             "confidence": t.confidence, "true_prob": t.true_prob} for t in mistakes.tiles],
        "first_layer": insp.filters_layer or insp.filters_note,
        "cams": "drawn" if insp.cams is not None else insp.cam_note,
    }


def write_inspection(insp: Inspection, out_dir: str | Path, name: str) -> Path:
    """Write ``<out_dir>/<name>/index.html`` and its data files; returns the folder.

    Files: ``index.html`` (self-contained), ``predictions.csv`` (index, true,
    predicted, confidence, one probability per class), ``confusion.csv``,
    ``per_class.csv`` and ``summary.json``.
    """
    page = render_html(insp.title, inspection_sections(insp))
    folder = write_page(page, out_dir, name).parent
    names = insp.class_names
    with open(folder / "predictions.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["index", "true", "predicted", "confidence", *(f"p_{n}" for n in names)])
        for i, (y, p) in enumerate(zip(insp.labels.tolist(), insp.probs, strict=True)):
            k = int(np.argmax(p))
            w.writerow([i, names[y], names[k], f"{p[k]:.6g}", *(f"{v:.6g}" for v in p)])
    conf = _confusion_info(insp.labels, insp.probs, names)
    with open(folder / "confusion.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted", *names])
        w.writerows([n, *row] for n, row in zip(names, conf.counts, strict=True))
    per = _per_class_info(insp.labels, insp.probs, names)
    with open(folder / "per_class.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["class", "accuracy", "support"])
        w.writerows(zip(per.class_names, per.accuracy, per.support, strict=True))
    (folder / "summary.json").write_text(json.dumps(summary(insp), indent=2), encoding="utf-8")
    return folder
