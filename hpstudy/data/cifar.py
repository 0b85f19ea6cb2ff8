"""CIFAR-10 and CIFAR-100: 32x32 RGB, 50k train / 10k test, 10 or 100 classes.

torchvision's layout: ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``
and ``<root>/cifar-100-python/{train,test,meta}``, the python pickles of the
official archives. torchvision's ``CIFAR10`` refuses files whose md5 differs
from the release, which would make the reading code untestable on generated
files, so the pickles are read here with the same few lines torchvision uses;
whether the md5 sums match the release is recorded (``data.files_verified``).
Downloading still goes through torchvision (URL, archive md5, extraction).
A downloaded-but-unextracted archive in ``<root>`` is extracted first.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._files import cached, download_error, fingerprint, missing_files_error
from ._registry import DatasetMeta, RawDataset, register_dataset


def _tv(name: str) -> type:
    import torchvision.datasets as tvd

    return tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100


def _files(name: str) -> list[tuple[str, str]]:
    """(file name, release md5) of every pickle, the meta file last."""
    cls = _tv(name)
    return [tuple(f) for f in cls.train_list + cls.test_list] + [
        (cls.meta["filename"], cls.meta["md5"])
    ]


def _folder(name: str, root: str) -> Path:
    return Path(root) / _tv(name).base_folder


def _missing(name: str, root: str) -> list[str]:
    folder = _folder(name, root)
    return [f for f, _ in _files(name) if not (folder / f).is_file()]


def _extract_archive_if_present(name: str, root: str) -> None:
    """Users who fetched the ``.tar.gz`` by hand get it unpacked, as torchvision would."""
    from torchvision.datasets.utils import extract_archive

    archive = Path(root) / _tv(name).filename
    if archive.is_file() and _missing(name, root):
        extract_archive(str(archive), str(root))


def _check(name: str, root: str, download: bool = False) -> None:
    if download or (Path(root) / _tv(name).filename).is_file():
        return
    missing = _missing(name, root)
    if missing:
        raise missing_files_error(name, _folder(name, root), missing, [_tv(name).url], root,
                                  extra_hint=f" (or unpack it in {root})")


def _unpickle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")  # Python 2 pickles, as torchvision reads them
    # pickles written by Python 3 with encoding="bytes" readers in mind carry bytes keys
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _read(name: str, root: str) -> dict[str, Any]:
    """Parse the pickles into uint8 (N, 3, 32, 32) tensors and int64 labels."""
    from torchvision.datasets.utils import check_integrity

    cls = _tv(name)
    folder = _folder(name, root)
    out: dict[str, Any] = {}
    for split, files in (("train", cls.train_list), ("test", cls.test_list)):
        xs, ys = [], []
        for fname, _ in files:
            entry = _unpickle(folder / fname)
            xs.append(np.asarray(entry["data"], dtype=np.uint8))
            ys.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        # rows are 1024 red, 1024 green, 1024 blue values: already channel-first
        out[f"{split}_x"] = torch.from_numpy(np.vstack(xs).reshape(-1, 3, 32, 32).copy())
        out[f"{split}_y"] = torch.tensor(ys, dtype=torch.long)
    out["class_names"] = list(_unpickle(folder / cls.meta["filename"])[cls.meta["key"]])
    out["files_verified"] = all(check_integrity(str(folder / f), md5) for f, md5 in _files(name))
    return out


def _load(name: str, root: str, download: bool) -> RawDataset:
    cls = _tv(name)
    folder = _folder(name, root)
    if download and _missing(name, root):
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(cls.url, root, filename=cls.filename, md5=cls.tgz_md5)
        except Exception as e:  # URLError, RuntimeError (checksum), OSError
            raise download_error(name, Path(root), [cls.url], e) from None
    _extract_archive_if_present(name, root)
    _check(name, root)
    files = [folder / f for f, _ in _files(name)]
    data, where = cached(root, name, {"files": fingerprint(files, folder)},
                         lambda: _read(name, root))
    n_classes = 10 if name == "cifar10" else 100
    return RawDataset(
        name=name,
        num_classes=n_classes,
        train_x=data["train_x"],
        train_y=data["train_y"],
        test_x=data["test_x"],
        test_y=data["test_y"],
        class_names=data["class_names"],
        info={
            "source": str(folder),
            "cache": where,
            "files_verified": bool(data["files_verified"]),  # md5 == official release
            "test_protocol": "official test split",
        },
    )


def _register(name: str, n_classes: int) -> None:
    def describe(**_: object) -> DatasetMeta:
        return DatasetMeta(num_classes=n_classes, in_chans=3, image_size=32)

    def check(root: str, download: bool = False) -> None:
        _check(name, root, download)

    def load(root: str, download: bool = False) -> RawDataset:
        return _load(name, root, download)

    load.__doc__ = f"Load {name} from torchvision's pickle layout as uint8 tensors."
    register_dataset(name, describe=describe, check=check)(load)


_register("cifar10", 10)
_register("cifar100", 100)
