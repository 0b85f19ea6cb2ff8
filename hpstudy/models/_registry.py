"""Model registry: architectures are found by name (timm style).

Every builder is registered with :func:`register_model` together with a small
:class:`ModelInfo` record. :func:`create_model` is the only way the rest of
hpstudy builds a network, so no caller ever special-cases an architecture.

GAP heads (for class activation maps): a built model whose logits are
``classifier(mean_HW(features(...)))`` (global average pooling, then one
linear layer; dropout in between is allowed) says so with a plain-data
attribute ``gap_head = (features_path, classifier_path)``, dotted submodule
names. :func:`cam_layers` resolves it. It is a property of the built model,
not of the registry entry, because ``head: fc`` (or hidden dense layers)
turns it off; models without one (a fully connected head, NiN's class maps)
have no attribute and :func:`cam_layers` returns None.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch.nn as nn


@dataclass(frozen=True)
class ModelInfo:
    """Metadata every registered architecture carries.

    Attributes:
        name: registry name.
        family: file/family the builder belongs to (e.g. ``"resnet"``).
        native_size: input side length the architecture was designed for.
        min_size: smallest input side length the network accepts; the data
            module upsamples smaller images to this size.
        description: one line for ``hpstudy models``.
        defaults: keyword arguments the builder fixes (data-only variant).
    """

    name: str
    family: str
    native_size: int
    min_size: int
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)


# Every builder takes these (the timm contract): the Lightning module, the
# config and the tests never special-case an architecture.
CONTRACT_KWARGS = frozenset({"num_classes", "in_chans", "drop_rate", "act_layer", "norm_layer"})


@dataclass(frozen=True)
class _Entry:
    fn: Callable[..., nn.Module]
    info: ModelInfo
    kwargs: frozenset[str]  # the builder's keyword arguments, from its signature


_MODELS: dict[str, _Entry] = {}


class UnknownModelError(KeyError):
    """Raised for a model name that is not registered; lists close matches."""

    def __init__(self, name: str):
        close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        super().__init__(f"unknown model '{name}'.{hint} (`hpstudy models` lists all)")
        self.name = name

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


def register_model(
    name: str,
    *,
    family: str,
    native_size: int,
    min_size: int,
    description: str = "",
    **defaults: Any,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``fn(num_classes=, in_chans=, **hp) -> nn.Module`` under ``name``.

    ``defaults`` are bound into the builder, so one model class serves many
    data-only variants: ``register_model("vgg11", ..., cfg="A")(_create_vgg)``.

    The builder must spell out its keyword arguments (no ``**kwargs``), the
    contract's among them: the config rejects ``model.foo`` for an
    architecture that does not take ``foo`` by reading them.

    Raises:
        TypeError: the builder hides its arguments, misses one of the contract's
            (``num_classes in_chans drop_rate act_layer norm_layer``), or
            ``defaults`` names an argument it does not take.
        ValueError: ``name`` is registered already.
    """

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model '{name}' is registered twice")
        kwargs = _keyword_args(name, fn)
        missing = sorted(CONTRACT_KWARGS - kwargs)
        unknown = sorted(set(defaults) - kwargs)
        if missing or unknown:
            what = f"lacks {', '.join(missing)}" if missing else f"does not take {', '.join(unknown)}"
            raise TypeError(f"builder of model '{name}' {what}")
        info = ModelInfo(name, family, native_size, min_size, description, dict(defaults))
        _MODELS[name] = _Entry(fn, info, kwargs)
        return fn

    return deco


def _keyword_args(name: str, fn: Callable[..., nn.Module]) -> frozenset[str]:
    params = inspect.signature(fn).parameters.values()
    if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params):
        raise TypeError(f"builder of model '{name}' hides its arguments behind *args/**kwargs; "
                        "spell them out (the config checks model arguments by name)")
    return frozenset(p.name for p in params if p.kind is not p.POSITIONAL_ONLY)


def natural_key(name: str) -> list[str | int]:
    """Sort key that orders the digit runs of a name by value (resnet20 < resnet110)."""
    # re.split with a group alternates text and digits, text first: types line up
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name))]


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names in natural order, optionally filtered by a shell-style pattern."""
    names = sorted(_MODELS, key=natural_key)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered model."""
    try:
        return _MODELS[name].info
    except KeyError:
        raise UnknownModelError(name) from None


