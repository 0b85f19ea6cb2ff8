"""Layers chosen by string (timm ``create_act.py`` style).

Optuna samples plain strings and study files stay readable:
``get_act("leaky_relu")``, ``get_norm("batch", 64)``, ``init_weights(model, "he_normal")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn as nn

_ACTS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "prelu": lambda: nn.PReLU(),
    "elu": lambda: nn.ELU(inplace=True),
    "selu": lambda: nn.SELU(inplace=True),
    "gelu": lambda: nn.GELU(),
    "silu": lambda: nn.SiLU(inplace=True),
    "tanh": lambda: nn.Tanh(),
    "sigmoid": lambda: nn.Sigmoid(),
    "relu6": lambda: nn.ReLU6(inplace=True),
}
ACTIVATIONS = tuple(_ACTS)
NORMS = ("batch", "none", "layer", "group", "instance")
INITS = (
    "default",
    "he_normal",
    "he_uniform",
    "xavier_normal",
    "xavier_uniform",
    "orthogonal",
    "normal",
)


def get_act(name: str) -> nn.Module:
    """A fresh activation module by name (``relu leaky_relu prelu elu selu gelu ...``)."""
    try:
        return _ACTS[name]()
    except KeyError:
        raise ValueError(f"unknown activation '{name}'; choose from {', '.join(_ACTS)}") from None


def get_norm(name: str, num_features: int, dims: int = 2, groups: int = 8) -> nn.Module:
    """A normalization layer for ``num_features`` channels (``dims=1`` after a Linear).

    ``layer`` normalizes over (C, H, W) per sample (GroupNorm with one group),
    ``group`` uses ``groups`` groups (reduced until it divides ``num_features``).
    """
    if name == "none":
        return nn.Identity()
    if name == "batch":
        return nn.BatchNorm2d(num_features) if dims == 2 else nn.BatchNorm1d(num_features)
    if name == "layer":
        return nn.GroupNorm(1, num_features) if dims == 2 else nn.LayerNorm(num_features)
    if name == "group":
        g = math.gcd(groups, num_features) or 1
        return nn.GroupNorm(g, num_features)
    if name == "instance":
        if dims != 2:
            return nn.LayerNorm(num_features)
        return nn.InstanceNorm2d(num_features, affine=True)
    raise ValueError(f"unknown normalization '{name}'; choose from {', '.join(NORMS)}")


def init_weights(model: nn.Module, scheme: str = "he_normal", std: float = 0.05) -> nn.Module:
    """Initialize conv and linear weights by scheme name; biases are set to zero.

    ``default`` keeps PyTorch's initialization. ``normal`` draws N(0, std^2)
    (the NiN recipe uses std 0.05). Normalization layers get weight 1, bias 0.
    """
    if scheme not in INITS:
        raise ValueError(f"unknown init '{scheme}'; choose from {', '.join(INITS)}")
    if scheme == "default":
        return model
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear | nn.Conv1d):
            w = m.weight
            if scheme == "he_normal":
                nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")
            elif scheme == "he_uniform":
                nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu")
            elif scheme == "xavier_normal":
                nn.init.xavier_normal_(w)
            elif scheme == "xavier_uniform":
                nn.init.xavier_uniform_(w)
            elif scheme == "orthogonal":
                nn.init.orthogonal_(w)
            elif scheme == "normal":
                nn.init.normal_(w, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d | nn.GroupNorm | nn.LayerNorm):
            if getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    return model
