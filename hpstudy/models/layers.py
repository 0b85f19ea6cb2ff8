"""Layers chosen by string (timm ``create_act.py`` style).

Optuna samples plain strings and study files stay readable:
``get_act("leaky_relu")``, ``get_norm("batch", 64)``, ``init_weights(model, "he_normal")``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

# Each factory takes ``inplace``; activations without an in-place form ignore it.
_ACTS: dict[str, Callable[[bool], nn.Module]] = {
    "relu": lambda inplace: nn.ReLU(inplace=inplace),
    "leaky_relu": lambda inplace: nn.LeakyReLU(0.01, inplace=inplace),
    "prelu": lambda inplace: nn.PReLU(),
    "elu": lambda inplace: nn.ELU(inplace=inplace),
    "selu": lambda inplace: nn.SELU(inplace=inplace),
    "gelu": lambda inplace: nn.GELU(),
    "silu": lambda inplace: nn.SiLU(inplace=inplace),
    "tanh": lambda inplace: nn.Tanh(),
    "sigmoid": lambda inplace: nn.Sigmoid(),
    "relu6": lambda inplace: nn.ReLU6(inplace=inplace),
}
ACTIVATIONS = tuple(_ACTS)
NORMS = ("batch", "none", "layer", "group", "instance")
# Classifier heads: global average pooling then a linear layer (``gap``; the
# network is then independent of the input size and gives class activation
# maps), or flattening the last feature map into fully connected layers (``fc``).
HEADS = ("gap", "fc")
INITS = (
    "default",
    "he_normal",
    "he_uniform",
    "xavier_normal",
    "xavier_uniform",
    "orthogonal",
    "normal",
)


def check_head(head: str) -> str:
    """``head`` if it is one of :data:`HEADS`, else a ValueError naming the choices."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)} (got {head!r})")
    return head


def get_act(name: str, inplace: bool = True) -> nn.Module:
    """A fresh activation module by name (``relu leaky_relu prelu elu selu gelu ...``).

    Pass ``inplace=False`` where the input is still needed afterwards (a
    pre-activation whose input is also the residual shortcut, with ``norm_layer``
    ``none`` in front of it).
    """
    try:
        return _ACTS[name](inplace)
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


def norm_factory(name: str, dims: int = 2) -> Callable[[int], nn.Module]:
    """``get_norm`` with the name bound, for torchvision's ``norm_layer=`` arguments."""
    if name not in NORMS:
        raise ValueError(f"unknown normalization '{name}'; choose from {', '.join(NORMS)}")
    return functools.partial(get_norm, name, dims=dims)


_TORCHVISION_ACTS = (nn.ReLU, nn.ReLU6, nn.SiLU)


def replace_acts(model: nn.Module, name: str) -> nn.Module:
    """Swap every ReLU/ReLU6/SiLU module of a torchvision model for ``get_act(name)``.

    Gates (the sigmoid of squeeze-excitation) are left alone; each replacement
    keeps the in-place flag of the module it replaces.
    """
    for child_name, child in model.named_children():
        if isinstance(child, _TORCHVISION_ACTS):
            setattr(model, child_name, get_act(name, inplace=getattr(child, "inplace", False)))
        else:
            replace_acts(child, name)
    return model


def set_in_chans(model: nn.Module, in_chans: int) -> nn.Module:
    """Give a model built for RGB a first convolution with ``in_chans`` inputs.

    The new kernel is the RGB kernel averaged over its input channels and
    rescaled by ``3 / in_chans`` (timm's ``adapt_input_conv``), so the family's
    own initialization and activation scale are kept.
    """
    parent, attr, conv = _first_conv(model)
    if conv.in_channels == in_chans:
        return model
    new = nn.Conv2d(
        in_chans, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
        padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        w = conv.weight.mean(dim=1, keepdim=True) * (conv.in_channels / in_chans)
        new.weight.copy_(w.expand_as(new.weight))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    setattr(parent, attr, new)
    return model


def _first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    # registration order: the stem comes first in every torchvision classifier used here
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, attr = name.rpartition(".")
            return model.get_submodule(parent_name), attr, module
    raise ValueError(f"{type(model).__name__} has no Conv2d to adapt")


class ConvNormAct(nn.Module):
    """conv -> norm -> act by name; a drop-in for torchvision's ``BasicConv2d``.

    ``kwargs`` go to ``nn.Conv2d`` (``kernel_size`` may be a ``(h, w)`` pair for
    the asymmetric convs of Inception-v3). The conv has no bias in front of a
    normalization layer.
    """

    def __init__(
        self, in_channels: int, out_channels: int, act_layer: str = "relu",
        norm_layer: str = "batch", **kwargs: Any,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=norm_layer == "none", **kwargs)
        self.bn = get_norm(norm_layer, out_channels)
        self.act = get_act(act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


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


# Layers whose ``weight`` is a kernel: dim 0 indexes the output units, the
# other dims hold each unit's incoming weights. (Transposed convs keep
# in_channels first and are not used by any hpstudy model.)
_KERNEL_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                  nn.ConvTranspose3d)


@torch.no_grad()
def apply_max_norm(model: nn.Module, max_norm: float) -> nn.Module:
    """Max-norm constraint: rescale each output unit's incoming weights to norm <= ``max_norm``.

    Srivastava et al., 2014 ("Dropout", section 5.1): after every optimizer
    step, the L2 norm of the weight vector into each hidden unit is clipped to
    ``c`` ("typically around 3 or 4"); it pairs well with dropout and large
    learning rates. Applies to every conv and linear kernel (one filter of a
    conv is one unit; biases and normalization parameters are untouched),
    one vectorized ``renorm_`` per layer; units already inside the ball are
    left exactly as they are.

    Args:
        model: the network, modified in place.
        max_norm: ``c``, the largest L2 norm allowed (> 0).

    Returns:
        ``model``.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0 (got {max_norm})")
    for m in model.modules():
        if isinstance(m, _KERNEL_LAYERS):
            # the norm of every slice along dim 0 (one output unit) is capped
            m.weight.renorm_(p=2, dim=0, maxnorm=max_norm)
    return model


def param_groups_weights_only(
    model: nn.Module,
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split the trainable parameters into (conv/linear kernels, everything else).

    The first list is what Keras regularizers and the thesis's code decay
    ("weights only"): conv and linear kernels. The second holds biases,
    normalization scales and shifts, PReLU slopes and any other parameter.
    Use it for weight decay on the kernels only (two optimizer groups) or an
    L1/L2 penalty summed over the kernels. Every trainable parameter lands in
    exactly one list once, in ``model.parameters()`` order (shared ones once).

    Returns:
        ``(decay, no_decay)``.
    """
    kernels = {id(m.weight) for m in model.modules() if isinstance(m, _KERNEL_LAYERS)}
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():  # deduplicated by PyTorch
        if p.requires_grad:
            (decay if id(p) in kernels else no_decay).append(p)
    return decay, no_decay
