"""Generated data in the real on-disk formats, for smoke runs of the thesis cells.

Nothing can be downloaded on the project's machines, and a smoke run must go
through the same loaders, caches and split protocols as a real one. So each
dataset a cell reads is written small, in exactly the layout torchvision (or
the dataset's authors) use, under one data root:

* ``MNIST/raw/*-ubyte`` (idx files),
* ``cifar-10-batches-py/`` and ``cifar-100-python/`` (pickles of numpy arrays),
* ``svhn/{train,test,extra}_32x32.mat`` (MATLAB, digit 0 stored as label 10).

The images are learnable: each class draws a bright square at its own place on
a noisy background. Numbers measured on them say nothing about the thesis;
every row they produce is marked ``smoke``.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

# images per class written for each split: few, but enough for every protocol
# (val_split 0 trains on all of train; SVHN's smoke protocol takes 2 + 1 per class)
SMOKE_PER_CLASS = {"train": 6, "test": 2, "extra": 3}
SMOKE_SVHN_VAL = {"val_per_class_train": 2, "val_per_class_extra": 1}
"""SVHN's validation protocol scaled down for smoke files (the thesis: 400 + 200)."""

DATASETS = ("mnist", "cifar10", "cifar100", "svhn")


def _labels(n_classes: int, per_class: int, seed: int) -> np.ndarray:
    y = np.repeat(np.arange(n_classes), per_class)
    np.random.default_rng(seed).shuffle(y)
    return y.astype(np.int64)


def _images(y: np.ndarray, channels: int, size: int, n_classes: int, seed: int) -> np.ndarray:
    """uint8 (N, C, H, W): noise plus a bright square placed by the label."""
    rng = np.random.default_rng(seed)
    grid = int(np.ceil(np.sqrt(n_classes)))
    cell = max(1, size // grid)
    x = rng.integers(0, 90, size=(len(y), channels, size, size), dtype=np.uint8)
    for i, lab in enumerate(y):
        r, c = divmod(int(lab), grid)
        x[i, :, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = 230
    return x


def _idx(path: Path, a: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    path.write_bytes(header + np.ascontiguousarray(a, dtype=np.uint8).tobytes())


def _mnist(root: Path, seed: int) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for i, (split, name) in enumerate((("train", "train"), ("test", "t10k"))):
        y = _labels(10, SMOKE_PER_CLASS[split], seed + i)
        _idx(raw / f"{name}-images-idx3-ubyte", _images(y, 1, 28, 10, seed + i)[:, 0])
        _idx(raw / f"{name}-labels-idx1-ubyte", y.astype(np.uint8))


def _dump(path: Path, obj: dict) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=4))


def _cifar10(root: Path, seed: int) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    y = _labels(10, SMOKE_PER_CLASS["train"], seed)
    x = _images(y, 3, 32, 10, seed).reshape(len(y), 3072)
    for b, part in enumerate(np.array_split(np.arange(len(y)), 5), start=1):
        _dump(folder / f"data_batch_{b}", {"labels": [int(v) for v in y[part]],
                                            "data": x[part]})
    yt = _labels(10, SMOKE_PER_CLASS["test"], seed + 1)
    _dump(folder / "test_batch", {"labels": [int(v) for v in yt],
                                  "data": _images(yt, 3, 32, 10, seed + 1).reshape(len(yt), 3072)})
    _dump(folder / "batches.meta", {"label_names": [f"class_{i}" for i in range(10)]})


def _cifar100(root: Path, seed: int) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(("train", "test")):
        per_class = 2 if split == "train" else 1  # 100 classes: keep the files small
        y = _labels(100, per_class, seed + i)
        _dump(folder / split, {"fine_labels": [int(v) for v in y],
                               "coarse_labels": [int(v) // 5 for v in y],
                               "data": _images(y, 3, 32, 100, seed + i).reshape(len(y), 3072)})
    _dump(folder / "meta", {"fine_label_names": [f"class_{i:02d}" for i in range(100)],
                            "coarse_label_names": [f"super_{i:02d}" for i in range(20)]})


def _svhn(root: Path, seed: int) -> None:
    from scipy.io import savemat

    folder = root / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(("train", "test", "extra")):
        y = _labels(10, SMOKE_PER_CLASS[split], seed + i)
        x = _images(y, 3, 32, 10, seed + i)
        savemat(folder / f"{split}_32x32.mat",
                {"X": x.transpose(2, 3, 1, 0), "y": np.where(y == 0, 10, y).astype(np.uint8)[:, None]})


_WRITERS = {"mnist": _mnist, "cifar10": _cifar10, "cifar100": _cifar100, "svhn": _svhn}


def write_smoke_data(root: str | Path, datasets: tuple[str, ...] | list[str] = DATASETS,
                     seed: int = 0) -> Path:
    """Write small files of ``datasets`` under ``root`` (a ``data.root``); returns it.

    A dataset whose files are already there is left alone (they are
    deterministic for a seed), so a rerun reuses the cache built from them.
    """
    root = Path(root)
    marker = root / ".hpstudy-smoke"
    done = set(marker.read_text().split()) if marker.is_file() else set()
    for name in datasets:
        if name in done:
            continue
        _WRITERS[name](root, seed)
        done.add(name)
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text("\n".join(sorted(done)) + "\n")
    return root
