"""Datasets: a registry of loaders and one data module for all of them.

Public surface: :func:`list_datasets`, :func:`describe_dataset`,
:func:`check_dataset` (files, split and augmentation, before anything is
written), :func:`load_dataset`, :func:`register_dataset`,
:class:`ImageDataModule`, :func:`plan_split`, and for search spaces
:func:`safe_presets` / :func:`augmentation_safe` (no flips on digits).

Registered: ``digits`` (bundled), ``mnist``, ``fashion_mnist``, ``kmnist``,
``cifar10``, ``cifar100``, ``svhn``, ``image_folder`` and ``synthetic``.
"""

from __future__ import annotations

from . import cifar, digits, folder, mnist, svhn, synthetic  # noqa: F401  (register loaders)
from ._registry import (
    DatasetError,
    DatasetMeta,
    RawDataset,
    StreamDataset,
    check_dataset,
    dataset_labels,
    dataset_options,
    describe_dataset,
    list_datasets,
    load_dataset,
    register_dataset,
)
from .augment import (
    AUGMENTATIONS,
    PRESETS,
    augmentation_safe,
    augmentations_for,
    safe_presets,
)
from .module import (
    ImageDataModule,
    TensorLoader,
    channel_stats,
    data_root,
)
from .split import SplitPlan, plan_split, stratified_split

__all__ = [
    "AUGMENTATIONS",
    "PRESETS",
    "DatasetError",
    "DatasetMeta",
    "ImageDataModule",
    "RawDataset",
    "SplitPlan",
    "StreamDataset",
    "TensorLoader",
    "augmentation_safe",
    "augmentations_for",
    "channel_stats",
    "check_dataset",
    "data_root",
    "dataset_labels",
    "dataset_options",
    "describe_dataset",
    "list_datasets",
    "load_dataset",
    "plan_split",
    "register_dataset",
    "safe_presets",
    "stratified_split",
]
