"""Model zoo: every registered architecture, parametrized over the registry (timm style).

Per model: batch 2 at the smallest legal input, ``num_classes=7``, 1 and 3
input channels: output shape, finite outputs, a gradient for every parameter,
and for a GAP head the identity class activation maps rely on. Parameter
counts are checked against the thesis's table 4.6 and the papers on the meta
device (no memory, no init time), and the table behind ``hpstudy models``
against real builds. One Lightning ``fast_dev_run`` per family.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict

import pytest
import torch
import torch.nn as nn

from hpstudy.models import (
    _counts,
    cam_layers,
    count_params,
    create_model,
    list_models,
    model_info,
    model_kwargs,
    models_table,
    register_model,
)
from hpstudy.models._registry import natural_key

REQUIRED = {
    "mlp", "lenet5", "baseline_cnn", "alexnet", "alexnet_small",
    "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
    "bn_vgg15", "nin", "bn_nin", "googlenet",
    "preact_resnet20", "preact_resnet32", "preact_resnet44", "preact_resnet56",
    "preact_resnet110", "preact_resnet65", "preact_resnet83", "preact_resnet164",
    "wrn", "wrn40_4", "wrn28_10", "densenet", "densenet40_12", "densenet_bc100_12",
    "mobilenet_v2", "efficientnet_b0", "separable_cnn",
    # the course's architectures added with the generic CNN
    "cnn", "resnet", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "efficientnet", *(f"efficientnet_b{i}" for i in range(8)),
    "inception_v3", "inception_small", "xception", "xception_small",
}

# Parameters at the smallest input, 3 channels, 7 classes (meta device: free).
_TABLE = {r["name"]: r for r in models_table(in_chans=3, num_classes=7, input_size=1)}
# The ImageNet VGGs and AlexNet hold 57-140M parameters: a real build plus a
# backward pass takes seconds each on a shared 2-core CPU, so their real
# forward/backward runs with -m slow; the meta-device shape test covers them always.
HEAVY = 50_000_000


def _marked(names: list[str]) -> list:
    return [
        pytest.param(n, marks=pytest.mark.slow) if _TABLE[n]["params"] > HEAVY else n
        for n in names
    ]


def test_registry_has_every_required_model():
    missing = REQUIRED - set(list_models())
    assert not missing, f"not registered: {sorted(missing)}"


CONTRACT = {"num_classes", "in_chans", "drop_rate", "act_layer", "norm_layer"}


@pytest.mark.parametrize("name", list_models())
def test_builder_exposes_its_keyword_arguments(name: str):
    """The config checks ``model.foo`` by name: every builder must spell its arguments out."""
    accepted = model_kwargs(name)
    assert accepted is not None, f"{name}: builder hides its arguments behind **kwargs"
    assert CONTRACT <= accepted, f"{name}: lacks {sorted(CONTRACT - accepted)}"
    assert set(model_info(name).defaults) <= accepted  # a variant binds real arguments only
    with torch.device("meta"), pytest.raises(TypeError, match="does not take foo"):
        create_model(name, num_classes=7, in_chans=3, foo=1)


@pytest.mark.parametrize(
    ("builder", "defaults", "match"),
    [
        (lambda **kwargs: nn.Identity(), {}, "hides its arguments"),
        (lambda num_classes, in_chans, drop_rate, act_layer: nn.Identity(), {}, "lacks norm_layer"),
        (lambda num_classes, in_chans, drop_rate, act_layer, norm_layer: nn.Identity(),
         {"depth": 3}, "does not take depth"),
    ],
)
def test_register_model_rejects_unreadable_builders(builder, defaults: dict, match: str):
    with pytest.raises(TypeError, match=match):
        register_model("_bad_builder", family="test", native_size=8, min_size=1,
                       **defaults)(builder)
    assert "_bad_builder" not in list_models()


def test_config_checks_arguments_of_the_default_architecture():
    """baseline_cnn (the default) used to take **kwargs, which skipped this check."""
    from hpstudy.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="'baseline_cnn' does not take foo .*it takes .*widths"):
        from_dict({"name": "x", "model": {"foo": 1}})
    assert from_dict({"name": "x", "model": {"widths": [8, 16]}}).model.kwargs() == {
        "widths": [8, 16]}


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", _marked(list_models()))
def test_forward_backward_at_min_size(name: str, in_chans: int):
    torch.manual_seed(0)
    size = model_info(name).min_size
    model = create_model(name, num_classes=7, in_chans=in_chans, input_size=size)
    model.train()
    out = model(torch.randn(2, in_chans, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters outside the forward path: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert sum(p.grad.abs().sum() for p in model.parameters()) > 0
    if in_chans == 3:  # same build: the GAP head's promise, checked where it is cheap
        _check_gap_head(model, torch.randn(2, in_chans, size, size))


def _check_gap_head(model: nn.Module, x: torch.Tensor) -> None:
    """Where a model declares a GAP head: logits == classifier(mean over H, W of features)."""
    layers = cam_layers(model)
    if layers is None:
        return
    model.eval()
    maps = []
    handle = layers.features.register_forward_hook(lambda m, i, o: maps.append(o.detach()))
    with torch.no_grad():
        out = model(x)
    handle.remove()
    assert len(maps) == 1 and maps[0].dim() == 4
    assert maps[0].shape[1] == layers.classifier.in_features
    torch.testing.assert_close(out, layers.classifier(maps[0].mean((2, 3))), rtol=1e-4, atol=1e-5)


GAP_FAMILIES = {"resnet", "densenet", "separable", "googlenet", "mobilenet", "efficientnet",
                "inception", "xception", "cnn"}


@pytest.mark.parametrize("name", list_models())
def test_gap_head_is_declared_where_the_architecture_has_one(name: str):
    with torch.device("meta"):
        model = create_model(name, num_classes=7, in_chans=3, input_size=model_info(name).min_size)
    layers = cam_layers(model)
    assert (layers is not None) == (model_info(name).family in GAP_FAMILIES), name
    if layers is not None:
        assert layers.classifier.out_features == 7


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("resnet20", {"head": "fc"}), ("preact_resnet20", {"head": "fc"}), ("wrn", {"head": "fc"}),
     ("cnn", {"head": "fc"}), ("cnn", {"hidden": 16}), ("bn_vgg15", {"head": "gap"}),
     ("vgg11", {})],
)
def test_fc_head_or_hidden_layers_have_no_cam(name: str, kwargs: dict):
    with torch.device("meta"):
        model = create_model(name, num_classes=7, in_chans=3, input_size=32, **kwargs)
    assert cam_layers(model) is None


@pytest.mark.parametrize(("name", "kwargs"), [("bn_vgg15", {"head": "gap", "hidden": 0}),
                                               ("vgg11", {"head": "gap"})])
def test_vgg_gap_head_gives_cam_layers(name: str, kwargs: dict):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=3, **kwargs)
    assert cam_layers(model) is not None
    _check_gap_head(model, torch.randn(2, 3, 32, 32))


def _meta_cases() -> list[tuple[str, int, int]]:
    """(name, size, in_chans) for the meta-device forward test.

    Native size for every model whose head depends on the input side (it takes
    ``input_size``); the full min-size grid for the heavy models, whose real
    forward/backward is marked slow.
    """
    cases = []
    for name in list_models():
        info = model_info(name)
        if "input_size" in model_kwargs(name) or _TABLE[name]["params"] > HEAVY:
            cases.append((name, info.native_size, 3))
        if _TABLE[name]["params"] > HEAVY:
            cases += [(name, info.min_size, c) for c in (1, 3)]
    return cases


@pytest.mark.parametrize(("name", "size", "in_chans"), _meta_cases())
def test_meta_forward_shape(name: str, size: int, in_chans: int):
    with torch.device("meta"):
        model = create_model(name, num_classes=7, in_chans=in_chans, input_size=size)
        out = model(torch.empty(2, in_chans, size, size))
    assert out.shape == (2, 7)


@pytest.mark.parametrize("name", list_models())
def test_common_kwargs_take_effect(name: str):
    """drop_rate, act_layer and norm_layer are accepted by every model and change it."""
    size = model_info(name).min_size

    def build(**hp) -> nn.Module:
        with torch.device("meta"):
            return create_model(name, num_classes=7, in_chans=3, input_size=size, **hp)

    m = build(drop_rate=0.37)
    assert any(isinstance(x, nn.Dropout) and x.p == 0.37 for x in m.modules())

    m = build(act_layer="elu")
    assert any(isinstance(x, nn.ELU) for x in m.modules())
    assert not any(isinstance(x, nn.ReLU | nn.ReLU6 | nn.SiLU) for x in m.modules())

    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)
    m = build(norm_layer="group")
    assert any(isinstance(x, nn.GroupNorm) for x in m.modules())
    assert not any(isinstance(x, nn.BatchNorm1d | nn.BatchNorm2d) for x in m.modules())
    m = build(norm_layer="none")
    assert not any(isinstance(x, norms) for x in m.modules())


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "prelu", "elu", "selu", "gelu"])
@pytest.mark.parametrize("norm", ["batch", "none", "layer", "group"])
def test_every_act_norm_pair_trains(act: str, norm: str):
    """Activation x normalization on a residual net (shortcuts share the block input)."""
    torch.manual_seed(0)
    model = create_model("preact_resnet20", num_classes=7, in_chans=3, act_layer=act,
                         norm_layer=norm)
    x = torch.randn(2, 3, 8, 8)
    out = model(x)
    out.square().mean().backward()
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", _marked(list_models()))
def test_inplace_activations_do_not_clobber_shared_tensors(name: str):
    """Without normalization an in-place activation would edit a shortcut or a concatenation.

    ELU: in place and not idempotent, so a clobbered tensor changes the output
    (ReLU would hide it wherever every consumer applies ReLU again).
    """
    torch.manual_seed(0)
    size = model_info(name).min_size
    model = create_model(name, num_classes=7, in_chans=3, input_size=size, norm_layer="none",
                         act_layer="elu")
    model.eval()
    reference = copy.deepcopy(model)
    for m in reference.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    x = torch.randn(2, 3, size, size)
    x_before = x.clone()
    with torch.no_grad():
        out, expected = model(x), reference(x)
    assert torch.equal(x, x_before)
    torch.testing.assert_close(out, expected)


def test_nin_variant_by_input_and_by_name():
    def params(in_chans: int, **kw) -> int:
        with torch.device("meta"):
            return count_params(create_model("nin", num_classes=10, in_chans=in_chans, **kw))

    assert params(1) == params(1, variant="mnist") < 400_000
    assert params(3) == params(3, variant="cifar")
    assert params(3, variant="svhn") > params(3) > params(1)
    with pytest.raises(ValueError, match="variant"):
        params(3, variant="imagenet")


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("preact_resnet", {"depth": 21}, "6n\\+2"),
        ("preact_resnet", {"depth": 57, "block": "bottleneck"}, "9n\\+2"),
        ("wrn", {"depth": 30}, "6n\\+4"),
        ("densenet", {"depth": 41}, "3n\\+4"),
        ("densenet", {"depth": 44, "bottleneck": True}, "6n\\+4"),
        ("vgg11", {"cfg": "vgg12"}, "unknown VGG cfg"),
    ],
)
def test_bad_architecture_kwargs_raise(name: str, kwargs: dict, match: str):
    with torch.device("meta"), pytest.raises(ValueError, match=match):
        create_model(name, num_classes=10, in_chans=3, **kwargs)


def test_general_builders_match_named_variants():
    def params(name: str, **kw) -> int:
        with torch.device("meta"):
            return count_params(create_model(name, num_classes=10, in_chans=3, **kw))

    assert params("wrn", depth=40, widen_factor=4) == params("wrn40_4")
    assert params("preact_resnet", depth=164, block="bottleneck") == params("preact_resnet164")
    assert params("densenet", depth=100, growth_rate=12, bottleneck=True,
                  compression=0.5) == params("densenet_bc100_12")


# ----------------------------------------------------- thesis table 4.6
# shared/reference/thesis_table_4_6.csv: (arch_key, params, dataset), one row per line.
THESIS_ROWS = [
    ("baseline_cnn", 682_000, "mnist"),
    ("nin", 358_000, "mnist"), ("nin", 1_600_000, "cifar10"), ("nin", 1_600_000, "cifar10+"),
    ("nin", 1_600_000, "cifar100"), ("nin", 1_600_000, "cifar100+"), ("nin", 2_000_000, "svhn"),
    ("bn_nin", 358_000, "mnist"), ("bn_nin", 1_600_000, "cifar10"),
    ("bn_nin", 1_600_000, "cifar10+"), ("bn_nin", 1_600_000, "cifar100"),
    ("bn_nin", 1_600_000, "cifar100+"), ("bn_nin", 2_000_000, "svhn"),
    ("bn_vgg15", 15_000_000, "cifar10"), ("bn_vgg15", 15_000_000, "cifar10+"),
    ("bn_vgg15", 15_000_000, "cifar100"), ("bn_vgg15", 15_000_000, "cifar100+"),
    ("preact_resnet20", 272_000, "cifar10+"), ("preact_resnet32", 467_000, "cifar10+"),
    ("preact_resnet44", 661_000, "cifar10+"), ("preact_resnet56", 856_000, "cifar10+"),
    ("preact_resnet65", 683_000, "cifar10+"), ("preact_resnet83", 868_000, "cifar10+"),
    ("preact_resnet110", 1_700_000, "cifar10+"), ("preact_resnet164", 1_700_000, "cifar10+"),
    ("wrn40_4", 8_900_000, "cifar10+"), ("wrn28_10", 36_500_000, "cifar10+"),
    ("densenet40_12", 1_000_000, "cifar10"), ("densenet40_12", 1_000_000, "cifar10+"),
    ("densenet40_12", 1_000_000, "cifar100"), ("densenet40_12", 1_000_000, "cifar100+"),
    ("densenet40_12", 1_000_000, "svhn"),
    ("densenet_bc100_12", 768_000, "cifar10"), ("densenet_bc100_12", 768_000, "cifar10+"),
    ("densenet_bc100_12", 768_000, "cifar100"), ("densenet_bc100_12", 768_000, "cifar100+"),
]
# dataset -> (in_chans, num_classes, input_size, NiN filter variant)
DATASETS = {
    "mnist": (1, 10, 28, "mnist"),
    "cifar10": (3, 10, 32, "cifar"),
    "cifar100": (3, 100, 32, "cifar"),
    "svhn": (3, 10, 32, "svhn"),
}


def _thesis_params(arch: str, dataset: str, num_classes: int | None = None) -> int:
    in_chans, classes, size, variant = DATASETS[dataset.rstrip("+")]
    kw = {"variant": variant} if "variant" in model_kwargs(arch) else {}
    with torch.device("meta"):
        model = create_model(arch, num_classes=num_classes or classes, in_chans=in_chans,
                             input_size=size, **kw)
    return count_params(model)


@pytest.mark.parametrize(("arch", "thesis", "dataset"), THESIS_ROWS,
                         ids=[f"{a}-{d}" for a, _, d in THESIS_ROWS])
def test_param_count_matches_thesis(arch: str, thesis: int, dataset: str):
    ours = _thesis_params(arch, dataset)
    expected = thesis
    if dataset.startswith("cifar100"):
        # The thesis (like the DenseNet paper) prints one count per network, the
        # 10-class one, on its CIFAR-100 rows too: a 100-class head adds
        # 90 x (features + 1) parameters (41K on DenseNet-40, 6% of the net).
        expected += ours - _thesis_params(arch, "cifar10")
    assert abs(ours - expected) <= 0.03 * expected, (
        f"{arch} on {dataset}: {ours:,} parameters, thesis {thesis:,} (expected {expected:,})"
    )


def test_cifar100_rows_differ_from_cifar10_only_by_the_head():
    """Guards the CIFAR-100 adjustment above: only the last layer grows."""
    for arch in ("densenet40_12", "densenet_bc100_12", "nin", "bn_vgg15"):
        delta = _thesis_params(arch, "cifar100") - _thesis_params(arch, "cifar10")
        assert 0 < delta <= 90 * (512 + 1), arch  # widest head input here: 512


# ---------------------------------------------------------------- table
def test_names_sort_naturally():
    names = list_models()
    assert names == sorted(names, key=natural_key)
    pos = {n: i for i, n in enumerate(names)}
    for small, big in [
        ("preact_resnet20", "preact_resnet110"), ("preact_resnet83", "preact_resnet164"),
        ("resnet56", "resnet110"), ("vgg11", "vgg11_bn"), ("vgg11_bn", "vgg13"), ("wrn", "wrn28_10"),
        ("wrn28_10", "wrn40_4"), ("preact_resnet", "preact_resnet20"),
        ("efficientnet_b1", "efficientnet_b7"),
    ]:
        assert pos[small] < pos[big], (small, big)
    assert list_models("preact_resnet*") == [
        "preact_resnet", *(f"preact_resnet{d}" for d in (20, 32, 44, 56, 65, 83, 110, 164))]
    assert sorted(["a10b2", "a9b10", "a10b10", "a", "b1"], key=natural_key) == [
        "a", "a9b10", "a10b2", "a10b10", "b1"]


def test_models_table_rows():
    rows = models_table(in_chans=1, num_classes=10, input_size=28)
    assert [r["name"] for r in rows] == list_models()
    assert set(rows[0]) == {"name", "family", "params", "native_size", "min_size",
                            "description"}
    by_name = {r["name"]: r for r in rows}
    # counted on the meta device, equal to a real build's count
    real = create_model("mlp", num_classes=10, in_chans=1, input_size=28)
    assert by_name["mlp"]["params"] == count_params(real)
    assert by_name["baseline_cnn"]["params"] == _thesis_params("baseline_cnn", "mnist")
    assert by_name["wrn28_10"]["family"] == by_name["preact_resnet164"]["family"] == "resnet"
    assert by_name["vgg16"]["native_size"] == 224 and by_name["vgg16"]["min_size"] == 32
    assert all(r["min_size"] <= r["native_size"] for r in rows)
    assert all(isinstance(r["params"], int) and r["params"] > 0 for r in rows)


def test_models_table_counts_below_min_size_at_min_size():
    """What the data module feeds: inputs smaller than a model's minimum are upsampled."""
    def params(name: str, size: int) -> int:
        with torch.device("meta"):
            return count_params(create_model(name, num_classes=7, in_chans=3, input_size=size))

    assert _TABLE["bn_vgg15"]["params"] == params("bn_vgg15", 32)  # table asked for 1 px
    assert _TABLE["alexnet_small"]["params"] == params("alexnet_small", 8)
    assert params("alexnet_small", 8) < params("alexnet_small", 32)  # the dense head grows


