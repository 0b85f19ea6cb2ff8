"""ResNets for small images: post- or pre-activation, regular, bottleneck and wide.

He et al., 2016a, "Deep Residual Learning for Image Recognition" (the
original post-activation block conv-norm-act-conv-norm, add, act; the CIFAR
layout), He et al., 2016b, "Identity Mappings in Deep Residual Networks"
(pre-activation: norm-act before every conv, nothing after the addition),
and Zagoruyko & Komodakis, 2016, "Wide Residual Networks".

Layout (the thesis): stem conv3x3/16, three stages of ``n`` blocks at
16/32/64 filters (times ``widen_factor``) on 32/16/8 maps, the first block of
stages 2 and 3 strides by 2, a 1x1 projection shortcut where the shape
changes, global average pool, fc. Regular blocks give depth 6n+2,
bottleneck blocks (1x1-3x3-1x1 to 4x the width) 9n+2; WRN-d-k counts the
projections too, d = 6n+4. Block style (``preact``), block kind, width and
head (``gap`` or ``fc``) are options of one model class.

``resnet20/32/44/56/110`` are He et al. 2016a's CIFAR networks (post-activation,
0.27M-1.7M parameters; projection shortcuts, their option B);
``preact_resnet*`` the thesis's pre-activation ones. Trained alike in the
thesis: Nesterov lr 0.1, momentum 0.9, wd 1e-4, 164 epochs, lr/10 at 82 and
123 (WRN: 200 epochs, lr/5 at 60/120/160, wd 5e-4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ._registry import register_model
from .layers import check_head, get_act, get_norm


def _conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    # no bias: a normalization layer or the residual sum follows
    return nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)


class PreActBasicBlock(nn.Module):
    """norm-act-conv3x3, norm-act-(dropout)-conv3x3, plus the shortcut."""

    expansion = 1

    def __init__(
        self, in_chs: int, width: int, stride: int, drop_rate: float, act_layer: str,
        norm_layer: str,
    ):
        super().__init__()
        out_chs = width * self.expansion
        self.norm1 = get_norm(norm_layer, in_chs)
        # not in place: with norm "none" the input is also the identity shortcut
        self.act1 = get_act(act_layer, inplace=False)
        self.conv1 = _conv3x3(in_chs, width, stride)
        self.norm2 = get_norm(norm_layer, width)
        self.act2 = get_act(act_layer)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()  # WRN's dropout
        self.conv2 = _conv3x3(width, out_chs)
        self.shortcut = (
            _conv1x1(in_chs, out_chs, stride) if stride != 1 or in_chs != out_chs else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(x))
        # the projection sees the pre-activated input (He et al. 2016, both branches)
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.drop(self.act2(self.norm2(out))))
        return out + shortcut


class PreActBottleneck(nn.Module):
    """norm-act-conv1x1, norm-act-conv3x3 (strided), norm-act-(dropout)-conv1x1 to 4x width."""

    expansion = 4

    def __init__(
        self, in_chs: int, width: int, stride: int, drop_rate: float, act_layer: str,
        norm_layer: str,
    ):
        super().__init__()
        out_chs = width * self.expansion
        self.norm1 = get_norm(norm_layer, in_chs)
        self.act1 = get_act(act_layer, inplace=False)
        self.conv1 = _conv1x1(in_chs, width)
        self.norm2 = get_norm(norm_layer, width)
        self.act2 = get_act(act_layer)
        self.conv2 = _conv3x3(width, width, stride)
        self.norm3 = get_norm(norm_layer, width)
        self.act3 = get_act(act_layer)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv3 = _conv1x1(width, out_chs)
        self.shortcut = (
            _conv1x1(in_chs, out_chs, stride) if stride != 1 or in_chs != out_chs else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.act2(self.norm2(out)))
        out = self.conv3(self.drop(self.act3(self.norm3(out))))
        return out + shortcut


def _projection(in_chs: int, out_chs: int, stride: int, norm_layer: str) -> nn.Module | None:
    """conv1x1-norm where the shape changes (post-activation blocks), else None."""
    if stride == 1 and in_chs == out_chs:
        return None
    return nn.Sequential(_conv1x1(in_chs, out_chs, stride), get_norm(norm_layer, out_chs))


class BasicBlock(nn.Module):
    """conv3x3-norm-act-(dropout)-conv3x3-norm, plus the shortcut, then act (He et al. 2016a)."""

    expansion = 1

    def __init__(
        self, in_chs: int, width: int, stride: int, drop_rate: float, act_layer: str,
        norm_layer: str,
    ):
        super().__init__()
        out_chs = width * self.expansion
        self.conv1 = _conv3x3(in_chs, width, stride)
        self.norm1 = get_norm(norm_layer, width)
        self.act1 = get_act(act_layer)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = _conv3x3(width, out_chs)
        self.norm2 = get_norm(norm_layer, out_chs)
        self.shortcut = _projection(in_chs, out_chs, stride, norm_layer)
        self.act2 = get_act(act_layer)  # in place on the fresh sum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = self.drop(self.act1(self.norm1(self.conv1(x))))
        out = self.norm2(self.conv2(out))
        return self.act2(out + shortcut)


class Bottleneck(nn.Module):
    """conv1x1-norm-act, conv3x3 (strided)-norm-act, (dropout)-conv1x1 to 4x width-norm; add; act."""

    expansion = 4

    def __init__(
        self, in_chs: int, width: int, stride: int, drop_rate: float, act_layer: str,
        norm_layer: str,
    ):
        super().__init__()
        out_chs = width * self.expansion
        self.conv1 = _conv1x1(in_chs, width)
        self.norm1 = get_norm(norm_layer, width)
        self.act1 = get_act(act_layer)
        self.conv2 = _conv3x3(width, width, stride)
        self.norm2 = get_norm(norm_layer, width)
        self.act2 = get_act(act_layer)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv3 = _conv1x1(width, out_chs)
        self.norm3 = get_norm(norm_layer, out_chs)
        self.shortcut = _projection(in_chs, out_chs, stride, norm_layer)
        self.act3 = get_act(act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.act2(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(self.drop(out)))
        return self.act3(out + shortcut)


_Block = type[PreActBasicBlock] | type[PreActBottleneck] | type[BasicBlock] | type[Bottleneck]
# (block kind, preact) -> block class
_BLOCKS: dict[tuple[str, bool], _Block] = {
    ("basic", True): PreActBasicBlock,
    ("bottleneck", True): PreActBottleneck,
    ("basic", False): BasicBlock,
    ("bottleneck", False): Bottleneck,
}
BLOCKS = ("basic", "bottleneck")


class ResNet(nn.Module):
    """ResNet on small images: post- or pre-activation, basic or bottleneck, wide, GAP or fc head.

    Args:
        num_classes: output logits.
        in_chans: input channels.
        layers: blocks per stage (``n``).
        block: ``basic`` or ``bottleneck``.
        preact: pre-activation blocks (He et al. 2016b: norm-act before every
            conv, a final norm-act before the head) instead of the original
            post-activation ones (conv-norm-act, act after the addition; the
            stem is conv-norm-act).
        widths: base filters of the stages (the first stage keeps full
            resolution, every later one halves it).
        widen_factor: WRN's k, multiplies every stage's width.
        stem_width: filters of the stem conv3x3.
        head: ``gap`` (global average pool, fc) or ``fc`` (flatten the last
            maps into the fc layer; needs ``input_size``).
        input_size: input side, used by the ``fc`` head only.
        drop_rate: dropout between the convs of every block (WRN uses 0.3 on some sets).
        act_layer: activation name.
        norm_layer: normalization name.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        layers: int = 9,
        block: str = "basic",
        preact: bool = True,
        widths: Sequence[int] = (16, 32, 64),
        widen_factor: int = 1,
        stem_width: int = 16,
        head: str = "gap",
        input_size: int = 32,
        drop_rate: float = 0.0,
        act_layer: str = "relu",
        norm_layer: str = "batch",
    ):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {', '.join(BLOCKS)} (got {block!r})")
        if layers < 1 or widen_factor < 1:
            raise ValueError(f"layers and widen_factor must be >= 1 (got {layers}, {widen_factor})")
        check_head(head)
        Block = _BLOCKS[block, bool(preact)]
        if preact:  # every block starts with norm-act
            self.stem = _conv3x3(in_chans, stem_width)
        else:
            self.stem = nn.Sequential(_conv3x3(in_chans, stem_width),
                                      get_norm(norm_layer, stem_width), get_act(act_layer))
        stages: list[nn.Module] = []
        chs, side = stem_width, input_size
        for i, w in enumerate(widths):
            blocks = []
            for j in range(layers):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(Block(chs, w * widen_factor, stride, drop_rate, act_layer,
                                    norm_layer))
                chs = w * widen_factor * Block.expansion
            side = (side + 1) // 2 if i > 0 else side  # conv3x3 pad 1 stride 2: ceil(n / 2)
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        if preact:  # the last block ends in a conv: normalize and activate before the head
            self.norm, self.act = get_norm(norm_layer, chs), get_act(act_layer)
        else:  # ... a post-activation block ends activated already
            self.norm, self.act = nn.Identity(), nn.Identity()
        self.num_features = chs
        if head == "gap":
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(chs, num_classes)
            self.gap_head = ("act" if preact else "stages", "fc")  # see models.cam_layers
        else:
            self.pool = nn.Identity()
            self.fc = nn.Linear(chs * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        x = self.pool(self.act(self.norm(x)))
        return self.fc(torch.flatten(x, 1))


# The class's name before post-activation blocks joined it: whole-model pickles
# (MLflow's registered models) refer to it.
PreActResNet = ResNet


def _blocks_per_stage(depth: int, per_block: int, extra: int, what: str) -> int:
    n, rem = divmod(depth - extra, per_block)
    if rem or n < 1:
        valid = ", ".join(str(per_block * k + extra) for k in range(1, 5))
        raise ValueError(f"{what} depth must be {per_block}n+{extra} (e.g. {valid}); got {depth}")
    return n


def _create_resnet(
    num_classes: int = 10,
    in_chans: int = 3,
    depth: int = 56,
    block: str = "basic",
    preact: bool = True,
    widths: Sequence[int] = (16, 32, 64),
    head: str = "gap",
    input_size: int = 32,
    drop_rate: float = 0.0,
    act_layer: str = "relu",
    norm_layer: str = "batch",
) -> ResNet:
    """ResNet by depth: 6n+2 with basic blocks, 9n+2 with bottlenecks (``n`` blocks per stage)."""
    per_block = 9 if block == "bottleneck" else 6
    style = "pre-act" if preact else "post-act"
    n = _blocks_per_stage(depth, per_block, 2, f"{style} ResNet ({block} blocks)")
    return ResNet(
        num_classes=num_classes, in_chans=in_chans, layers=n, block=block, preact=preact,
        widths=widths, head=head, input_size=input_size, drop_rate=drop_rate,
        act_layer=act_layer, norm_layer=norm_layer,
    )


def _create_wrn(
    num_classes: int = 10,
    in_chans: int = 3,
    depth: int = 28,
    widen_factor: int = 10,
    head: str = "gap",
    input_size: int = 32,
    drop_rate: float = 0.0,
    act_layer: str = "relu",
    norm_layer: str = "batch",
) -> ResNet:
    """WRN-depth-k: pre-activation basic blocks, depth 6n+4 (the projections are counted)."""
    n = _blocks_per_stage(depth, 6, 4, "WRN")
    return ResNet(
        num_classes=num_classes, in_chans=in_chans, layers=n, block="basic", preact=True,
        widen_factor=widen_factor, head=head, input_size=input_size, drop_rate=drop_rate,
        act_layer=act_layer, norm_layer=norm_layer,
    )


# Two stride-2 stages: 4 px is the smallest input that keeps every map >= 1 px.
_META = dict(family="resnet", native_size=32, min_size=4)

register_model("preact_resnet", **_META, preact=True,
               description="pre-act ResNet, any depth (6n+2 basic / 9n+2 bottleneck)",
               )(_create_resnet)
for _depth in (20, 32, 44, 56, 110):
    register_model(f"preact_resnet{_depth}", **_META, depth=_depth, block="basic", preact=True,
                   description=f"pre-act ResNet-{_depth}, basic blocks (CIFAR)",
                   )(_create_resnet)
for _depth in (65, 83, 164):
    register_model(f"preact_resnet{_depth}", **_META, depth=_depth, block="bottleneck",
                   preact=True, description=f"pre-act ResNet-{_depth}, bottleneck blocks (CIFAR)",
                   )(_create_resnet)

register_model("resnet", **_META, preact=False,
               description="post-act ResNet, any depth (6n+2 basic / 9n+2 bottleneck)",
               )(_create_resnet)
for _depth in (20, 32, 44, 56, 110):
    register_model(f"resnet{_depth}", **_META, depth=_depth, block="basic", preact=False,
                   description=f"ResNet-{_depth}, post-act basic blocks (He et al. 2016a, CIFAR)",
                   )(_create_resnet)

register_model("wrn", **_META, description="Wide ResNet, any depth (6n+4) and widen_factor",
               )(_create_wrn)
register_model("wrn40_4", **_META, depth=40, widen_factor=4,
               description="WRN-40-4 (Zagoruyko & Komodakis 2016)")(_create_wrn)
register_model("wrn28_10", **_META, depth=28, widen_factor=10,
               description="WRN-28-10 (Zagoruyko & Komodakis 2016)")(_create_wrn)
