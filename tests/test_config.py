"""The study-file schema rejects bad input with the field named; overrides are type-checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import tiny_study

from hpstudy.config import ConfigError, from_dict, load_study, parse_set, trial_params
from hpstudy.search import space as sp


def test_minimal_study_gets_defaults():
    cfg = from_dict({"name": "x"})
    assert cfg.data.dataset == "digits"
    assert cfg.model.arch == "baseline_cnn"
    assert cfg.search.sampler.name == "tpe"
    assert cfg.direction == "maximize"
    assert from_dict({"name": "x", "search": {"metric": "val_loss"}}).direction == "minimize"


def test_shorthands_expand():
    cfg = from_dict({"name": "x", "train": {"scheduler": "cosine", "early_stopping": True},
                     "search": {"sampler": "random", "pruner": "hyperband"}})
    assert cfg.train.scheduler.name == "cosine"
    assert cfg.train.early_stopping.enabled is True
    assert cfg.search.sampler.name == "random"
    assert cfg.search.pruner.name == "hyperband"


BAD = [
    ({"data": {"batch_size": "big"}}, "data.batch_size", "integer"),
    ({"data": {"batch_size": 0}}, "data.batch_size", "greater than or equal to 1"),
    ({"train": {"lr": -0.1}}, "train.lr", "greater than 0"),
    ({"train": {"optimizer": "adamax"}}, "train.optimizer", "sgd"),
    ({"train": {"max_epochs": 1.5}}, "train.max_epochs", "integer"),
    ({"train": {"lrr": 0.1}}, "train.lrr", "unknown key"),
    ({"trian": {}}, "trian", "unknown key"),
    ({"train": {"scheduler": {"name": "warm"}}}, "train.scheduler.name", "constant"),
    ({"model": {"arch": "resnet9000"}}, None, "unknown model"),
    ({"model": {"arch": "mlp", "depth": 3}}, "model", "depth"),
    ({"model": {"init": "zeros"}}, "model.init", "he_normal"),
    ({"model": {"act_layer": "swishy"}}, "model.act_layer", "relu"),
    ({"model": {"drop_rate": 1.5}}, "model.drop_rate", "less than 1"),
    ({"data": {"dataset": "imagenet22k"}}, None, "unknown dataset"),
    ({"data": {"augmentation": "mixup"}}, "data.augmentation", "unknown augmentation"),
    ({"data": {"colour": True}}, "data", "unknown key(s) colour"),
    ({"search": {"sampler": "bayes"}}, "search.sampler.name", "tpe"),
    ({"search": {"pruner": {"name": "median", "foo": 1}}}, "search.pruner.foo", "unknown key"),
    ({"search": {"space": "everything"}}, "search.space", "unknown preset"),
    ({"search": {"space": {"train.lr": {"type": "float", "low": 0, "high": 1, "log": True}}}},
     "search.space.train.lr", "low > 0"),
    ({"search": {"space": {"train.lrate": [0.1, 0.01]}}}, "search.space.train.lrate", "unknown key"),
    ({"search": {"space": {"data.batch_size": [32, "big"]}}}, "search.space.data.batch_size",
     "'big'"),
    ({"search": {"space": {"train.optimizer": ["sgd", "lion"]}}}, "search.space.train.optimizer",
     "'lion'"),
    ({"search": {"enqueue": [{"train.momentum": 0.5}]}}, "search.enqueue[0].train.momentum",
     "not a key of the search space"),
    ({"name": "bad name!"}, "name", "pattern"),
    # the course's toolbox: transfer learning, regularizers, test-time augmentation
    ({"train": {"max_norm": 0}}, "train.max_norm", "greater than 0"),
    ({"train": {"l1": -1e-4}}, "train.l1", "greater than or equal to 0"),
    ({"train": {"finetune": "last"}}, "train.finetune", "'all', 'head' or 'batchnorm'"),
    ({"train": {"finetune": "batchnorm"}}, "train.finetune", "has none"),
    ({"train": {"tta": "rotate", "evaluate_test": True}}, "train.tta", "'flip', 'crop'"),
    ({"train": {"tta": "crop"}}, "train.tta", "evaluates nothing"),
    ({"train": {"tta": "flip", "evaluate_test": True}}, "train.tta", "do not survive mirroring"),
    ({"train": {"tta_on_val": True}}, "train.tta_on_val", "needs train.tta"),
    ({"model": {"init_from": "models:/only-a-name"}}, "model.init_from",
     "models:/<name>/<version>"),
    ({"model": {"init_from": "runs:/not-hex"}}, "model.init_from", "32 hex digits"),
    ({"model": {"init_from": " "}}, "model.init_from", "must name a registered model"),
]


@pytest.mark.parametrize(("patch", "field", "fragment"), BAD,
                         ids=[str(b[1] or b[2]) for b in BAD])
def test_bad_inputs_name_the_field(patch, field, fragment, write_study):
    raw = {"name": "x", **patch} if "name" not in patch else patch
    path = write_study(raw, "bad.yaml")
    with pytest.raises(ConfigError) as info:
        load_study(path)
    err = info.value
    assert err.source == str(path)
    if field is not None:
        assert err.field == field, str(err)
    assert fragment in str(err), str(err)


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such study file"):
        load_study(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("name: x\ntrain: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_study(p)
    assert info.value.field.startswith("line ")
    p.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_study(p)


def test_yaml_is_loaded_safely(tmp_path: Path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_study(p)


def test_set_overrides_are_type_checked(write_study):
    path = write_study(tiny_study())
    cfg = load_study(path, ["train.lr=0.5", "batch_size=16", "scheduler=step",
                            "model.hidden=[8, 8]", "data.augmentation=[pad_crop]"])
    assert cfg.train.lr == 0.5
    assert cfg.data.batch_size == 16
    assert cfg.train.scheduler.name == "step"
    assert cfg.model.kwargs()["hidden"] == [8, 8]
    with pytest.raises(ConfigError) as info:
        load_study(path, ["train.lr=fast"])
    assert info.value.field == "train.lr" and info.value.source.startswith("--set")
    with pytest.raises(ConfigError, match="unknown key") as info:
        load_study(path, ["train.nope=1"])
    assert info.value.field == "train.nope"
    with pytest.raises(ConfigError, match="key=value"):
        parse_set(["train.lr"])


def test_trial_params_are_flat_dotted_keys():
    cfg = from_dict(tiny_study())
    params = trial_params(cfg)
    for key in ("data.batch_size", "train.lr", "train.scheduler.name", "model.arch",
                "model.hidden", "train.early_stopping.patience"):
        assert key in params
    assert not any(k.startswith(("search.", "tracking.")) for k in params)


def test_course_space_follows_the_advice():
    space = sp.resolve_space("course")
    assert set(space) == {"train.lr", "data.batch_size", "train.weight_decay",
                          "model.drop_rate", "model.init", "train.optimizer"}
    lr = space["train.lr"]
    assert lr.log and lr.high < 1 and lr.high / lr.low >= 100  # orders of magnitude below 1
    bs = space["data.batch_size"].choices
    assert all(b & (b - 1) == 0 for b in bs)  # powers of two
    assert space["train.weight_decay"].allow_zero
    assert (space["model.drop_rate"].low, space["model.drop_rate"].high) == (0.0, 0.5)
    assert set(space["model.init"].choices) == {"he_normal", "he_uniform", "xavier_normal",
                                                "xavier_uniform", "orthogonal", "normal"}
    assert set(space["train.optimizer"].choices) == {"sgd", "momentum", "nesterov", "adagrad",
                                                     "adadelta", "rmsprop", "adam", "adamw",
                                                     "nadam"}


def test_space_preset_merge_and_removal():
    space = sp.resolve_space({"preset": "course", "lr": {"type": "float", "low": 0.01,
                                                         "high": 0.1, "log": True},
                              "model.init": None})
    assert space["train.lr"].low == 0.01
    assert "model.init" not in space
    assert "train.optimizer" in space


def test_sampling_maps_zero_decade_and_is_seeded():
    import optuna

    space = sp.resolve_space("course")

    def draw(seed: int) -> list[dict]:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        out = []
        for _ in range(60):
            t = study.ask()
            out.append(sp.suggest(t, space))
            study.tell(t, 0.0)
        return out

    a, b = draw(1), draw(1)
    assert a == b
    wds = [d["train.weight_decay"] for d in a]
    assert any(w == 0.0 for w in wds) and any(w > 0 for w in wds)
    assert all(w == 0.0 or 1e-6 <= w <= 1e-2 for w in wds)


def test_grid_needs_steps_or_choices():
    g = sp.grid(sp.resolve_space({"data.batch_size": [16, 32],
                                  "model.drop_rate": {"type": "float", "low": 0.0, "high": 0.5,
                                                      "step": 0.25}}))
    assert g == {"data.batch_size": [16, 32], "model.drop_rate": [0.0, 0.25, 0.5]}
    with pytest.raises(ConfigError, match="grid sampler"):
        sp.grid(sp.resolve_space("course"))


def test_config_round_trips_through_yaml():
    cfg = from_dict(tiny_study())
    again = from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
