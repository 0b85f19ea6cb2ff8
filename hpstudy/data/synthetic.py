"""Synthetic shapes: procedurally drawn images for tests and demos, no files at all.

Each class is a shape (disk, ring, square, frame, triangle, plus, bar, cross,
half disk, two dots) in one of several stretch/orientation variants, drawn
anti-aliased at a random position, size and small rotation, over a random
background with two distractor strokes and pixel noise. Colours carry no class
information. The knobs make the classic regimes easy to produce on purpose:

* underfitting: many classes (``n_classes: 40``) and a tiny model;
* overfitting: few samples (``n_samples: 200``) and a large model, or
  ``label_noise: 0.3`` (a fraction of training labels replaced by a wrong
  class, which a large model memorizes while validation accuracy falls).

Label noise touches the training split (validation is carved from it, so it is
noisy too, as real label noise would be); the test split is always clean.
"""

from __future__ import annotations

import functools
import math

import torch

from ._registry import DatasetError, DatasetMeta, RawDataset, register_dataset

CHUNK = 512  # images drawn at once: a few (CHUNK, H, W) float maps stay in cache


def _validate(n_classes: int, image_size: int, channels: int, n_samples: int, test_samples: int,
              label_noise: float) -> None:
    problems = []
    if not 2 <= n_classes <= 100:
        problems.append(f"n_classes must be in 2..100 (got {n_classes})")
    if image_size < 8:
        problems.append(f"image_size must be >= 8 (got {image_size})")
    if channels not in (1, 3):
        problems.append(f"channels must be 1 or 3 (got {channels})")
    if n_samples < 2 * n_classes:
        problems.append(f"n_samples must be >= 2 * n_classes (got {n_samples})")
    if test_samples < 0:
        problems.append(f"test_samples must be >= 0 (got {test_samples})")
    if not 0.0 <= label_noise < 1.0:
        problems.append(f"label_noise must be in [0, 1) (got {label_noise})")
    if problems:
        raise DatasetError("synthetic: " + "; ".join(problems))


