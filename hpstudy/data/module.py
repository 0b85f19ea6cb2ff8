"""The data module: split, normalize, resize and batch any registered dataset.

Two paths, one protocol:

* **Tensors** (every dataset that fits in memory): the uint8 tensors (from the
  loader's on-disk cache) are moved to the training device once (resized to
  the model's input size there, still uint8), shuffled with ``torch.randperm``
  on that device and served as index slices, each batch normalized and, for
  training, augmented with tensor ops whose random numbers come from a
  generator on that device: no per-sample Python, no worker processes, no
  host sync per step (airbench / nanoGPT style).
* **Stream** (large ImageFolders): a ``DataLoader`` with worker processes
  decodes uint8 batches; after Lightning moves a batch to the device,
  :meth:`ImageDataModule.on_after_batch_transfer` normalizes it and, for
  training batches only, applies the same tensor augmentations.

Why uint8 on the device, normalized per batch, rather than float32 normalized
once: it holds a quarter of the memory (CIFAR-10: 150 MiB instead of 600;
SVHN with extra: 1.8 GiB instead of 7.4; an ImageFolder cached at its 2 GiB
limit stays 2 GiB on the GPU), and the per-batch cost is one fused multiply-add
on a batch that is read anyway. Measured on this project's 2-core CPU, one
epoch of 20,000 32x32 RGB images (index, normalize, pad_crop + hflip, batch
256): 0.54-0.80 s from float32, 0.67-1.07 s from uint8 (1.2-1.3x, a cost that
disappears next to any model's step, and on a GPU next to nothing at all).
Images smaller than the model's minimum are resized once, on the device, and
stored rounded to uint8 (as a resized image file would be): resizing every
batch instead cost 1.7-2x on the CPU.

Either way the validation split is carved from the training split (seeded,
stratified, see :mod:`hpstudy.data.split`) unless the dataset's protocol fixes
it or ``val_split`` is 0 (no validation), normalization statistics come from
the training split only, and the test split is served only when asked for
(``train.evaluate_test``), never during selection.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from . import augment as _augment
from ._registry import RawDataset, StreamDataset, load_dataset
from .split import SplitPlan, plan_split

DEFAULT_ROOT = "~/.cache/hpstudy/data"
CHUNK = 8192  # images resized at once: bounds the peak float memory of the one-time resize
STATS_SAMPLES = 4096  # training images read to estimate mean/std of a streamed dataset


def data_root(root: str | None) -> str:
    """``root``, else ``$HPSTUDY_DATA``, else ``~/.cache/hpstudy/data`` (user expanded)."""
    return str(Path(root or os.environ.get("HPSTUDY_DATA") or DEFAULT_ROOT).expanduser())


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and population std of uint8 images (N, C, H, W), scaled to [0, 1].

    Exact, from a 256-bin histogram per channel built chunk by chunk: about
    ten times faster than float sums and no float copy of the whole set
    (SVHN+extra holds 600k images).
    """
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for ch in range(x.shape[1]):
        hist = torch.zeros(256, dtype=torch.float64)
        for i in range(0, len(x), CHUNK):
            hist += torch.bincount(x[i : i + CHUNK, ch].reshape(-1), minlength=256).double()
        mean = (hist * values).sum() / hist.sum()
        var = (hist * (values - mean) ** 2).sum() / hist.sum()
        means.append(mean / 255)
        stds.append(var.sqrt() / 255)
    return torch.stack(means).float(), torch.stack(stds).float().clamp_min(1e-3)


Transform = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


class TensorLoader:
    """Batches of (x, y) sliced from tensors that already live on the device.

    Iterating shuffles with ``torch.randperm`` on the tensors' device (one
    permutation per epoch, seeded), slices each batch with ``index_select``
    and hands it to ``transform`` (the data module's: uint8 -> normalized
    float, augmented for training) together with the epoch's generator, a
    ``torch.Generator`` on the same device. Under DDP each rank gets an
    equal-length shard of the same permutation. Nothing here reads a value
    back from the device: the loop runs on host-side sizes only.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        transform: Transform | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle, self.drop_last, self.transform = shuffle, drop_last, transform
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

    def generator(self, epoch: int) -> torch.Generator:
        """The generator of ``epoch`` (shuffling and augmentation), on the tensors' device."""
        g = torch.Generator(device=self.x.device)
        g.manual_seed(self.seed * 100_003 + epoch)
        return g

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = self.generator(self.epoch) if (self.shuffle or self.transform) else None
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
                xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
            if self.transform is not None:
                xb = self.transform(xb, gen)
            yield xb, yb


