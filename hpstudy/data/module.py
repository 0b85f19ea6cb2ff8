"""The data module: split, normalize, resize and batch any registered dataset.

Datasets that fit in memory are held as tensors on the training device,
normalized once, augmented in batch with tensor ops, shuffled with
``torch.randperm`` on that device and served as index slices: no per-sample
Python, no worker processes (airbench / nanoGPT style).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from . import augment as _augment
from ._registry import RawDataset, load_dataset

DEFAULT_ROOT = "~/.cache/hpstudy/data"


def data_root(root: str | None) -> str:
    """``root``, else ``$HPSTUDY_DATA``, else ``~/.cache/hpstudy/data`` (user expanded)."""
    return str(Path(root or os.environ.get("HPSTUDY_DATA") or DEFAULT_ROOT).expanduser())


def stratified_split(
    y: torch.Tensor, n_val: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val) with ``n_val`` validation samples drawn per class in proportion."""
    g = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(y, return_counts=True)
    # largest-remainder allocation so the per-class counts add up to n_val exactly
    quota = counts.double() * n_val / len(y)
    take = quota.floor().long()
    rest = n_val - int(take.sum())
    if rest > 0:
        order = torch.argsort(quota - take.double(), descending=True)[:rest]
        take[order] += 1
    train_idx, val_idx = [], []
    for c, k in zip(classes.tolist(), take.tolist(), strict=True):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        val_idx.append(idx[:k])
        train_idx.append(idx[k:])
    tr, va = torch.cat(train_idx), torch.cat(val_idx)
    return tr[torch.randperm(len(tr), generator=g)], va.sort().values