def _plus(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    ax, ay = x.abs(), y.abs()
    return torch.minimum(torch.maximum(ax - 0.22, ay - 0.9), torch.maximum(ax - 0.9, ay - 0.22))


_S = math.sqrt(0.5)
# signed distance (negative inside) of each shape, in shape units (radius about 1)
_SDF = (
    lambda x, y: torch.hypot(x, y) - 0.9,                                        # disk
    lambda x, y: (torch.hypot(x, y) - 0.72).abs() - 0.2,                         # ring
    lambda x, y: torch.maximum(x.abs(), y.abs()) - 0.75,                         # square
    lambda x, y: (torch.maximum(x.abs(), y.abs()) - 0.7).abs() - 0.17,           # frame
    lambda x, y: torch.maximum(x.abs() * 0.866 + y * 0.5, -y) - 0.42,            # triangle
    _plus,                                                                       # plus
    lambda x, y: torch.maximum(x.abs() - 0.95, y.abs() - 0.22),                  # bar
    lambda x, y: _plus(_S * (x - y), _S * (x + y)),                              # cross
    lambda x, y: torch.maximum(torch.hypot(x, y) - 0.9, -y),                     # half disk
    lambda x, y: torch.hypot(x.abs() - 0.55, y) - 0.38,                          # two dots
)
N_SHAPES = len(_SDF)


def _shape_sdf(shape: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Signed distance maps (N, H, W) of each sample's shape (index ``shape``, (N,))."""
    d = torch.empty_like(x)
    for k, fn in enumerate(_SDF):
        idx = torch.nonzero(shape == k).flatten()
        if len(idx):  # only the samples of this shape: 10x less work than masking
            d[idx] = fn(x[idx], y[idx])
    return d


def _segment_dist(px: torch.Tensor, py: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    """Distance of every pixel to each sample's segment ``seg`` (N, 4: x0 y0 x1 y1)."""
    x0, y0, x1, y1 = (seg[:, i, None, None] for i in range(4))
    dx, dy = x1 - x0, y1 - y0
    t = (((px - x0) * dx + (py - y0) * dy) / (dx * dx + dy * dy).clamp_min(1e-6)).clamp(0, 1)
    return torch.sqrt((px - x0 - t * dx) ** 2 + (py - y0 - t * dy) ** 2)


def draw(labels: torch.Tensor, image_size: int, channels: int, gen: torch.Generator) -> torch.Tensor:
    """uint8 images (N, C, H, W) of the shapes named by ``labels``."""
    n, h = len(labels), image_size
    u = (torch.arange(h, dtype=torch.float32) + 0.5) / h * 2 - 1  # pixel centres in [-1, 1]
    py, px = torch.meshgrid(u, u, indexing="ij")
    px, py = px[None], py[None]

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen)

    shape = labels % N_SHAPES
    variant = labels // N_SHAPES
    stretch = 1 + 0.45 * (variant % 3).float()           # elongation along the shape's x axis
    angle = (variant // 3).float() * (math.pi * 2 / 9)    # 40 degree steps between variants
    angle = angle + (rand(n) * 2 - 1) * (math.pi / 9)     # +-20 degrees of jitter
    centre = (rand(n, 2) * 2 - 1) * 0.35
    scale = 0.3 + rand(n) * 0.18                          # shape radius as a fraction of the half-side
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    dx, dy = px - centre[:, 0, None, None], py - centre[:, 1, None, None]
    lx = (cos * dx + sin * dy) / (scale[:, None, None] * stretch[:, None, None])
    ly = (-sin * dx + cos * dy) / scale[:, None, None]
    # one shape unit is scale * h / 2 pixels: a one-pixel soft edge anti-aliases
    sdf = _shape_sdf(shape, lx, ly)
    alpha_shape = (0.5 - sdf * (scale[:, None, None] * h / 2)).clamp(0, 1)

    alpha_strokes = torch.zeros(n, h, h)
    for _ in range(2):
        dist = _segment_dist(px, py, rand(n, 4) * 2 - 1) * (h / 2)  # in pixels
        alpha_strokes = torch.maximum(alpha_strokes, (1.0 - dist / 0.8).clamp(0, 1))

    c = channels
    bg = rand(n, c, 1, 1) * 0.35
    fg = 0.55 + rand(n, c, 1, 1) * 0.45
    stroke = rand(n, c, 1, 1) * 0.8
    img = bg + 0.7 * alpha_strokes[:, None] * (stroke - bg)
    img = img + alpha_shape[:, None] * (fg - img)
    img = img + torch.randn(n, c, h, h, generator=gen) * 0.05
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def _labels(n: int, n_classes: int, gen: torch.Generator) -> torch.Tensor:
    """Balanced labels in a seeded order: the first draw from a split's generator."""
    return (torch.arange(n) % n_classes)[torch.randperm(n, generator=gen)]


@functools.lru_cache(maxsize=8)
def _make_split(n: int, n_classes: int, image_size: int, channels: int,
                seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced labels and their drawings; memoized because every trial of a
    study (same process) asks for the same images and drawing costs about
    0.3 ms per 32 px image on a CPU core."""
    gen = torch.Generator().manual_seed(seed)
    y = _labels(n, n_classes, gen)
    x = torch.cat([draw(y[i : i + CHUNK], image_size, channels, gen) for i in range(0, n, CHUNK)])
    return x, y


def _add_label_noise(
    y: torch.Tensor, n_classes: int, label_noise: float, generator_seed: int
) -> tuple[torch.Tensor, int]:
    """(labels with ``label_noise`` of them replaced by another class, how many)."""
    n = len(y)
    n_noisy = round(label_noise * n)
    if n_noisy:
        gen = torch.Generator().manual_seed(generator_seed * 2 + 3)
        idx = torch.randperm(n, generator=gen)[:n_noisy]
        shift = torch.randint(1, n_classes, (n_noisy,), generator=gen)  # never the true class
        y = y.clone()
        y[idx] = (y[idx] + shift) % n_classes
    return y, n_noisy


def _describe(
    n_classes: int = 10,
    image_size: int = 32,
    channels: int = 3,
    n_samples: int = 2000,
    test_samples: int = 500,
    label_noise: float = 0.0,
    **_: object,
) -> DatasetMeta:
    _validate(n_classes, image_size, channels, n_samples, test_samples, label_noise)
    # Every shape is mirror-symmetric about its vertical axis and the first three
    # variants of each only stretch it along x (angles jitter symmetrically), so up
    # to 30 classes a mirror image keeps its class; from 31 on, variants differ by
    # rotation steps of 40 degrees, which a mirror maps onto other variants.
    return DatasetMeta(num_classes=n_classes, in_chans=channels, image_size=image_size,
                       flip_invariant=n_classes <= 3 * N_SHAPES)


def _split_labels(
    root: str,
    n_classes: int = 10,
    n_samples: int = 2000,
    label_noise: float = 0.0,
    generator_seed: int = 0,
    **_: object,
) -> tuple[torch.Tensor, None]:
    """The training labels the loader would draw, without drawing a single image."""
    y = _labels(n_samples, n_classes, torch.Generator().manual_seed(generator_seed * 2 + 1))
    return _add_label_noise(y, n_classes, label_noise, generator_seed)[0], None


@register_dataset("synthetic", describe=_describe, labels=_split_labels)
def load_synthetic(
    root: str,
    download: bool = False,
    n_classes: int = 10,
    image_size: int = 32,
    channels: int = 3,
    n_samples: int = 2000,
    test_samples: int = 500,
    label_noise: float = 0.0,
    generator_seed: int = 0,
) -> RawDataset:
    """Draw a synthetic dataset in memory (no files; ``root`` is unused).

    Args:
        root: unused.
        download: unused.
        n_classes: number of classes, 2..100 (10 shapes x up to 10 variants).
        image_size: side length in pixels (>= 8).
        channels: 1 (grey) or 3 (RGB).
        n_samples: training images (validation is carved from these).
        test_samples: clean test images (0: no test split).
        label_noise: fraction of training labels replaced by a different class.
        generator_seed: seed of the drawing; the same seed gives the same images.
    """
    _validate(n_classes, image_size, channels, n_samples, test_samples, label_noise)
    # independent streams: changing n_samples leaves the test images unchanged
    train_x, train_y = _make_split(n_samples, n_classes, image_size, channels,
                                   generator_seed * 2 + 1)
    test_x = test_y = None
    if test_samples:
        test_x, test_y = _make_split(test_samples, n_classes, image_size, channels,
                                     generator_seed * 2 + 2)
    train_y, n_noisy = _add_label_noise(train_y, n_classes, label_noise, generator_seed)
    return RawDataset(
        name="synthetic",
        num_classes=n_classes,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        class_names=[f"shape{k % N_SHAPES}_v{k // N_SHAPES}" for k in range(n_classes)],
        info={
            "cache": "none (drawn in memory)",
            "n_noisy_labels": n_noisy,
            "test_protocol": "clean drawn test split" if test_samples else "none (test_samples: 0)",
        },
    )
