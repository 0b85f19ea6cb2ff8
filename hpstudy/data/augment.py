"""Batch augmentation with tensor ops on the training device (airbench style).

Each augmentation is a function ``(x, generator) -> x`` on a float batch
(N, C, H, W) that is already normalized; presets name lists of them. Only
training batches are augmented; validation and test batches never are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Augment = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def _rand(n: int, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, device=x.device, generator=gen)


def pad_crop(x: torch.Tensor, gen: torch.Generator | None, pad: int = 4) -> torch.Tensor:
    """Zero-pad by ``pad`` (4 for 32 px, scaled for smaller images) and random-crop back.

    Padding happens after normalization, so it fills with the mean pixel
    rather than black; the crop offsets are uniform in [0, 2 * pad].
    """
    n, c, h, w = x.shape
    pad = max(1, round(pad * h / 32)) if h < 32 else pad
    padded = F.pad(x, (pad, pad, pad, pad))
    dx = (_rand(n, x, gen) * (2 * pad + 1)).long()
    dy = (_rand(n, x, gen) * (2 * pad + 1)).long()
    # two gathers (rows, then columns) of contiguous tensors: about twice as fast
    # on a CPU as one 4-D advanced index over a permuted view
    rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]  # (n, h)
    cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]  # (n, w)
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def hflip(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Flip left-right with probability 0.5."""
    flip = _rand(x.shape[0], x, gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def vflip(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Flip upside-down with probability 0.5."""
    flip = _rand(x.shape[0], x, gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(2), x)


def rotation(x: torch.Tensor, gen: torch.Generator | None, degrees: float = 15.0) -> torch.Tensor:
    """Rotate each image by a random angle in [-degrees, degrees] (bilinear)."""
    n = x.shape[0]
    theta = (_rand(n, x, gen) * 2 - 1) * (degrees * torch.pi / 180)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zeros = torch.zeros_like(cos)
    mat = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(mat.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def color_jitter(x: torch.Tensor, gen: torch.Generator | None, strength: float = 0.2) -> torch.Tensor:
    """Random brightness (additive) and contrast (multiplicative) per image."""
    n = x.shape[0]
    b = (_rand(n, x, gen) * 2 - 1) * strength
    c = 1 + (_rand(n, x, gen) * 2 - 1) * strength
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * c[:, None, None, None] + mean + b[:, None, None, None]


def cutout(x: torch.Tensor, gen: torch.Generator | None, frac: float = 0.5) -> torch.Tensor:
    """Zero a random ``frac * H`` square per image (DeVries & Taylor, 2017).

    The centre is uniform over the image, so the square may be clipped at the
    border (as in the paper); zero is the mean pixel after normalization.
    """
    n, _, h, w = x.shape
    size = max(1, int(round(frac * h)))
    y0 = (_rand(n, x, gen) * h).long() - size // 2
    x0 = (_rand(n, x, gen) * w).long() - size // 2
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    my = ((ys >= y0[:, None]) & (ys < y0[:, None] + size))[:, :, None]
    mx = ((xs >= x0[:, None]) & (xs < x0[:, None] + size))[:, None, :]
    mask = (my & mx)[:, None, :, :]
    return x.masked_fill(mask, 0.0)


AUGMENTATIONS: dict[str, Augment] = {
    "pad_crop": pad_crop,
    "hflip": hflip,
    "vflip": vflip,
    "rotation": rotation,
    "color_jitter": color_jitter,
    "cutout": cutout,
}

# Presets a study can search over. "standard" is the CIFAR "+" protocol.
PRESETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "standard": ("pad_crop", "hflip"),
    "strong": ("pad_crop", "hflip", "color_jitter", "cutout"),
}


def resolve(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Names of the augmentations in ``spec`` (a preset, a single name, or a list)."""
    names: tuple[str, ...]
    if isinstance(spec, str):
        names = PRESETS[spec] if spec in PRESETS else (spec,)
    else:
        names = tuple(spec)
    for n in names:
        if n not in AUGMENTATIONS:
            raise ValueError(
                f"unknown augmentation '{n}'; choose from presets {', '.join(PRESETS)} "
                f"or {', '.join(AUGMENTATIONS)}"
            )
    return names


def build(spec: str | Sequence[str]) -> Augment | None:
    """One function applying every augmentation of ``spec`` in order (None if empty)."""
    fns = [AUGMENTATIONS[n] for n in resolve(spec)]
    if not fns:
        return None

    def apply(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        for fn in fns:
            x = fn(x, gen)
        return x

    return apply
