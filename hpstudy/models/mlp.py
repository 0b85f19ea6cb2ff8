"""Multilayer perceptron (the course's feed-forward network).

Flatten -> [Linear -> norm -> act -> dropout] * len(hidden) -> Linear.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ._registry import register_model
from .layers import get_act, get_norm


class MLP(nn.Module):
    """Fully connected classifier on flattened images.

    Args:
        num_classes: output logits.
        in_chans: input channels.
        input_size: input side; the first layer sees in_chans * input_size^2 inputs.
        hidden: widths of the hidden layers (empty: a linear classifier).
        drop_rate: dropout after each hidden layer.
        act_layer: activation name.
        norm_layer: normalization after each hidden linear layer.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        input_size: int = 28,
        hidden: Sequence[int] = (256, 128),
        drop_rate: float = 0.0,
        act_layer: str = "relu",
        norm_layer: str = "none",
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_chans * input_size * input_size
        for h in hidden:
            layers += [nn.Linear(width, h), get_norm(norm_layer, h, dims=1), get_act(act_layer)]
            if drop_rate > 0:
                layers.append(nn.Dropout(drop_rate))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


register_model(
    "mlp", family="mlp", native_size=28, min_size=1, description="MLP, hidden widths by `hidden`"
)(MLP)
