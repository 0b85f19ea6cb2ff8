"""MobileNetV2 (Sandler et al., 2018, "Inverted Residuals and Linear Bottlenecks").

Inverted residual blocks: 1x1 expansion (x6) -> depthwise 3x3 -> linear 1x1
projection, a residual connection where the shape allows; ReLU6 after the
expansion and the depthwise conv, none after the projection (the linear
bottleneck). torchvision's implementation with input channels, activation,
normalization and width multiplier by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._registry import register_model
from .layers import norm_factory, replace_acts, set_in_chans

if TYPE_CHECKING:  # torchvision is imported when a builder runs (1-2 s)
    from torchvision.models import MobileNetV2


def _create_mobilenet_v2(
    num_classes: int = 1000,
    in_chans: int = 3,
    width_mult: float = 1.0,
    drop_rate: float = 0.2,
    act_layer: str = "relu6",
    norm_layer: str = "batch",
) -> MobileNetV2:
    """torchvision's MobileNetV2; ``act_layer`` replaces its ReLU6."""
    from torchvision.models import MobileNetV2

    model = MobileNetV2(num_classes=num_classes, width_mult=width_mult,
                        norm_layer=norm_factory(norm_layer), dropout=drop_rate)
    set_in_chans(model, in_chans)
    model.gap_head = ("features", "classifier.1")  # see models.cam_layers
    return replace_acts(model, act_layer)


# Five stride-2 stages: 32 px ends on a 1x1 map.
register_model("mobilenet_v2", family="mobilenet", native_size=224, min_size=32,
               description="MobileNetV2 (torchvision)")(_create_mobilenet_v2)
