"""DenseNet for small images (Huang et al., 2017, "Densely Connected Convolutional Networks").

Each layer of a dense block sees the concatenation of all earlier maps of the
block and adds ``growth_rate`` new ones: norm-act-conv3x3(k), or in DenseNet-B
norm-act-conv1x1(4k) first (the bottleneck). Blocks are joined by transitions
(norm-act-conv1x1 then avgpool 2); DenseNet-C compresses there by
``compression`` (0.5 in DenseNet-BC). Stem conv3x3 (16 filters, 2k for BC),
three dense blocks, norm-act, global average pool, fc.

Depth counts the convs plus the stem and fc: 3n+4 layers per block n without
bottlenecks, 6n+4 with them. DenseNet-40-12 has about 1M parameters,
DenseNet-BC-100-12 0.8M. Trained with Nesterov lr 0.1, momentum 0.9, wd 1e-4,
lr/10 at 50% and 75% of 300 epochs (CIFAR) or 40 (SVHN); dropout 0.2 after
every conv on the sets without augmentation.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._registry import register_model
from .layers import get_act, get_norm


def _drop(rate: float) -> nn.Module:
    return nn.Dropout(rate) if rate > 0 else nn.Identity()


class DenseLayer(nn.Module):
    """[norm-act-conv1x1(4k)-drop] norm-act-conv3x3(k)-drop; returns the k new maps."""

    def __init__(
        self, in_chs: int, growth_rate: int, bottleneck: bool, drop_rate: float,
        act_layer: str, norm_layer: str,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        chs = in_chs
        if bottleneck:
            inter = 4 * growth_rate  # the paper's bottleneck width
            # not in place: with norm "none" the input is the block's shared feature map
            layers += [get_norm(norm_layer, chs), get_act(act_layer, inplace=False),
                       nn.Conv2d(chs, inter, 1, bias=False), _drop(drop_rate)]
            chs = inter
        layers += [get_norm(norm_layer, chs), get_act(act_layer, inplace=bottleneck),
                   nn.Conv2d(chs, growth_rate, 3, padding=1, bias=False), _drop(drop_rate)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DenseBlock(nn.Module):
    """``n`` dense layers; the output concatenates the input and every new map."""

    def __init__(
        self, n: int, in_chs: int, growth_rate: int, bottleneck: bool, drop_rate: float,
        act_layer: str, norm_layer: str,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_chs + i * growth_rate, growth_rate, bottleneck, drop_rate, act_layer,
                       norm_layer)
            for i in range(n)
        )
        self.out_chs = in_chs + n * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class Transition(nn.Sequential):
    """norm-act-conv1x1-drop-avgpool2: halves the maps, optionally compresses channels."""

    def __init__(self, in_chs: int, out_chs: int, drop_rate: float, act_layer: str,
                 norm_layer: str):
        super().__init__(
            get_norm(norm_layer, in_chs),
            get_act(act_layer),
            nn.Conv2d(in_chs, out_chs, 1, bias=False),
            _drop(drop_rate),
            nn.AvgPool2d(2),
        )


class DenseNet(nn.Module):
    """DenseNet / DenseNet-BC on small images.

    Args:
        num_classes: output logits.
        in_chans: input channels.
        depth: 3n+4 (plain) or 6n+4 (``bottleneck=True``), n layers per block.
        growth_rate: k, maps added by every layer.
        bottleneck: 1x1 conv to 4k before every 3x3 (DenseNet-B).
        compression: fraction of channels kept by a transition (DenseNet-C: 0.5).
        stem_width: filters of the stem conv (default 16, or 2k with bottlenecks).
        num_blocks: dense blocks (three for 32 px images).
        drop_rate: dropout after every conv (0.2 without augmentation).
        act_layer: activation name.
        norm_layer: normalization name.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        depth: int = 40,
        growth_rate: int = 12,
        bottleneck: bool = False,
        compression: float = 1.0,
        stem_width: int | None = None,
        num_blocks: int = 3,
        drop_rate: float = 0.2,
        act_layer: str = "relu",
        norm_layer: str = "batch",
    ):
        super().__init__()
        per_layer = 2 if bottleneck else 1
        n, rem = divmod(depth - 4, num_blocks * per_layer)
        if rem or n < 1:
            step = num_blocks * per_layer
            raise ValueError(
                f"DenseNet depth must be {step}n+4 with {num_blocks} blocks"
                f"{' and bottlenecks' if bottleneck else ''} (e.g. {step + 4}, {2 * step + 4}); "
                f"got {depth}"
            )
        if not 0 < compression <= 1:
            raise ValueError(f"compression must be in (0, 1] (got {compression})")
        chs = stem_width or (2 * growth_rate if bottleneck else 16)
        stages: list[nn.Module] = [nn.Conv2d(in_chans, chs, 3, padding=1, bias=False)]
        for i in range(num_blocks):
            block = DenseBlock(n, chs, growth_rate, bottleneck, drop_rate, act_layer, norm_layer)
            stages.append(block)
            chs = block.out_chs
            if i < num_blocks - 1:
                out = int(chs * compression)  # floor, as in the reference code
                stages.append(Transition(chs, out, drop_rate, act_layer, norm_layer))
                chs = out
        self.features = nn.Sequential(*stages)
        self.norm = get_norm(norm_layer, chs)
        self.act = get_act(act_layer)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(chs, num_classes)
        self.num_features = chs
        self.gap_head = ("act", "fc")  # see models.cam_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.norm(self.features(x))))
        return self.fc(torch.flatten(x, 1))


# Two stride-2 transitions (avgpool 2 without padding): 4 px leaves a 1x1 map.
_META = dict(family="densenet", native_size=32, min_size=4)

register_model("densenet", **_META,
               description="DenseNet(-BC), any depth/growth_rate/bottleneck/compression")(DenseNet)
register_model("densenet40_12", **_META, depth=40, growth_rate=12,
               description="DenseNet-40 (k=12)")(DenseNet)
register_model("densenet_bc100_12", **_META, depth=100, growth_rate=12, bottleneck=True,
               compression=0.5, description="DenseNet-BC-100 (k=12)")(DenseNet)
