"""The data layer's guards: untrusted files.

Every file is real (generated in tmp_path in the on-disk format users download);
crafted pickles carry a real payload that touches a marker file, and a control
shows the same bytes do run it under plain ``pickle.load``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from fakedata import (
    py2_pickle,
    write_cifar10,
    write_cifar100,
)

from hpstudy.data import (
    DatasetError,
    load_dataset,
)
from hpstudy.data._files import cache_file, fingerprint


# --------------------------------------------------------------- untrusted files
class _Payload:
    """Unpickling this runs ``os.system("touch <marker>")``: what the crafted batch did."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _crafted(path: Path, marker: Path, protocol: int) -> None:
    path.write_bytes(pickle.dumps({"data": _Payload(marker), "labels": [0]}, protocol=protocol))


def test_the_payload_is_real(tmp_path: Path) -> None:
    """Control: the crafted bytes do run their command under plain ``pickle.load``."""
    marker = tmp_path / "ran"
    _crafted(tmp_path / "evil", marker, 2)
    with open(tmp_path / "evil", "rb") as f:
        pickle.load(f, encoding="latin1")
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("name, file", [
    ("cifar10", "cifar-10-batches-py/data_batch_1"),
    ("cifar10", "cifar-10-batches-py/test_batch"),
    ("cifar10", "cifar-10-batches-py/batches.meta"),
    ("cifar100", "cifar-100-python/train"),
    ("cifar100", "cifar-100-python/meta"),
])
def test_crafted_cifar_pickle_runs_nothing_and_is_refused_by_name(
    tmp_path: Path, name: str, file: str, protocol: int
) -> None:
    (write_cifar10 if name == "cifar10" else write_cifar100)(tmp_path)
    marker = tmp_path / "ran"
    _crafted(tmp_path / file, marker, protocol)
    with pytest.raises(DatasetError) as e:
        load_dataset(name, root=str(tmp_path))
    msg = str(e.value)
    assert msg.startswith(f"{name}: refusing to read {tmp_path / file}")
    assert "posix.system" in msg and "\n" not in msg
    assert not marker.exists()
    assert not (tmp_path / ".hpstudy_cache").exists()  # nothing cached from a refused file


@pytest.mark.parametrize("payload", [
    b"c__builtin__\neval\n(S'__import__(\"os\").system(\"touch MARKER\")'\ntR.",  # Python 2 style
    b"\x80\x02cnumpy\nload\nS'MARKER'\n\x85R.",  # a real numpy function, not on the list
    b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncos\nsystem\nK\x00\x85U\x01b\x87R.",
])
def test_globals_off_the_list_are_refused_whatever_module_they_claim(
    tmp_path: Path, payload: bytes
) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "ran"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(payload.replace(b"MARKER", str(marker).encode()))
    with pytest.raises(DatasetError, match=f"refusing to read {batch}"):
        load_dataset("cifar10", root=str(tmp_path))
    assert not marker.exists()


def test_object_arrays_and_non_batches_are_refused(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    batch = folder / "data_batch_3"
    batch.write_bytes(pickle.dumps({"data": np.array([1, "x"], dtype=object), "labels": [0]},
                                   protocol=2))
    with pytest.raises(DatasetError, match="refusing to read .*dtype object"):
        load_dataset("cifar10", root=str(tmp_path))
    batch.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(DatasetError, match=f"{batch} is not a CIFAR file"):
        load_dataset("cifar10", root=str(tmp_path))
    batch.write_bytes(pickle.dumps({"data": np.zeros((2, 5), np.uint8), "labels": [0, 1]}))
    with pytest.raises(DatasetError, match=r"holds images of shape \(2, 5\)"):
        load_dataset("cifar10", root=str(tmp_path))
    batch.write_bytes(b"\x80\x02}q\x00(U\x04data")  # truncated
    with pytest.raises(DatasetError, match=f"cannot read {batch} as a pickle"):
        load_dataset("cifar10", root=str(tmp_path))


@pytest.mark.parametrize("protocol", ["py2", 2, 3, 4, 5])
def test_real_format_pickles_load_through_the_restricted_reader(
    tmp_path: Path, protocol: int | str
) -> None:
    """The release's encoding (Python 2 cPickle) and what numpy + pickle write today."""
    write_cifar10(tmp_path / "a", n_train=50, n_test=10, protocol=protocol)
    write_cifar10(tmp_path / "b", n_train=50, n_test=10, protocol=2)
    a = load_dataset("cifar10", root=str(tmp_path / "a"))
    b = load_dataset("cifar10", root=str(tmp_path / "b"))
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.class_names == b.class_names and a.info["files_verified"] is False
    c100 = load_dataset("cifar100", root=str(write_cifar100(tmp_path / "c", protocol=protocol).parent))
    assert c100.train_x.shape == (200, 3, 32, 32) and len(c100.class_names) == 100


def test_py2_pickle_is_what_plain_pickle_reads() -> None:
    """fakedata's Python 2 encoder is right: the stock unpickler reads back the same data."""
    obj = {"batch_label": "training batch 1 of 5", "labels": [0, 255, 256, 70000],
           "data": np.arange(3072 * 2, dtype=np.int64).astype(np.uint8).reshape(2, 3072),
           "num_vis": 3072, "names": ["a" * 300]}
    back = pickle.loads(py2_pickle(obj), encoding="latin1")
    assert back.keys() == obj.keys() and np.array_equal(back["data"], obj["data"])
    assert back["labels"] == obj["labels"] and back["names"] == obj["names"]


def test_a_crafted_tensor_cache_runs_nothing_and_is_rebuilt(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path, n_train=20, n_test=10)
    files = [folder / f for f in sorted(os.listdir(folder))]
    path = cache_file(tmp_path, "cifar10", {"files": fingerprint(files, folder)})
    path.parent.mkdir()
    marker = tmp_path / "ran"
    torch.save({"train_x": _Payload(marker)}, path)
    with pytest.warns(UserWarning, match="unreadable cache"):  # weights_only=True refuses it
        raw = load_dataset("cifar10", root=str(tmp_path))
    assert raw.info["cache"] == str(path) and raw.train_x.shape == (20, 3, 32, 32)
    assert not marker.exists()
