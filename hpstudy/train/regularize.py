"""The course's weight constraints and penalties on conv/linear kernels, applied in the training loop.

Both act on the *trainable* kernels (biases, normalization parameters and
frozen layers are left alone), the list :func:`kernels` returns once when
the module is built. Neither reads a value back to the host.

* L1 penalty (``train.l1``): ``l1 * sum_i |w_i|`` added to the training loss;
  drives small weights to exactly zero more readily than L2. ``train_loss``
  still logs the data loss alone, so runs with and without it compare.
* Max-norm (``train.max_norm``, Srivastava et al., 2014): after every
  optimizer step, each unit's incoming weight vector (one row of a linear
  kernel, one filter of a conv) is rescaled to L2 norm <= c, "typically
  around 3 or 4"; it pairs with dropout and large learning rates. The same
  projection as :func:`hpstudy.models.apply_max_norm`, limited to trainable
  layers (a frozen pretrained layer must not be altered).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ..models import param_groups_weights_only


def kernels(net: nn.Module) -> list[nn.Parameter]:
    """The trainable conv and linear kernels of ``net`` (after freezing)."""
    return param_groups_weights_only(net)[0]


def l1_penalty(weights: Sequence[torch.Tensor], l1: float) -> torch.Tensor:
    """``l1 * sum |w|`` over ``weights``, a tensor on their device (part of the graph)."""
    return l1 * torch.stack([w.abs().sum() for w in weights]).sum()


@torch.no_grad()
def max_norm_(weights: Sequence[torch.Tensor], max_norm: float) -> None:
    """Rescale every output unit of every kernel to L2 norm <= ``max_norm``, in place."""
    for w in weights:
        w.renorm_(p=2, dim=0, maxnorm=max_norm)
