"""SVHN cropped digits: 32x32 RGB, 73,257 train / 26,032 test / 531,131 extra, 10 classes.

Files: torchvision's SVHN layout inside ``<root>/svhn``
(``train_32x32.mat``, ``test_32x32.mat``, ``extra_32x32.mat``), MATLAB
files with ``X`` (32, 32, 3, N) and ``y`` (N, 1) where the digit 0 is
label 10. torchvision's ``SVHN`` insists on the release's md5, so the files
are read here with scipy exactly as torchvision reads them (label 10 -> 0).

Protocols:

* default: validation is carved from ``train`` by ``data.val_split``.
* ``data.svhn_extra: true`` (the thesis, after Goodfellow et al. 2013 and
  Lin et al. 2014): validation = 400 images per class from ``train`` + 200
  per class from ``extra`` (seeded by ``data.seed``, stratified); every other
  ``train`` and ``extra`` image trains. ``val_split`` is then ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._files import cached, download_error, fingerprint, missing_files_error
from ._registry import DatasetError, DatasetMeta, RawDataset, register_dataset

FOLDER = "svhn"


def _split_list() -> dict[str, list[str]]:
    from torchvision.datasets import SVHN

    return SVHN.split_list  # split -> [url, file name, md5]


def _splits(svhn_extra: bool) -> tuple[str, ...]:
    return ("train", "test", "extra") if svhn_extra else ("train", "test")


def _missing(root: str, svhn_extra: bool) -> list[str]:
    folder = Path(root) / FOLDER
    table = _split_list()
    return [table[s][1] for s in _splits(svhn_extra) if not (folder / table[s][1]).is_file()]


def _describe(**_: object) -> DatasetMeta:
    # house-number digits: a mirrored 2 or 5 is no digit, so no flips
    return DatasetMeta(num_classes=10, in_chans=3, image_size=32, flip_invariant=False)


def _check(root: str, download: bool = False, svhn_extra: bool = False, **_: Any) -> None:
    if download:
        return
    missing = _missing(root, svhn_extra)
    if missing:
        table = _split_list()
        urls = [table[s][0] for s in _splits(svhn_extra) if table[s][1] in missing]
        raise missing_files_error("svhn", Path(root) / FOLDER, missing, urls, root)


def _loadmat(path: Path, names: list[str]) -> dict[str, Any]:
    """The variables ``names`` of a MATLAB file (scipy skips the others without reading them).

    scipy reads MATLAB data only (arrays, cells, structs): nothing in the file runs.
    """
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path), variable_names=names)
    except Exception as e:  # MatReadError, ValueError, OSError, zlib.error on a bad file
        raise DatasetError(f"svhn: cannot read {path} ({type(e).__name__}: {e})") from None
    missing = [n for n in names if n not in mat]
    if missing:
        raise DatasetError(f"svhn: {path} has no {' or '.join(missing)} variable")
    return mat


def _labels_of(mat: dict[str, Any], path: Path) -> torch.Tensor:
    y = np.asarray(mat["y"])
    if y.ndim != 2 or y.shape[1] != 1 or y.dtype.kind not in "iuf":
        raise DatasetError(f"svhn: {path}: y must be an (N, 1) array of labels 1..10")
    y = y.astype(np.int64).squeeze(1)
    if len(y) and (y.min() < 0 or y.max() > 10):
        raise DatasetError(f"svhn: {path}: labels must be 1..10 (found {y.min()}..{y.max()})")
    y[y == 10] = 0  # the release stores the digit 0 as class 10
    return torch.from_numpy(y)


def _read_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    mat = _loadmat(path, ["X", "y"])
    y = _labels_of(mat, path)
    x = np.asarray(mat["X"])
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DatasetError(f"svhn: {path}: X must be (32, 32, 3, N) for the N labels in y "
                           f"(got {x.shape} and {len(y)})")
    x = np.transpose(x, (3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W), as torchvision
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8)), y


def _per_class_pick(
    y: torch.Tensor, per_class: int, gen: torch.Generator, source: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (rest, picked) with ``per_class`` images of every class picked at random."""
    picked = []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        if len(idx) < per_class:
            raise DatasetError(
                f"svhn: the validation protocol needs {per_class} images of class {c} from "
                f"'{source}' but it has {len(idx)}"
            )
        picked.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    pick = torch.cat(picked).sort().values
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[pick] = False
    return torch.nonzero(keep).flatten(), pick


