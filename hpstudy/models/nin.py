"""Network in Network (Lin, Chen & Yan, 2014) and the thesis's BN-NiN.

Three NiN modules, each convKxK/F1 -> conv1x1/F2 -> conv1x1/F3 with an
activation after every conv (and, in BN-NiN, a normalization before every
activation): module1 -> maxpool3/2 SAME -> dropout -> module2 -> avgpool3/2
SAME -> dropout -> module3 (F3 = classes) -> global average pool. K = 5 in all
three modules, which is what reproduces the thesis's parameter counts.

The filters depend on the data set (the thesis's table 4.6): 358K parameters
on MNIST, 1.6M on CIFAR, 2M on SVHN. ``variant="auto"`` picks MNIST filters
for one input channel and CIFAR filters otherwise; SVHN is chosen by name.

Trained with Nesterov momentum 0.9, wd 1e-4: NiN from N(0, 0.05^2) with
lr 0.02-0.025, BN-NiN He-normal with lr 0.1 (shared/reference/RECIPES.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ._registry import register_model
from .layers import get_act, get_norm

# (F1, F2, F3) per module; the last module's F3 is the number of classes (None).
NIN_FILTERS: dict[str, tuple[tuple[int, int, int | None], ...]] = {
    "mnist": ((128, 96, 48), (128, 96, 48), (128, 96, None)),
    "cifar": ((192, 168, 96), (192, 192, 192), (192, 192, None)),
    "svhn": ((128, 96, 64), (320, 256, 128), (384, 256, None)),
}
VARIANTS = ("auto", *NIN_FILTERS)


def _nin_module(
    in_chs: int, filters: Sequence[int], kernel_size: int, act_layer: str, norm_layer: str
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, out_chs in enumerate(filters):
        k = kernel_size if i == 0 else 1
        # a bias is redundant in front of batch norm
        bias = norm_layer != "batch"
        layers += [
            nn.Conv2d(in_chs, out_chs, k, padding=k // 2, bias=bias),
            get_norm(norm_layer, out_chs),
            get_act(act_layer),
        ]
        in_chs = out_chs
    return nn.Sequential(*layers)


class NiN(nn.Module):
    """Network in Network; BN-NiN with ``norm_layer="batch"``.

    Args:
        num_classes: output maps of the last module (= logits after pooling).
        in_chans: input channels.
        variant: ``mnist``, ``cifar``, ``svhn`` filter sets, or ``auto`` (by ``in_chans``).
        filters: explicit ((F1, F2, F3), (F1, F2, F3), (F1, F2)) overriding ``variant``.
        kernel_size: K of each module's first conv.
        drop_rate: dropout after the first two modules (0.5 in the paper).
        act_layer: activation name.
        norm_layer: normalization name (``none`` for NiN, ``batch`` for BN-NiN).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        variant: str = "auto",
        filters: Sequence[Sequence[int]] | None = None,
        kernel_size: int = 5,
        drop_rate: float = 0.5,
        act_layer: str = "relu",
        norm_layer: str = "none",
    ):
        super().__init__()
        if filters is None:
            if variant not in VARIANTS:
                raise ValueError(f"variant must be one of {', '.join(VARIANTS)} (got {variant!r})")
            if variant == "auto":
                variant = "mnist" if in_chans == 1 else "cifar"
            filters = [f[:2] if f[2] is None else f for f in NIN_FILTERS[variant]]
        if len(filters) != 3 or len(filters[2]) != 2:
            raise ValueError("filters must be ((F1, F2, F3), (F1, F2, F3), (F1, F2))")
        f1, f2, f3 = (list(f) for f in filters)
        f3 = [*f3, num_classes]
        self.module1 = _nin_module(in_chans, f1, kernel_size, act_layer, norm_layer)
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1)  # SAME: ceil(n / 2) outputs
        self.drop1 = nn.Dropout(drop_rate)
        self.module2 = _nin_module(f1[-1], f2, kernel_size, act_layer, norm_layer)
        # TF SAME average pooling ignores the padding
        self.pool2 = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.drop2 = nn.Dropout(drop_rate)
        self.module3 = _nin_module(f2[-1], f3, kernel_size, act_layer, norm_layer)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.pool1(self.module1(x)))
        x = self.drop2(self.pool2(self.module2(x)))
        return torch.flatten(self.pool(self.module3(x)), 1)


# Two stride-2 pools: 4 px keeps every map >= 1 px.
register_model("nin", family="nin", native_size=32, min_size=4,
               description="Network in Network (variant mnist/cifar/svhn filters)")(NiN)
register_model("bn_nin", family="nin", native_size=32, min_size=4, norm_layer="batch",
               description="thesis BN-NiN: NiN with batch norm before every activation")(NiN)
