"""The thesis's MNIST baseline CNN (682K parameters at 28x28x1).

conv5x5/32 SAME -> act -> avgpool2 -> conv5x5/64 SAME -> act -> avgpool2 ->
fc200 -> act -> dropout 0.5 -> fc classes. Trained with Nesterov SGD
(lr 0.1, momentum 0.9, wd 1e-5, batch 128, 30 epochs, lr/10 after 20), He-normal init.

The widths are keyword arguments, so the same file serves as the course's
"small CNN" on tiny inputs (sklearn digits, 8x8).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._registry import register_model
from .layers import get_act, get_norm


class BaselineCNN(nn.Module):
    """Two conv+pool stages and one hidden dense layer.

    Args:
        num_classes: output logits.
        in_chans: input channels.
        input_size: input side; the dense layer sees (input_size // 4)^2 cells.
        widths: filters of the two convs.
        hidden: width of the hidden dense layer.
        kernel_size: side of both (odd, SAME-padded) kernels.
        drop_rate: dropout before the last layer.
        act_layer: activation name.
        norm_layer: normalization after each conv (``none`` in the thesis).
        pool: ``avg`` (the thesis) or ``max``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        input_size: int = 28,
        widths: tuple[int, int] = (32, 64),
        hidden: int = 200,
        kernel_size: int = 5,
        drop_rate: float = 0.5,  # the thesis's dropout before the last layer
        act_layer: str = "relu",
        norm_layer: str = "none",
        pool: str = "avg",
    ):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max' (got {pool!r})")
        Pool = nn.AvgPool2d if pool == "avg" else nn.MaxPool2d
        c1, c2 = widths
        pad = kernel_size // 2  # SAME padding for odd kernels
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, c1, kernel_size, padding=pad),
            get_norm(norm_layer, c1),
            get_act(act_layer),
            Pool(2),
            nn.Conv2d(c1, c2, kernel_size, padding=pad),
            get_norm(norm_layer, c2),
            get_act(act_layer),
            Pool(2),
        )
        side = input_size // 2 // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side * side, hidden),
            get_act(act_layer),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


register_model(
    "baseline_cnn",
    family="baseline",
    native_size=28,
    min_size=4,
    description="thesis MNIST baseline: 2x(conv5x5+avgpool), fc200, dropout",
)(BaselineCNN)
