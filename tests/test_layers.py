"""Training helpers of ``hpstudy.models.layers``: the max-norm constraint and weights-only groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from hpstudy.models import apply_max_norm, create_model, list_models, param_groups_weights_only


def _unit_norms(w: torch.Tensor) -> torch.Tensor:
    return w.detach().flatten(1).norm(dim=1)


def test_max_norm_clips_only_the_units_above_c():
    torch.manual_seed(0)
    lin = nn.Linear(5, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([
            [3.0, 4.0, 0.0, 0.0, 0.0],   # norm 5 -> 3
            [0.3, 0.4, 0.0, 0.0, 0.0],   # norm 0.5: untouched
            [-6.0, 0.0, 8.0, 0.0, 0.0],  # norm 10 -> 3
            [0.0, 0.0, 0.0, 3.0, 0.0],   # norm exactly 3: untouched
        ]))
    before = lin.weight.detach().clone()
    bias = lin.bias.detach().clone()
    assert apply_max_norm(lin, 3.0) is lin
    w = lin.weight.detach()
    torch.testing.assert_close(_unit_norms(w), torch.tensor([3.0, 0.5, 3.0, 3.0]))
    assert torch.equal(w[1], before[1]) and torch.equal(w[3], before[3])
    torch.testing.assert_close(w[0], before[0] * 3 / 5)  # direction kept
    torch.testing.assert_close(w[2], before[2] * 3 / 10)
    assert torch.equal(lin.bias, bias)
    # in place on a leaf that requires grad: only legal under no_grad, and stays a leaf
    assert lin.weight.is_leaf and lin.weight.requires_grad


def test_max_norm_on_a_network_caps_every_filter_and_leaves_the_rest():
    torch.manual_seed(0)
    model = create_model("preact_resnet20", num_classes=7, in_chans=3)
    with torch.no_grad():  # make many filters exceed c
        for p in model.parameters():
            p.mul_(20)
    kernels, others = param_groups_weights_only(model)
    before_k = [_unit_norms(p) for p in kernels]
    before_o = [p.detach().clone() for p in others]
    c = 3.5
    apply_max_norm(model, c)
    clipped = 0
    for p, norms in zip(kernels, before_k, strict=True):
        after = _unit_norms(p)
        assert (after <= c * (1 + 1e-5)).all()
        inside = norms <= c
        torch.testing.assert_close(after[inside], norms[inside])  # untouched
        torch.testing.assert_close(after[~inside], torch.full_like(after[~inside], c))
        clipped += int((~inside).sum())
    assert clipped > 100
    assert all(torch.equal(p, b) for p, b in zip(others, before_o, strict=True))
    out = model(torch.randn(2, 3, 8, 8))
    out.sum().backward()  # still a normal trainable network afterwards
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_max_norm_rejects_non_positive_c(bad: float):
    with pytest.raises(ValueError, match="max_norm"):
        apply_max_norm(nn.Linear(2, 2), bad)


def test_weights_only_groups_split_kernels_from_the_rest():
    conv = nn.Conv2d(3, 4, 3)
    bn = nn.BatchNorm2d(4)
    act = nn.PReLU()
    fc = nn.Linear(4, 2)
    frozen = nn.Linear(2, 2)
    frozen.requires_grad_(False)
    model = nn.Sequential(conv, bn, act, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc, frozen)
    decay, no_decay = param_groups_weights_only(model)
    assert [id(p) for p in decay] == [id(conv.weight), id(fc.weight)]
    assert [id(p) for p in no_decay] == [id(p) for p in (conv.bias, bn.weight, bn.bias,
                                                          act.weight, fc.bias)]


def test_weights_only_groups_count_a_shared_kernel_once():
    fc = nn.Linear(3, 3)
    model = nn.Sequential(fc, nn.ReLU(), fc)
    decay, no_decay = param_groups_weights_only(model)
    assert len(decay) == 1 and len(no_decay) == 1


@pytest.mark.parametrize("name", list_models())
def test_weights_only_groups_partition_every_model(name: str):
    with torch.device("meta"):
        model = create_model(name, num_classes=7, in_chans=3)
    decay, no_decay = param_groups_weights_only(model)
    ids = [id(p) for p in decay + no_decay]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    assert decay and all(p.dim() >= 2 for p in decay)
    # what stays out: 1-d parameters (biases, norm affine, PReLU) in every model here
    assert all(p.dim() == 1 for p in no_decay), name
    # optimizer groups built from it cover the model
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 1e-4},
                           {"params": no_decay, "weight_decay": 0.0}], lr=0.1)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(ids)
