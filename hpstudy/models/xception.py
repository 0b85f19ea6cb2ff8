"""Xception (Chollet, 2017, "Xception: Deep Learning with Depthwise Separable Convolutions").

"Extreme Inception": every conv after the stem is depthwise separable (a
depthwise 3x3, one filter per channel, then a pointwise 1x1 that mixes
channels, with no nonlinearity in between), arranged in blocks with
residual connections (a 1x1 strided projection where the shape changes).
Entry flow: stem conv3x3/32 stride 2, conv3x3/64, then three blocks of two
separable convs ending in a 3x3 stride-2 max pool (128, 256, 728 filters);
middle flow: eight blocks of three separable convs at 728; exit flow: a
block to 1024 with a pool, separable convs to 1536 and 2048, global average
pool, fc. 22.9M parameters at 1000 classes; 299 px.

``xception_small`` (ours) is the same design for 32 px images: a stride-1,
padded stem, narrower flows (64/128/256 entry, four middle blocks, 512 to
1024 exit), 2x2 maps before the pool.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn

from ._registry import register_model
from .layers import get_act, get_norm


class SeparableConv2d(nn.Sequential):
    """Depthwise kxk then pointwise 1x1, no activation in between (Xception, section 4.7)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3):
        super().__init__(
            nn.Conv2d(in_chs, in_chs, kernel_size, padding=kernel_size // 2, groups=in_chs,
                      bias=False),
            nn.Conv2d(in_chs, out_chs, 1, bias=False),
        )


class XceptionBlock(nn.Module):
    """``reps`` x (act, separable conv, norm) [+ maxpool 3x3/2], plus a residual connection.

    Args:
        in_chs: input channels.
        out_chs: output channels.
        reps: separable convs in the block.
        stride: 2 ends the block with a 3x3 stride-2 max pool (and strides the projection).
        start_with_act: False for the first block, whose input is activated already.
        grow_first: the first separable conv changes the width (else the last does).
        act_layer: activation name.
        norm_layer: normalization name.
    """

    def __init__(
        self, in_chs: int, out_chs: int, reps: int, stride: int = 1, start_with_act: bool = True,
        grow_first: bool = True, act_layer: str = "relu", norm_layer: str = "batch",
    ):
        super().__init__()
        self.shortcut = None
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False),
                                          get_norm(norm_layer, out_chs))
        layers: list[nn.Module] = []
        chs = in_chs
        for i in range(reps):
            width = out_chs if (grow_first and i == 0) or (not grow_first and i == reps - 1) else chs
            if i > 0 or start_with_act:
                # not in place on the block input: the shortcut reads it too
                layers.append(get_act(act_layer, inplace=i > 0))
            layers += [SeparableConv2d(chs, width), get_norm(norm_layer, width)]
            chs = width
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride=stride, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.layers(x) + shortcut


class Xception(nn.Module):
    """Xception's entry, middle and exit flows, global average pool, fc.

    Args:
        num_classes: output logits.
        in_chans: input channels.
        stem_widths: filters of the two stem convs.
        stem_stride: 2 with unpadded stem convs (the paper, 299 px), or 1 with
            padded ones (small images).
        entry_widths: output filters of the entry flow's three strided blocks.
        middle_blocks: residual blocks of three separable convs in the middle flow.
        exit_widths: the exit block's output, then the two separable convs.
        drop_rate: dropout before the fc layer.
        act_layer: activation name.
        norm_layer: normalization name.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem_widths: Sequence[int] = (32, 64),
        stem_stride: int = 2,
        entry_widths: Sequence[int] = (128, 256, 728),
        middle_blocks: int = 8,
        exit_widths: Sequence[int] = (1024, 1536, 2048),
        drop_rate: float = 0.0,
        act_layer: str = "relu",
        norm_layer: str = "batch",
    ):
        super().__init__()
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2 (got {stem_stride})")
        if len(stem_widths) != 2 or len(exit_widths) != 3 or not entry_widths:
            raise ValueError("stem_widths needs 2 widths, exit_widths 3, entry_widths at least 1")
        if middle_blocks < 0:
            raise ValueError(f"middle_blocks must be >= 0 (got {middle_blocks})")
        pad = 0 if stem_stride == 2 else 1  # the paper's stem convs are unpadded
        s1, s2 = stem_widths
        bias = norm_layer == "none"
        stem = nn.Sequential(
            nn.Conv2d(in_chans, s1, 3, stride=stem_stride, padding=pad, bias=bias),
            get_norm(norm_layer, s1), get_act(act_layer),
            nn.Conv2d(s1, s2, 3, padding=pad, bias=bias),
            get_norm(norm_layer, s2), get_act(act_layer),
        )
        common = dict(act_layer=act_layer, norm_layer=norm_layer)
        entry, chs = [], s2
        for i, w in enumerate(entry_widths):
            entry.append(XceptionBlock(chs, w, 2, stride=2, start_with_act=i > 0, **common))
            chs = w
        middle = [XceptionBlock(chs, chs, 3, **common) for _ in range(middle_blocks)]
        e1, e2, e3 = exit_widths
        exit_flow = nn.Sequential(
            XceptionBlock(chs, e1, 2, stride=2, grow_first=False, **common),
            SeparableConv2d(e1, e2), get_norm(norm_layer, e2), get_act(act_layer),
            SeparableConv2d(e2, e3), get_norm(norm_layer, e3), get_act(act_layer),
        )
        self.features = nn.Sequential(OrderedDict(
            stem=stem, entry=nn.Sequential(*entry), middle=nn.Sequential(*middle), exit=exit_flow,
        ))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(e3, num_classes)
        self.num_features = e3
        self.gap_head = ("features", "fc")  # see models.cam_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.fc(self.drop(x))


# Unpadded stride-2 and stride-1 stem convs: 7 px leaves a 1x1 map; the
# blocks' padded pools keep it (ceil(n / 2)).
register_model("xception", family="xception", native_size=299, min_size=7,
               description="Xception (Chollet 2017), 299 px (ours)")(Xception)
# padded stride-1 stem: any size works; 1 px stays 1x1 through the pools
register_model("xception_small", family="xception", native_size=32, min_size=1,
               stem_stride=1, entry_widths=(64, 128, 256), middle_blocks=4,
               exit_widths=(512, 768, 1024),
               description="Xception layout for 32 px images (ours)")(Xception)
