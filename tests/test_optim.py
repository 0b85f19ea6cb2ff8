"""Learning-rate schedules per milestone and the scope of weight decay.

The thesis's schedules are checked epoch by epoch on the scheduler the
Lightning module builds (NiN on CIFAR: 0.025 -> 0.01 -> 0.001 at 200 and 230;
NiN on MNIST: /2 at 40, /5 at 50), and once through a real Trainer. Weight
decay on ``weights`` is checked on the parameters it picks and on an actual
optimizer step.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn as nn
from conftest import run_cli, tiny_study

from hpstudy.config import ConfigError, TrainConfig, from_dict
from hpstudy.models import count_params, create_model
from hpstudy.train import (
    build_optimizer,
    build_scheduler,
    execute,
    optimizer_params,
    split_decay_params,
)


def lr_per_epoch(train: dict[str, Any], epochs: int) -> list[float]:
    """The lr each epoch trains with (1-based list), from the scheduler the module builds."""
    cfg = TrainConfig.model_validate({"optimizer": "nesterov", "momentum": 0.9, **train})
    opt = build_optimizer([nn.Parameter(torch.zeros(1))], cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=1)
    assert sched is not None and sched["interval"] == "epoch"
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched["scheduler"].step()
    return out


def phases(lrs: list[float]) -> list[tuple[int, int, float]]:
    """``[(first epoch, last epoch, lr), ...]`` of a per-epoch lr list (1-based epochs)."""
    out: list[tuple[int, int, float]] = []
    for epoch, lr in enumerate(lrs, start=1):
        if out and lr == pytest.approx(out[-1][2], rel=1e-9):
            out[-1] = (out[-1][0], epoch, out[-1][2])
        else:
            out.append((epoch, epoch, lr))
    return out


NIN_CIFAR = [(1, 200, 0.025), (201, 230, 0.01), (231, 260, 0.001)]
NIN_MNIST = [(1, 40, 0.02), (41, 50, 0.01), (51, 60, 0.002)]


@pytest.mark.parametrize("scheduler", [
    {"name": "multistep", "milestones": [200, 230], "gammas": [0.4, 0.1]},
    {"name": "multistep", "milestones": [200, 230], "values": [0.025, 0.01, 0.001]},
], ids=["gammas", "values"])
def test_nin_cifar_schedule(scheduler: dict[str, Any]):
    got = phases(lr_per_epoch({"lr": 0.025, "max_epochs": 260, "scheduler": scheduler}, 260))
    assert [(a, b) for a, b, _ in got] == [(a, b) for a, b, _ in NIN_CIFAR]
    assert [lr for *_, lr in got] == pytest.approx([lr for *_, lr in NIN_CIFAR], rel=1e-12)


@pytest.mark.parametrize("scheduler", [
    {"name": "multistep", "milestones": [40, 50], "gammas": [0.5, 0.2]},
    {"name": "multistep", "milestones": [40, 50], "values": [0.02, 0.01, 0.002]},
    # fractions of max_epochs pair with their factors too
    {"name": "multistep", "milestones": [0.6666667, 0.8333333], "gammas": [0.5, 0.2]},
], ids=["gammas", "values", "fractions"])
def test_nin_mnist_schedule(scheduler: dict[str, Any]):
    got = phases(lr_per_epoch({"lr": 0.02, "max_epochs": 60, "scheduler": scheduler}, 60))
    assert [(a, b) for a, b, _ in got] == [(a, b) for a, b, _ in NIN_MNIST]
    assert [lr for *_, lr in got] == pytest.approx([lr for *_, lr in NIN_MNIST], rel=1e-12)


def test_one_gamma_multistep_is_unchanged():
    # the thesis's MNIST baseline: lr/10 after epoch 20 (MultiStepLR, as before)
    got = phases(lr_per_epoch({"lr": 0.1, "max_epochs": 30, "scheduler":
                               {"name": "multistep", "milestones": [20], "gamma": 0.1}}, 30))
    assert [(a, b) for a, b, _ in got] == [(1, 20), (21, 30)]
    assert [lr for *_, lr in got] == pytest.approx([0.1, 0.01])


def test_schedule_reaches_the_trainer_history():
    """A real fit logs the lr of every epoch from the per-milestone schedule."""
    raw = tiny_study(train={"max_epochs": 4, "optimizer": "nesterov", "lr": 0.05, "num_threads": 1,
                            "scheduler": {"name": "multistep", "milestones": [2, 3],
                                          "gammas": [0.5, 0.2]}},
                     data={"dataset": "digits", "batch_size": 64, "subset": 128})
    result = execute(from_dict(raw))
    assert [r["lr"] for r in result.history] == pytest.approx([0.05, 0.05, 0.025, 0.005])


@pytest.mark.parametrize("scheduler,lr,message", [
    ({"name": "multistep", "milestones": [40, 50], "gammas": [0.5]}, 0.02,
     "1 gammas for 2 milestones"),
    ({"name": "multistep", "milestones": [200, 230], "values": [0.025, 0.01]}, 0.025,
     "2 values for 2 milestones: give the lr of each phase, 3 values"),
    ({"name": "multistep", "milestones": [200], "gammas": [0.4], "values": [0.025, 0.01]}, 0.025,
     "either gammas"),
    ({"name": "step", "milestones": [20], "gammas": [0.1]}, 0.1, "not 'step'"),
    ({"name": "multistep", "milestones": [50, 40], "gammas": [0.5, 0.2]}, 0.1, "must increase"),
    ({"name": "multistep", "milestones": [40], "gammas": [0.0]}, 0.1, "must be > 0"),
    ({"name": "multistep", "milestones": [0, 40], "gammas": [0.5, 0.5]}, 0.1, "milestones are"),
])
def test_bad_schedules_name_the_field(scheduler: dict[str, Any], lr: float, message: str):
    with pytest.raises(ConfigError) as e:
        from_dict({"name": "x", "train": {"lr": lr, "scheduler": scheduler}}, "s.yaml")
    assert e.value.field.startswith("train.scheduler"), e.value
    assert message in e.value.message


def test_values_must_start_at_the_lr():
    with pytest.raises(ConfigError) as e:
        from_dict({"name": "x", "train": {"lr": 0.1, "scheduler": {
            "name": "multistep", "milestones": [200, 230], "values": [0.025, 0.01, 0.001]}}})
    assert e.value.field == "train" and "scheduler.values starts at 0.025" in e.value.message


def test_bad_schedule_is_exit_2_naming_the_field(tmp_path, write_study, monkeypatch, capsys):
    path = write_study(tiny_study(train={"scheduler": {"name": "multistep", "milestones": [1],
                                                       "gammas": [0.5, 0.2]}}))
    code, out, err = run_cli("train", str(path), monkeypatch=monkeypatch, cwd=tmp_path,
                             capsys=capsys)
    assert code == 2, err
    assert f"{path}: train.scheduler: 2 gammas for 1 milestones" in err
    assert not (tmp_path / "mlruns").exists()  # nothing written


# ------------------------------------------------------------------ weight decay
@pytest.mark.parametrize("arch,kw", [("bn_nin", {"variant": "mnist"}), ("baseline_cnn", {}),
                                     ("preact_resnet20", {}), ("densenet40_12", {})])
def test_weights_are_the_conv_and_linear_kernels(arch: str, kw: dict[str, Any]):
    net = create_model(arch, num_classes=10, in_chans=1 if arch != "preact_resnet20" else 3,
                       input_size=28 if arch != "preact_resnet20" else 32, **kw)
    decay, no_decay = split_decay_params(net)
    kernels = {id(m.weight) for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    assert {id(p) for p in decay} == kernels
    assert all(p.dim() == 1 for p in no_decay)  # biases, norm scales and shifts
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d)]
    for m in norms:
        assert any(p is m.weight for p in no_decay) and any(p is m.bias for p in no_decay)
    assert sum(p.numel() for p in decay + no_decay) == count_params(net)


def _zero_grad_step(on: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """One SGD step with weight decay 0.5 and a zero loss: only decay moves parameters."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, bias=True), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with torch.no_grad():  # BN scales/shifts away from 1/0, so decay would show
        net[1].weight.fill_(2.0)
        net[1].bias.fill_(1.0)
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    cfg = TrainConfig.model_validate({"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.5,
                                      "weight_decay_on": on})
    opt = build_optimizer(optimizer_params(net, cfg), cfg)
    loss = 0.0 * net(torch.randn(2, 1, 8, 8)).sum()
    loss.backward()
    opt.step()
    return net, before


