"""Batch augmentation with tensor ops on the training device (airbench style).

Each augmentation is a function ``(x, generator) -> x`` on a float batch
(N, C, H, W) that is already normalized; its random numbers are drawn on the
batch's device from ``generator`` (a generator on that device), and nothing
reads a value back to the host. Presets name lists of them. Only training
batches are augmented; validation and test batches never are.

Presets respect the dataset: flips (``hflip``, ``vflip``) mirror the image,
which keeps the class of a cat or a shirt but not of a digit or a letter, so
on datasets whose :class:`~hpstudy.data.DatasetMeta` says
``flip_invariant=False`` the presets leave flips out (``standard`` is
``pad_crop`` alone there) and naming a flip explicitly is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ._registry import DatasetError, describe_dataset

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
# Mirror the image: only for datasets whose classes survive mirroring.
FLIPS = frozenset({"hflip", "vflip"})


def resolve(
    spec: str | Sequence[str], *, flip_invariant: bool = True, dataset: str = "this dataset"
) -> tuple[str, ...]:
    """Names of the augmentations in ``spec`` (a preset, a single name, or a list).

    Args:
        spec: a preset name, one augmentation name, or a list of names.
        flip_invariant: the dataset's :attr:`DatasetMeta.flip_invariant`;
            when False, presets drop their flips and explicit flips are refused.
        dataset: the dataset's name, for the error message.

    Raises:
        ValueError: an unknown name.
        DatasetError: a flip asked for on a dataset whose classes do not survive it.
    """
    names: tuple[str, ...]
    if isinstance(spec, str) and spec in PRESETS:
        names = PRESETS[spec]
        return names if flip_invariant else tuple(n for n in names if n not in FLIPS)
    names = (spec,) if isinstance(spec, str) else tuple(spec)
    for n in names:
        if n not in AUGMENTATIONS:
            raise ValueError(
                f"unknown augmentation '{n}'; choose from presets {', '.join(PRESETS)} "
                f"or {', '.join(AUGMENTATIONS)}"
            )
    flips = [n for n in names if n in FLIPS]
    if flips and not flip_invariant:
        raise DatasetError(
            f"data.augmentation: {' and '.join(flips)} mirrors the images of {dataset}, whose "
            f"classes do not survive mirroring (a mirrored digit or letter is another symbol "
            f"or none); drop it, or use a preset (standard, strong): they leave flips out there"
        )
    return names


def augmentations_for(dataset: str, spec: str | Sequence[str], **options: object) -> tuple[str, ...]:
    """The augmentations ``spec`` means on ``dataset`` (presets resolved for its classes).

    Cheap (the dataset's :func:`~hpstudy.data.describe_dataset`, no file read).

    Raises:
        DatasetError: ``spec`` flips images of a dataset whose classes are not mirror-invariant.
        ValueError: an unknown augmentation name.
    """
    meta = describe_dataset(dataset, **options)
    return resolve(spec, flip_invariant=meta.flip_invariant, dataset=dataset)


def augmentation_safe(dataset: str, spec: str | Sequence[str], **options: object) -> bool:
    """Whether ``spec`` may be used on ``dataset`` (False: it flips images whose class a flip changes).

    Unknown names still raise ``ValueError``: they are mistakes, not unsafe choices.
    """
    try:
        augmentations_for(dataset, spec, **options)
    except DatasetError:
        return False
    return True


def safe_presets(dataset: str, **options: object) -> list[str]:
    """The presets worth searching on ``dataset``: every preset, minus any that means the
    same augmentations as an earlier one there (the search would draw duplicates).

    Presets resolve per dataset (no flips on digits), so all of them are safe;
    a search space over ``data.augmentation`` can offer exactly this list.
    """
    meta = describe_dataset(dataset, **options)
    seen: set[tuple[str, ...]] = set()
    out = []
    for name in PRESETS:
        ops = resolve(name, flip_invariant=meta.flip_invariant, dataset=dataset)
        if ops not in seen:
            seen.add(ops)
            out.append(name)
    return out


def build(spec: str | Sequence[str], *, flip_invariant: bool = True) -> Augment | None:
    """One function applying every augmentation of ``spec`` in order (None if empty)."""
    fns = [AUGMENTATIONS[n] for n in resolve(spec, flip_invariant=flip_invariant)]
    if not fns:
        return None

    def apply(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        for fn in fns:
            x = fn(x, gen)
        return x

    return apply
