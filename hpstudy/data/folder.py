"""Your own images: an ImageFolder (torchvision's layout, one folder per class).

``data.path`` points at either

* ``PATH/<class>/<image>``: everything is training data; validation is carved
  by ``data.val_split`` and there is no test split; or
* ``PATH/train/<class>/...`` with optional ``PATH/val/<class>/...`` (a fixed
  validation set; ``valid`` and ``validation`` work too) and
  ``PATH/test/<class>/...``.

Classes are the training folder's subfolders in sorted order (as
``torchvision.datasets.ImageFolder`` numbers them). Every image is converted to
``channels`` (1: grey, 3: RGB), its shorter side resized to ``image_size`` and
center-cropped to a square (aspect ratio kept), then stored as uint8.

Folders whose images fit in ``max_in_memory_mb`` (uint8, all splits) take the
fast path: converted once into the tensor cache, then held on the device.
Larger ones are streamed from disk by a DataLoader with worker processes.

``flip_invariant`` (default true: photos of things) says whether a mirror
image keeps its class; set it to false for digits, letters, text or other
symbols, and the augmentation presets leave flips out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ._files import cached, fingerprint
from ._registry import DatasetError, DatasetMeta, RawDataset, StreamDataset, register_dataset

SPLIT_DIRS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
LAYOUT = "PATH/<class>/<image> or PATH/train/<class>/<image> (+ PATH/val/..., PATH/test/...)"


def _resolve(path: str | None) -> Path:
    """``data.path`` (relative paths are relative to the working directory, like study files)."""
    if not path:
        raise DatasetError(f"image_folder: set data.path to a folder laid out as {LAYOUT}")
    return Path(path).expanduser().resolve()


def _split_dirs(path: Path) -> dict[str, Path]:
    """The folder of each split present (train is ``path`` itself without a ``train`` folder)."""
    if not (path / "train").is_dir():
        return {"train": path}
    out = {"train": path / "train"}
    for split in ("val", "test"):
        for name in SPLIT_DIRS[split]:
            if (path / name).is_dir():
                out[split] = path / name
                break
    return out


def _classes(path: Path) -> list[str]:
    if not path.is_dir():
        raise DatasetError(
            f"image_folder: {path} is not a folder; put your images there as {LAYOUT}"
        )
    train = _split_dirs(path)["train"]
    classes = sorted(e.name for e in os.scandir(train) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DatasetError(
            f"image_folder: no class folders in {train}; put your images there as {LAYOUT}"
        )
    return classes


def _samples(path: Path, classes: list[str]) -> dict[str, list[tuple[str, int]]]:
    """(image file, label) per split, labels from the training folder's classes."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    to_idx = {c: i for i, c in enumerate(classes)}
    out = {}
    for split, folder in _split_dirs(path).items():
        present = {c: i for c, i in to_idx.items() if (folder / c).is_dir()}
        try:
            out[split] = make_dataset(str(folder), present, extensions=IMG_EXTENSIONS,
                                      allow_empty=split != "train")
        except FileNotFoundError as e:
            raise DatasetError(f"image_folder: {e}") from None
    # an empty val/ or test/ folder is no split at all
    return {s: v for s, v in out.items() if v or s == "train"}