def test_decay_on_weights_leaves_biases_and_norms_alone():
    net, before = _zero_grad_step("weights")
    after = dict(net.named_parameters())
    for name in ("0.weight", "4.weight"):  # kernels shrink by (1 - lr * wd)
        assert torch.allclose(after[name], before[name] * (1 - 0.1 * 0.5))
    for name in ("0.bias", "1.weight", "1.bias", "4.bias"):  # untouched
        assert torch.equal(after[name], before[name]), name


def test_decay_on_all_moves_norm_scales():
    net, before = _zero_grad_step("all")
    after = dict(net.named_parameters())
    assert torch.allclose(after["1.weight"], before["1.weight"] * 0.95)
    assert torch.allclose(after["1.bias"], before["1.bias"] * 0.95)


def test_pytorch_decay_2lambda_is_keras_l2_lambda():
    """Keras l2(λ) adds λ·||w||² to the loss; PyTorch weight_decay=2λ gives the same step."""
    lam, lr = 1e-2, 0.1
    w0 = torch.randn(5, 3)
    x = torch.randn(4, 3)
    keras = nn.Parameter(w0.clone())
    loss = (x @ keras.T).pow(2).mean() + lam * keras.pow(2).sum()
    loss.backward()
    with torch.no_grad():
        keras -= lr * keras.grad
    torch_w = nn.Parameter(w0.clone())
    opt = torch.optim.SGD([torch_w], lr=lr, weight_decay=2 * lam)
    (x @ torch_w.T).pow(2).mean().backward()
    opt.step()
    assert torch.allclose(keras, torch_w, atol=1e-7)


def test_fit_uses_the_weight_groups():
    raw = tiny_study(model={"arch": "mlp", "hidden": [32], "norm_layer": "batch"},
                     train={"max_epochs": 1, "optimizer": "nesterov", "lr": 0.05,
                            "weight_decay": 2e-4, "weight_decay_on": "weights",
                            "num_threads": 1})
    result = execute(from_dict(raw))
    groups = result.module.trainer.optimizers[0].param_groups
    assert [g["weight_decay"] for g in groups] == [2e-4, 0.0]
    n_kernels = sum(m.weight.numel() for m in result.module.net.modules()
                    if isinstance(m, nn.Linear))
    assert sum(p.numel() for p in groups[0]["params"]) == n_kernels


@pytest.mark.parametrize("on", ["all", "weights"])
def test_frozen_parameters_are_not_given_to_the_optimizer(on: str):
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    net[0].weight.requires_grad_(False)
    cfg = TrainConfig.model_validate({"optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-4,
                                      "weight_decay_on": on})
    opt = build_optimizer(optimizer_params(net, cfg), cfg)
    given = [p for g in opt.param_groups for p in g["params"]]
    assert all(p is not net[0].weight for p in given)
    assert len(given) == sum(1 for p in net.parameters() if p.requires_grad)