class TensorLoader:
    """Batches of (x, y) sliced from tensors that already live on the device.

    Iterating shuffles with ``torch.randperm`` on the tensors' device (one
    permutation per epoch, seeded), applies the batch augmentation, and under
    DDP gives each rank an equal-length shard of the same permutation.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        augment: _augment.Augment | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle, self.drop_last, self.augment = shuffle, drop_last, augment
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        # training shards are equal across ranks so every rank runs the same steps
        n = len(y)
        self.n_local = n // world_size if (shuffle and world_size > 1) else math.ceil(
            (n - rank) / world_size
        )

    def __len__(self) -> int:
        if self.drop_last:
            return self.n_local // self.batch_size
        return math.ceil(self.n_local / self.batch_size)

    def _generator(self) -> torch.Generator:
        g = torch.Generator(device=self.x.device)
        g.manual_seed(self.seed * 100_003 + self.epoch)
        return g

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = self._generator() if (self.shuffle or self.augment) else None
        n = len(self.y)
        if self.shuffle:
            order = torch.randperm(n, device=self.x.device, generator=gen)
            order = order[self.rank :: self.world_size][: self.n_local]
        elif self.world_size > 1:
            order = torch.arange(self.rank, n, self.world_size, device=self.x.device)
        else:
            order = None
        self.epoch += 1
        for i in range(len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            if order is None:
                xb, yb = self.x[sl], self.y[sl]
            else:
                idx = order[sl]
                xb, yb = self.x[idx], self.y[idx]
            if self.augment is not None:
                xb = self.augment(xb, gen)
            yield xb, yb


@dataclass
class SplitSizes:
    train: int
    val: int
    test: int


@dataclass(eq=False)
class ImageDataModule(pl.LightningDataModule):
    """LightningDataModule over a registered dataset.

    Args:
        dataset: registry name (``digits``, ``mnist``, ``cifar10``, ...).
        root: data directory (``None``: ``$HPSTUDY_DATA`` or ``~/.cache/hpstudy/data``).
        batch_size: training batch size.
        val_split: fraction (<1) or count (>=1) of the training split held out
            for validation, stratified and seeded; ignored when the dataset's
            protocol fixes validation itself.
        seed: seed of the split and of the shuffling.
        augmentation: preset (``none standard strong``), one name, or a list.
        min_size: upsample images smaller than this side length (model metadata).
        subset: keep only this many training samples (tiny runs and tests).
        eval_batch_size: batch size for validation/test (default: 4x batch_size).
        download: let torchvision-backed datasets download when missing.
        options: dataset-specific options (e.g. ``n_classes`` of ``synthetic``).
    """

    dataset: str = "digits"
    root: str | None = None
    batch_size: int = 64
    val_split: float = 0.2
    seed: int = 0
    augmentation: str | list[str] = "none"
    min_size: int = 1
    subset: int | None = None
    eval_batch_size: int | None = None
    download: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__()
        self._augment = _augment.build(self.augmentation)
        self._ready = False
        self._on_device: torch.device | None = None

    # ------------------------------------------------------------------ setup
    def prepare(self) -> None:
        """Load, split, resize and normalize once (idempotent)."""
        if self._ready:
            return
        raw = load_dataset(self.dataset, root=data_root(self.root), download=self.download,
                           **self.options)
        self.raw_info = dict(raw.info)
        self.num_classes = raw.num_classes
        self.class_names = raw.class_names
        tx, ty = raw.train_x, raw.train_y
        if raw.val_x is not None:
            vx, vy = raw.val_x, raw.val_y
        else:
            n_val = round(self.val_split * len(ty)) if self.val_split < 1 else int(self.val_split)
            if not 0 < n_val < len(ty):
                raise ValueError(
                    f"data.val_split={self.val_split} leaves no train or no validation "
                    f"samples out of {len(ty)}"
                )
            tr, va = stratified_split(ty, n_val, self.seed)
            tx, ty, vx, vy = tx[tr], ty[tr], tx[va], ty[va]
        if self.subset is not None and self.subset < len(ty):
            g = torch.Generator().manual_seed(self.seed)
            keep = torch.randperm(len(ty), generator=g)[: self.subset]
            tx, ty = tx[keep], ty[keep]
            # keep validation proportionate so tiny runs stay tiny
            n_val = max(self.num_classes, min(len(vy), self.subset // 4))
            vx, vy = vx[:n_val], vy[:n_val]
        self.in_chans = int(tx.shape[1])
        # normalization statistics from the training split only
        xf = tx.float() / 255.0
        self.mean = xf.mean(dim=(0, 2, 3))
        self.std = xf.std(dim=(0, 2, 3)).clamp_min(1e-3)
        self.input_size = max(int(tx.shape[-1]), self.min_size)
        self.sizes = SplitSizes(len(ty), len(vy), 0 if raw.test_y is None else len(raw.test_y))
        self._splits = {"train": (tx, ty), "val": (vx, vy)}
        if raw.test_x is not None:
            self._splits["test"] = (raw.test_x, raw.test_y)
        self._tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._ready = True

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def _to_float(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """uint8 -> normalized float32 on ``device``, upsampled to ``input_size`` once."""
        x = x.to(device, non_blocking=True).float().div_(255.0)
        if x.shape[-1] < self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False)
        mean = self.mean.to(device)[None, :, None, None]
        std = self.std.to(device)[None, :, None, None]
        return x.sub_(mean).div_(std)

    def _device_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        device = self._device()
        if self._on_device != device:
            self._tensors, self._on_device = {}, device
        if split not in self._tensors:
            x, y = self._splits[split]
            self._tensors[split] = (self._to_float(x, device), y.to(device))
        return self._tensors[split]

    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _dist(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, split: str, train: bool) -> TensorLoader:
        self.prepare()
        x, y = self._device_split(split)
        rank, world = self._dist()
        bs = self.batch_size if train else (self.eval_batch_size or 4 * self.batch_size)
        return TensorLoader(
            x, y, bs, shuffle=train, augment=self._augment if train else None,
            seed=self.seed, rank=rank, world_size=world,
        )

    # ---------------------------------------------------------- dataloaders
    def train_dataloader(self) -> TensorLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> TensorLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> TensorLoader:
        if "test" not in self._splits:
            raise ValueError(f"dataset '{self.dataset}' has no test split")
        return self._loader("test", train=False)

    @property
    def has_test(self) -> bool:
        self.prepare()
        return "test" in self._splits

    def describe(self) -> dict[str, Any]:
        """Protocol facts logged as params: split sizes, normalization, augmentation."""
        self.prepare()
        out: dict[str, Any] = {
            "data.n_train": self.sizes.train,
            "data.n_val": self.sizes.val,
            "data.n_test": self.sizes.test,
            "data.input_size": self.input_size,
            "data.mean": [round(float(v), 4) for v in self.mean],
            "data.std": [round(float(v), 4) for v in self.std],
        }
        out.update({f"data.{k}": v for k, v in self.raw_info.items()})
        return out
