"""Transfer learning: start from a trained network, train all of it, its head, or its BatchNorm.

``model.init_from`` names the weights: a registered model
(``models:/<name>/<version>``, ``/latest`` or ``@<alias>``), an MLflow run
id (``runs:/<id>`` too) or a checkpoint file. Registered models and runs are
read through the run's ``checkpoint/model.pt`` (the registered
``<study>-best`` was built from it), so every source is loaded with
``torch.load(..., weights_only=True)``: no code is unpickled. A registered
model or run is looked up in the study's tracking store (``tracking.uri``,
else ``$MLFLOW_TRACKING_URI``, else the default).

The checkpoint must hold the same architecture with the same ``model:``
options; its weights replace the fresh ones after ``model.init``. When the
class count differs, the classifier (the head) keeps its fresh weights: the
head is "replaced". The head is the linear layer of a global-average-pool
head (:func:`hpstudy.models.cam_layers`), else the network's last linear or
conv layer (NiN ends in a conv with one map per class).

``train.finetune`` says which parameters train:

* ``all`` (default): every parameter.
* ``head``: the head alone; the rest is a fixed feature extractor, its
  BatchNorm layers kept in eval mode (running statistics frozen too), so the
  features the head learns from do not drift.
* ``batchnorm``: the BatchNorm scales and shifts (Frankle et al., 2021,
  "Training BatchNorm and only BatchNorm") **and the head**. The lecture's
  experiment trains BatchNorm alone; hpstudy trains the head too, in every
  case, because a replaced head (another class count) starts random and
  would otherwise stay at chance, and one rule for every case keeps runs
  comparable. BatchNorm layers run in train mode (batch statistics, running
  statistics updated). Other normalizations (layer, group) stay frozen.

Frozen parameters get ``requires_grad=False`` and the optimizer receives only
the trainable ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from .._urls import absolute_url
from ..config import ConfigError, StudyConfig
from ..config.toolbox import InitSource, parse_init_from
from ..models import cam_layers
from .checkpoint import read_checkpoint

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_log = logging.getLogger("hpstudy")


class TransferError(ValueError):
    """``model.init_from`` cannot be used (missing source, another architecture, shapes)."""


# ------------------------------------------------------------------ the head
class Head(NamedTuple):
    """The classifier layer: its dotted name and the module (out features = classes)."""

    name: str
    module: nn.Module

    @property
    def out_features(self) -> int:
        m = self.module
        return int(m.out_features if isinstance(m, nn.Linear) else m.out_channels)


def find_head(net: nn.Module) -> Head:
    """The network's classifier: the linear layer of a GAP head, else its last linear/conv layer.

    Raises:
        TransferError: a network without any linear or conv layer.
    """
    cam = cam_layers(net)
    target: nn.Module | None = cam.classifier if cam is not None else None
    if target is None:
        for m in net.modules():  # definition order: every hpstudy model defines its head last
            if isinstance(m, nn.Linear | nn.Conv2d):
                target = m
    if target is None:
        raise TransferError(f"{type(net).__name__} has no linear or conv layer to act as its head")
    name = next(n for n, m in net.named_modules() if m is target)
    return Head(name, target)


# ------------------------------------------------------------------ finetune
@dataclass(frozen=True)
class Finetune:
    """What :func:`apply_finetune` froze.

    Attributes:
        mode: ``all``, ``head`` or ``batchnorm``.
        head: the head's dotted name.
        trainable: names of the parameters that train.
        held_eval: BatchNorm modules kept in eval mode while training (``head`` mode).
    """

    mode: str
    head: str
    trainable: tuple[str, ...]
    held_eval: tuple[str, ...] = ()

    def hold(self, net: nn.Module) -> None:
        """Put the frozen BatchNorm layers in eval mode (call when training starts)."""
        for name in self.held_eval:
            net.get_submodule(name).eval()


def apply_finetune(net: nn.Module, mode: str) -> Finetune:
    """Freeze what ``train.finetune: mode`` does not train (``requires_grad=False``).

    Args:
        net: the network, modified in place.
        mode: ``all``, ``head`` or ``batchnorm`` (see the module docstring).

    Raises:
        ValueError: an unknown mode, or ``batchnorm`` on a network without BatchNorm.
    """
    head = find_head(net)
    if mode == "all":
        names = tuple(n for n, p in net.named_parameters() if p.requires_grad)
        return Finetune(mode, head.name, names)
    keep = {id(p) for p in head.module.parameters()}
    held: tuple[str, ...] = ()
    if mode == "batchnorm":
        norms = [m for m in net.modules() if isinstance(m, BATCHNORMS)]
        if not norms:
            raise ValueError("train.finetune: batchnorm needs BatchNorm layers; this network "
                             "has none")
        keep |= {id(p) for m in norms for p in m.parameters()}
    elif mode == "head":
        held = tuple(n for n, m in net.named_modules() if isinstance(m, BATCHNORMS))
    else:
        raise ValueError(f"train.finetune must be all, head or batchnorm (got {mode!r})")
    for p in net.parameters():
        p.requires_grad_(id(p) in keep)
    names = tuple(n for n, p in net.named_parameters() if p.requires_grad)
    return Finetune(mode, head.name, names, held)


# ------------------------------------------------------------------ sources
def _mlflow_checkpoint(src: InitSource, tracking_uri: str) -> dict[str, Any]:
    """The checkpoint of a run, or of the run behind a registered model version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from ..track import Tracker, registry

    why = registry.missing_store(tracking_uri)
    if why:
        raise TransferError(f"{src} cannot be looked up: {why}")
    client = MlflowClient(tracking_uri=absolute_url(tracking_uri))
    run_id = src.run_id
    if src.kind == "model":
        try:
            if src.alias:
                mv = client.get_model_version_by_alias(src.name, src.alias)
            elif src.version == "latest":
                versions = client.search_model_versions(f"name = '{src.name}'")
                mv = max(versions, key=lambda v: int(v.version), default=None)
                if mv is None:
                    raise TransferError(f"no registered model '{src.name}' in {tracking_uri}")
            else:
                mv = client.get_model_version(src.name, src.version)
        except MlflowException as e:
            raise TransferError(f"no registered model {src} in {tracking_uri} "
                                f"({e.error_code})") from None
        run_id = mv.run_id
        if not run_id:
            raise TransferError(f"{src} has no source run, so no checkpoint to load")
    try:
        tracker = Tracker.for_run(tracking_uri, run_id)
    except MlflowException:
        raise TransferError(f"no run {run_id} in {tracking_uri}") from None
    try:
        return registry.load_checkpoint(tracker, run_id)
    except (MlflowException, OSError) as e:
        raise TransferError(
            f"run {run_id} has no {registry.CHECKPOINT} ({type(e).__name__}); trials keep one "
            "when they improve on the study's best (tracking.log_checkpoints: true keeps every "
            "trial's), hpstudy train runs always do") from None


