"""VGG (Simonyan & Zisserman, 2015) and the thesis's BN-VGG-15 for 32x32 images.

Only 3x3 convolutions, (conv* pool)* then dense layers. The ImageNet networks
VGG-11/13/16/19 (configs A, B, D, E, optionally with batch norm) use
torchvision's ``VGG`` class (adaptive 7x7 pool, 4096-4096 head, torchvision's
init); their conv stacks are built here from the layer lists below so that
activation, normalization and input channels are chosen by string.

BN-VGG-15 (thesis, 15M parameters on CIFAR): 13 conv3x3-BN-ReLU with dropout
after most convs, five max pools, fc512-BN-ReLU-dropout 0.5, fc classes.
Trained with Nesterov lr 0.1, momentum 0.9, wd 5e-4, batch 64, 250 epochs,
lr/2 every 25.

``head: gap`` swaps either dense head for global average pooling and one
linear layer (Lin et al., 2014; 512 x classes weights instead of millions),
which makes the network independent of the input size and gives class
activation maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from ._registry import register_model
from .layers import check_head, get_act, get_norm, replace_acts

if TYPE_CHECKING:  # torchvision is imported when a builder runs (1-2 s)
    from torchvision.models import VGG

# int: conv3x3 with that many filters (+ norm + act); "M": maxpool 2x2;
# float: dropout with that rate (BN-VGG's "C+D" convs).
CFGS: dict[str, list[int | str | float]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
    "bn_vgg15": [64, 0.3, 64, "M", 128, 0.4, 128, "M", 256, 0.4, 256, 0.4, 256, "M",
                 512, 0.4, 512, 0.4, 512, "M", 512, 0.4, 512, 0.4, 512, "M"],
}


def _resolve_cfg(cfg: str | Sequence[int | str | float]) -> list[int | str | float]:
    if isinstance(cfg, str):
        if cfg not in CFGS:
            raise ValueError(f"unknown VGG cfg '{cfg}'; choose from {', '.join(CFGS)} or a list")
        return list(CFGS[cfg])
    return list(cfg)


def make_features(
    cfg: Sequence[int | str | float], in_chans: int, act_layer: str, norm_layer: str,
    conv_dropout: bool = True,
) -> tuple[nn.Sequential, int, int]:
    """Conv stack from a layer list; returns (features, out_channels, number of pools)."""
    layers: list[nn.Module] = []
    chs, pools = in_chans, 0
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            pools += 1
        elif isinstance(v, float):
            if conv_dropout and v > 0:
                layers.append(nn.Dropout(v))
        elif isinstance(v, int):
            layers += [
                nn.Conv2d(chs, v, 3, padding=1),
                get_norm(norm_layer, v),
                get_act(act_layer),
            ]
            chs = v
        else:
            raise ValueError(f"VGG layer list entries are ints, floats or 'M' (got {v!r})")
    return nn.Sequential(*layers), chs, pools


class SmallVGG(nn.Module):
    """VGG for small images with a one-hidden-layer head (the thesis's BN-VGG-15).

    Args:
        num_classes: output logits.
        in_chans: input channels.
        input_size: input side; the flattened features have (input_size / 2^pools)^2 cells.
        cfg: a ``CFGS`` name or a layer list.
        head: ``fc`` (flatten the last maps, the thesis) or ``gap`` (global average pool).
        hidden: width of the hidden dense layer (0: none, the classifier follows the head).
        drop_rate: dropout before the last layer.
        conv_dropout: keep the dropout entries of the layer list (False drops them all).
        act_layer: activation name.
        norm_layer: normalization name (convs and the hidden dense layer).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        input_size: int = 32,
        cfg: str | Sequence[int | str | float] = "bn_vgg15",
        head: str = "fc",
        hidden: int = 512,
        drop_rate: float = 0.5,
        conv_dropout: bool = True,
        act_layer: str = "relu",
        norm_layer: str = "batch",
    ):
        super().__init__()
        self.features, chs, pools = make_features(
            _resolve_cfg(cfg), in_chans, act_layer, norm_layer, conv_dropout
        )
        check_head(head)
        if hidden < 0:
            raise ValueError(f"hidden must be >= 0 (got {hidden})")
        side = input_size // 2**pools
        if side < 1:
            raise ValueError(f"input_size {input_size} is below {2**pools} ({pools} pools)")
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1)] if head == "gap" else []
        layers.append(nn.Flatten())
        feats = chs if head == "gap" else chs * side * side
        if hidden:
            layers += [nn.Linear(feats, hidden), get_norm(norm_layer, hidden, dims=1),
                       get_act(act_layer)]
            feats = hidden
        layers += [nn.Dropout(drop_rate), nn.Linear(feats, num_classes)]
        self.classifier = nn.Sequential(*layers)
        if head == "gap" and not hidden:  # see models.cam_layers
            self.gap_head = ("features", f"classifier.{len(layers) - 1}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _create_vgg(
    num_classes: int = 1000,
    in_chans: int = 3,
    cfg: str | Sequence[int | str | float] = "vgg16",
    head: str = "fc",
    drop_rate: float = 0.5,
    act_layer: str = "relu",
    norm_layer: str = "none",
) -> VGG:
    """torchvision's ``VGG`` around a conv stack built from ``cfg``.

    ``head="fc"`` keeps torchvision's 7x7 pool and 4096-4096 dense head;
    ``gap`` replaces them by a global average pool, dropout and one linear layer.
    """
    from torchvision.models import VGG

    check_head(head)
    features, chs, _ = make_features(_resolve_cfg(cfg), in_chans, act_layer, norm_layer)
    if chs != 512:
        raise ValueError(f"torchvision's VGG head expects 512 channels (cfg ends with {chs})")
    model = VGG(features, num_classes=num_classes, init_weights=True, dropout=drop_rate)
    if head == "gap":
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(chs, num_classes))
        model.gap_head = ("features", "classifier.1")  # see models.cam_layers
    return replace_acts(model, act_layer)  # the head's ReLUs


# Five 2x2 pools: 32 px is the smallest input that keeps a 1x1 map.
for _name in ("vgg11", "vgg13", "vgg16", "vgg19"):
    register_model(_name, family="vgg", native_size=224, min_size=32, cfg=_name,
                   description=f"{_name.upper()} (torchvision, ImageNet head)")(_create_vgg)
    register_model(f"{_name}_bn", family="vgg", native_size=224, min_size=32, cfg=_name,
                   norm_layer="batch",
                   description=f"{_name.upper()} with batch norm (torchvision)")(_create_vgg)

register_model("bn_vgg15", family="vgg", native_size=32, min_size=32, cfg="bn_vgg15",
               description="thesis BN-VGG-15: 13 conv3x3-BN + dropout, fc512")(SmallVGG)
