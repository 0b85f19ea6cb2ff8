"""EfficientNet-B0 (Tan & Le, 2019, "Rethinking Model Scaling for CNNs").

MBConv blocks (inverted residuals with squeeze-excitation and SiLU) found by
architecture search; B1-B7 scale width, depth and resolution together
(compound scaling). torchvision's implementation with input channels,
activation and normalization by name; stochastic depth as in the paper.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._registry import register_model
from .layers import norm_factory, replace_acts, set_in_chans

if TYPE_CHECKING:  # torchvision is imported when a builder runs (1-2 s)
    from torchvision.models import EfficientNet


def _create_efficientnet_b0(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.2,
    stochastic_depth_prob: float = 0.2,
    act_layer: str = "silu",
    norm_layer: str = "batch",
) -> EfficientNet:
    """torchvision's EfficientNet-B0 (random init; no weights are downloaded)."""
    from torchvision.models import efficientnet_b0

    model = efficientnet_b0(
        weights=None, num_classes=num_classes, dropout=drop_rate,
        stochastic_depth_prob=stochastic_depth_prob, norm_layer=norm_factory(norm_layer),
    )
    set_in_chans(model, in_chans)
    return replace_acts(model, act_layer)  # SiLU everywhere; the SE gates stay sigmoid


# Five stride-2 stages: 32 px ends on a 1x1 map.
register_model("efficientnet_b0", family="efficientnet", native_size=224, min_size=32,
               description="EfficientNet-B0 (torchvision)")(_create_efficientnet_b0)