def test_param_count_table_is_current():
    """hpstudy/models/_param_counts.py must come from the current sources, or the table is slow."""
    assert _counts.table_is_current(), (
        "hpstudy/models changed since _param_counts.py was generated: "
        "run `python -m hpstudy.models._counts` and commit the result"
    )


def _stored_formulas() -> list[str]:
    """The models the generated table has a formula for (the rest are built at each call:
    size-dependent or not affine). Read from the file itself, so a stale table still lists
    them and the test below fails instead of quietly skipping."""
    from hpstudy.models import _param_counts
    return sorted(_param_counts.FORMULAS)


@pytest.mark.parametrize("name", _stored_formulas())
def test_param_count_table_matches_a_real_build(name: str):
    """Every stored formula, at a point it was not fitted on, equals a meta build."""
    f = _counts.formula(name)
    assert f is not None, "table is stale: run `python -m hpstudy.models._counts`"
    size = model_info(name).min_size
    assert _counts.evaluate(f, 1, 7) == _counts.built_count(name, 1, 7, size)


def test_a_stale_param_count_table_is_ignored(monkeypatch):
    assert _counts.formula("resnet20") is not None
    monkeypatch.setattr(_counts, "source_fingerprint", lambda: "edited")
    _counts._table.cache_clear()
    try:
        assert _counts.formula("resnet20") is None
        assert not _counts.table_is_current()
        row = next(r for r in models_table() if r["name"] == "resnet20")
        assert row["params"] == _counts.built_count("resnet20", 3, 10, 32)  # built instead
    finally:
        monkeypatch.undo()
        _counts._table.cache_clear()


