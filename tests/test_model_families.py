"""Family-specific checks of the course's architectures: the options do what they say.

Post- vs pre-activation ResNets, GAP vs fully connected heads, EfficientNet's
compound scaling against torchvision's reference counts, Inception-v3's
factorized kernels, Xception's separable convolutions and residuals, and the
generic CNN's conv-level hyperparameters (every combination either builds a
network whose forward pass works, or fails at build time naming the argument).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from hpstudy.models import cam_layers, count_params, create_model, model_info, models_table


def _meta(name: str, **kw) -> nn.Module:
    kw.setdefault("num_classes", 10)
    kw.setdefault("in_chans", 3)
    with torch.device("meta"):
        return create_model(name, **kw)


def _params(name: str, **kw) -> int:
    return count_params(_meta(name, **kw))


# ------------------------------------------------------------------- ResNet
# He et al. 2016a, table 6 (CIFAR-10): 0.27M, 0.46M, 0.66M, 0.85M, 1.7M.
HE_2016A = {"resnet20": 270_000, "resnet32": 460_000, "resnet44": 660_000,
            "resnet56": 850_000, "resnet110": 1_700_000}


@pytest.mark.parametrize(("name", "paper"), HE_2016A.items())
def test_post_activation_resnet_counts_match_the_paper(name: str, paper: int):
    assert abs(_params(name) - paper) <= 0.03 * paper


def _block_outputs(name: str) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=3)
    outs: list[torch.Tensor] = []
    for stage in model.stages:
        for block in stage:
            block.register_forward_hook(lambda m, i, o: outs.append(o.detach()))
    model(torch.randn(2, 3, 16, 16))
    return outs


def test_post_activation_blocks_end_activated_pre_activation_blocks_do_not():
    post, pre = _block_outputs("resnet20"), _block_outputs("preact_resnet20")
    assert len(post) == len(pre) == 9
    assert all((o >= 0).all() for o in post)  # ReLU after the addition
    assert all((o < 0).any() for o in pre)  # a conv output plus the shortcut


def test_post_and_pre_activation_are_one_option_of_one_family():
    assert model_info("resnet56").family == model_info("preact_resnet56").family == "resnet"
    assert _params("resnet", depth=56) == _params("resnet56")
    assert _params("preact_resnet", depth=56, preact=False) == _params("resnet56")
    assert type(_meta("resnet56")) is type(_meta("preact_resnet56"))
    from hpstudy.models.resnet import Bottleneck, PreActBottleneck

    post_bottleneck = _meta("resnet", depth=164, block="bottleneck")
    blocks = [type(b) for stage in post_bottleneck.stages for b in stage]
    assert blocks == [Bottleneck] * 54
    pre_bottleneck = _meta("preact_resnet164")
    assert {type(b) for stage in pre_bottleneck.stages for b in stage} == {PreActBottleneck}


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet20", "wrn"])
def test_resnet_fc_head_grows_with_the_input_gap_head_does_not(name: str):
    gap = {s: _params(name, input_size=s) for s in (8, 32)}
    fc = {s: _params(name, input_size=s, head="fc") for s in (8, 32)}
    assert gap[8] == gap[32]
    assert fc[32] > fc[8] > gap[8]
    chs = _meta(name).num_features
    # 32 px -> 8x8 maps after two stride-2 stages; 8 px -> 2x2
    assert fc[32] - fc[8] == (64 - 4) * chs * 10
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=3, input_size=9, head="fc")
    assert model(torch.randn(2, 3, 9, 9)).shape == (2, 10)  # odd sides: ceil(9/2)=5, ceil(5/2)=3


# ------------------------------------------------------------------ VGG heads
def test_vgg_gap_head_replaces_the_dense_layers():
    fc, gap = _params("vgg16", num_classes=10), _params("vgg16", num_classes=10, head="gap")
    features = _params("vgg16", num_classes=10) - sum(
        p.numel() for p in _meta("vgg16").classifier.parameters())
    assert gap == features + 512 * 10 + 10
    assert fc - gap > 100_000_000  # the 7x7x512 -> 4096 -> 4096 head
    small = _params("bn_vgg15", head="gap", hidden=0)
    assert small == _params("bn_vgg15") - (512 * 512 + 512 + 2 * 512 + 512 * 10 + 10) + 512 * 10 + 10


# -------------------------------------------------------------- EfficientNet
@pytest.mark.parametrize("variant", [f"b{i}" for i in range(8)])
def test_efficientnet_variants_match_torchvision(variant: str):
    """Counts at 1000 classes equal torchvision's published ones; native size = the paper's."""
    from torchvision.models import get_model_weights

    weights = get_model_weights(f"efficientnet_{variant}").IMAGENET1K_V1
    rows = {r["name"]: r for r in models_table(in_chans=3, num_classes=1000)}
    row = rows[f"efficientnet_{variant}"]
    assert row["params"] == weights.meta["num_params"]
    assert row["native_size"] == PAPER_RESOLUTION[variant]


# Tan & Le 2019, table 2 (torchvision evaluates some at other crops, e.g. B2 at 288)
PAPER_RESOLUTION = {"b0": 224, "b1": 240, "b2": 260, "b3": 300, "b4": 380, "b5": 456,
                    "b6": 528, "b7": 600}


def test_efficientnet_one_builder_scales_width_and_depth():
    assert _params("efficientnet", width_mult=2.0, depth_mult=3.1) == _params("efficientnet_b7")
    deeper = _params("efficientnet", depth_mult=2.0)
    wider = _params("efficientnet", width_mult=2.0)
    assert _params("efficientnet_b0") < deeper < wider
    assert _meta("efficientnet_b5").classifier[0].p == 0.4  # the variant's dropout


@pytest.mark.parametrize(("stem_stride", "side"), [(2, 1), (1, 2)])
def test_efficientnet_stem_stride_for_small_images(stem_stride: int, side: int):
    model = _meta("efficientnet_b0", stem_stride=stem_stride)
    with torch.device("meta"):
        maps = model.features(torch.empty(2, 3, 32, 32))
        assert model(torch.empty(2, 3, 32, 32)).shape == (2, 10)
    assert maps.shape[-2:] == (side, side)
    assert _params("efficientnet_b0", stem_stride=stem_stride) == _params("efficientnet_b0")
    with pytest.raises(ValueError, match="stem_stride"):
        _meta("efficientnet_b0", stem_stride=3)


# ----------------------------------------------------------------- Inception
def test_inception_v3_matches_torchvision_without_aux_head():
    from torchvision.models import inception_v3

    with torch.device("meta"):
        reference = inception_v3(weights=None, aux_logits=False, init_weights=False)
    assert _params("inception_v3", num_classes=1000) == count_params(reference)


@pytest.mark.parametrize("n", [3, 5, 7])
def test_inception_factorizes_nxn_into_1xn_and_nx1(n: int):
    factorized = _meta("inception_small", kernel_size=n)
    full = _meta("inception_small", kernel_size=n, factorize=False)

    def kernels(model: nn.Module) -> set[tuple[int, int]]:
        return {m.kernel_size for m in model.modules() if isinstance(m, nn.Conv2d)}

    assert {(1, n), (n, 1)} <= kernels(factorized)
    assert (n, n) in kernels(full)
    if n != 3:  # stage C's expanded filter bank has 1x3 and 3x1 convs either way
        assert (1, n) not in kernels(full) and (n, n) not in kernels(factorized)
    # 2n weights per channel pair instead of n^2 on stage B
    assert count_params(full) - count_params(factorized) > 0
    w = 64 * 2 // 4  # stage B's branch width
    convs_per_block = 3  # one NxN in one branch, two in the other
    expected = 2 * convs_per_block * w * w * (n * n - 2 * n)  # 2 blocks, no bias (batch norm)
    expected -= 2 * convs_per_block * 2 * w  # the extra norm (weight, bias) per factorized pair
    assert count_params(full) - count_params(factorized) == expected


@pytest.mark.parametrize("kwargs", [{"kernel_size": 4}, {"width": 60}, {"blocks": 0}])
def test_inception_small_rejects_bad_arguments(kwargs: dict):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        _meta("inception_small", **kwargs)


# ------------------------------------------------------------------ Xception
def test_xception_matches_the_reference_count():
    # Keras's Xception: 22,910,480 parameters, 22,855,952 of them trainable
    # (the difference is batch norm's running statistics, buffers in PyTorch)
    assert _params("xception", num_classes=1000) == 22_855_952


def test_xception_uses_separable_convs_with_residuals():
    model = _meta("xception")
    convs = [m for m in model.features.middle.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8 * 3 * 2  # eight blocks of three (depthwise, pointwise) pairs
    assert all(c.groups == c.in_channels == c.out_channels and c.kernel_size == (3, 3)
               or c.kernel_size == (1, 1) for c in convs)
    torch.manual_seed(0)
    small = create_model("xception_small", num_classes=10, in_chans=3, norm_layer="none")
    block = small.features.middle[0]
    x = torch.randn(2, block.layers[1][0].in_channels, 4, 4)
    # the residual: with every conv weight zero, a middle block is the identity
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
        torch.testing.assert_close(block(x), x)


# --------------------------------------------------------------- generic CNN
def test_cnn_hyperparameters_reach_the_layers():
    m = _meta("cnn", width=16, stages=3, width_mult=1.5, convs_per_stage=2, kernel_size=5,
              stride=2, dilation=2, pool="avg", pool_size=2, input_size=128)
    convs = [c for c in m.features if isinstance(c, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 24, 24, 36, 36]
    assert {c.kernel_size for c in convs} == {(5, 5)}
    assert {c.dilation for c in convs} == {(2, 2)}
    assert [c.stride for c in convs] == [(2, 2), (1, 1)] * 3
    assert sum(isinstance(x, nn.AvgPool2d) for x in m.features) == 3
    m = _meta("cnn", filters=[8, 16], pool="none", conv_drop_rate=0.1)
    assert [c.out_channels for c in m.features if isinstance(c, nn.Conv2d)] == [8, 8, 16, 16]
    assert not any(isinstance(x, nn.MaxPool2d | nn.AvgPool2d) for x in m.features)
    assert sum(isinstance(x, nn.Dropout) and x.p == 0.1 for x in m.features) == 2
    m = _meta("cnn", hidden=64, hidden_layers=2, drop_rate=0.3)
    assert [x.out_features for x in m.hidden if isinstance(x, nn.Linear)] == [64, 64]
    assert cam_layers(m) is None and cam_layers(_meta("cnn")) is not None
    m = _meta("cnn", hidden=[32, 16])
    assert [x.out_features for x in m.hidden if isinstance(x, nn.Linear)] == [32, 16]


CNN_GRID = [
    {},
    {"kernel_size": 5, "padding": "valid", "stages": 2},
    {"kernel_size": 4, "padding": "same"},  # even kernel: PyTorch pads asymmetrically
    {"kernel_size": 4, "padding": "same", "stride": 2, "stages": 2},
    {"kernel_size": 3, "dilation": 3, "padding": "same", "stride": 2, "stages": 2},
    {"kernel_size": 3, "dilation": 2, "padding": 1, "pool_size": 3, "stages": 2},
    {"kernel_size": 7, "padding": 0, "stride": 3, "pool": "none", "convs_per_stage": 1,
     "stages": 2},
    {"stages": 4, "pool": "avg", "pool_size": 2, "convs_per_stage": 3},
]


@pytest.mark.parametrize("kwargs", CNN_GRID, ids=[str(i) for i in range(len(CNN_GRID))])
def test_cnn_builds_exactly_where_its_maps_fit(kwargs: dict):
    """Every size either builds and runs (fc head sized right) or fails at build naming the cause.

    The build-time arithmetic must agree with PyTorch: a wrong side would make
    the fc head's Linear reject the flattened maps, or let a 0-px map through.
    """
    built = []
    for size in range(1, 49):
        try:
            model = _meta("cnn", input_size=size, head="fc", **kwargs)
        except ValueError as e:
            assert "does not fit" in str(e) and f"input_size={size}" in str(e)
            assert ("kernel_size=" in str(e)) or ("pool_size=" in str(e))
            continue
        with torch.device("meta"):
            assert model(torch.empty(2, 3, size, size)).shape == (2, 10)
        built.append(size)
    assert built and built == list(range(built[0], 49))  # a threshold, not holes


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel_size": 7, "padding": "valid", "input_size": 16}, "kernel_size=7"),
        ({"stages": 5, "input_size": 16}, "pool_size=2 .* stage 5"),
        ({"pool_size": 64, "input_size": 32}, "pool_size=64"),
        ({"filters": [8, 16], "width": 8}, "filters .* or width"),
        ({"filters": []}, "filters"),
        ({"stages": 0}, "stages"),
        ({"width_mult": 0.0}, "width_mult"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"stride": 0}, "stride"),
        ({"dilation": 0}, "dilation"),
        ({"convs_per_stage": 0}, "convs_per_stage"),
        ({"pool": "min"}, "pool must be"),
        ({"padding": "full"}, "padding"),
        ({"padding": -1}, "padding"),
        ({"head": "mlp"}, "head must be"),
        ({"hidden": -4}, "hidden"),
        ({"hidden": [8], "hidden_layers": 2}, "hidden_layers"),
    ],
)
def test_cnn_rejects_bad_arguments_naming_them(kwargs: dict, match: str):
    with pytest.raises(ValueError, match=match):
        _meta("cnn", **kwargs)


def test_cnn_arguments_are_plain_values_a_trial_can_sample():
    """Every argument has a scalar form (lists only as alternatives), as Optuna needs."""
    import inspect

    from hpstudy.models.cnn import GenericCNN

    sampled = {"width": 24, "stages": 2, "width_mult": 1.5, "convs_per_stage": 1,
               "kernel_size": 5, "stride": 1, "padding": "same", "dilation": 2, "pool": "avg",
               "pool_size": 2, "conv_drop_rate": 0.1, "head": "fc", "hidden": 32,
               "hidden_layers": 2, "drop_rate": 0.4, "act_layer": "elu", "norm_layer": "group"}
    params = set(inspect.signature(GenericCNN).parameters)
    assert params - set(sampled) == {"num_classes", "in_chans", "input_size", "filters"}
    assert all(isinstance(v, int | float | str) for v in sampled.values())
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=7, in_chans=1, input_size=12, **sampled)
    assert model(torch.randn(2, 1, 12, 12)).shape == (2, 7)
