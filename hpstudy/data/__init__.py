"""Datasets: a registry of loaders and one data module for all of them.

Public surface: :func:`build_datamodule`, :func:`list_datasets`,
:func:`describe_dataset`, :func:`register_dataset`, :class:`ImageDataModule`.
"""

from __future__ import annotations

from . import digits  # noqa: F401  (registers the loaders)
from ._registry import (
    DatasetError,
    DatasetMeta,
    RawDataset,
    check_dataset,
    dataset_options,
    describe_dataset,
    list_datasets,
    load_dataset,
    register_dataset,
)
from .augment import AUGMENTATIONS, PRESETS
from .module import ImageDataModule, TensorLoader, data_root, stratified_split

__all__ = [
    "AUGMENTATIONS",
    "PRESETS",
    "DatasetError",
    "DatasetMeta",
    "ImageDataModule",
    "RawDataset",
    "TensorLoader",
    "check_dataset",
    "data_root",
    "dataset_options",
    "describe_dataset",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "stratified_split",
]
