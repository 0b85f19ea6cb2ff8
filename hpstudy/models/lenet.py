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
    """LeNet-5 with modern options (activation, normalization, dropout).

    Args:
        num_classes: output logits.
        in_chans: input channels.
        input_size: input side; below 32 the first conv pads by 2 (MNIST's 28 px).
        drop_rate: dropout after each hidden dense layer.
        act_layer: activation name (LeNet used scaled tanh).
        norm_layer: normalization after each conv.
        pool: ``max`` or ``avg`` (LeNet's subsampling was a trainable average).
    """

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
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max' (got {pool!r})")
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


register_model(
    "lenet5", family="lenet", native_size=32, min_size=28, description="LeNet-5 (LeCun 1998)"
)(LeNet5)
