"""Inception-v3 (Szegedy et al., 2016, "Rethinking the Inception Architecture for Computer Vision").

Inception-v3 factorizes large kernels: a 5x5 conv becomes two 3x3 convs
(figure 5, block A), an NxN conv becomes a 1xN conv followed by an Nx1 conv
(figure 6, block B: for N = 7 about 3.5x fewer weights, one more
nonlinearity), and on the coarsest grid the 3x3 branches end in a 1x3 and a
3x1 conv side by side (figure 7, block C, "expanded filter bank"). Grid
reductions (figure 10) run a stride-2 conv branch beside a stride-2 pool, so
the maps halve while the channels grow without a representational bottleneck.

``inception_v3`` is torchvision's 299 px network (no auxiliary classifier:
every hpstudy model returns plain logits) with our conv block.
``inception_small`` is ours, for 32 px images: stem conv3x3, stage A at
full resolution, reduction, stage B (``kernel_size`` N, factorized unless
``factorize=False``), reduction, stage C, global average pool, dropout, fc.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from ._registry import register_model
from .layers import ConvNormAct, set_in_chans

if TYPE_CHECKING:  # torchvision is imported when a builder runs (1-2 s)
    from torchvision.models import Inception3


def _pool_branch(in_chs: int, out_chs: int, conv: functools.partial) -> nn.Sequential:
    # average pool 3x3 stride 1, then a 1x1 projection (the "pool" branch of every block)
    return nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
                         conv(in_chs, out_chs, kernel_size=1))


def _nxn(in_chs: int, out_chs: int, n: int, factorize: bool, conv: functools.partial) -> list:
    """An NxN conv, or its factorization 1xN then Nx1 (SAME padding)."""
    if not factorize:
        return [conv(in_chs, out_chs, kernel_size=n, padding=n // 2)]
    return [conv(in_chs, out_chs, kernel_size=(1, n), padding=(0, n // 2)),
            conv(out_chs, out_chs, kernel_size=(n, 1), padding=(n // 2, 0))]


class InceptionA(nn.Module):
    """Figure 5: 1x1 | 1x1-3x3 | 1x1-3x3-3x3 (a factorized 5x5) | pool-1x1, each ``out/4``."""

    def __init__(self, in_chs: int, out_chs: int, conv: functools.partial):
        super().__init__()
        q = out_chs // 4
        self.branch1 = conv(in_chs, q, kernel_size=1)
        self.branch3 = nn.Sequential(conv(in_chs, q, kernel_size=1),
                                     conv(q, q, kernel_size=3, padding=1))
        self.branch5 = nn.Sequential(conv(in_chs, q, kernel_size=1),
                                     conv(q, q, kernel_size=3, padding=1),
                                     conv(q, q, kernel_size=3, padding=1))
        self.branch_pool = _pool_branch(in_chs, out_chs - 3 * q, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x),
                          self.branch_pool(x)], 1)


class InceptionB(nn.Module):
    """Figure 6: 1x1 | 1x1-(1xN-Nx1) | 1x1-(1xN-Nx1)-(1xN-Nx1) | pool-1x1, each ``out/4``."""

    def __init__(self, in_chs: int, out_chs: int, n: int, factorize: bool,
                 conv: functools.partial):
        super().__init__()
        q = out_chs // 4
        self.branch1 = conv(in_chs, q, kernel_size=1)
        self.branch_n = nn.Sequential(conv(in_chs, q, kernel_size=1),
                                      *_nxn(q, q, n, factorize, conv))
        self.branch_nn = nn.Sequential(conv(in_chs, q, kernel_size=1),
                                       *_nxn(q, q, n, factorize, conv),
                                       *_nxn(q, q, n, factorize, conv))
        self.branch_pool = _pool_branch(in_chs, out_chs - 3 * q, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch_n(x), self.branch_nn(x),
                          self.branch_pool(x)], 1)


class _ExpandedBank(nn.Module):
    """A 1x3 and a 3x1 conv side by side on the same input, concatenated."""

    def __init__(self, in_chs: int, out_chs: int, conv: functools.partial):
        super().__init__()
        self.conv_1x3 = conv(in_chs, out_chs // 2, kernel_size=(1, 3), padding=(0, 1))
        self.conv_3x1 = conv(in_chs, out_chs - out_chs // 2, kernel_size=(3, 1), padding=(1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv_1x3(x), self.conv_3x1(x)], 1)


class InceptionC(nn.Module):
    """Figure 7: 1x1 | 1x1-(1x3 & 3x1) | 1x1-3x3-(1x3 & 3x1) | pool-1x1, each ``out/4``."""

    def __init__(self, in_chs: int, out_chs: int, conv: functools.partial):
        super().__init__()
        q = out_chs // 4
        self.branch1 = conv(in_chs, q, kernel_size=1)
        self.branch3 = nn.Sequential(conv(in_chs, q, kernel_size=1), _ExpandedBank(q, q, conv))
        self.branch33 = nn.Sequential(conv(in_chs, q, kernel_size=1),
                                      conv(q, q, kernel_size=3, padding=1),
                                      _ExpandedBank(q, q, conv))
        self.branch_pool = _pool_branch(in_chs, out_chs - 3 * q, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch33(x),
                          self.branch_pool(x)], 1)


class GridReduction(nn.Module):
    """Figure 10: conv3x3/2 | 1x1-3x3-3x3/2 | maxpool3x3/2, concatenated: 2x the channels.

    Each conv branch adds ``in/2`` channels; every branch pads by 1, so the
    side becomes ceil(n / 2).
    """

    def __init__(self, in_chs: int, conv: functools.partial):
        super().__init__()
        r = in_chs // 2
        self.branch3 = conv(in_chs, r, kernel_size=3, stride=2, padding=1)
        self.branch33 = nn.Sequential(conv(in_chs, r, kernel_size=1),
                                      conv(r, r, kernel_size=3, padding=1),
                                      conv(r, in_chs - r, kernel_size=3, stride=2, padding=1))
        self.branch_pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch3(x), self.branch33(x), self.branch_pool(x)], 1)


class InceptionSmall(nn.Module):
    """Inception-v3's three block kinds for small images (32 px -> 32/16/8 px grids).

    Args:
        num_classes: output logits.
        in_chans: input channels.
        width: channels of stage A; stages B and C have 2x and 4x (a multiple of 8).
        blocks: Inception blocks per stage.
        kernel_size: N of stage B's NxN convs (odd; v3 uses 7 on its 17x17 grid).
        factorize: stage B factorizes NxN into 1xN then Nx1 (False: plain NxN,
            for an ablation of the factorization).
        drop_rate: dropout before the classifier.
        act_layer: activation name.
        norm_layer: normalization name.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        width: int = 64,
        blocks: int = 2,
        kernel_size: int = 5,
        factorize: bool = True,
        drop_rate: float = 0.2,
        act_layer: str = "relu",
        norm_layer: str = "batch",
    ):
        super().__init__()
        if width < 8 or width % 8:
            raise ValueError(f"width must be a positive multiple of 8 (got {width})")
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1 (got {blocks})")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (SAME padding; got {kernel_size})")
        conv = functools.partial(ConvNormAct, act_layer=act_layer, norm_layer=norm_layer)
        self.stem = conv(in_chans, width // 2, kernel_size=3, padding=1)
        layers: list[nn.Module] = []
        chs = width // 2
        for _ in range(blocks):
            layers.append(InceptionA(chs, width, conv))
            chs = width
        layers.append(GridReduction(chs, conv))
        chs *= 2
        for _ in range(blocks):
            layers.append(InceptionB(chs, chs, kernel_size, factorize, conv))
        layers.append(GridReduction(chs, conv))
        chs *= 2
        for _ in range(blocks):
            layers.append(InceptionC(chs, chs, conv))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(chs, num_classes)
        self.num_features = chs
        self.gap_head = ("features", "fc")  # see models.cam_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(self.stem(x)))
        return self.fc(self.drop(torch.flatten(x, 1)))


def _create_inception_v3(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.5,
    act_layer: str = "relu",
    norm_layer: str = "batch",
) -> Inception3:
    """torchvision's Inception3 without the auxiliary head, layers chosen by name."""
    from torchvision.models import inception as tv

    conv_block = functools.partial(ConvNormAct, act_layer=act_layer, norm_layer=norm_layer)
    # Inception3 hands its conv block to the stem only: the blocks need it bound
    blocks = [conv_block] + [
        functools.partial(b, conv_block=conv_block)
        for b in (tv.InceptionA, tv.InceptionB, tv.InceptionC, tv.InceptionD, tv.InceptionE,
                  tv.InceptionAux)
    ]
    model = tv.Inception3(num_classes=num_classes, aux_logits=False, transform_input=False,
                       inception_blocks=blocks, init_weights=True, dropout=drop_rate)
    model.gap_head = ("Mixed_7c", "fc")  # see models.cam_layers
    return set_in_chans(model, in_chans)


# Valid 3x3/2 convs and pools shrink 75 px to a 1x1 map before the last stage (torchvision).
register_model("inception_v3", family="inception", native_size=299, min_size=75,
               description="Inception-v3 (torchvision, no aux head)")(_create_inception_v3)
# Two SAME grid reductions: 4 px keeps every map >= 1 px.
register_model("inception_small", family="inception", native_size=32, min_size=4,
               description="Inception-v3 blocks A/B/C (factorized NxN) for 32 px (ours)",
               )(InceptionSmall)
