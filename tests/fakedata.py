"""Tiny dataset files in the real on-disk formats, for tests and offline smoke runs.

Nothing can be downloaded on the project's machines, so every loader is tested
on files written here in exactly the layout torchvision (or the dataset's
authors) use: MNIST-family idx files gzipped under ``<root>/<Name>/raw``,
CIFAR python pickles under ``<root>/cifar-10-batches-py`` and
``<root>/cifar-100-python``, SVHN MATLAB files under ``<root>/svhn``, and an
ImageFolder of PNGs. ``root`` is always what a study file puts in
``data.root``.

The images are learnable on purpose: each class draws a bright square at its own
place on a noisy background, so a smoke run can show accuracy above chance.

Usage (pytest puts ``tests/`` on ``sys.path``)::

    from fakedata import write_mnist
    write_mnist(tmp_path, n_train=60, n_test=20)
    # study: data: {dataset: mnist, root: <tmp_path>}
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def class_images(
    labels: np.ndarray, channels: int, size: int, seed: int = 0, n_classes: int | None = None
) -> np.ndarray:
    """uint8 images (N, C, H, W): noise plus a bright square placed by the label.

    Args:
        labels: int labels, one per image.
        channels: 1 (grey) or 3 (RGB).
        size: side length in pixels.
        seed: noise seed.
        n_classes: number of distinct square positions (default: max label + 1).
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    k = int(n_classes or (labels.max() + 1 if n else 1))
    grid = int(np.ceil(np.sqrt(k)))
    cell = max(1, size // grid)
    x = rng.integers(0, 90, size=(n, channels, size, size), dtype=np.uint8)
    for i, lab in enumerate(labels):
        r, c = divmod(int(lab) % (grid * grid), grid)
        x[i, :, r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = 230
    return x


def _balanced_labels(n: int, n_classes: int, seed: int) -> np.ndarray:
    """Every class about equally often, in a seeded random order."""
    y = np.arange(n) % n_classes
    np.random.default_rng(seed).shuffle(y)
    return y.astype(np.int64)


# ------------------------------------------------------------------ MNIST family
def _write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    """Write ``array`` (uint8) as an idx file: magic 0x0000 08 <ndim>, big-endian dims."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def write_mnist(
    root: str | Path,
    n_train: int = 60,
    n_test: int = 20,
    name: str = "MNIST",
    *,
    gz: bool = True,
    size: int = 28,
    seed: int = 0,
) -> Path:
    """MNIST-family idx files in torchvision's layout ``<root>/<name>/raw``.

    Args:
        root: the data root (``data.root``).
        n_train, n_test: number of images per split (labels 0..9, balanced).
        name: ``MNIST``, ``FashionMNIST`` or ``KMNIST`` (torchvision's class name).
        gz: write ``*-ubyte.gz`` as served by the mirrors (True) or the
            extracted ``*-ubyte`` files torchvision leaves after download (False).
        size: image side (28 for the real sets).
        seed: image/label seed.

    Returns:
        The ``raw`` folder written.
    """
    raw = Path(root) / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        y = _balanced_labels(n, 10, s)
        x = class_images(y, 1, size, s, n_classes=10)[:, 0]  # (N, H, W)
        _write_idx(raw / f"{split}-images-idx3-ubyte", x, gz)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", y.astype(np.uint8), gz)
    return raw


# ------------------------------------------------------------------------ CIFAR
def _cifar_rows(y: np.ndarray, seed: int, n_classes: int) -> np.ndarray:
    """(N, 3072) uint8 rows: 1024 red, then green, then blue values, row-major."""
    return class_images(y, 3, 32, seed, n_classes=n_classes).reshape(len(y), 3072)


def py2_pickle(obj: object) -> bytes:
    """``obj`` encoded as Python 2's ``cPickle.dump(obj, f, 2)`` with numpy 1 wrote it.

    The CIFAR release files are exactly this: protocol 2, ``str`` as 8-bit
    strings (``SHORT_BINSTRING``/``BINSTRING``), arrays through
    ``numpy.core.multiarray._reconstruct`` with their bytes as a string.
    Handles dicts, lists, tuples, str, bytes, int, bool, None and C-contiguous
    numeric arrays (what the dataset files hold).
    """
    out = bytearray(b"\x80\x02")  # PROTO 2

    def string(b: bytes) -> None:
        out.extend(b"U" + bytes([len(b)]) + b if len(b) < 256
                   else b"T" + struct.pack("<I", len(b)) + b)

    def integer(v: int) -> None:
        if 0 <= v < 256:
            out.extend(b"K" + bytes([v]))
        elif 0 <= v < 65536:
            out.extend(b"M" + struct.pack("<H", v))
        else:
            out.extend(b"J" + struct.pack("<i", v))

    def save(o: object) -> None:
        if o is None:
            out.extend(b"N")
        elif isinstance(o, bool):
            out.extend(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            integer(o)
        elif isinstance(o, str):
            string(o.encode("latin1"))
        elif isinstance(o, bytes):
            string(o)
        elif isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                save(k)
                save(v)
            out.extend(b"u")
        elif isinstance(o, list):
            out.extend(b"](")
            for v in o:
                save(v)
            out.extend(b"e")
        elif isinstance(o, tuple):
            out.extend(b"(")
            for v in o:
                save(v)
            out.extend(b"t")
        elif isinstance(o, np.ndarray):
            arr = np.ascontiguousarray(o)
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
            out.extend(b"K\x00\x85U\x01b\x87R(K\x01")  # _reconstruct(ndarray, (0,), 'b'); (1,
            save(tuple(int(d) for d in arr.shape))
            order = "|" if arr.dtype.itemsize == 1 else "<"
            out.extend(b"cnumpy\ndtype\n")
            save(arr.dtype.str[1:])
            out.extend(b"K\x00K\x01\x87R")  # dtype('u1', 0, 1)
            save((3, order, None, None, None, -1, -1, 0))
            out.extend(b"b\x89")  # BUILD the dtype; is_fortran False
            string(arr.tobytes())
            out.extend(b"tb")  # the state tuple; BUILD the array
        else:
            raise TypeError(f"py2_pickle: cannot encode {type(o).__name__}")

    save(obj)
    out.extend(b".")
    return bytes(out)


def _pickle(path: Path, obj: dict, protocol: int | str = 2) -> None:
    """Write ``obj`` as a pickle: ``"py2"`` byte for byte as the release (Python 2
    cPickle), or a Python 3 protocol number (what a user's own script writes)."""
    if protocol == "py2":
        path.write_bytes(py2_pickle(obj))
        return
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=int(protocol))


def write_cifar10(
    root: str | Path,
    n_train: int = 50,
    n_test: int = 10,
    *,
    n_batches: int = 5,
    seed: int = 0,
    protocol: int | str = "py2",
) -> Path:
    """CIFAR-10 python pickles in ``<root>/cifar-10-batches-py``.

    ``data_batch_1..n_batches`` share the ``n_train`` images; ``test_batch``
    holds ``n_test``; ``batches.meta`` names the ten classes. ``protocol``:
    ``"py2"`` encodes them as the release does (Python 2 cPickle, protocol 2),
    a number as Python 3's ``pickle.dump`` with that protocol.

    Returns:
        The ``cifar-10-batches-py`` folder written.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    y = _balanced_labels(n_train, 10, seed)
    x = _cifar_rows(y, seed, 10)
    for i, part in enumerate(np.array_split(np.arange(n_train), n_batches), start=1):
        _pickle(folder / f"data_batch_{i}", protocol=protocol, obj={
            "batch_label": f"training batch {i} of {n_batches}",
            "labels": [int(v) for v in y[part]],
            "data": x[part],
            "filenames": [f"img_{j:05d}.png" for j in part],
        })
    yt = _balanced_labels(n_test, 10, seed + 1)
    _pickle(folder / "test_batch", protocol=protocol, obj={
        "batch_label": "testing batch 1 of 1",
        "labels": [int(v) for v in yt],
        "data": _cifar_rows(yt, seed + 1, 10),
        "filenames": [f"test_{j:05d}.png" for j in range(n_test)],
    })
    _pickle(folder / "batches.meta", protocol=protocol, obj={
        "num_cases_per_batch": max(1, n_train // n_batches),
        "label_names": ["airplane", "automobile", "bird", "cat", "deer",
                        "dog", "frog", "horse", "ship", "truck"],
        "num_vis": 3072,
    })
    return folder


def write_cifar100(
    root: str | Path, n_train: int = 200, n_test: int = 100, *, seed: int = 0,
    protocol: int | str = "py2",
) -> Path:
    """CIFAR-100 python pickles in ``<root>/cifar-100-python`` (``train``, ``test``, ``meta``).

    Fine labels 0..99 (coarse label = fine // 5, as a stand-in for the real
    superclass map); ``protocol`` as in :func:`write_cifar10`.

    Returns:
        The ``cifar-100-python`` folder written.
    """
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        y = _balanced_labels(n, 100, s)
        _pickle(folder / split, protocol=protocol, obj={
            "filenames": [f"{split}_{j:05d}.png" for j in range(n)],
            "batch_label": f"{split} batch 1 of 1",
            "fine_labels": [int(v) for v in y],
            "coarse_labels": [int(v) // 5 for v in y],
            "data": _cifar_rows(y, s, 100),
        })
    _pickle(folder / "meta", protocol=protocol, obj={
        "fine_label_names": [f"class_{i:02d}" for i in range(100)],
        "coarse_label_names": [f"super_{i:02d}" for i in range(20)],
    })
    return folder


# ------------------------------------------------------------------------- SVHN
def write_svhn(
    root: str | Path,
    splits: Sequence[str] = ("train", "test", "extra"),
    n_per_class: int | dict[str, int] = 4,
    *,
    seed: int = 0,
) -> Path:
    """SVHN cropped-digit MATLAB files ``<root>/svhn/<split>_32x32.mat``.

    Same variables as the originals: ``X`` uint8 (32, 32, 3, N) and ``y``
    uint8 (N, 1) with the digit 0 stored as label 10.

    Args:
        root: the data root (``data.root``).
        splits: any of ``train``, ``test``, ``extra``.
        n_per_class: images per digit, for every split or per split name.
        seed: image/label seed.

    Returns:
        The ``svhn`` folder written.
    """
    from scipy.io import savemat

    folder = Path(root) / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(splits):
        k = n_per_class[split] if isinstance(n_per_class, dict) else n_per_class
        y = _balanced_labels(10 * k, 10, seed + i)
        x = class_images(y, 3, 32, seed + i, n_classes=10)  # (N, C, H, W)
        mat_y = np.where(y == 0, 10, y).astype(np.uint8)[:, None]
        savemat(folder / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": mat_y})
    return folder


# ------------------------------------------------------------------ ImageFolder
def write_image_folder(
    root: str | Path,
    classes: Sequence[str] = ("cat", "dog", "fox"),
    n_per_class: int = 4,
    size: int = 16,
    *,
    mode: str = "RGB",
    ext: str = "png",
    vary_size: bool = False,
    seed: int = 0,
) -> Path:
    """An ImageFolder: ``<root>/<class>/<class>_<i>.<ext>``.

    Args:
        root: the folder to fill (for a split layout call it on ``path/train``
            and ``path/test``).
        classes: class folder names (torchvision sorts them for the labels).
        n_per_class: images per class.
        size: image side in pixels.
        mode: PIL mode, ``RGB`` or ``L``.
        ext: file extension (``png``, ``jpg``...).
        vary_size: draw each image at a random size in [size, 2*size] so that
            resizing is exercised.
        seed: image seed.

    Returns:
        ``root`` as a Path.
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    channels = 1 if mode == "L" else 3
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        labels = np.full(n_per_class, label)
        for i, img in enumerate(class_images(labels, channels, size, seed + label, len(classes))):
            arr = img.transpose(1, 2, 0)
            pil = Image.fromarray(arr[:, :, 0] if channels == 1 else arr)  # L or RGB by shape
            if vary_size:
                side = int(rng.integers(size, 2 * size + 1))
                pil = pil.resize((side, side))
            pil.save(root / name / f"{name}_{i:03d}.{ext}")
    return root
