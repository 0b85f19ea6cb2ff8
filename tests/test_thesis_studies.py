"""The thesis study files: each holds the thesis recipe as trial 0 and runs on CPU.

Every file in ``studies/thesis/`` is run through the real CLI (``hpstudy run``)
for one trial of one epoch on two batches, on files generated in the dataset's
real on-disk format (tests/fakedata.py), with real Optuna and MLflow stores.
Weight decay is the thesis's Keras ``l2(λ)`` on kernels: ``2λ`` on weights only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from fakedata import write_cifar10, write_cifar100, write_mnist, write_svhn

from hpstudy.cli import main
from hpstudy.config import load_study, resolve_key
from hpstudy.data import describe_dataset
from hpstudy.models import count_params, create_model
from hpstudy.search.space import resolve_space

STUDY_DIR = Path(__file__).resolve().parents[1] / "studies" / "thesis"
STUDIES = sorted(STUDY_DIR.glob("*.yaml"))

# The thesis recipes (shared/reference/RECIPES.md), as the concrete config of trial 0.
RECIPES: dict[str, dict[str, Any]] = {
    "mnist_baseline": {
        "data.dataset": "mnist", "data.val_split": 10000, "data.batch_size": 128,
        "data.augmentation": "none", "model.arch": "baseline_cnn", "model.drop_rate": 0.5,
        "model.init": "he_normal", "train.optimizer": "nesterov", "train.lr": 0.1,
        "train.momentum": 0.9, "train.weight_decay": 2e-5, "train.weight_decay_on": "weights",
        "train.max_epochs": 30, "train.scheduler.name": "multistep",
        "train.scheduler.milestones": [20], "train.scheduler.gamma": 0.1,
    },
    "nin_mnist": {  # NiN: lr 0.02, /2 after 40, /5 after 50, 60 epochs, batch 128
        "data.dataset": "mnist", "data.val_split": 10000, "data.batch_size": 128,
        "data.augmentation": "none", "model.arch": "nin", "model.variant": "mnist",
        "model.drop_rate": 0.5, "model.init": "normal", "train.optimizer": "nesterov",
        "train.lr": 0.02, "train.momentum": 0.9, "train.weight_decay": 2e-4,
        "train.weight_decay_on": "weights", "train.max_epochs": 60,
        "train.scheduler.name": "multistep", "train.scheduler.milestones": [40, 50],
        "train.scheduler.gammas": [0.5, 0.2],
    },
    "nin_cifar10": {  # NiN: lr 0.025 -> 0.01 at 200 -> 0.001 at 230, 260 epochs, batch 64
        "data.dataset": "cifar10", "data.batch_size": 64, "data.augmentation": "none",
        "model.arch": "nin", "model.variant": "cifar", "model.drop_rate": 0.5,
        "model.init": "normal", "train.optimizer": "nesterov", "train.lr": 0.025,
        "train.momentum": 0.9, "train.weight_decay": 2e-4, "train.weight_decay_on": "weights",
        "train.max_epochs": 260, "train.scheduler.name": "multistep",
        "train.scheduler.milestones": [200, 230], "train.scheduler.gammas": [0.4, 0.1],
    },
    "bn_vgg_cifar100": {
        "data.dataset": "cifar100", "data.batch_size": 64, "data.augmentation": "standard",
        "model.arch": "bn_vgg15", "model.drop_rate": 0.5, "train.optimizer": "nesterov",
        "train.lr": 0.1, "train.momentum": 0.9, "train.weight_decay": 1e-3,
        "train.weight_decay_on": "weights", "train.max_epochs": 250,
        "train.scheduler.name": "step", "train.scheduler.step_size": 25,
        "train.scheduler.gamma": 0.5,
    },
    "densenet_svhn": {
        "data.dataset": "svhn", "data.svhn_extra": True, "data.augmentation": "none",
        "model.arch": "densenet40_12", "model.drop_rate": 0.2, "train.optimizer": "nesterov",
        "train.lr": 0.1, "train.momentum": 0.9, "train.weight_decay": 2e-4,
        "train.weight_decay_on": "weights", "train.max_epochs": 40,
        "train.scheduler.name": "multistep", "train.scheduler.milestones": [0.5, 0.75],
        "train.scheduler.gamma": 0.1,
    },
    "nin": {
        "data.dataset": "svhn", "data.svhn_extra": True, "data.batch_size": 64,
        "data.augmentation": "none", "model.arch": "nin", "model.variant": "svhn",
        "model.drop_rate": 0.5, "model.init": "normal", "train.optimizer": "nesterov",
        "train.lr": 0.025, "train.momentum": 0.9, "train.weight_decay": 2e-4,
        "train.weight_decay_on": "weights", "train.max_epochs": 40, "train.scheduler.name": "multistep",
        "train.scheduler.milestones": [20, 30], "train.scheduler.gamma": 0.1,
    },
    "bn_vgg": {
        "data.dataset": "cifar10", "data.batch_size": 64, "data.augmentation": "standard",
        "model.arch": "bn_vgg15", "model.drop_rate": 0.5, "train.optimizer": "nesterov",
        "train.lr": 0.1, "train.momentum": 0.9, "train.weight_decay": 1e-3,
        "train.weight_decay_on": "weights", "train.max_epochs": 250, "train.scheduler.name": "step",
        "train.scheduler.step_size": 25, "train.scheduler.gamma": 0.5,
    },
    "preact_resnet": {
        "data.dataset": "cifar10", "data.augmentation": "standard",
        "model.arch": "preact_resnet20", "train.optimizer": "nesterov", "train.lr": 0.1,
        "train.momentum": 0.9, "train.weight_decay": 2e-4, "train.weight_decay_on": "weights",
        "train.max_epochs": 164,
        "train.scheduler.name": "multistep", "train.scheduler.milestones": [82, 123],
        "train.scheduler.gamma": 0.1,
    },
    "wrn": {
        "data.dataset": "cifar10", "data.batch_size": 64, "data.augmentation": "standard",
        "model.arch": "wrn40_4", "train.optimizer": "nesterov", "train.lr": 0.1,
        "train.momentum": 0.9, "train.weight_decay": 1e-3, "train.weight_decay_on": "weights",
        "train.max_epochs": 200,
        "train.scheduler.name": "multistep", "train.scheduler.milestones": [60, 120, 160],
        "train.scheduler.gamma": 0.2,
    },
    "densenet": {
        "data.dataset": "cifar10", "data.augmentation": "none", "model.arch": "densenet40_12",
        "model.drop_rate": 0.2, "train.optimizer": "nesterov", "train.lr": 0.1,
        "train.momentum": 0.9, "train.weight_decay": 2e-4, "train.weight_decay_on": "weights",
        "train.max_epochs": 300,
        "train.scheduler.name": "multistep", "train.scheduler.milestones": [0.5, 0.75],
        "train.scheduler.gamma": 0.1,
    },
}

RECIPES["bn_nin_mnist"] = {  # BN-NiN: He-normal, lr 0.1, /10 after 20, 30 epochs
    **RECIPES["nin_mnist"], "model.arch": "bn_nin", "model.init": "he_normal", "train.lr": 0.1,
    "train.max_epochs": 30, "train.scheduler.milestones": [20], "train.scheduler.gamma": 0.1,
    "train.scheduler.gammas": None}
RECIPES["bn_nin_cifar10"] = {  # BN-NiN: He-normal, lr 0.1 halved every 25, 250 epochs
    **RECIPES["nin_cifar10"], "model.arch": "bn_nin", "model.init": "he_normal", "train.lr": 0.1,
    "train.max_epochs": 250, "train.scheduler.name": "step", "train.scheduler.step_size": 25,
    "train.scheduler.gamma": 0.5}
del RECIPES["bn_nin_cifar10"]["train.scheduler.milestones"]
del RECIPES["bn_nin_cifar10"]["train.scheduler.gammas"]
RECIPES["nin_cifar100"] = {**RECIPES["nin_cifar10"], "data.dataset": "cifar100"}
RECIPES["bn_nin_cifar100"] = {**RECIPES["bn_nin_cifar10"], "data.dataset": "cifar100"}
RECIPES["densenet_cifar100"] = {**RECIPES["densenet"], "data.dataset": "cifar100"}


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d[part]
    return d


def _first_trial(path: Path):
    cfg = load_study(path)
    assert cfg.search.enqueue, f"{path.name}: no enqueued thesis trial"
    first = {resolve_key(k): v for k, v in cfg.search.enqueue[0].items()}
    return cfg, first, cfg.with_overrides(first)


def test_one_study_file_per_thesis_family():
    assert sorted(p.stem for p in STUDIES) == sorted(RECIPES)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_first_enqueued_trial_is_the_thesis_recipe(path: Path):
    cfg, _, trial0 = _first_trial(path)
    concrete = trial0.to_dict()
    for key, expected in RECIPES[path.stem].items():
        assert _get(concrete, key) == pytest.approx(expected), f"{path.name}: {key}"
    # a narrow search of its own (no broad preset) that holds every enqueued value
    assert isinstance(cfg.search.space, dict) and "preset" not in cfg.search.space
    space = resolve_space(cfg.search.space)
    for params in cfg.search.enqueue:
        for key, value in params.items():
            p = space[resolve_key(key)]
            if p.type == "categorical":
                assert value in p.choices, key
            else:
                assert p.low <= value <= p.high, key


# ------------------------------------------------------------------ smoke runs
def _write_fake(dataset: str, root: Path) -> None:
    """Enough images for the study's own validation protocol plus more than the subset.

    More than ``data.subset`` training images must remain, or the subset (and the
    validation trimming that comes with it) does not apply; CIFAR-100's 10%
    validation needs one image per class, so 1,000 training images.
    """
    if dataset == "mnist":
        write_mnist(root, n_train=10_080, n_test=20)  # the thesis holds out 10,000
    elif dataset == "cifar10":
        write_cifar10(root, n_train=100, n_test=20)
    elif dataset == "cifar100":
        write_cifar100(root, n_train=1_000, n_test=100)
    elif dataset == "svhn":
        # validation = 400/class from train + 200/class from extra (the thesis protocol)
        write_svhn(root, n_per_class={"train": 410, "test": 2, "extra": 202})
    else:
        raise AssertionError(f"no fake files for dataset '{dataset}'")


def _subset(dataset: str) -> int:
    """64 training images, or one per class of CIFAR-100."""
    return 100 if dataset == "cifar100" else 64


@pytest.fixture(scope="module")
def thesis_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # one MLflow store for the module: creating a SQLite store costs ~1.5 s of migrations
    d = tmp_path_factory.mktemp("thesis-stores")
    return {"storage": f"sqlite:///{d}/optuna.db", "tracking_uri": f"sqlite:///{d}/mlflow.db"}


# The default suite runs one file per architecture family, covering every data format
# (mnist, cifar10, cifar100, svhn); `-m slow` (make test-all) runs the other eight as well.
_DEFAULT_SMOKE = {"mnist_baseline", "nin_cifar100", "bn_nin_cifar10", "bn_vgg", "densenet_svhn",
                  "preact_resnet", "wrn"}


@pytest.mark.parametrize("path", [
    pytest.param(p, id=p.stem, marks=() if p.stem in _DEFAULT_SMOKE else pytest.mark.slow)
    for p in STUDIES])
def test_thesis_study_runs_one_trial_on_cpu(path: Path, tmp_path: Path,
                                            thesis_stores: dict[str, str]):
    cfg, first, trial0 = _first_trial(path)
    root = tmp_path / "data"
    _write_fake(cfg.data.dataset, root)
    argv = [
        "run", str(path), "--n-trials", "1", "--quiet", "--no-report",
        "--storage", thesis_stores["storage"], "--tracking-uri", thesis_stores["tracking_uri"],
        "--set", "train.max_epochs=1", "--set", f"data.subset={_subset(cfg.data.dataset)}",
        "--set", "train.limit_train_batches=2", "--set", f"data.root={root}",
        "--set", "tracking.register_best=false",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0

    study = optuna.load_study(study_name=cfg.name, storage=thesis_stores["storage"])
    # the other enqueued thesis trials wait in the storage for the next run
    done = [t for t in study.get_trials() if t.state.is_finished()]
    assert len(done) == 1 and done[0].number == 0
    t = done[0]
    assert t.state == optuna.trial.TrialState.COMPLETE, t.user_attrs
    # the trial that ran is the enqueued thesis recipe
    for key, value in first.items():
        assert t.params[key] == pytest.approx(value), key
    assert 0.0 <= t.value <= 1.0
    # and it trained the thesis's architecture for this dataset
    meta = describe_dataset(trial0.data.dataset)
    with torch.device("meta"):
        net = create_model(trial0.model.arch, num_classes=meta.num_classes,
                           in_chans=meta.in_chans, input_size=meta.image_size,
                           **trial0.model.kwargs())
    assert t.user_attrs["num_params"] == count_params(net)
