"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012) and a small-image variant.

Five convs with max pools and ReLU, two dense layers of 4096 with dropout
(61M parameters at 224 px). ``alexnet`` is torchvision's implementation with
the input channels, activation and (optional) normalization swapped in;
``alexnet_small`` is ours, for 28-32 px images: the same five-conv layout with
3x3/5x5 stride-1 convs, three SAME max pools (32 -> 4 px) and narrower dense layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from ._registry import register_model
from .layers import get_act, get_norm, replace_acts, set_in_chans

if TYPE_CHECKING:  # torchvision is imported when a builder runs (1-2 s)
    from torchvision.models import AlexNet


class AlexNetSmall(nn.Module):
    """AlexNet's layout for small images.

    conv5x5/64 - pool - conv5x5/192 - pool - conv3x3/384 - conv3x3/256 -
    conv3x3/256 - pool - dropout - fc hidden - dropout - fc hidden - fc classes;
    every pool is 3x3 stride 2 SAME (ceil(n / 2) outputs).

    Args:
        num_classes: output logits.
        in_chans: input channels.
        input_size: input side (the dense head sees ceil(input_size / 8)^2 cells).
        hidden: width of the two hidden dense layers.
        drop_rate: dropout before each hidden dense layer (0.5 in the paper).
        act_layer: activation name.
        norm_layer: normalization after every conv (``none`` in the paper).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        input_size: int = 32,
        hidden: int = 1024,
        drop_rate: float = 0.5,
        act_layer: str = "relu",
        norm_layer: str = "none",
    ):
        super().__init__()

        def conv(i: int, o: int, k: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, k, padding=k // 2), get_norm(norm_layer, o), get_act(act_layer)]

        def pool() -> nn.Module:
            return nn.MaxPool2d(3, stride=2, padding=1)

        self.features = nn.Sequential(
            *conv(in_chans, 64, 5), pool(),
            *conv(64, 192, 5), pool(),
            *conv(192, 384, 3), *conv(384, 256, 3), *conv(256, 256, 3), pool(),
        )
        side = input_size
        for _ in range(3):
            side = (side + 1) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(drop_rate),
            nn.Linear(256 * side * side, hidden),
            get_act(act_layer),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, hidden),
            get_act(act_layer),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _insert_norms(features: nn.Sequential, norm_layer: str) -> nn.Sequential:
    """A copy of a conv stack with ``get_norm(norm_layer)`` after every conv."""
    layers: list[nn.Module] = []
    for m in features:
        layers.append(m)
        if isinstance(m, nn.Conv2d):
            layers.append(get_norm(norm_layer, m.out_channels))
    return nn.Sequential(*layers)


def _create_alexnet(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.5,
    act_layer: str = "relu",
    norm_layer: str = "none",
) -> AlexNet:
    """torchvision's AlexNet with input channels, activation and normalization by name."""
    from torchvision.models import AlexNet

    model = AlexNet(num_classes=num_classes, dropout=drop_rate)
    set_in_chans(model, in_chans)
    if norm_layer != "none":
        model.features = _insert_norms(model.features, norm_layer)
    return replace_acts(model, act_layer)


# 11x11/4 conv and three 3x3/2 pools without padding: 63 px leaves a 1x1 map.
register_model("alexnet", family="alexnet", native_size=224, min_size=63,
               description="AlexNet (torchvision, 224 px)")(_create_alexnet)
# three SAME stride-2 pools: 8 px leaves a 1x1 map
register_model("alexnet_small", family="alexnet", native_size=32, min_size=8,
               description="AlexNet layout for 28-32 px images (ours)")(AlexNetSmall)
