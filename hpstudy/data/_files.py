"""Files on disk: the uint8 tensor cache, source fingerprints and helpful errors.

A dataset read from its original format (idx, pickles, .mat, image files) is
converted once into ``<root>/.hpstudy_cache/<dataset>-<hash>.pt``: a dict of
uint8/int64 tensors and plain lists that ``torch.load(weights_only=True)``
reads back in a fraction of the parsing time. The hash covers the dataset
name, the options that change the tensors, a format version and every source
file's (name, size, mtime), so replacing the files rebuilds the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from ._registry import DatasetError

CACHE_DIR = ".hpstudy_cache"
CACHE_VERSION = 1  # bump when a loader's tensors change for the same source files


def fingerprint(files: Iterable[Path], base: Path) -> list[tuple[str, int, int]]:
    """(path relative to ``base``, size, mtime in ns) of every file, sorted."""
    out = []
    for f in files:
        st = f.stat()
        out.append((os.path.relpath(f, base), st.st_size, st.st_mtime_ns))
    return sorted(out)


def cache_file(root: str | Path, dataset: str, key: dict[str, Any]) -> Path:
    """Where the tensors of ``dataset`` built from ``key`` are cached."""
    blob = json.dumps({"v": CACHE_VERSION, "dataset": dataset, **key}, sort_keys=True,
                      default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:16]
    return Path(root) / CACHE_DIR / f"{dataset}-{digest}.pt"


def cached(
    root: str | Path,
    dataset: str,
    key: dict[str, Any],
    build: Callable[[], dict[str, Any]],
) -> tuple[dict[str, Any], str]:
    """Tensors of ``dataset`` from the cache, or from ``build()`` (then cached).

    Args:
        root: the data root; the cache lives in ``<root>/.hpstudy_cache``.
        dataset: registry name (the file name's prefix).
        key: everything the tensors depend on (options, source fingerprint).
        build: reads the original files; returns a dict of tensors and plain data.

    Returns:
        ``(contents, where)``: ``where`` is the cache file's path, or a short
        note when the cache could not be written (a read-only data root).
    """
    path = cache_file(root, dataset, key)
    if path.is_file():
        try:
            return torch.load(path, weights_only=True), str(path)
        except Exception as e:  # a truncated or foreign file: rebuild it
            warnings.warn(f"{dataset}: ignoring unreadable cache {path} ({e})", stacklevel=2)
    contents = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # write then rename: a reader (another rank, a crash) never sees half a file
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(contents, f)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        warnings.warn(f"{dataset}: cannot write the tensor cache {path} ({e})", stacklevel=2)
        return contents, f"not cached ({path.parent} not writable)"
    return contents, str(path)


def missing_files_error(
    dataset: str,
    folder: Path,
    missing: Sequence[str],
    urls: Sequence[str],
    root: str | Path,
    extra_hint: str = "",
) -> DatasetError:
    """The error for absent files: dataset, folder, and how to get them."""
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    url_text = urls[0] if len(urls) == 1 else f"{urls[0]} (and {len(urls) - 1} more files there)"
    return DatasetError(
        f"{dataset}: files not found in {folder} (missing {shown}). Get them on a machine "
        f"with internet with `python -m hpstudy.data download {dataset} --root {root}` "
        f"or by running the study with `--set data.download=true`, or download {url_text} "
        f"into {folder}{extra_hint}."
    )


def download_error(dataset: str, folder: Path, urls: Sequence[str], err: Exception) -> DatasetError:
    """The error for a failed download (offline machine, moved URL, bad checksum)."""
    return DatasetError(
        f"{dataset}: download into {folder} failed ({type(err).__name__}: {err}). "
        f"Without internet, copy the files from {', '.join(urls)} into {folder}."
    )
