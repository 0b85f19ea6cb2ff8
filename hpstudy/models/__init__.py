"""Model zoo. Importing this package registers every family's builders.

Public surface: :func:`create_model`, :func:`list_models`, :func:`model_info`,
:func:`register_model`, :func:`count_params`, :func:`models_table`, :func:`cam_layers`
(global-average-pool heads, for class activation maps), the string factories of
:mod:`hpstudy.models.layers` and its training helpers (:func:`apply_max_norm`,
:func:`param_groups_weights_only`).
"""

from __future__ import annotations

from . import (  # noqa: F401  (importing a family registers its builders)
    alexnet,
    baseline,
    cnn,
    densenet,
    efficientnet,
    googlenet,
    inception,
    lenet,
    mlp,
    mobilenet,
    nin,
    resnet,
    separable,
    vgg,
    xception,
)
from ._registry import (
    CamLayers,
    ModelInfo,
    UnknownModelError,
    cam_layers,
    count_params,
    create_model,
    list_models,
    model_defaults,
    model_info,
    model_kwargs,
    models_table,
    register_model,
)
from .layers import (
    ACTIVATIONS,
    HEADS,
    INITS,
    NORMS,
    apply_max_norm,
    get_act,
    get_norm,
    init_weights,
    param_groups_weights_only,
)

__all__ = [
    "ACTIVATIONS",
    "HEADS",
    "INITS",
    "NORMS",
    "CamLayers",
    "ModelInfo",
    "UnknownModelError",
    "apply_max_norm",
    "cam_layers",
    "count_params",
    "create_model",
    "get_act",
    "get_norm",
    "init_weights",
    "list_models",
    "model_defaults",
    "model_info",
    "model_kwargs",
    "models_table",
    "param_groups_weights_only",
    "register_model",
]