def test_models_table_is_fast_in_a_fresh_process():
    """`hpstudy models` builds almost nothing and never imports torchvision (2 s alone)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]  # this checkout's hpstudy, not an installed one
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    code = (
        "import sys, time\n"
        "import torch\n"
        "t = time.perf_counter()\n"
        "from hpstudy.models import models_table\n"
        "rows = models_table()\n"
        "print(time.perf_counter() - t, len(rows), 'torchvision' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120, cwd=root, env=env).stdout.split()
    seconds, rows, torchvision = float(out[0]), int(out[1]), out[2] == "True"
    assert rows == len(list_models())
    assert not torchvision
    assert seconds < 1.5, f"models_table took {seconds:.2f} s after importing torch"


# ------------------------------------------------------ Lightning, per family
def _family_representatives() -> list:
    """The smallest model of each family (by parameters at its minimum input)."""
    fams: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for name, row in _TABLE.items():
        fams[row["family"]].append((row["params"], name))
    return _marked(sorted(min(v)[1] for v in fams.values()))


@pytest.mark.parametrize("name", _family_representatives())
def test_lightning_fast_dev_run(name: str):
    from hpstudy.config import from_dict
    from hpstudy.train import build_datamodule, build_module, build_trainer

    cfg = from_dict({
        "name": "zoo",
        "data": {"dataset": "digits", "batch_size": 4, "subset": 32},
        "model": {"arch": name, "init": "he_normal"},
        "train": {"max_epochs": 1, "optimizer": "sgd", "lr": 0.05, "accelerator": "cpu"},
        "search": {"space": "none"},
    })
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm)
    assert dm.input_size == max(8, model_info(name).min_size)  # digits are 8x8, upsampled
    before = {k: v.detach().clone() for k, v in module.net.named_parameters()}
    trainer = build_trainer(cfg, [], fast_dev_run=1)
    trainer.fit(module, datamodule=dm)
    assert trainer.state.finished
    assert math.isfinite(float(trainer.callback_metrics["train_loss"]))
    changed = [k for k, v in module.net.named_parameters() if not torch.equal(v, before[k])]
    assert changed, "one optimizer step changed no weight"
