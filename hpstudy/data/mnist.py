"""MNIST, Fashion-MNIST and Kuzushiji-MNIST: 28x28 grey, 60k train / 10k test, 10 classes.

Read by torchvision's own classes from torchvision's layout
``<root>/<MNIST|FashionMNIST|KMNIST>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``.
Files as served by the mirrors (``*.gz``) are extracted next to themselves
first, exactly as torchvision's download does. The thesis protocol (10k of the
60k training images held out for validation) is ``data.val_split: 10000``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ._files import cached, download_error, fingerprint, missing_files_error
from ._registry import DatasetError, DatasetMeta, RawDataset, register_dataset

# registry name -> torchvision class name (also the folder under the data root)
FAMILY = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}
# Whether a mirror image keeps its class: clothing is left-right symmetric (a
# mirrored shirt is a shirt), handwritten digits and Kuzushiji characters are
# symbols (a mirrored 2 or hiragana is another symbol or none).
FLIP_INVARIANT = {"mnist": False, "fashion_mnist": True, "kmnist": False}
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _tv_class(name: str) -> type:
    import torchvision.datasets as tvd

    return getattr(tvd, FAMILY[name])


def _raw_folder(name: str, root: str) -> Path:
    return Path(root) / FAMILY[name] / "raw"


def _missing(name: str, root: str) -> list[str]:
    raw = _raw_folder(name, root)
    return [f + "[.gz]" for f in FILES if not (raw / f).is_file() and not (raw / (f + ".gz")).is_file()]


def _urls(name: str) -> list[str]:
    cls = _tv_class(name)
    return [cls.mirrors[0] + fname for fname, _ in cls.resources]


def _check(name: str, root: str, download: bool = False) -> None:
    if download:
        return
    missing = _missing(name, root)
    if missing:
        raise missing_files_error(name, _raw_folder(name, root), missing, _urls(name), root)


def _extract(name: str, root: str) -> list[Path]:
    """The four uncompressed idx files, extracting any that exist only as ``.gz``."""
    from torchvision.datasets.utils import extract_archive

    raw = _raw_folder(name, root)
    for f in FILES:
        if not (raw / f).is_file():
            try:
                extract_archive(str(raw / (f + ".gz")), str(raw))
            except OSError as e:
                raise DatasetError(f"{name}: cannot extract {raw / (f + '.gz')} ({e})") from None
    return [raw / f for f in FILES]


def _read(name: str, root: str) -> dict[str, object]:
    """Parse the idx files with torchvision's own reader."""
    cls = _tv_class(name)
    out: dict[str, object] = {"class_names": list(cls.classes)}
    for split, train in (("train", True), ("test", False)):
        ds = cls(root, train=train)
        out[f"{split}_x"] = ds.data.to(torch.uint8).unsqueeze(1).contiguous()  # (N, 1, 28, 28)
        out[f"{split}_y"] = ds.targets.long()
    return out


def _load(name: str, root: str, download: bool) -> RawDataset:
    raw = _raw_folder(name, root)
    if download and _missing(name, root):
        try:
            _tv_class(name)(root, train=True, download=True)
        except Exception as e:  # URLError, RuntimeError (mirrors exhausted), OSError
            raise download_error(name, raw, _urls(name), e) from None
    _check(name, root)
    files = _extract(name, root)
    data, where = cached(root, name, {"files": fingerprint(files, raw)}, lambda: _read(name, root))
    return RawDataset(
        name=name,
        num_classes=10,
        train_x=data["train_x"],
        train_y=data["train_y"],
        test_x=data["test_x"],
        test_y=data["test_y"],
        class_names=data["class_names"],
        info={"source": str(raw), "cache": where, "test_protocol": "official test split"},
    )


def _train_labels(name: str, root: str) -> tuple[torch.Tensor, None]:
    """The training labels straight from the 60 kB idx labels file (gzipped or not)."""
    import gzip

    raw = _raw_folder(name, root)
    path = raw / FILES[1]
    opener = open if path.is_file() else gzip.open
    path = path if path.is_file() else raw / (FILES[1] + ".gz")
    try:
        with opener(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise DatasetError(f"{name}: cannot read {path} ({e})") from None
    # idx1: magic 0x00000801, item count (big-endian), one unsigned byte per label
    n = int.from_bytes(blob[4:8], "big") if len(blob) >= 8 else -1
    if blob[:4] != b"\x00\x00\x08\x01" or len(blob) != 8 + n:
        raise DatasetError(f"{name}: {path} is not an idx labels file")
    return torch.frombuffer(bytearray(blob[8:]), dtype=torch.uint8).long(), None


def _register(name: str) -> None:
    def describe(**_: object) -> DatasetMeta:
        return DatasetMeta(num_classes=10, in_chans=1, image_size=28,
                           flip_invariant=FLIP_INVARIANT[name])

    def check(root: str, download: bool = False) -> None:
        _check(name, root, download)

    def labels(root: str) -> tuple[torch.Tensor, None]:
        return _train_labels(name, root)

    def load(root: str, download: bool = False) -> RawDataset:
        return _load(name, root, download)

    load.__doc__ = f"Load {FAMILY[name]} from ``<root>/{FAMILY[name]}/raw`` as uint8 tensors."
    register_dataset(name, describe=describe, check=check, labels=labels)(load)


for _name in FAMILY:
    _register(_name)
