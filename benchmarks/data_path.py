"""Images per second: hpstudy's data paths against torchvision Dataset + DataLoader.

Both sides read the same files and deliver the same thing to the training
step: shuffled, augmented (pad 4 + random crop, horizontal flip), normalized
float32 batches on the training device. Only the data path is timed (no model).

* ``fast``: :class:`hpstudy.data.ImageDataModule` on the tensor path: the uint8
  tensor cache, held on the device, normalized once, augmented in batch,
  ``torch.randperm`` on the device, no worker processes.
* ``stream`` (``--format image_folder`` only): the same module forced onto its
  large-ImageFolder path (DataLoader workers decode, the device normalizes
  and augments).
* ``torchvision``: ``torchvision.datasets.CIFAR10`` / ``ImageFolder`` with the
  per-sample transforms ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``,
  ``ToTensor``, ``Normalize`` and a ``DataLoader`` with 0 and N workers.

With no ``--root``, CIFAR-10-format pickles (or a PNG ImageFolder) of ``--n``
images are generated in a temporary folder (``tests/fakedata.py``). The
generated pickles do not match the release's md5, so the torchvision side uses
``CIFAR10`` with its md5 check switched off; with ``--root`` pointing at the
real files nothing is switched off.

Usage::

    .venv/bin/python benchmarks/data_path.py                 # CIFAR-10 format, CPU or GPU
    .venv/bin/python benchmarks/data_path.py --format image_folder --n 4000
    .venv/bin/python benchmarks/data_path.py --root ~/.cache/hpstudy/data --n 50000
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from hpstudy.data import ImageDataModule  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_epochs(
    make_batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    device: torch.device,
    epochs: int,
    finish: Callable[[tuple[torch.Tensor, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[list[float], int]:
    """Seconds per epoch and images per epoch; every batch ends as float on ``device``."""
    times, n = [], 0
    for _ in range(epochs):
        _sync(device)
        t0 = time.perf_counter()
        n = 0
        for batch in make_batches():
            x, y = finish(batch)
            n += len(y)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times, n


def _generate(fmt: str, n: int, folder: Path) -> dict[str, str]:
    """Generated files of ``n`` training images; returns the data module's dataset options."""
    from fakedata import write_cifar10, write_image_folder

    if fmt == "cifar10":
        write_cifar10(folder, n_train=n, n_test=10)
        return {}
    classes = [f"class{i}" for i in range(10)]
    write_image_folder(folder / "images", classes, n_per_class=max(1, n // 10), size=32)
    return {"path": str(folder / "images"), "image_size": 32}


def _torchvision_dataset(fmt: str, root: Path, options: dict, mean: list, std: list):
    import torchvision.datasets as tvd
    import torchvision.transforms as T

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(mean, std)])
    if fmt == "image_folder":
        return tvd.ImageFolder(options["path"], transform=tf)

    class CIFAR10(tvd.CIFAR10):
        """torchvision's reader and per-sample path; md5 check off only for generated files."""

        def _check_integrity(self) -> bool:
            return super()._check_integrity() or (Path(self.root) / self.base_folder).is_dir()

        def _load_meta(self) -> None:
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return CIFAR10(str(root), train=True, transform=tf)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--format", choices=["cifar10", "image_folder"], default="cifar10")
    p.add_argument("--n", type=int, default=10000, help="images to generate (no --root)")
    p.add_argument("--root", default=None, help="data root with the real files (skips generation)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="DataLoader workers of the multi-process rows")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of this process (default: torch's choice); 1 on a busy CPU")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root).expanduser() if args.root else Path(tmp)
        options = {} if args.root else _generate(args.format, args.n, root)
        if args.root and args.format == "image_folder":
            raise SystemExit("--root is for the cifar10 format; point image_folder at data via code")
        # a token validation split (10 images): throughput is counted per image anyway
        common = dict(dataset=args.format, root=str(root), batch_size=args.batch_size,
                      augmentation="standard", val_split=10, options=options, num_workers=0)

        t0 = time.perf_counter()
        fast = ImageDataModule(**common)
        fast.prepare()
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm_dm = ImageDataModule(**common)
        warm_dm.prepare()
        warm = time.perf_counter() - t0
        n_train = fast.sizes.train
        mean, std = fast.mean.tolist(), fast.std.tolist()

        rows: list[tuple[str, str, list[float], int]] = []
        t0 = time.perf_counter()
        loader = fast.dataloader("train", device=device)
        to_device = time.perf_counter() - t0
        rows.append(("hpstudy fast path (tensors on device)", "0",
                     *_time_epochs(lambda: loader, device, args.epochs, lambda b: b)))

        if args.format == "image_folder":
            stream = ImageDataModule(**{**common, "num_workers": args.workers,
                                        "options": {**options, "max_in_memory_mb": 0}})
            sl = stream.dataloader("train")

            def finish(b: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
                xb = b[0].to(device, non_blocking=True)
                return stream.prepare_batch((xb, b[1].to(device)), train=True)

            rows.append(("hpstudy stream path (DataLoader)", str(args.workers),
                         *_time_epochs(lambda: sl, device, args.epochs, finish)))

        ds = _torchvision_dataset(args.format, root, options, mean, std)
        for workers in sorted({0, args.workers}):
            dl = torch.utils.data.DataLoader(
                ds, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                pin_memory=device.type == "cuda", persistent_workers=workers > 0)

            def finish(b: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
                return b[0].to(device, non_blocking=True), b[1].to(device, non_blocking=True)

            rows.append(("torchvision Dataset + DataLoader", str(workers),
                         *_time_epochs(lambda dl=dl: dl, device, args.epochs, finish)))

    src = "real files" if args.root else f"generated {args.format}-format files"
    print(f"\n{args.format}: {src}, {n_train} training images, batch {args.batch_size}, "
          f"augmentation pad_crop+hflip, device {device}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs")
    print(f"hpstudy load: {cold:.2f} s first (parse + write tensor cache), {warm:.2f} s from "
          f"the cache; {to_device:.2f} s to normalize onto {device}")
    base = max(n / min(t) for name, _, t, n in rows if name.startswith("torchvision"))
    print(f"\n{'data path':40s} {'workers':>7s} {'epoch 1 img/s':>14s} {'best img/s':>11s} "
          f"{'vs best torchvision':>20s}")
    for name, workers, times, n in rows:
        best = n / min(times)
        print(f"{name:40s} {workers:>7s} {n / times[0]:14,.0f} {best:11,.0f} {best / base:19.1f}x")


if __name__ == "__main__":
    main()
