"""EfficientNet-B0 to B7 (Tan & Le, 2019, "Rethinking Model Scaling for CNNs").

MBConv blocks (inverted residuals with squeeze-excitation and SiLU) found by
architecture search make B0; compound scaling grows it with one coefficient
phi: depth by alpha^phi, width by beta^phi and resolution by gamma^phi
(alpha 1.2, beta 1.1, gamma 1.15 under alpha * beta^2 * gamma^2 ~ 2). B1-B7
use the rounded (width, depth, resolution, dropout) of the reference code,
below. One builder takes ``width_mult`` and ``depth_mult``, so any point of
the family (and beyond) can be searched; the resolution coefficient is each
variant's native input size.

torchvision's implementation (its ``MBConvConfig`` rounds widths to
multiples of 8 and depths up, as the reference code does) with input
channels, activation and normalization by name and stochastic depth as in
the paper. ``stem_stride=1`` keeps small images (32 px) at 2x2 instead of 1x1
on the last stage. torchvision trains B5-B7 with batch-norm eps 1e-3 and
momentum 0.01; here every variant uses PyTorch's defaults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._registry import register_model
from .layers import norm_factory, replace_acts, set_in_chans

if TYPE_CHECKING:  # torchvision is imported when a builder runs (1-2 s)
    from torchvision.models import EfficientNet

# EfficientNet-B0 (the paper's table 1), one row per stage after the stem:
# (expand ratio, kernel, stride, input channels, output channels, layers).
B0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)

# variant: (width_mult, depth_mult, resolution in px, dropout before the classifier)
COEFFICIENTS: dict[str, tuple[float, float, int, float]] = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}


def _create_efficientnet(
    num_classes: int = 1000,
    in_chans: int = 3,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    stem_stride: int = 2,
    drop_rate: float = 0.2,
    stochastic_depth_prob: float = 0.2,
    act_layer: str = "silu",
    norm_layer: str = "batch",
) -> EfficientNet:
    """EfficientNet at any (width, depth) multiplier of B0 (random init; nothing downloaded).

    Args:
        num_classes: output logits.
        in_chans: input channels.
        width_mult: channel multiplier of every stage (B7: 2.0).
        depth_mult: layer multiplier of every stage, rounded up (B7: 3.1).
        stem_stride: stride of the 3x3 stem: 2 (the paper) or 1 (small images).
        drop_rate: dropout before the classifier (B0 0.2 ... B7 0.5).
        stochastic_depth_prob: drop-path rate of the last block, linear in depth.
        act_layer: activation name (the squeeze-excitation gates stay sigmoid).
        norm_layer: normalization name.
    """
    from torchvision.models import EfficientNet
    from torchvision.models.efficientnet import MBConvConfig

    if width_mult <= 0 or depth_mult <= 0:
        raise ValueError(f"width_mult and depth_mult must be > 0 (got {width_mult}, {depth_mult})")
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2 (got {stem_stride})")
    setting = [MBConvConfig(*row, width_mult=width_mult, depth_mult=depth_mult)
               for row in B0_STAGES]
    model = EfficientNet(setting, dropout=drop_rate, stochastic_depth_prob=stochastic_depth_prob,
                         num_classes=num_classes, norm_layer=norm_factory(norm_layer))
    model.features[0][0].stride = (stem_stride, stem_stride)  # the stem's Conv2d
    set_in_chans(model, in_chans)
    model.gap_head = ("features", "classifier.1")  # see models.cam_layers
    return replace_acts(model, act_layer)  # SiLU everywhere; the SE gates stay sigmoid


# The stem and four stride-2 stages: 32 px ends on a 1x1 map (16 px with stem_stride=1).
register_model("efficientnet", family="efficientnet", native_size=224, min_size=32,
               description="EfficientNet, any width_mult/depth_mult (torchvision blocks)",
               )(_create_efficientnet)
for _v, (_w, _d, _res, _drop) in COEFFICIENTS.items():
    register_model(f"efficientnet_{_v}", family="efficientnet", native_size=_res, min_size=32,
                   width_mult=_w, depth_mult=_d, drop_rate=_drop,
                   description=f"EfficientNet-{_v.upper()} (width {_w}, depth {_d}, {_res} px)",
                   )(_create_efficientnet)