def model_kwargs(name: str) -> set[str]:
    """Keyword arguments the builder of ``name`` accepts (the contract's among them).

    Every builder spells its arguments out (:func:`register_model` checks), so
    this is never None; ``input_size`` is among them for models whose layers
    depend on the input side.
    """
    entry = _MODELS.get(name)
    if entry is None:
        raise UnknownModelError(name)
    return set(entry.kwargs)


def model_defaults(name: str) -> dict[str, Any]:
    """The values the builder of ``name`` uses for arguments a config does not set.

    Its signature's defaults, with the variant's bound ``defaults`` on top
    (``vgg11`` fixes ``cfg="A"``). The guide reads the width-like ones to
    scale a model's capacity.
    """
    entry = _MODELS.get(name)
    if entry is None:
        raise UnknownModelError(name)
    out = {p.name: p.default for p in inspect.signature(entry.fn).parameters.values()
           if p.default is not inspect.Parameter.empty}
    out.update(entry.info.defaults)
    return out


def create_model(
    name: str,
    *,
    num_classes: int,
    in_chans: int,
    input_size: int | None = None,
    **hp: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name (``hpstudy models`` lists them).
        num_classes: number of output logits.
        in_chans: input channels.
        input_size: input side length; passed to builders that need it (fully
            connected heads), ignored by the others.
        **hp: architecture keyword arguments (``drop_rate``, ``act_layer``,
            ``norm_layer``, widths, depth...).
    """
    if name not in _MODELS:
        raise UnknownModelError(name)
    entry = _MODELS[name]
    kwargs = {**entry.info.defaults, **hp}
    if input_size is not None and "input_size" in entry.kwargs:
        kwargs["input_size"] = input_size
    unknown = sorted(set(kwargs) - entry.kwargs)
    if unknown:
        raise TypeError(
            f"model '{name}' does not take {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(entry.kwargs - {'num_classes', 'in_chans'}))}"
        )
    return entry.fn(num_classes=num_classes, in_chans=in_chans, **kwargs)


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def models_table(
    in_chans: int = 3, num_classes: int = 10, input_size: int | None = None
) -> list[dict[str, Any]]:
    """One row per registered model, for ``hpstudy models``.

    Parameter counts are exact: read from the generated, fingerprinted table
    of :mod:`hpstudy.models._counts` where a count is affine in ``in_chans``
    and ``num_classes`` and independent of the input size, else counted on a
    model built on the meta device (no memory, no init time) at ``input_size``
    raised to its minimum (what the data module would feed it), or at its
    native size when ``input_size`` is None. No torchvision import, no
    thousands of module constructions: well under a second after ``import torch``.

    Returns:
        Dicts with keys ``name family params native_size min_size description``,
        in :func:`list_models` order (natural: resnet20 before resnet110).
    """
    from . import _counts  # local: imports torch, and imports this module

    rows = []
    for name in list_models():
        info = _MODELS[name].info
        size = info.native_size if input_size is None else max(input_size, info.min_size)
        f = _counts.formula(name)
        params = (_counts.evaluate(f, in_chans, num_classes) if f is not None
                  else _counts.built_count(name, in_chans, num_classes, size))
        rows.append({
            "name": name,
            "family": info.family,
            "params": params,
            "native_size": info.native_size,
            "min_size": info.min_size,
            "description": info.description,
        })
    return rows


class CamLayers(NamedTuple):
    """The two modules a class activation map (Zhou et al., 2016) needs.

    ``CAM_k = sum_c classifier.weight[k, c] * F[:, c]`` where ``F`` is the
    output of ``features`` (N, C, H, W): the logits are ``classifier`` applied
    to ``F`` averaged over H and W. Capture ``F`` with a forward hook.
    """

    features: nn.Module
    classifier: nn.Linear


def cam_layers(model: nn.Module) -> CamLayers | None:
    """``(features, classifier)`` of a model with a global-average-pool head, else None.

    Reads the model's ``gap_head`` attribute (see the module docstring).
    """
    names = getattr(model, "gap_head", None)
    if names is None:
        return None
    features, classifier = (model.get_submodule(n) for n in names)
    if not isinstance(classifier, nn.Linear):
        raise TypeError(f"{type(model).__name__}.gap_head names {names[1]!r}, "
                        f"a {type(classifier).__name__}, not a Linear")
    return CamLayers(features, classifier)
