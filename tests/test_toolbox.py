"""The course's toolbox in real training runs: transfer learning (model.init_from, train.finetune),
max-norm, L1, test-time augmentation, and augmentation presets that respect the dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

from hpstudy.config import ConfigError, from_dict
from hpstudy.models import create_model, list_models, model_info
from hpstudy.train import fit
from hpstudy.train.transfer import (
    BATCHNORMS,
    TransferError,
    apply_finetune,
    check_init_from,
    find_head,
    load_weights,
)
from hpstudy.train.tta import tta_probs, tta_views


def _synthetic(n_classes: int = 4, seed: int = 0, **data: Any) -> dict[str, Any]:
    return {"dataset": "synthetic", "n_classes": n_classes, "image_size": 16, "n_samples": 256,
            "test_samples": 64, "generator_seed": seed, "batch_size": 32, **data}


def _cfg(name: str = "tb", data: dict | None = None, model: dict | None = None,
         **train: Any) -> Any:
    return from_dict({
        "name": name,
        "data": data or _synthetic(),
        "model": model or {"arch": "cnn", "width": 8, "stages": 2, "convs_per_stage": 1,
                           "norm_layer": "batch"},
        "train": {"max_epochs": 2, "lr": 0.01, "accelerator": "cpu", **train},
        "report": {"enabled": False},
    })


# ------------------------------------------------------------------ the head
@pytest.mark.parametrize("name", list_models())
def test_every_model_has_a_head_with_one_output_per_class(name: str):
    size = max(32, model_info(name).min_size)
    with torch.device("meta"):
        net = create_model(name, num_classes=7, in_chans=3, input_size=size)
    head = find_head(net)
    assert head.out_features == 7, head
    ft = apply_finetune(net, "head")
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {f"{head.name}.{k}" for k, _ in head.module.named_parameters()}
    assert set(ft.trainable) == trainable
    assert set(ft.held_eval) == {n for n, m in net.named_modules() if isinstance(m, BATCHNORMS)}


def test_finetune_batchnorm_trains_the_norms_and_the_head():
    net = create_model("cnn", num_classes=5, in_chans=3, input_size=16, width=4, stages=2,
                       convs_per_stage=1, norm_layer="batch")
    ft = apply_finetune(net, "batchnorm")
    assert ft.trainable == ("features.1.weight", "features.1.bias", "features.5.weight",
                            "features.5.bias", "fc.weight", "fc.bias")
    assert ft.held_eval == ()
    with pytest.raises(ValueError, match="needs BatchNorm"):
        apply_finetune(create_model("mlp", num_classes=3, in_chans=1, input_size=8), "batchnorm")


def test_same_class_count_loads_the_head_too_and_other_shapes_are_refused():
    kw = dict(in_chans=3, input_size=16, width=4, stages=2, convs_per_stage=1)
    src = create_model("cnn", num_classes=5, **kw)
    ckpt = {"state_dict": src.state_dict(), "model": {"name": "cnn"}}
    dst = create_model("cnn", num_classes=5, **kw)
    loaded = load_weights(dst, ckpt, "cnn")
    assert (loaded.replaced, loaded.source_classes, loaded.classes) == (False, 5, 5)
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in dst.state_dict().items())
    with pytest.raises(TransferError, match="holds a 'cnn', this config builds 'mlp'"):
        load_weights(create_model("mlp", num_classes=5, in_chans=3, input_size=16), ckpt, "mlp")
    wide = create_model("cnn", num_classes=5, **{**kw, "width": 6})
    with pytest.raises(TransferError, match=r"features\.0\.weight is \(4, 3, 3, 3\) in the "
                                            r"checkpoint and \(6, 3, 3, 3\) here"):
        load_weights(wide, ckpt, "cnn")


# ------------------------------------------------------------------ transfer, end to end
@pytest.fixture(scope="module")
def source(tmp_path_factory) -> dict[str, Any]:
    """A model trained on synthetic dataset A (4 classes) by `hpstudy train`'s function,
    registered as A-best/1, plus its checkpoint as a file."""
    from hpstudy.api import train
    from hpstudy.track import Tracker, registry

    root = tmp_path_factory.mktemp("transfer")
    uri = f"sqlite:///{root}/mlflow.db"
    cfg = from_dict({**_cfg("A").to_dict(), "tracking": {"uri": uri}})
    out = train(cfg)
    tracker = Tracker.for_run(uri, out.run_id)
    ckpt = registry.load_checkpoint(tracker, out.run_id)  # hpstudy train keeps one
    reg = registry.register_best(tracker, "A", out.run_id, trial_number=0, metric="val_acc",
                                 value=float(out.result.value))
    path = root / "a.pt"
    torch.save(ckpt, path)
    return {"uri": uri, "run_id": out.run_id, "ckpt": ckpt, "file": path,
            "model_uri": reg.model_uri, "root": root}


def _finetune_on_b(source: dict[str, Any], init_from: str, mode: str) -> Any:
    cfg = from_dict({**_cfg("B", data=_synthetic(3, seed=1)).to_dict(),
                     "tracking": {"uri": source["uri"]}}).with_overrides(
        {"model.init_from": init_from, "train.finetune": mode})
    check_init_from(cfg, "B.yaml")  # the preflight: the source exists
    return fit(cfg)


def _changed(net: nn.Module, ckpt: dict[str, Any]) -> set[str]:
    src = ckpt["state_dict"]
    return {k for k, v in net.state_dict().items()
            if v.shape != src[k].shape or not torch.equal(v, src[k])}


def test_finetune_head_from_a_run_changes_the_head_only(source):
    result = _finetune_on_b(source, source["run_id"], "head")
    assert result.state == "COMPLETE"
    # the 4-class head was replaced by a 3-class one and trained; everything else,
    # BatchNorm running statistics included (held in eval mode), is the source's
    assert _changed(result.module.net, source["ckpt"]) == {"fc.weight", "fc.bias"}
    assert result.module.net.fc.out_features == 3


def test_finetune_batchnorm_from_a_registered_model_changes_norms_and_head(source):
    assert source["model_uri"] == "models:/A-best/1"
    result = _finetune_on_b(source, source["model_uri"], "batchnorm")
    norms = {f"features.{i}.{k}" for i in (1, 5) for k in ("weight", "bias", "running_mean",
                                                           "running_var", "num_batches_tracked")}
    assert _changed(result.module.net, source["ckpt"]) == norms | {"fc.weight", "fc.bias"}


def test_finetune_all_from_a_file_changes_every_parameter(source):
    result = _finetune_on_b(source, str(source["file"]), "all")
    params = {n for n, _ in result.module.net.named_parameters()}
    assert params <= _changed(result.module.net, source["ckpt"])
    assert len(params) == 8


def test_finetune_is_searchable_like_any_categorical(source):
    base = from_dict({**_cfg("B", data=_synthetic(3, seed=1)).to_dict(),
                      "tracking": {"uri": source["uri"]}})
    cfg = base.with_overrides({"model.init_from": source["run_id"],
                               "search.space": {"finetune": ["all", "head", "batchnorm"]}})
    from hpstudy.config import resolve_space

    assert resolve_space(cfg.search.space)["train.finetune"].choices == ["all", "head",
                                                                         "batchnorm"]


def test_bad_sources_name_the_field(source, tmp_path):
    base = from_dict({**_cfg("B", data=_synthetic(3, seed=1)).to_dict(),
                      "tracking": {"uri": source["uri"]}})
    cases = [
        ("models:/ghost/1", "no registered model models:/ghost/1"),
        ("models:/A-best/7", "no registered model models:/A-best/7"),
        ("0" * 32, f"no run {'0' * 32}"),
        (str(tmp_path / "missing.pt"), "no checkpoint file"),
    ]
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    cases.append((str(garbage), "is not a checkpoint torch.load(weights_only=True) can read"))
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "code": Path("x")}, evil)  # a pickled object, not weights
    cases.append((str(evil), "weights_only"))
    for spec, fragment in cases:
        cfg = base.with_overrides({"model.init_from": spec})
        with pytest.raises(ConfigError) as info:
            check_init_from(cfg, "B.yaml")
        assert info.value.field == "model.init_from" and fragment in str(info.value), (spec, info)
    # the architecture is checked when the network is built (the trial fails with the reason)
    mlp = base.with_overrides({"model": {"arch": "mlp", "init_from": source["run_id"]}})
    with pytest.raises(ConfigError, match="model.init_from: the checkpoint holds a 'cnn'"):
        fit(mlp)


# ------------------------------------------------------------------ regularizers
def _unit_norms(net: nn.Module) -> torch.Tensor:
    return torch.cat([m.weight.detach().flatten(1).norm(dim=1) for m in net.modules()
                      if isinstance(m, nn.Linear | nn.Conv2d)])


def test_max_norm_keeps_every_unit_within_c():
    free = fit(_cfg(lr=0.05))
    assert _unit_norms(free.module.net).max() > 0.6  # the constraint below has work to do
    capped = fit(_cfg(lr=0.05, max_norm=0.6))
    assert capped.state == "COMPLETE"
    assert _unit_norms(capped.module.net).max() <= 0.6 + 1e-5


def test_l1_shrinks_the_kernels_and_train_loss_stays_the_data_loss():
    def kernel_l1(net: nn.Module) -> float:
        return float(sum(m.weight.abs().sum() for m in net.modules()
                         if isinstance(m, nn.Linear | nn.Conv2d)))

    plain = fit(_cfg(lr=0.01, max_epochs=3))
    l1 = fit(_cfg(lr=0.01, max_epochs=3, l1=3e-3))
    assert kernel_l1(l1.module.net) < 0.7 * kernel_l1(plain.module.net)
    # the penalty (about 3e-3 x a few hundred) is optimized, not logged: epoch 1 starts
    # from the same weights and the logged losses stay close
    penalty = 3e-3 * kernel_l1(plain.module.net)
    assert abs(l1.history[0]["train_loss"] - plain.history[0]["train_loss"]) < penalty / 2


# ------------------------------------------------------------------ test-time augmentation
def test_tta_views_shift_and_mirror_exactly():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3, 5] = 1.0
    views = tta_views("flip_crop", 8)
    assert len(views) == 10 and len(tta_views("crop", 8)) == 5 and len(tta_views("flip", 8)) == 2
    spots = [tuple(torch.nonzero(v(x)[0, 0]).flatten().tolist()) for v in views]
    # p = 1 at 8 px: the centre, then shifts of (+1, +1), (+1, -1), (-1, +1), (-1, -1)
    assert spots[:5] == [(3, 5), (4, 6), (4, 4), (2, 6), (2, 4)]
    assert spots[5:] == [(r, 7 - c) for r, c in spots[:5]]  # their mirrors
    assert tta_views("crop", 32)[1](torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_tta_metrics_are_logged_separately_and_computed_over_the_views(tmp_path):
    from mlflow import MlflowClient

    from hpstudy.api import train

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = from_dict({**_cfg("tta", tta="flip_crop", tta_on_val=True, evaluate_test=True,
                            limit_val_batches=1).to_dict(), "tracking": {"uri": uri}})
    out = train(cfg)
    r = out.result
    metrics = MlflowClient(uri).get_run(out.run_id).data.metrics
    for k in ("val_acc_tta", "val_loss_tta", "test_acc_tta", "test_loss_tta", "test_acc",
              "best_val_acc"):
        assert k in metrics, k
    assert metrics["best_val_acc"] == pytest.approx(r.best["val_acc"])  # the plain value
    assert metrics["val_acc_tta"] == pytest.approx(r.test["val_acc_tta"])
    # the same number by hand: the first validation batch (limit_val_batches 1), 10 views
    net, dm = r.module.net.eval(), r.datamodule
    x, y = next(iter(dm.dataloader("val", device="cpu")))
    with torch.no_grad():
        probs = tta_probs(net, x, tta_views("flip_crop", dm.input_size))
    assert r.test["val_acc_tta"] == pytest.approx(float((probs.argmax(1) == y).float().mean()))
    plain = float((net(x).argmax(1) == y).float().mean())
    assert r.best["val_acc"] == pytest.approx(plain, abs=1e-6)  # TTA changed no plain value


def test_tta_crop_on_digits_and_no_tta_logs_nothing():
    digits = {"dataset": "digits", "subset": 200, "batch_size": 50}
    r = fit(_cfg(data=digits, model={"arch": "mlp", "hidden": [16]}, max_epochs=1, tta="crop",
                 evaluate_test=True))
    assert set(r.test) == {"test_loss", "test_acc", "test_loss_tta", "test_acc_tta"}
    r = fit(_cfg(data=digits, model={"arch": "mlp", "hidden": [16]}, max_epochs=1))
    assert r.test is None


# ------------------------------------------------------------------ augmentation presets
@pytest.mark.parametrize(("dataset", "flips_ok"), [
    ("digits", False), ("mnist", False), ("kmnist", False), ("svhn", False),
    ("fashion_mnist", True), ("cifar10", True), ("cifar100", True)])
def test_course_full_never_flips_what_a_mirror_changes(dataset: str, flips_ok: bool):
    from hpstudy.config import resolve_space
    from hpstudy.data import augmentations_for

    choices = resolve_space("course_full")["data.augmentation"].choices
    flips = {"hflip", "vflip"}
    proposed = {c: set(augmentations_for(dataset, c)) for c in choices}
    if flips_ok:
        assert "hflip" in proposed["standard"]  # photos and clothes keep their flips
    else:
        assert all(not (ops & flips) for ops in proposed.values()), proposed
        assert proposed["standard"] == {"pad_crop"}


def test_course_full_trials_on_digits_train_without_flips():
    import optuna

    from hpstudy.search import space as sp
    from hpstudy.train import build_datamodule

    cfg = from_dict({"name": "cf", "data": {"dataset": "digits", "subset": 64},
                     "model": {"arch": "mlp", "hidden": [8]}, "search": {"space": "course_full"}})
    space = sp.resolve_space(cfg.search.space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        t = study.ask()
        trial = cfg.concrete(sp.suggest(t, space))
        study.tell(t, 0.0)
        dm = build_datamodule(trial)
        dm.prepare()
        seen.add(trial.data.augmentation)
        assert not {"hflip", "vflip"} & set(dm.describe()["data.augment_ops"]), trial.data
    assert {"standard", "strong"} & seen  # presets that flip elsewhere were drawn


# ------------------------------------------------------------------ the documented study files
STUDIES = Path(__file__).resolve().parents[1] / "studies" / "toolbox"


def test_toolbox_study_files_run_through_the_cli(tmp_path, monkeypatch, capsys):
    """studies/toolbox/: the regularizers search, then transfer: source study (registers
    shapes-a-best) and the fine-tuning study that starts from it, each shrunk to seconds."""
    from conftest import run_cli

    from hpstudy.config import load_study

    store = [f"--storage=sqlite:///{tmp_path}/optuna.db", "--no-report", "-q"]
    # models:/ sources are looked up in the study's own store: tracking.uri, not the flag
    tracking = ["--set", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    small = ["--set", "train.max_epochs=1", "--set", "data.image_size=16",
             "--set", "data.n_samples=200", "--set", "data.test_samples=50"]
    for path in sorted(STUDIES.glob("*.yaml")):
        load_study(path)  # every file validates (schema, space probes)
    code, out, err = run_cli("run", str(STUDIES / "regularizers.yaml"), "--n-trials", "1",
                             "--set", "train.max_epochs=1", "--set", "data.subset=200", *tracking,
                             *store, monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 0, err
    code, out, err = run_cli("run", str(STUDIES / "transfer_finetune.yaml"), "--n-trials", "1",
                             *small, *tracking, *store, monkeypatch=monkeypatch, cwd=tmp_path,
                             capsys=capsys)
    assert code == 2 and "model.init_from: no registered model 'shapes-a-best'" in err, err
    code, out, err = run_cli("run", str(STUDIES / "transfer_source.yaml"), "--n-trials", "1",
                             *small, *tracking, *store, monkeypatch=monkeypatch, cwd=tmp_path,
                             capsys=capsys)
    assert code == 0 and "best model   models:/shapes-a-best/1" in out, err
    code, out, err = run_cli("run", str(STUDIES / "transfer_finetune.yaml"), "--n-trials", "3",
                             *small, *tracking, *store, monkeypatch=monkeypatch, cwd=tmp_path,
                             capsys=capsys)
    assert code == 0, err
    assert "3 trials (3 complete" in out, out