def _protocol(
    train_y: torch.Tensor, extra_y: torch.Tensor, per_train: int, per_extra: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices (train rest, train val, extra rest, extra val) of the train+extra protocol."""
    gen = torch.Generator().manual_seed(seed)
    tr_rest, tr_val = _per_class_pick(train_y, per_train, gen, "train")
    ex_rest, ex_val = _per_class_pick(extra_y, per_extra, gen, "extra")
    return tr_rest, tr_val, ex_rest, ex_val


def _split_labels(
    root: str,
    svhn_extra: bool = False,
    val_per_class_train: int = 400,
    val_per_class_extra: int = 200,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Training (and protocol validation) labels from the ``y`` variables alone, for the split check."""
    folder, table = Path(root) / FOLDER, _split_list()
    ys = {}
    for s in _splits(svhn_extra):
        if s != "test":
            path = folder / table[s][1]
            ys[s] = _labels_of(_loadmat(path, ["y"]), path)
    if not svhn_extra:
        return ys["train"], None
    tr_rest, tr_val, ex_rest, ex_val = _protocol(ys["train"], ys["extra"], val_per_class_train,
                                                 val_per_class_extra, seed)
    return (torch.cat([ys["train"][tr_rest], ys["extra"][ex_rest]]),
            torch.cat([ys["train"][tr_val], ys["extra"][ex_val]]))


@register_dataset("svhn", describe=_describe, check=_check, labels=_split_labels)
def load_svhn(
    root: str,
    download: bool = False,
    svhn_extra: bool = False,
    val_per_class_train: int = 400,
    val_per_class_extra: int = 200,
    seed: int = 0,
) -> RawDataset:
    """Load SVHN; with ``svhn_extra`` apply the thesis's train+extra protocol.

    Args:
        root: data root; files are read from ``<root>/svhn``.
        download: fetch missing ``.mat`` files with torchvision.
        svhn_extra: use ``extra`` too and fix validation by the protocol.
        val_per_class_train: validation images per class taken from ``train``.
        val_per_class_extra: validation images per class taken from ``extra``.
        seed: the split seed (``data.seed``).
    """
    from torchvision.datasets.utils import check_integrity, download_url

    folder = Path(root) / FOLDER
    table = _split_list()
    splits = _splits(svhn_extra)
    if download:
        for s in splits:
            url, fname, md5 = table[s]
            if not (folder / fname).is_file():
                try:
                    download_url(url, str(folder), fname, md5)
                except Exception as e:  # URLError, RuntimeError (checksum), OSError
                    raise download_error("svhn", folder, [url], e) from None
    _check(root, svhn_extra=svhn_extra)

    def read() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for s in splits:
            out[f"{s}_x"], out[f"{s}_y"] = _read_mat(folder / table[s][1])
        out["files_verified"] = all(
            check_integrity(str(folder / table[s][1]), table[s][2]) for s in splits
        )
        return out

    files = [folder / table[s][1] for s in splits]
    data, where = cached(root, "svhn", {"files": fingerprint(files, folder)}, read)
    info: dict[str, Any] = {
        "source": str(folder),
        "cache": where,
        "files_verified": bool(data["files_verified"]),
        "test_protocol": "official test split",
    }
    raw = RawDataset(
        name="svhn", num_classes=10, train_x=data["train_x"], train_y=data["train_y"],
        test_x=data["test_x"], test_y=data["test_y"], class_names=[str(i) for i in range(10)],
        info=info,
    )
    if not svhn_extra:
        return raw
    tr_rest, tr_val, ex_rest, ex_val = _protocol(data["train_y"], data["extra_y"],
                                                 val_per_class_train, val_per_class_extra, seed)
    raw.val_x = torch.cat([data["train_x"][tr_val], data["extra_x"][ex_val]])
    raw.val_y = torch.cat([data["train_y"][tr_val], data["extra_y"][ex_val]])
    raw.train_x = torch.cat([data["train_x"][tr_rest], data["extra_x"][ex_rest]])
    raw.train_y = torch.cat([data["train_y"][tr_rest], data["extra_y"][ex_rest]])
    info["val_protocol"] = (
        f"{val_per_class_train}/class from train + {val_per_class_extra}/class from extra, "
        f"seed {seed}; rest of train+extra trains"
    )
    return raw