class FolderImages(Dataset):
    """Image files decoded to uint8 (C, S, S) tensors: shorter side to S, center crop."""

    def __init__(self, samples: list[tuple[str, int]], channels: int, image_size: int):
        self.samples, self.channels, self.image_size = samples, channels, image_size
        self.targets = torch.tensor([label for _, label in samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        import torchvision.transforms.functional as TF
        from PIL import Image

        path, label = self.samples[i]
        with Image.open(path) as img:
            img = img.convert("L" if self.channels == 1 else "RGB")
            img = TF.resize(img, self.image_size, antialias=True)
            img = TF.center_crop(img, [self.image_size, self.image_size])
            return TF.pil_to_tensor(img), label


def _decode_all(ds: FolderImages) -> torch.Tensor:
    """Every image of ``ds`` as one uint8 tensor (worker processes for large folders)."""
    workers = min(8, os.cpu_count() or 1) if len(ds) > 2000 else 0  # spawning costs ~1 s
    loader = DataLoader(ds, batch_size=256, num_workers=workers)
    shape = (0, ds.channels, ds.image_size, ds.image_size)
    return torch.cat([x for x, _ in loader]) if len(ds) else torch.empty(shape, dtype=torch.uint8)


def _describe(
    path: str | None = None, image_size: int = 32, channels: int = 3,
    flip_invariant: bool = True, **_: Any
) -> DatasetMeta:
    if channels not in (1, 3):
        raise DatasetError(f"image_folder: channels must be 1 or 3 (got {channels})")
    if image_size < 1:
        raise DatasetError(f"image_folder: image_size must be positive (got {image_size})")
    return DatasetMeta(num_classes=len(_classes(_resolve(path))), in_chans=channels,
                       image_size=image_size, flip_invariant=bool(flip_invariant))


def _check(root: str, download: bool = False, path: str | None = None, **_: Any) -> None:
    _classes(_resolve(path))


def _split_labels(root: str, path: str | None = None, **_: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Training (and ``val/``) labels from the directory listing: no image is opened."""
    folder = _resolve(path)
    samples = _samples(folder, _classes(folder))

    def targets(split: str) -> torch.Tensor:
        return torch.tensor([label for _, label in samples[split]], dtype=torch.long)

    return targets("train"), targets("val") if "val" in samples else None


@register_dataset("image_folder", describe=_describe, check=_check, labels=_split_labels)
def load_image_folder(
    root: str,
    download: bool = False,
    path: str | None = None,
    image_size: int = 32,
    channels: int = 3,
    max_in_memory_mb: float = 2048.0,
    flip_invariant: bool = True,
) -> RawDataset | StreamDataset:
    """Load an ImageFolder: tensors when it fits in ``max_in_memory_mb``, else a stream.

    Args:
        root: data root (holds the tensor cache).
        download: unused (your own images cannot be downloaded).
        path: the image folder (see the module docstring for the layouts).
        image_size: side of the square images fed to the model, in pixels.
        channels: 1 (grey) or 3 (RGB).
        max_in_memory_mb: above this many MiB of uint8 pixels (all splits)
            images are streamed from disk instead of cached as tensors.
        flip_invariant: whether a mirror image keeps its class (photos: yes;
            digits, letters, text: no); decides whether augmentations may flip.
    """
    _describe(path, image_size, channels, flip_invariant)  # validates the options
    folder = _resolve(path)
    classes = _classes(folder)
    samples = _samples(folder, classes)
    n_images = sum(len(s) for s in samples.values())
    mib = n_images * channels * image_size**2 / 2**20
    info: dict[str, Any] = {
        "source": str(folder),
        "test_protocol": "PATH/test folder" if "test" in samples else "none (no PATH/test)",
        "in_memory_mib": round(mib, 1),
    }
    if "val" in samples:
        info["val_protocol"] = f"fixed: {_split_dirs(folder)['val']}"
    sets = {s: FolderImages(v, channels, image_size) for s, v in samples.items()}

    if mib > max_in_memory_mb:
        info["cache"] = "none (streamed from disk)"
        return StreamDataset(
            name="image_folder", num_classes=len(classes),
            train=sets["train"], train_targets=sets["train"].targets,
            test=sets.get("test"), test_targets=sets["test"].targets if "test" in sets else None,
            val=sets.get("val"), val_targets=sets["val"].targets if "val" in sets else None,
            class_names=classes, info=info,
        )

    def build() -> dict[str, Any]:
        return {f"{s}_{k}": v for s, ds in sets.items()
                for k, v in (("x", _decode_all(ds)), ("y", ds.targets))}

    files = [Path(p) for v in samples.values() for p, _ in v]
    key = {"path": str(folder), "image_size": image_size, "channels": channels,
           "classes": classes, "files": fingerprint(files, folder)}
    data, info["cache"] = cached(root, "image_folder", key, build)
    return RawDataset(
        name="image_folder", num_classes=len(classes),
        train_x=data["train_x"], train_y=data["train_y"],
        test_x=data.get("test_x"), test_y=data.get("test_y"),
        val_x=data.get("val_x"), val_y=data.get("val_y"),
        class_names=classes, info=info,
    )
