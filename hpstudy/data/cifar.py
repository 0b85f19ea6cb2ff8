"""CIFAR-10 and CIFAR-100: 32x32 RGB, 50k train / 10k test, 10 or 100 classes.

torchvision's layout: ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``
and ``<root>/cifar-100-python/{train,test,meta}``, the python pickles of the
official archives. torchvision's ``CIFAR10`` refuses files whose md5 differs
from the release, which would make the reading code untestable on generated
files, so the pickles are read here; whether the md5 sums match the release
is recorded (``data.files_verified``).

A pickle can run any code while it loads, and a data root is untrusted (a
shared folder, a downloaded copy), so no file is ever given to ``pickle.load``:
every one, official or not, goes through
:func:`hpstudy.data._files.load_plain_pickle`, which can build dicts, lists,
strings, numbers and numeric numpy arrays and nothing else. The release's files
need nothing more (Python 2 cPickle, protocol 2, arrays through
``numpy.core.multiarray._reconstruct``), and reading them this way costs the
same as ``pickle.load`` (about 40 ms per 30 MB batch here), so there is no
md5-gated fast path to get wrong. A file that asks for more is refused with a
:class:`DatasetError` naming it.

Downloading still goes through torchvision (URL, archive md5, extraction).
A downloaded-but-unextracted archive in ``<root>`` is extracted first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._files import cached, download_error, fingerprint, load_plain_pickle, missing_files_error
from ._registry import DatasetError, DatasetMeta, RawDataset, register_dataset


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


def _entry(name: str, path: Path) -> dict[str, Any]:
    """The plain-data pickle at ``path`` as a dict with str keys."""
    entry = load_plain_pickle(path, name)
    if not isinstance(entry, dict):
        raise DatasetError(f"{name}: {path} is not a CIFAR file (it holds a "
                           f"{type(entry).__name__}, not a dict)")
    # pickles written by Python 3 with encoding="bytes" readers in mind carry bytes keys
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _batch(name: str, path: Path) -> tuple[np.ndarray, list[int]]:
    """(uint8 rows (N, 3072), N labels) of one batch file, checked against each other."""
    entry = _entry(name, path)
    labels = entry.get("labels", entry.get("fine_labels"))
    if labels is None or "data" not in entry:
        raise DatasetError(f"{name}: {path} is not a CIFAR batch (it needs 'data' and "
                           f"'labels' or 'fine_labels' entries)")
    data = entry["data"]
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[1] != 3072 or len(data) != len(labels)):
        shape = getattr(data, "shape", type(data).__name__)
        raise DatasetError(f"{name}: {path} holds images of shape {shape} for {len(labels)} "
                           f"labels; a CIFAR batch holds uint8 rows (N, 3072), one per label")
    return data, list(labels)


def _labels_tensor(name: str, labels: list[Any], folder: Path) -> torch.Tensor:
    n_classes = 10 if name == "cifar10" else 100
    try:
        y = torch.tensor(labels, dtype=torch.long)
    except (TypeError, ValueError, OverflowError):
        raise DatasetError(f"{name}: the labels in {folder} are not integers") from None
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise DatasetError(f"{name}: labels in {folder} must be 0..{n_classes - 1} "
                           f"(found {int(y.min())}..{int(y.max())})")
    return y


def _read(name: str, root: str) -> dict[str, Any]:
    """Parse the pickles into uint8 (N, 3, 32, 32) tensors and int64 labels."""
    from torchvision.datasets.utils import check_integrity

    cls = _tv(name)
    folder = _folder(name, root)
    out: dict[str, Any] = {}
    for split, files in (("train", cls.train_list), ("test", cls.test_list)):
        xs, ys = [], []
        for fname, _ in files:
            data, labels = _batch(name, folder / fname)
            xs.append(data)
            ys.extend(labels)
        # rows are 1024 red, 1024 green, 1024 blue values: already channel-first
        out[f"{split}_x"] = torch.from_numpy(np.vstack(xs).reshape(-1, 3, 32, 32).copy())
        out[f"{split}_y"] = _labels_tensor(name, ys, folder)
    meta, key = folder / cls.meta["filename"], cls.meta["key"]
    names = _entry(name, meta).get(key)
    if not isinstance(names, list):
        raise DatasetError(f"{name}: {meta} has no '{key}' list of class names")
    out["class_names"] = [str(c) for c in names]
    out["files_verified"] = all(check_integrity(str(folder / f), md5) for f, md5 in _files(name))
    return out


def _train_labels(name: str, root: str) -> tuple[torch.Tensor, None] | None:
    """The training labels, for the split check (reads the batches, builds no tensor cache).

    ``None`` while the files are still in their archive: the check writes
    nothing, so it leaves extracting (and checking the split) to the loader.
    """
    if _missing(name, root):
        return None
    folder = _folder(name, root)
    ys: list[int] = []
    for fname, _ in _tv(name).train_list:
        ys.extend(_batch(name, folder / fname)[1])
    return _labels_tensor(name, ys, folder), None


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
        # objects and animals: a mirror image is the same class (the CIFAR "+" protocol flips)
        return DatasetMeta(num_classes=n_classes, in_chans=3, image_size=32, flip_invariant=True)

    def labels(root: str) -> tuple[torch.Tensor, None] | None:
        return _train_labels(name, root)

    def check(root: str, download: bool = False) -> None:
        _check(name, root, download)

    def load(root: str, download: bool = False) -> RawDataset:
        return _load(name, root, download)

    load.__doc__ = f"Load {name} from torchvision's pickle layout as uint8 tensors."
    register_dataset(name, describe=describe, check=check, labels=labels)(load)


_register("cifar10", 10)
_register("cifar100", 100)