def load_source(spec: str, tracking_uri: str) -> dict[str, Any]:
    """Read ``model.init_from`` into a checkpoint dict (``state_dict`` plus, from hpstudy,
    ``model`` and ``meta``), on the CPU, with ``weights_only=True``.

    Args:
        spec: the ``model.init_from`` value.
        tracking_uri: where registered models and runs are looked up.

    Raises:
        TransferError: the source does not exist or is not a checkpoint.
    """
    src = parse_init_from(spec)
    if src.kind != "file":
        return _mlflow_checkpoint(src, tracking_uri)
    from pathlib import Path

    path = Path(src.path).expanduser()
    if not path.is_file():
        raise TransferError(f"no checkpoint file {path}" + (" (it is a folder)" if path.is_dir()
                                                             else ""))
    try:
        ckpt = read_checkpoint(path)
    except Exception as e:  # noqa: BLE001 - pickled code, a truncated or foreign file
        raise TransferError(f"{path} is not a checkpoint torch.load(weights_only=True) can read: "
                            f"{type(e).__name__}: {str(e)[:200]}") from None
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        return ckpt
    if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return {"state_dict": ckpt}  # a bare state_dict (no architecture to check)
    raise TransferError(f"{path} holds no state_dict (an hpstudy checkpoint, or a network's "
                        "state_dict, is expected)")


