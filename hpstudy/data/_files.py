"""Files on disk: the uint8 tensor cache, source fingerprints and helpful errors.

A dataset read from its original format (idx, pickles, .mat, image files) is
converted once into ``<root>/.hpstudy_cache/<dataset>-<hash>.pt``: a dict of
uint8/int64 tensors and plain lists that ``torch.load(weights_only=True)``
reads back in a fraction of the parsing time. The hash covers the dataset
name, the options that change the tensors, a format version and every source
file's (name, size, mtime), so replacing the files rebuilds the cache.

Files in a data root are untrusted input: whoever can write there must not be
able to run code in a study. Tensor caches load with ``weights_only=True``
and pickles (CIFAR) only through :func:`load_plain_pickle`, which builds
dicts, lists, strings, numbers and plain numpy arrays and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
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


# ----------------------------------------------------------------- plain pickles
_PLAIN_KINDS = "biufSU"  # bool, int, uint, float, bytes, str: no object or structured arrays


def _plain_dtype(spec: Any, *args: Any) -> np.dtype:
    """``numpy.dtype`` for the simple element types of data arrays only."""
    dtype = np.dtype(spec, *args)
    if dtype.kind not in _PLAIN_KINDS:
        raise pickle.UnpicklingError(f"refusing a numpy array of dtype {dtype}")
    return dtype


def _latin1(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for ``bytes``: latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()`` as protocol-2 pickles write ``b""``; ``bytes(10**12)`` is refused."""
    if args:
        raise pickle.UnpicklingError("refusing bytes(...) with arguments")
    return b""


def _plain_globals() -> dict[tuple[str, str], Any]:
    """The only callables a data pickle may name, by every name numpy and Python use for them.

    numpy 1 pickles say ``numpy.core``, numpy 2 ``numpy._core``; the functions
    are taken from numpy's own ``__reduce__`` so no private module is imported.
    """
    arr = np.zeros(1, np.uint8)
    reconstruct = arr.__reduce__()[0]  # protocol <= 4: _reconstruct(ndarray, (0,), b"b") + state
    frombuffer = arr.__reduce_ex__(5)[0]  # protocol 5: _frombuffer(buffer, dtype, shape, order)
    scalar = np.uint8(0).__reduce__()[0]  # a numpy scalar (an np.int64 label, say)
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _plain_dtype,
        ("_codecs", "encode"): _latin1,
        ("__builtin__", "bytes"): _empty_bytes,  # protocol 2 names builtins as Python 2 did
        ("builtins", "bytes"): _empty_bytes,
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{core}.multiarray", "scalar")] = scalar
        table[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return table


class _PlainUnpickler(pickle.Unpickler):
    """An unpickler that can build plain data only (the Python docs' "restricting globals").

    Every class or function a pickle names goes through :meth:`find_class`
    (GLOBAL, STACK_GLOBAL, INST, OBJ and the copyreg EXT opcodes alike), so a
    pickle that asks for ``os.system`` (or anything else outside the table)
    stops there, before anything is called.
    """

    _table = _plain_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._table[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}") from None


_ATOMS = frozenset({str, bytes, int, float, bool, type(None)})


def _check_plain(obj: Any) -> None:
    """Refuse what the table cannot rule out alone: arrays made with an object or record dtype."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, np.ndarray):
            if item.dtype.kind not in _PLAIN_KINDS or item.dtype.hasobject or item.dtype.fields:
                raise pickle.UnpicklingError(f"it holds a numpy array of dtype {item.dtype}")
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            # 10k labels or file names: one C-speed pass over their types, no Python loop
            if not set(map(type, item)) <= _ATOMS:
                stack.extend(item)


def load_plain_pickle(path: Path, dataset: str) -> Any:
    """Unpickle a data file that may only hold plain data (dicts, lists, str, numbers, arrays).

    Python 2 pickles (the CIFAR release) are read as torchvision reads them,
    ``encoding="latin1"``. Nothing outside :func:`_plain_globals` is ever
    imported or called, whatever the file says, so a crafted file cannot run
    code; it is refused with a :class:`DatasetError` naming it.

    Args:
        path: the pickle file.
        dataset: registry name, for the error message.

    Raises:
        DatasetError: the file needs more than plain data, or is not a readable pickle.
    """
    try:
        with open(path, "rb") as f:
            obj = _PlainUnpickler(f, encoding="latin1").load()
        _check_plain(obj)
    except pickle.UnpicklingError as e:
        raise DatasetError(
            f"{dataset}: refusing to read {path}: not a plain data pickle ({e}); replace it "
            f"with the file from the official release"
        ) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError, RecursionError) as e:
        raise DatasetError(
            f"{dataset}: cannot read {path} as a pickle ({type(e).__name__}: {e}); replace it "
            f"with the file from the official release"
        ) from None
    return obj