class _ShardSampler(Sampler[int]):
    """Evaluation indices ``rank, rank + world, ...``: every sample once over all ranks, no padding."""

    def __init__(self, n: int, rank: int, world_size: int):
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


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
            for validation, stratified and seeded; 0: no validation split (every
            training image trains, the validation loader is empty); ignored when
            the dataset's protocol fixes validation itself.
        seed: seed of the split and of the shuffling.
        augmentation: preset (``none standard strong``, resolved for the
            dataset: no flips on digits), one name, or a list.
        min_size: upsample images smaller than this side length (model metadata).
        subset: keep only this many training samples (tiny runs and tests).
        eval_batch_size: batch size for validation/test (default: 4x batch_size).
        download: let torchvision-backed datasets download when missing.
        options: dataset-specific options (e.g. ``n_classes`` of ``synthetic``).
        num_workers: DataLoader workers of streamed datasets (``None``:
            ``min(8, CPUs - 1)``); the tensor path never uses workers.
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
    num_workers: int | None = None

    def __post_init__(self) -> None:
        super().__init__()
        self._ready = False
        self._on_device: torch.device | None = None
        self._affine: tuple[torch.Tensor, torch.Tensor] | None = None
        self._stream_gen: torch.Generator | None = None
        self.streaming = False

    # ------------------------------------------------------------------ setup
    def prepare(self) -> None:
        """Load, split and compute the normalization statistics once (idempotent).

        Raises:
            DatasetError: bad files, an augmentation the dataset's classes do not
                survive (checked before anything is read), or a split that cannot work.
        """
        if self._ready:
            return
        self._augment_names = _augment.augmentations_for(self.dataset, self.augmentation,
                                                         **self.options)
        self._augment = _augment.build(self._augment_names)
        raw = load_dataset(self.dataset, root=data_root(self.root), download=self.download,
                           seed=self.seed, **self.options)
        self.raw_info = dict(raw.info)
        self.num_classes = raw.num_classes
        self.class_names = raw.class_names
        self.streaming = isinstance(raw, StreamDataset)
        if self.streaming:
            self._prepare_stream(raw)
        else:
            self._prepare_tensors(raw)
        self.input_size = max(self.native_size, self.min_size)
        self._ready = True

    def _plan(self, train_y: torch.Tensor, val_y: torch.Tensor | None) -> SplitPlan:
        """The split of this configuration (:func:`~hpstudy.data.split.plan_split`)."""
        plan = plan_split(
            train_y, val_y, val_split=self.val_split, subset=self.subset, seed=self.seed,
            dataset=self.dataset, class_names=self.class_names,
            fixed_protocol=self.raw_info.pop("val_protocol", "fixed by the dataset"),
        )
        self.val_protocol = plan.protocol
        return plan

    def _prepare_tensors(self, raw: RawDataset) -> None:
        plan = self._plan(raw.train_y, raw.val_y)
        if len(plan.train) == len(raw.train_y):
            # every training image trains (fixed validation, or val_split 0), in order:
            # no 2 GB copy for SVHN+extra
            tx, ty = raw.train_x, raw.train_y
        else:
            tx, ty = raw.train_x[plan.train], raw.train_y[plan.train]
        if plan.fixed_val is not None:
            vx, vy = raw.val_x[plan.fixed_val], raw.val_y[plan.fixed_val]
        else:
            vx, vy = raw.train_x[plan.val], raw.train_y[plan.val]
        self.in_chans, self.native_size = int(tx.shape[1]), int(tx.shape[-1])
        self.mean, self.std = channel_stats(tx)  # the training split only
        self.norm_from = f"train split ({len(ty)} images)"
        self.sizes = SplitSizes(len(ty), len(vy), 0 if raw.test_y is None else len(raw.test_y))
        self._splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {
            "train": (tx, ty), "val": (vx, vy)
        }
        if raw.test_x is not None:
            self._splits["test"] = (raw.test_x, raw.test_y)
        self._tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _prepare_stream(self, raw: StreamDataset) -> None:
        plan = self._plan(raw.train_targets, raw.val_targets)
        train_idx = plan.train
        train: Dataset = Subset(raw.train, train_idx.tolist())
        val: Dataset = (Subset(raw.val, plan.fixed_val.tolist()) if plan.fixed_val is not None
                        else Subset(raw.train, plan.val.tolist()))
        self._streams: dict[str, Dataset] = {"train": train, "val": val}
        if raw.test is not None:
            self._streams["test"] = raw.test
        # mean/std from a seeded sample of training images (reading them all costs an epoch)
        n = len(train_idx)
        k = min(n, STATS_SAMPLES)
        pick = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))[:k]
        loader = DataLoader(Subset(train, pick.tolist()), batch_size=256,
                            num_workers=self._workers() if k > 512 else 0)
        sample = torch.cat([x for x, _ in loader])
        self.in_chans, self.native_size = int(sample.shape[1]), int(sample.shape[-1])
        self.mean, self.std = channel_stats(sample)
        self.norm_from = f"{k} of {n} train images, seed {self.seed}"
        self.sizes = SplitSizes(n, len(val), 0 if raw.test is None else len(raw.test))

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def _workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        return max(0, min(8, (os.cpu_count() or 1) - 1))

    # ------------------------------------------------------------ device side
    def _normalizer(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, shift)`` on ``device`` with ``x * scale + shift == (x / 255 - mean) / std``.

        Made once per device: a host-to-device copy per batch could stall the stream.
        """
        if self._affine is None or self._affine[0].device != device:
            std = self.std.double()[None, :, None, None]
            mean = self.mean.double()[None, :, None, None]
            scale, shift = 1 / (255 * std), -mean / std
            self._affine = (scale.float().to(device), shift.float().to(device))
        return self._affine

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images -> normalized float32 on their device, at ``input_size``.

        One fused multiply-add per batch. Tensor-path images are already stored
        at ``input_size``; streamed ones smaller than it are resized here.
        """
        scale, shift = self._normalizer(x.device)
        out = torch.addcmul(shift, x.float(), scale)
        if out.shape[-1] != self.input_size:
            s = self.input_size
            out = F.interpolate(out, size=(s, s), mode="bilinear", align_corners=False)
        return out

    def _resized(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """uint8 images on ``device`` at ``input_size``: moved once, resized there if smaller.

        Resized images are rounded back to uint8, as a resized image file would
        be (at most half a grey level from the float result).
        """
        s = self.input_size
        if x.shape[-1] == s:
            return x.to(device)
        out = torch.empty((len(x), x.shape[1], s, s), dtype=torch.uint8, device=device)
        for i in range(0, len(x), CHUNK):
            xb = x[i : i + CHUNK].to(device).float()
            xb = F.interpolate(xb, size=(s, s), mode="bilinear", align_corners=False)
            out[i : i + CHUNK] = xb.round_().clamp_(0, 255).to(torch.uint8)
        return out

    def _transform(self, train: bool) -> Transform:
        """The per-batch work of a split: normalize; for training, then augment."""
        augment = self._augment if train else None

        def transform(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
            x = self.normalize(x)
            return augment(x, gen) if augment is not None else x

        return transform

    def prepare_batch(
        self, batch: tuple[torch.Tensor, torch.Tensor], *, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A streamed uint8 batch (already on its device) -> normalized, augmented if ``train``."""
        x, y = batch
        gen = None
        if train and self._augment is not None:
            if self._stream_gen is None or self._stream_gen.device != x.device:
                rank, _ = self._dist()
                self._stream_gen = torch.Generator(device=x.device)
                self._stream_gen.manual_seed(self.seed * 100_003 + 7_919 * rank)
            gen = self._stream_gen
        return self._transform(train)(x, gen), y

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Lightning hook: finish streamed batches on the device (tensor batches are ready)."""
        if not self.streaming:
            return batch
        trainer = getattr(self, "trainer", None)
        return self.prepare_batch(batch, train=trainer is not None and trainer.training)

    def _device_split(
        self, split: str, device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        device = device or self._device()
        if self._on_device != device:
            self._tensors, self._on_device = {}, device
        if split not in self._tensors:
            x, y = self._splits[split]
            self._tensors[split] = (self._resized(x, device), y.to(device))
        return self._tensors[split]

    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _dist(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    # ---------------------------------------------------------- dataloaders
    def dataloader(
        self,
        split: str,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        device: str | torch.device | None = None,
    ) -> TensorLoader | DataLoader:
        """The loader of ``split`` (``train``, ``val`` or ``test``) for one rank.

        Only ``train`` is shuffled and augmented. ``rank``, ``world_size`` and
        ``device`` (where the tensors live) default to the attached Trainer's
        (0, 1 and the CPU without one). Streamed batches arrive as uint8 on
        the CPU; :meth:`prepare_batch` finishes them on their device.
        """
        self.prepare()
        if split == "test" and not self.has_test:
            raise ValueError(f"dataset '{self.dataset}' has no test split")
        r, w = self._dist()
        rank, world = (r if rank is None else rank), (w if world_size is None else world_size)
        train = split == "train"
        bs = self.batch_size if train else (self.eval_batch_size or 4 * self.batch_size)
        if self.streaming:
            return self._stream_loader(split, train, bs, rank, world)
        x, y = self._device_split(split, None if device is None else torch.device(device))
        return TensorLoader(
            x, y, bs, shuffle=train, transform=self._transform(train),
            seed=self.seed, rank=rank, world_size=world,
        )

    def _stream_loader(self, split: str, train: bool, bs: int, rank: int, world: int) -> DataLoader:
        ds = self._streams[split]
        sampler: Sampler[int]
        if train:
            # equal shards per rank (same steps on every rank); Lightning calls set_epoch
            sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True,
                                         seed=self.seed, drop_last=True)
        else:
            sampler = _ShardSampler(len(ds), rank, world)
        workers = self._workers()
        return DataLoader(
            ds, batch_size=bs, sampler=sampler, num_workers=workers,
            pin_memory=self._device().type == "cuda", persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> TensorLoader | DataLoader:
        return self.dataloader("train")

    def val_dataloader(self) -> TensorLoader | DataLoader:
        return self.dataloader("val")

    def test_dataloader(self) -> TensorLoader | DataLoader:
        return self.dataloader("test")

    @property
    def has_val(self) -> bool:
        """Whether there is a validation split (``val_split: 0`` means none)."""
        self.prepare()
        return self.sizes.val > 0

    @property
    def has_test(self) -> bool:
        self.prepare()
        return "test" in (self._streams if self.streaming else self._splits)

    def describe(self) -> dict[str, Any]:
        """Protocol facts logged as params: split sizes and protocols, normalization,
        augmentation, the data path taken and the tensor cache file."""
        self.prepare()
        loader = (f"stream (DataLoader, num_workers={self._workers()})" if self.streaming
                  else "tensors on the training device (uint8, normalized per batch)")
        out: dict[str, Any] = {
            "data.n_train": self.sizes.train,
            "data.n_val": self.sizes.val,
            "data.n_test": self.sizes.test,
            "data.num_classes": self.num_classes,
            "data.in_chans": self.in_chans,
            "data.native_size": self.native_size,
            "data.input_size": self.input_size,
            "data.val_protocol": self.val_protocol,
            "data.mean": [round(float(v), 4) for v in self.mean],
            "data.std": [round(float(v), 4) for v in self.std],
            "data.norm_from": self.norm_from,
            "data.augment_ops": list(self._augment_names),
            "data.loader": loader,
        }
        out.update({f"data.{k}": v for k, v in self.raw_info.items()})
        return out