class Loaded(NamedTuple):
    """What :func:`load_weights` did."""

    head: str
    replaced: bool  # the head kept its fresh weights (another class count)
    source_classes: int
    classes: int


def load_weights(net: nn.Module, ckpt: dict[str, Any], arch: str) -> Loaded:
    """Copy a checkpoint's weights into ``net``; a head of another class count is left fresh.

    Raises:
        TransferError: another architecture, other parameter names, or other shapes
            outside the head (input channels, a fully connected head's input size, widths).
    """
    state: dict[str, torch.Tensor] = ckpt["state_dict"]
    source_arch = (ckpt.get("model") or {}).get("name")
    if source_arch is not None and source_arch != arch:
        raise TransferError(f"the checkpoint holds a '{source_arch}', this config builds "
                            f"'{arch}': init_from needs the same architecture")
    head = find_head(net)
    own = net.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        what = "; ".join(f"{label} {', '.join(keys[:3])}" + (" ..." if len(keys) > 3 else "")
                         for label, keys in (("missing", missing), ("unexpected", unexpected))
                         if keys)
        raise TransferError(f"the checkpoint's parameters do not match '{arch}' as configured "
                            f"({what}): use the model: options it was trained with")
    head_keys = {f"{head.name}.{k}" for k in head.module.state_dict()}
    for k, v in own.items():
        if k not in head_keys and v.shape != state[k].shape:
            raise TransferError(
                f"{k} is {tuple(state[k].shape)} in the checkpoint and {tuple(v.shape)} here "
                "(input channels, the input size of a fully connected head, or widths differ)")
    replaced = any(own[k].shape != state[k].shape for k in head_keys)
    weight = state.get(f"{head.name}.weight")
    source_classes = int(weight.shape[0]) if weight is not None else head.out_features
    merged = {k: (own[k] if replaced and k in head_keys else state[k]) for k in own}
    net.load_state_dict(merged, strict=True)
    return Loaded(head.name, replaced, source_classes, head.out_features)


def load_init_weights(net: nn.Module, cfg: StudyConfig) -> Loaded | None:
    """Load ``cfg.model.init_from`` into ``net`` (None when it is unset).

    Raises:
        ConfigError: naming ``model.init_from`` and what is wrong with the source.
    """
    spec = cfg.model.init_from
    if not spec:
        return None
    try:
        loaded = load_weights(net, load_source(spec, cfg.tracking_uri()), cfg.model.arch)
    except TransferError as e:
        raise ConfigError(spec, "model.init_from", str(e)) from None
    _log.info("init_from %s: %s (head %s %s)", spec, "loaded", loaded.head,
              f"replaced: {loaded.source_classes} -> {loaded.classes} classes" if loaded.replaced
              else "kept")
    return loaded


def check_init_from(cfg: StudyConfig, source: str, tracking_uri: str | None = None) -> None:
    """Before anything trains: the source of ``model.init_from`` exists and holds weights.

    Loads the checkpoint (no network is built): a missing file, an unknown
    registered model, version or run, or a run without a checkpoint fails
    here with the field named.

    Args:
        cfg: the study config.
        source: the study file or flag, for messages.
        tracking_uri: the ``--tracking-uri`` flag, if any. Registered models and
            runs are looked up in the study's store (``tracking.uri``,
            ``$MLFLOW_TRACKING_URI``, the default) wherever the trial trains, so
            a flag naming another store is refused rather than silently ignored.

    Raises:
        ConfigError: naming ``model.init_from``.
    """
    spec = cfg.model.init_from
    if not spec:
        return
    src = parse_init_from(spec)
    store = cfg.tracking_uri()
    if src.kind != "file" and tracking_uri and tracking_uri != store:
        raise ConfigError(source, "model.init_from",
                          f"{src} is looked up in the study's tracking store ({store}: "
                          "tracking.uri, $MLFLOW_TRACKING_URI or the default), not in "
                          f"--tracking-uri {tracking_uri}: set tracking.uri instead "
                          f"(--set tracking.uri={tracking_uri})")
    try:
        load_source(spec, store)
    except TransferError as e:
        raise ConfigError(source, "model.init_from", str(e)) from None
