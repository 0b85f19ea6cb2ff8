"""A small depthwise-separable CNN (MobileNet v1 style, Howard et al., 2017).

Each separable block factorizes a 3x3 conv into a depthwise 3x3 (one filter
per channel) and a pointwise 1x1 that mixes channels, each followed by
norm-act: about 8-9x fewer multiply-adds than the full conv. Stem conv3x3,
separable blocks, global average pool, dropout, fc. For 8-32 px images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ._registry import register_model
from .layers import get_act, get_norm


class SeparableBlock(nn.Module):
    """depthwise conv3x3 (stride) -> norm -> act -> pointwise conv1x1 -> norm -> act."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, act_layer: str, norm_layer: str):
        super().__init__()
        bias = norm_layer == "none"  # a bias is redundant in front of a normalization
        self.dw = nn.Conv2d(in_chs, in_chs, 3, stride=stride, padding=1, groups=in_chs, bias=bias)
        self.norm1 = get_norm(norm_layer, in_chs)
        self.act1 = get_act(act_layer)
        self.pw = nn.Conv2d(in_chs, out_chs, 1, bias=bias)
        self.norm2 = get_norm(norm_layer, out_chs)
        self.act2 = get_act(act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.norm1(self.dw(x)))
        return self.act2(self.norm2(self.pw(x)))


class SeparableCNN(nn.Module):
    """Stem conv3x3 then depthwise-separable blocks, global average pool, fc.

    Args:
        num_classes: output logits.
        in_chans: input channels.
        stem_width: filters of the full 3x3 stem conv.
        widths: output filters of the separable blocks.
        strides: stride of each block's depthwise conv (same length as ``widths``).
        drop_rate: dropout before the fc layer.
        act_layer: activation name.
        norm_layer: normalization name.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        stem_width: int = 32,
        widths: Sequence[int] = (64, 128, 128, 256, 256),
        strides: Sequence[int] = (1, 2, 1, 2, 1),
        drop_rate: float = 0.2,
        act_layer: str = "relu",
        norm_layer: str = "batch",
    ):
        super().__init__()
        if len(widths) != len(strides):
            raise ValueError(f"widths ({len(widths)}) and strides ({len(strides)}) differ in length")
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem_width, 3, padding=1, bias=norm_layer == "none"),
            get_norm(norm_layer, stem_width),
            get_act(act_layer),
        )
        blocks, chs = [], stem_width
        for w, s in zip(widths, strides, strict=True):
            blocks.append(SeparableBlock(chs, w, s, act_layer, norm_layer))
            chs = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(chs, num_classes)
        self.gap_head = ("blocks", "fc")  # see models.cam_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(self.drop(torch.flatten(x, 1)))


# Two stride-2 blocks by default: 4 px keeps every map >= 1 px.
register_model("separable_cnn", family="separable", native_size=32, min_size=4,
               description="small depthwise-separable CNN (MobileNet v1 style)")(SeparableCNN)
