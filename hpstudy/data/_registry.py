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
    """What can be said of a dataset without loading it."""

    num_classes: int
    in_chans: int
    image_size: int


@dataclass(frozen=True)
class _Entry:
    load: Callable[..., RawDataset]
    describe: Callable[..., DatasetMeta]
    check: Callable[..., None] | None  # raises DatasetError when files are missing


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
    """

    def deco(fn: Callable[..., RawDataset]) -> Callable[..., RawDataset]:
        if name in _DATASETS:
            raise ValueError(f"dataset '{name}' is registered twice")
        _DATASETS[name] = _Entry(fn, describe, check)
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


def check_dataset(name: str, *, root: str, download: bool = False, **options) -> None:
    """Raise :class:`DatasetError` if the dataset's files are missing (and not downloadable)."""
    entry = _entry(name)
    if entry.check is not None:
        entry.check(root=root, download=download, **options)


def load_dataset(
    name: str, *, root: str, download: bool = False, seed: int = 0, **options
) -> RawDataset | StreamDataset:
    """Load a registered dataset's raw splits.

    ``seed`` (the split seed) reaches only loaders that declare it.
    """
    load = _entry(name).load
    if "seed" in inspect.signature(load).parameters:
        options["seed"] = seed
    return load(root=root, download=download, **options)
