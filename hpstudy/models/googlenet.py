"""GoogLeNet / Inception v1 (Szegedy et al., 2015, "Going Deeper with Convolutions").

Inception blocks run 1x1, 1x1->3x3, 1x1->5x5 (torchvision uses 3x3 here, as
its reference weights do) and pool->1x1 branches in parallel; the 1x1
bottlenecks keep the wide blocks cheap. Global average pool, dropout, fc.

torchvision's ``GoogLeNet`` with our conv block (conv-norm-act by name) and
without the auxiliary classifiers: they return a tuple while training, and
every hpstudy model returns plain logits.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from ._registry import register_model
from .layers import ConvNormAct, set_in_chans

if TYPE_CHECKING:  # torchvision is imported when a builder runs (1-2 s)
    from torchvision.models import GoogLeNet


def _create_googlenet(
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.2,
    act_layer: str = "relu",
    norm_layer: str = "batch",
) -> GoogLeNet:
    """torchvision's GoogLeNet, no auxiliary heads, layers chosen by name."""
    from torchvision.models import GoogLeNet
    from torchvision.models.googlenet import Inception, InceptionAux

    conv_block = functools.partial(ConvNormAct, act_layer=act_layer, norm_layer=norm_layer)
    # GoogLeNet hands its conv block to the stem only: the Inception blocks need it bound
    blocks = [conv_block, functools.partial(Inception, conv_block=conv_block),
              functools.partial(InceptionAux, conv_block=conv_block)]
    model = GoogLeNet(
        num_classes=num_classes, aux_logits=False, transform_input=False, init_weights=True,
        blocks=blocks, dropout=drop_rate,
    )
    model.gap_head = ("inception5b", "fc")  # see models.cam_layers
    return set_in_chans(model, in_chans)


# Four stride-2 stages plus the 7x7/2 stem: 32 px ends on a 1x1 map.
register_model("googlenet", family="googlenet", native_size=224, min_size=32,
               description="GoogLeNet / Inception v1 (torchvision, no aux heads)")(_create_googlenet)
