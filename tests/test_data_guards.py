"""The data layer's guards: untrusted files, splits that cannot work, augmentations a
dataset's classes do not survive, and the device-side fast path.

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
    write_image_folder,
    write_mnist,
    write_svhn,
)
from torch.utils._python_dispatch import TorchDispatchMode

from hpstudy.data import (
    DatasetError,
    ImageDataModule,
    TensorLoader,
    augmentation_safe,
    augmentations_for,
    check_dataset,
    dataset_labels,
    describe_dataset,
    list_datasets,
    load_dataset,
    plan_split,
    safe_presets,
    stratified_split,
)
from hpstudy.data import augment as aug
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
    if "batch_1" in file or file.endswith("/train"):  # the split check reads these too
        with pytest.raises(DatasetError, match="refusing to read"):
            check_dataset(name, root=str(tmp_path), val_split=0.2)
        assert not marker.exists()


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


# ------------------------------------------------------------------ split checks
def _one_image_class(tmp_path: Path) -> Path:
    folder = write_image_folder(tmp_path / "imgs", classes=("ant", "bee", "cat"), n_per_class=5,
                                size=8)
    for f in sorted((folder / "bee").iterdir())[1:]:
        f.unlink()
    return folder


@pytest.mark.parametrize("kw, message", [
    (dict(val_split=0.1), r"data.val_split=0.1 gives 6 validation images for the 10 classes "
                          r"of mnist; every class needs one \(use at least 10\)"),
    (dict(val_split=55), r"data.val_split=55 leaves 5 training images for the 10 classes"),
    (dict(val_split=0.001), r"data.val_split=0.001 leaves no validation images out of the 60"),
    (dict(val_split=60), r"data.val_split=60 leaves no training images out of the 60"),
    (dict(subset=49), r"data.subset=49 is more than the 48 training images of mnist left "
                      r"after the validation split"),
    (dict(subset=7), r"data.subset=7 is fewer than the 10 classes of mnist"),
    (dict(val_split=0, subset=61), r"data.subset=61 is more than the 60 training images of mnist$"),
])
def test_splits_that_cannot_work_are_refused_before_loading(
    tmp_path: Path, kw: dict, message: str
) -> None:
    write_mnist(tmp_path, n_train=60, n_test=10)
    with pytest.raises(DatasetError, match=message) as e:
        check_dataset("mnist", root=str(tmp_path), **kw)
    assert "\n" not in str(e.value)
    assert not (tmp_path / ".hpstudy_cache").exists()  # checked on the labels file alone
    with pytest.raises(DatasetError, match=message):  # the data module says the same
        ImageDataModule(dataset="mnist", root=str(tmp_path), **kw).prepare()


def test_a_class_with_a_single_image_cannot_be_split(tmp_path: Path) -> None:
    folder = _one_image_class(tmp_path)
    opts = {"path": str(folder), "image_size": 8}
    with pytest.raises(DatasetError, match=r"data.val_split=0.2: class 1 \('bee'\) of "
                                           r"image_folder has a single training image"):
        ImageDataModule(dataset="image_folder", root=str(tmp_path), options=opts).prepare()
    with pytest.raises(DatasetError, match="class 1 of image_folder has a single"):
        check_dataset("image_folder", root=str(tmp_path), val_split=0.2, **opts)
    # no validation split: nothing to split, every image trains
    dm = ImageDataModule(dataset="image_folder", root=str(tmp_path), val_split=0, options=opts)
    assert dm.describe()["data.n_train"] == 11


def test_small_classes_keep_an_image_on_both_sides() -> None:
    """Proportional shares would give the two small classes no validation image."""
    y = torch.tensor([0] * 95 + [1] * 3 + [2] * 2)
    plain_tr, plain_va = stratified_split(y, 10, seed=0)
    assert torch.bincount(y[plain_va], minlength=3).tolist() == [10, 0, 0]
    tr, va = stratified_split(y, 10, seed=0, min_train=1, min_val=1)
    assert torch.bincount(y[va], minlength=3).tolist() == [8, 1, 1]
    assert torch.bincount(y[tr], minlength=3).tolist() == [87, 2, 1]
    assert len(set(tr.tolist()) | set(va.tolist())) == 100
    plan = plan_split(y, val_split=10, seed=0)
    assert torch.equal(plan.val, va) and torch.equal(plan.train, tr)
    # where the proportional split already keeps every class, the bounds change nothing
    y2 = torch.arange(600) % 10
    assert all(torch.equal(a, b) for a, b in zip(
        stratified_split(y2, 100, seed=3), stratified_split(y2, 100, seed=3, min_train=1, min_val=1),
        strict=True))
    with pytest.raises(ValueError, match="cannot draw 2"):
        stratified_split(y, 2, seed=0, min_val=1)


def test_val_split_zero_trains_on_everything_without_validation() -> None:
    dm = ImageDataModule(dataset="digits", val_split=0, batch_size=100)
    info = dm.describe()
    assert (info["data.n_train"], info["data.n_val"]) == (1437, 0) and not dm.has_val
    assert info["data.val_protocol"] == "none (val_split 0: all 1437 train images train)"
    assert len(dm.val_dataloader()) == 0 and list(dm.val_dataloader()) == []
    assert sum(len(b[1]) for b in dm.train_dataloader()) == 1437
    sub = ImageDataModule(dataset="digits", val_split=0, subset=100)
    assert (sub.describe()["data.n_train"], sub.describe()["data.n_val"]) == (100, 0)
    assert torch.bincount(sub._splits["train"][1]).min() >= 9  # still stratified
    check_dataset("digits", root="", val_split=0, subset=1437)


def test_val_split_zero_keeps_a_validation_set_the_protocol_fixes(tmp_path: Path) -> None:
    write_svhn(tmp_path, n_per_class={"train": 6, "test": 2, "extra": 5})
    opts = {"svhn_extra": True, "val_per_class_train": 2, "val_per_class_extra": 1}
    dm = ImageDataModule(dataset="svhn", root=str(tmp_path), val_split=0, options=opts)
    assert dm.describe()["data.n_val"] == 30 and dm.has_val


@pytest.mark.parametrize("name", ["digits", "mnist", "cifar10", "cifar100", "svhn", "svhn_extra",
                                  "image_folder", "image_folder_val", "synthetic"])
def test_cheap_labels_are_the_loaded_labels(tmp_path: Path, name: str) -> None:
    """The split check sees exactly the labels the data module splits."""
    opts: dict = {}
    if name == "mnist":
        write_mnist(tmp_path, n_train=60, n_test=10, gz=True)
    elif name.startswith("cifar"):
        (write_cifar10 if name == "cifar10" else write_cifar100)(tmp_path)
    elif name.startswith("svhn"):
        write_svhn(tmp_path, n_per_class={"train": 6, "test": 2, "extra": 5})
        if name == "svhn_extra":
            opts = {"svhn_extra": True, "val_per_class_train": 2, "val_per_class_extra": 1}
    elif name.startswith("image_folder"):
        write_image_folder(tmp_path / "d" / "train", ("b", "a"), n_per_class=3, size=8)
        if name == "image_folder_val":
            write_image_folder(tmp_path / "d" / "val", ("a", "b"), n_per_class=2, size=8)
        opts = {"path": str(tmp_path / "d"), "image_size": 8}
    elif name == "synthetic":
        opts = {"n_classes": 7, "n_samples": 70, "image_size": 8, "label_noise": 0.2,
                "generator_seed": 3}
    dataset = name.removesuffix("_extra").removesuffix("_val")
    labels = dataset_labels(dataset, root=str(tmp_path), seed=5, **opts)
    assert not (tmp_path / ".hpstudy_cache").exists()
    raw = load_dataset(dataset, root=str(tmp_path), seed=5, **opts)
    assert torch.equal(labels[0], raw.train_y)
    assert (labels[1] is None) == (raw.val_y is None)
    if raw.val_y is not None:
        assert torch.equal(labels[1], raw.val_y)


def test_the_split_check_reads_no_pixels(tmp_path: Path) -> None:
    """Cheap: the check reads labels only, so images it cannot read do not matter to it."""
    write_mnist(tmp_path, n_train=60, n_test=10, gz=False)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"not images")
    check_dataset("mnist", root=str(tmp_path), val_split=10)
    write_svhn(tmp_path, splits=("train", "test"), n_per_class=20)
    check_dataset("svhn", root=str(tmp_path), val_split=0.1, subset=100)
    with pytest.raises(DatasetError, match="data.subset=181 is more than the 180"):
        check_dataset("svhn", root=str(tmp_path), val_split=0.1, subset=181)
    assert not (tmp_path / ".hpstudy_cache").exists()


def test_check_waits_for_a_download_and_still_refuses_missing_folders(tmp_path: Path) -> None:
    check_dataset("mnist", root=str(tmp_path), download=True, val_split=0.5, subset=10**6)
    with pytest.raises(DatasetError, match="not a folder"):
        check_dataset("image_folder", root=str(tmp_path), download=True, val_split=0.2,
                      path=str(tmp_path / "nope"))


# ------------------------------------------------------------------ augmentation
FLIP_INVARIANT = {"digits": False, "mnist": False, "kmnist": False, "svhn": False,
                  "fashion_mnist": True, "cifar10": True, "cifar100": True}


def test_every_dataset_says_whether_a_mirror_image_keeps_its_class(tmp_path: Path) -> None:
    for name, flip in FLIP_INVARIANT.items():
        assert describe_dataset(name).flip_invariant is flip, name
    write_image_folder(tmp_path / "d", ("a", "b"), n_per_class=2, size=8)
    assert describe_dataset("image_folder", path=str(tmp_path / "d")).flip_invariant
    assert not describe_dataset("image_folder", path=str(tmp_path / "d"),
                                flip_invariant=False).flip_invariant
    assert describe_dataset("synthetic", n_classes=30).flip_invariant
    assert not describe_dataset("synthetic", n_classes=31, n_samples=100).flip_invariant
    assert set(FLIP_INVARIANT) | {"image_folder", "synthetic"} == set(list_datasets())


def test_presets_resolve_per_dataset() -> None:
    assert aug.resolve("standard", flip_invariant=False) == ("pad_crop",)
    assert aug.resolve("strong", flip_invariant=False) == ("pad_crop", "color_jitter", "cutout")
    assert augmentations_for("mnist", "standard") == ("pad_crop",)
    assert augmentations_for("fashion_mnist", "standard") == ("pad_crop", "hflip")
    assert augmentations_for("cifar10", "strong") == aug.PRESETS["strong"]
    for name in list_datasets():
        if name != "image_folder":  # needs a folder
            assert safe_presets(name) == ["none", "standard", "strong"]
    dm = ImageDataModule(dataset="digits", augmentation="strong", subset=100)
    assert dm.describe()["data.augment_ops"] == ["pad_crop", "color_jitter", "cutout"]


@pytest.mark.parametrize("spec", ["hflip", ["pad_crop", "hflip"], ["vflip"]])
@pytest.mark.parametrize("name", ["digits", "mnist", "kmnist", "svhn"])
def test_explicit_flips_on_digits_and_letters_are_refused(tmp_path: Path, name: str, spec) -> None:
    assert not augmentation_safe(name, spec)
    with pytest.raises(DatasetError, match=rf"^data.augmentation: [hv]flip mirrors the images "
                                           rf"of {name}, whose classes do not survive mirroring"):
        check_dataset(name, root=str(tmp_path), augmentation=spec)
    # refused before any file is looked for (tmp_path has none)
    with pytest.raises(DatasetError, match="data.augmentation"):
        ImageDataModule(dataset=name, root=str(tmp_path), augmentation=spec).prepare()


def test_flips_stay_allowed_where_classes_survive_them() -> None:
    assert augmentation_safe("cifar10", ["pad_crop", "hflip"])
    assert augmentation_safe("fashion_mnist", "hflip")
    assert augmentation_safe("digits", "standard") and augmentation_safe("digits", ["rotation"])
    with pytest.raises(ValueError, match="unknown augmentation 'flip'"):
        augmentation_safe("digits", ["flip"])  # a typo is an error, not an unsafe choice


# --------------------------------------------------------------------- fast path
class _HostSyncs(TorchDispatchMode):
    """Records every op that reads a value back to the host (a device sync on a GPU).

    ``.item()``, ``int(t)`` and ``bool(t)`` go through ``_local_scalar_dense``;
    ops whose output size depends on the data (``nonzero``, indexing with a
    boolean mask, ``unique``, ``masked_select``) sync on a GPU too. (``.tolist()``
    of a CPU tensor bypasses the dispatcher; on a GPU it is a copy to the host,
    which :func:`test_cuda_epoch_has_no_host_sync` catches.)
    """

    SYNCING = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2",
               "unique_consecutive", "repeat_interleave")

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__
        bool_index = name.startswith("index") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool
            for a in args if isinstance(a, (list, tuple)) for i in a)
        if name.split(".")[0] in self.SYNCING or bool_index:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


def test_a_training_epoch_never_reads_back_from_the_device() -> None:
    dm = ImageDataModule(dataset="synthetic", augmentation=["pad_crop", "hflip", "vflip",
                                                            "rotation", "color_jitter", "cutout"],
                         batch_size=32, options=dict(n_classes=4, image_size=16, n_samples=200,
                                                     test_samples=0))
    train, val = dm.train_dataloader(), dm.val_dataloader()
    with _HostSyncs() as spy:
        n = sum(len(y) for _, y in train) + sum(len(y) for _, y in val)
    assert n == 200 and spy.ops == []
    with _HostSyncs() as spy:  # the detector detects
        t = torch.tensor([1.5, 2.5])
        t.item() if len(t) == 1 else float(t[0])
        t[t > 2]
    assert spy.ops == ["_local_scalar_dense.default", "index.Tensor"]


def test_batches_come_from_uint8_on_the_device_with_a_generator_there() -> None:
    dm = ImageDataModule(dataset="synthetic", augmentation="strong", batch_size=16, seed=4,
                         options=dict(n_classes=3, image_size=16, n_samples=60, test_samples=0))
    loader = dm.dataloader("train", device="cpu")
    assert loader.x.dtype == torch.uint8 and loader.x.shape[1:] == (3, 16, 16)
    gen = loader.generator(0)
    assert gen.device == loader.x.device
    xb, yb = next(iter(loader))
    assert xb.dtype == torch.float32 and xb.device == loader.x.device == yb.device
    # the same batch by hand: permutation, then every augmentation's draws, from that generator
    order = torch.randperm(len(loader.y), device=loader.x.device, generator=gen)[:16]
    expect = aug.build(aug.resolve("strong"))(dm.normalize(loader.x[order]), gen)
    assert torch.equal(xb, expect) and torch.equal(yb, loader.y[order])


def test_small_images_are_stored_resized_as_uint8() -> None:
    dm = ImageDataModule(dataset="digits", min_size=16, batch_size=8, subset=80)
    loader = dm.dataloader("val")
    assert loader.x.dtype == torch.uint8 and loader.x.shape[-2:] == (16, 16)
    xb = torch.cat([b[0] for b in loader])
    # what resizing the float images would give, to within half a grey level
    native = dm._splits["val"][0].float() / 255
    exact = torch.nn.functional.interpolate(native, size=(16, 16), mode="bilinear",
                                            align_corners=False)
    exact = (exact - dm.mean[:, None, None]) / dm.std[:, None, None]
    assert (xb - exact).abs().max() <= 0.5 / 255 / dm.std.min() + 1e-5


def test_eval_loaders_are_deterministic_and_sharded() -> None:
    x = torch.arange(10, dtype=torch.uint8)[:, None, None, None].expand(10, 1, 2, 2).contiguous()
    loader = TensorLoader(x, torch.arange(10), 4, transform=lambda b, g: b.float())
    assert [b[1].tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(b[0].dtype == torch.float32 for b in loader)


@pytest.mark.gpu
def test_cuda_epoch_has_no_host_sync() -> None:
    """On a GPU: the device's own sync detector raises on any sync in an augmented epoch."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    dm = ImageDataModule(dataset="synthetic", augmentation="strong", batch_size=64,
                         options=dict(n_classes=4, image_size=32, n_samples=1000, test_samples=0))
    loader = dm.dataloader("train", device="cuda")
    assert loader.x.is_cuda and loader.x.dtype == torch.uint8
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        batches = [xb for xb, _ in loader]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(b.is_cuda and b.dtype == torch.float32 for b in batches)
