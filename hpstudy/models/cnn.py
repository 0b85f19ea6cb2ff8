"""A generic CNN whose conv-level hyperparameters are all searchable (the course's knobs).

The course's convolution hyperparameters: kernel size (3x3 default), stride,
padding, number of filters, dilation, and pooling (LeCun et al., 1998;
Simonyan & Zisserman, 2015, for the "stages of same-size convs then a pool"
layout; Lin et al., 2014, for the global-average-pool head; Yu & Koltun,
2016, for dilation).

``stages`` stages of ``convs_per_stage`` conv-norm-act layers (the first conv
of a stage strides by ``stride``), each stage ending in a ``pool_size``
max/avg pool (or none) and optional conv dropout; then the head: global
average pool (``gap``) or flatten (``fc``), optional hidden dense layers, dropout,
the classifier. Every argument is a plain value (int, float or string) an
Optuna trial can sample; the filters are ``width * width_mult**i`` for stage
``i``, or an explicit list. A combination that shrinks the feature map to
nothing fails at build time with the argument named.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ._registry import register_model
from .layers import check_head, get_act, get_norm

POOLS = ("max", "avg", "none")


def _conv_out(n: int, kernel_size: int, stride: int, padding: int, dilation: int) -> int:
    # PyTorch's Conv2d output side (floor mode)
    return (n + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def _stage_filters(
    filters: Sequence[int] | None, width: int | None, stages: int | None, width_mult: float | None
) -> list[int]:
    if filters is not None:
        if any(v is not None for v in (width, stages, width_mult)):
            raise ValueError("give filters (a list per stage) or width/stages/width_mult, not both")
        out = [int(f) for f in filters]
        if not out:
            raise ValueError("filters must name at least one stage")
    else:
        width, stages = 32 if width is None else width, 3 if stages is None else stages
        width_mult = 2.0 if width_mult is None else width_mult
        if stages < 1:
            raise ValueError(f"stages must be >= 1 (got {stages})")
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0 (got {width_mult})")
        out = [max(1, round(width * width_mult**i)) for i in range(stages)]
    if min(out) < 1:
        raise ValueError(f"filters must be >= 1 (got {out})")
    return out


def _hidden_widths(hidden: int | Sequence[int], hidden_layers: int | None) -> list[int]:
    if isinstance(hidden, int):
        if hidden < 0:
            raise ValueError(f"hidden must be >= 0 (got {hidden})")
        n = 1 if hidden_layers is None else hidden_layers
        if n < 0:
            raise ValueError(f"hidden_layers must be >= 0 (got {n})")
        return [hidden] * n if hidden > 0 else []
    if hidden_layers is not None:
        raise ValueError("hidden_layers repeats an int hidden width; a list gives every width")
    widths = [int(h) for h in hidden]
    if any(h < 1 for h in widths):
        raise ValueError(f"hidden widths must be >= 1 (got {widths})")
    return widths


class GenericCNN(nn.Module):
    """Stages of conv-norm-act layers and pools, then a GAP or fully connected head.

    Args:
        num_classes: output logits.
        in_chans: input channels.
        input_size: input side; checked against the layers, and the ``fc``
            head's input size.
        filters: filters of every stage, e.g. ``[32, 64, 128]``; replaces
            ``width``/``stages``/``width_mult``.
        width: filters of the first stage (default 32).
        stages: number of stages (default 3).
        width_mult: filters grow by this factor per stage (default 2.0).
        convs_per_stage: conv-norm-act layers per stage.
        kernel_size: conv kernel side.
        stride: stride of the first conv of every stage (the others use 1).
        padding: ``same`` (``dilation * (kernel_size - 1) // 2`` on each side;
            keeps the side at stride 1), ``valid`` (0) or an int.
        dilation: conv dilation (receptive field ``dilation * (kernel_size - 1) + 1``).
        pool: ``max``, ``avg`` or ``none``: the pool that ends every stage.
        pool_size: pool kernel and stride.
        conv_drop_rate: dropout after every stage's pool (0: none).
        head: ``gap`` (global average pool) or ``fc`` (flatten the last maps).
        hidden: hidden dense widths: a list, or an int width repeated
            ``hidden_layers`` times (0: no hidden layer).
        hidden_layers: how many hidden layers an int ``hidden`` makes (default 1).
        drop_rate: dropout after every hidden dense layer and before the classifier.
        act_layer: activation name.
        norm_layer: normalization after every conv and hidden dense layer.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        input_size: int = 32,
        filters: Sequence[int] | None = None,
        width: int | None = None,
        stages: int | None = None,
        width_mult: float | None = None,
        convs_per_stage: int = 2,
        kernel_size: int = 3,
        stride: int = 1,
        padding: str | int = "same",
        dilation: int = 1,
        pool: str = "max",
        pool_size: int = 2,
        conv_drop_rate: float = 0.0,
        head: str = "gap",
        hidden: int | Sequence[int] = 0,
        hidden_layers: int | None = None,
        drop_rate: float = 0.0,
        act_layer: str = "relu",
        norm_layer: str = "batch",
    ):
        super().__init__()
        chans = _stage_filters(filters, width, stages, width_mult)
        dense = _hidden_widths(hidden, hidden_layers)
        check_head(head)
        for arg, value in (("convs_per_stage", convs_per_stage), ("kernel_size", kernel_size),
                           ("stride", stride), ("dilation", dilation), ("pool_size", pool_size)):
            if value < 1:
                raise ValueError(f"{arg} must be >= 1 (got {value})")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)} (got {pool!r})")
        if padding == "valid":
            pad = 0
        elif padding == "same":
            pad = dilation * (kernel_size - 1) // 2
        elif isinstance(padding, int) and padding >= 0:
            pad = padding
        else:
            raise ValueError(f"padding must be 'same', 'valid' or an int >= 0 (got {padding!r})")
        # PyTorch pads 'same' asymmetrically where the receptive field is even (stride 1 only)
        conv_pad: str | int = "same" if padding == "same" and stride == 1 else pad

        layers: list[nn.Module] = []
        chs, side = in_chans, input_size
        for i, out_chs in enumerate(chans):
            for j in range(convs_per_stage):
                s = stride if j == 0 else 1
                side_in = side
                side = side if conv_pad == "same" else _conv_out(side, kernel_size, s, pad, dilation)
                if side < 1:
                    raise ValueError(
                        f"kernel_size={kernel_size} (dilation={dilation}, padding={padding!r}, "
                        f"stride={s}) does not fit the {side_in} px map of stage {i + 1}, "
                        f"conv {j + 1} (input_size={input_size}): lower kernel_size, dilation, "
                        f"stride, convs_per_stage or stages, or pad more"
                    )
                layers += [
                    nn.Conv2d(chs, out_chs, kernel_size, stride=s, padding=conv_pad,
                              dilation=dilation, bias=norm_layer == "none"),
                    get_norm(norm_layer, out_chs),
                    get_act(act_layer),
                ]
                chs = out_chs
            if pool != "none":
                if side < pool_size:
                    raise ValueError(
                        f"pool_size={pool_size} does not fit the {side} px map at the end of "
                        f"stage {i + 1} (input_size={input_size}): lower pool_size or stages, "
                        f"or use pool='none'"
                    )
                Pool = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
                layers.append(Pool(pool_size, stride=pool_size))
                side //= pool_size
            if conv_drop_rate > 0:
                layers.append(nn.Dropout(conv_drop_rate))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1) if head == "gap" else nn.Identity()
        dense_layers: list[nn.Module] = []
        feats = chs if head == "gap" else chs * side * side
        for h in dense:
            dense_layers += [nn.Linear(feats, h), get_norm(norm_layer, h, dims=1),
                             get_act(act_layer), nn.Dropout(drop_rate)]
            feats = h
        self.hidden = nn.Sequential(*dense_layers)
        self.drop = nn.Identity() if dense else nn.Dropout(drop_rate)
        self.fc = nn.Linear(feats, num_classes)
        self.num_features = chs
        if head == "gap" and not dense:
            self.gap_head = ("features", "fc")  # see models.cam_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.fc(self.drop(self.hidden(x)))


# Three 2x2 pools after SAME convs: 8 px leaves a 1x1 map.
register_model("cnn", family="cnn", native_size=32, min_size=8,
               description="generic CNN: filters, kernel, stride, padding, dilation, pool, head "
               "all searchable")(GenericCNN)
