"""Dataset registry: every dataset family registers a loader by name.

A loader returns a :class:`RawDataset` of uint8 image tensors (N, C, H, W) and
int64 labels, already split into the dataset's own train/test (and, for SVHN,
extra) parts. Splitting into train/validation, normalization and
augmentation are done once, in :mod:`hpstudy.data.module`, for every dataset.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset


@dataclass
class RawDataset:
    """Images as uint8 (N, C, H, W) tensors with int64 labels.

    ``val_x``/``val_y`` are set only by datasets whose protocol fixes the
    validation set itself (SVHN with ``extra``); otherwise the data module
    carves validation from ``train``. ``test_x`` may be ``None``.
    """

    name: str
    num_classes: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    class_names: list[str] | None = None
    info: dict = field(default_factory=dict)  # protocol facts, logged as params


@dataclass
class StreamDataset:
    """Splits too large to hold in memory, read image by image (large ImageFolders).

    Each split is a torch ``Dataset`` yielding ``(uint8 (C, H, W) tensor, int label)``
    at the final image size; ``*_targets`` hold every label up front so that the
    data module can stratify without decoding a single image.
    """

    name: str
    num_classes: int
    train: Dataset
    train_targets: torch.Tensor
    test: Dataset | None = None
    test_targets: torch.Tensor | None = None
    val: Dataset | None = None
    val_targets: torch.Tensor | None = None
    class_names: list[str] | None = None
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetMeta:
    """What can be said of a dataset without loading it.

    Attributes:
        num_classes: number of classes.
        in_chans: image channels (1 grey, 3 RGB).
        image_size: side of the (square) images, in pixels.
        flip_invariant: whether a mirror image keeps its class. True for photos
            of objects and clothing; False for digits, letters and other
            symbols (a mirrored 2, 3 or Kuzushiji character is no longer that
            symbol). Decides whether the augmentation presets flip and
            whether ``hflip``/``vflip`` may be asked for.
    """

    num_classes: int
    in_chans: int
    image_size: int
    flip_invariant: bool = True


@dataclass(frozen=True)
class _Entry:
    load: Callable[..., RawDataset]
    describe: Callable[..., DatasetMeta]
    check: Callable[..., None] | None  # raises DatasetError when files are missing
    labels: Callable[..., tuple[torch.Tensor, torch.Tensor | None] | None] | None  # split labels


_DATASETS: dict[str, _Entry] = {}
# loader arguments filled by the data module, not by dataset options
_RESERVED = ("root", "download", "seed")


class DatasetError(ValueError):
    """A dataset cannot be loaded (unknown name, missing files, bad options)."""


def register_dataset(
    name: str,
    *,
    describe: Callable[..., DatasetMeta],
    check: Callable[..., None] | None = None,
    labels: Callable[..., tuple[torch.Tensor, torch.Tensor | None] | None] | None = None,
) -> Callable[[Callable[..., RawDataset]], Callable[..., RawDataset]]:
    """Register ``load(root=, download=, **options) -> RawDataset`` under ``name``.

    A loader may return a :class:`StreamDataset` instead when the data does not
    fit in memory, and may take a ``seed`` argument (the split seed,
    ``data.seed``) when its protocol draws a split itself.
    ``describe(**options) -> DatasetMeta`` must be cheap: no image is read (a
    directory listing at most, for ImageFolders' classes).
    ``check(root=, download=, **options)`` raises :class:`DatasetError` naming
    the dataset, the path it looked in and how to get the files; it runs
    before a study writes anything.
    ``labels(root=, **options) -> (train_y, fixed_val_y or None)`` returns the
    labels the loader's splits would have, read cheaply (a labels file, a
    directory listing; no pixels), so that :func:`check_dataset` can refuse a
    split that cannot work before anything is written, or ``None`` when it
    cannot tell cheaply (the split is then checked when the data loads). Like
    the loader it may take ``seed``. It runs only after ``check`` found the files.
    """

    def deco(fn: Callable[..., RawDataset]) -> Callable[..., RawDataset]:
        if name in _DATASETS:
            raise ValueError(f"dataset '{name}' is registered twice")
        _DATASETS[name] = _Entry(fn, describe, check, labels)
        return fn

    return deco


def list_datasets() -> list[str]:
    """Registered dataset names."""
    return sorted(_DATASETS)


def _entry(name: str) -> _Entry:
    try:
        return _DATASETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_DATASETS), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DatasetError(
            f"unknown dataset '{name}'{hint} (known: {', '.join(list_datasets())})"
        ) from None


def dataset_options(name: str) -> set[str]:
    """Dataset-specific options the loader accepts (beyond ``root`` and ``download``)."""
    params = inspect.signature(_entry(name).load).parameters
    return {n for n in params if n not in _RESERVED}


def describe_dataset(name: str, **options) -> DatasetMeta:
    """Classes, channels and image size of a dataset, without loading it."""
    return _entry(name).describe(**options)


def _with_seed(fn: Callable[..., object], options: dict, seed: int) -> dict:
    """``options`` plus ``seed`` when ``fn`` declares it (the split seed of SVHN's protocol)."""
    if "seed" in inspect.signature(fn).parameters:
        return {**options, "seed": seed}
    return options


def check_dataset(
    name: str,
    *,
    root: str,
    download: bool = False,
    val_split: float | None = None,
    subset: int | None = None,
    seed: int = 0,
    augmentation: str | list[str] | None = None,
    **options,
) -> None:
    """Raise :class:`DatasetError` if this data configuration cannot work; cheap, writes nothing.

    Checks, in order: ``augmentation`` (when given) against the dataset's
    classes (no flips on digits); that the files are there (or may be
    downloaded); and, when ``val_split`` or ``subset`` is given and the
    files are present, the split itself (:func:`hpstudy.data.split.plan_split`)
    on labels read without any pixel (datasets that register no ``labels``
    reader are checked when they load).

    Args:
        name: registry name.
        root: the data root.
        download: whether missing files will be downloaded (then the split is
            checked when the data module loads them).
        val_split: ``data.val_split`` (``None``: do not check the split).
        subset: ``data.subset``.
        seed: ``data.seed``.
        augmentation: ``data.augmentation`` (``None``: do not check it).
        **options: dataset options.
    """
    entry = _entry(name)
    if augmentation is not None:
        from .augment import augmentations_for

        augmentations_for(name, augmentation, **options)
    if entry.check is not None:
        entry.check(root=root, download=download, **options)
        if download:
            try:
                entry.check(root=root, download=False, **options)
            except DatasetError:
                return  # the files come with the download; the data module checks the split
    if val_split is None and subset is None:
        return
    labels = dataset_labels(name, root=root, seed=seed, **options)
    if labels is None:
        return
    from .split import plan_split

    plan_split(*labels, val_split=0.2 if val_split is None else val_split, subset=subset,
               seed=seed, dataset=name)


def dataset_labels(
    name: str, *, root: str, seed: int = 0, **options
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """``(train_y, fixed_val_y)`` as the loader would return them, read without any pixel.

    ``fixed_val_y`` is ``None`` unless the dataset's protocol fixes validation.
    Returns ``None`` for datasets that register no labels reader, or whose
    reader cannot tell without writing (an unextracted archive). The files
    must be there (see :func:`check_dataset`).
    """
    labels = _entry(name).labels
    if labels is None:
        return None
    return labels(root=root, **_with_seed(labels, options, seed))


def load_dataset(
    name: str, *, root: str, download: bool = False, seed: int = 0, **options
) -> RawDataset | StreamDataset:
    """Load a registered dataset's raw splits.

    ``seed`` (the split seed) reaches only loaders that declare it.
    """
    load = _entry(name).load
    return load(root=root, download=download, **_with_seed(load, options, seed))
