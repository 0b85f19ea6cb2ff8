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
    """Fully connected classifier on flattened images."""

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


def _create_mlp(**kwargs) -> MLP:
    return MLP(**kwargs)


register_model(
    "mlp", family="mlp", native_size=28, min_size=1, description="MLP, hidden widths by `hidden`"
)(_create_mlp)
