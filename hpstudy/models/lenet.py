"""LeNet-5 (LeCun et al., 1998, "Gradient-based learning applied to document recognition").

Two conv(5x5)+pool stages and three fully connected layers (120, 84, classes),
for 32x32 inputs; 28x28 inputs are padded by 2 in the first conv, as usual for MNIST.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._registry import register_model
from .layers import get_act, get_norm


class LeNet5(nn.Module):
    """LeNet-5 with modern options (activation, normalization, dropout)."""

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        input_size: int = 32,
        drop_rate: float = 0.0,
        act_layer: str = "relu",
        norm_layer: str = "none",
        pool: str = "max",
    ):
        super().__init__()
        pad = 2 if input_size < 32 else 0  # 28 px MNIST -> 32 px receptive layout
        Pool = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, 5, padding=pad),
            get_norm(norm_layer, 6),
            get_act(act_layer),
            Pool(2),
            nn.Conv2d(6, 16, 5),
            get_norm(norm_layer, 16),
            get_act(act_layer),
            Pool(2),
        )
        side = ((input_size + 2 * pad - 4) // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            get_act(act_layer),
            nn.Dropout(drop_rate),
            nn.Linear(120, 84),
            get_act(act_layer),
            nn.Dropout(drop_rate),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _create_lenet(**kwargs) -> LeNet5:
    return LeNet5(**kwargs)


register_model(
    "lenet5", family="lenet", native_size=32, min_size=28, description="LeNet-5 (LeCun 1998)"
)(_create_lenet)
