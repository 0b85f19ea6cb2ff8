"""The course's toolbox beyond the search: transfer learning, regularizers, test-time augmentation.

The keys (``model.init_from``, ``train.finetune``, ``train.max_norm``,
``train.l1``, ``train.tta``, ``train.tta_on_val``) are fields of the study
schema (:mod:`.study`); this module holds what more than one layer needs to
read them: the choices, the parser of ``model.init_from`` (the config checks
its form, :mod:`hpstudy.train.transfer` loads it), and the checks that need
the dataset or the model (:func:`check_toolbox`, run once per study file).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ._base import ConfigError

if TYPE_CHECKING:
    from .study import StudyConfig

FINETUNE_MODES = ("all", "head", "batchnorm")
"""``train.finetune``: which parameters train (see :mod:`hpstudy.train.transfer`)."""
TTA_MODES = ("none", "flip", "crop", "flip_crop")
"""``train.tta``: the views averaged at evaluation (see :mod:`hpstudy.train.tta`)."""
TTA_FLIPS = frozenset({"flip", "flip_crop"})

RUN_ID = re.compile(r"^[0-9a-f]{32}$")  # an MLflow run id
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+|latest)|@(?P<alias>[\w-]+))$")


class InitSource(NamedTuple):
    """A parsed ``model.init_from``.

    ``kind`` is ``model`` (a registered model: ``name`` plus ``version``, a
    number or ``latest``, or an ``alias``), ``run`` (an MLflow run whose
    ``checkpoint/model.pt`` holds the weights; ``run_id``) or ``file`` (a
    checkpoint file; ``path``).
    """

    kind: str
    name: str = ""
    version: str = ""
    alias: str = ""
    run_id: str = ""
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "model":
            return f"models:/{self.name}" + (f"@{self.alias}" if self.alias else f"/{self.version}")
        return f"run {self.run_id}" if self.kind == "run" else f"file {self.path}"


def parse_init_from(spec: str) -> InitSource:
    """Read ``models:/<name>/<version|latest>``, ``models:/<name>@<alias>``, a run id
    (32 hex digits, or ``runs:/<id>``) or a checkpoint file path.

    Only the form is checked here (a study file may be read on a machine that
    lacks the file); :func:`hpstudy.train.transfer.check_init_from` checks that
    the source exists before anything trains.

    Raises:
        ValueError: an empty value or a ``models:/`` / ``runs:/`` URI of the wrong form.
    """
    s = spec.strip()
    if not s:
        raise ValueError("must name a registered model (models:/<name>/<version>), an MLflow "
                         "run id or a checkpoint file")
    if s.startswith("models:/"):
        m = _MODEL_URI.match(s)
        if m is None:
            raise ValueError("a registered model is models:/<name>/<version>, "
                             "models:/<name>/latest or models:/<name>@<alias>")
        return InitSource("model", name=m["name"], version=m["version"] or "",
                          alias=m["alias"] or "")
    if s.startswith("runs:/"):
        run_id = s.removeprefix("runs:/").strip("/").split("/")[0]
        if not RUN_ID.match(run_id):
            raise ValueError("a run is runs:/<run id> (32 hex digits)")
        return InitSource("run", run_id=run_id)
    if RUN_ID.match(s) and not Path(s).exists():
        return InitSource("run", run_id=s)
    return InitSource("file", path=s)


def check_toolbox(cfg: StudyConfig, source: str) -> None:
    """The checks that need the dataset or the model, once per study file.

    * ``train.tta`` evaluates something (``train.evaluate_test`` or
      ``train.tta_on_val``) and flips only images whose class survives a
      mirror (:attr:`hpstudy.data.DatasetMeta.flip_invariant`), as the
      augmentation presets do;
    * ``train.tta_on_val`` has a ``train.tta`` and validation images;
    * ``train.finetune: batchnorm`` has BatchNorm layers to train.

    Raises:
        ConfigError: naming the field.
    """
    from .. import data as _data

    t = cfg.train
    if t.tta != "none" and not (t.evaluate_test or t.tta_on_val):
        raise ConfigError(source, "train.tta", f"'{t.tta}' evaluates nothing: set "
                          "train.evaluate_test: true (test_acc_tta) or train.tta_on_val: true "
                          "(val_acc_tta)")
    if t.tta_on_val and t.tta == "none":
        raise ConfigError(source, "train.tta_on_val", "needs train.tta (flip, crop or flip_crop)")
    if t.tta_on_val and cfg.data.val_split == 0:
        raise ConfigError(source, "train.tta_on_val", "data.val_split: 0 leaves no validation "
                          "images")
    if t.tta in TTA_FLIPS:
        meta = _data.describe_dataset(cfg.data.dataset, **cfg.data.options)
        if not meta.flip_invariant:
            raise ConfigError(source, "train.tta", f"'{t.tta}' averages over mirrored images of "
                              f"{cfg.data.dataset}, whose classes do not survive mirroring (a "
                              "mirrored digit or letter is another symbol or none): use crop")
    if t.finetune == "batchnorm" and not _has_batchnorm(cfg):
        raise ConfigError(source, "train.finetune", f"'batchnorm' trains the BatchNorm layers, "
                          f"and '{cfg.model.arch}' (norm_layer "
                          f"{cfg.model.norm_layer or 'default'}) has none: set "
                          "model.norm_layer: batch, or finetune: head")


def _has_batchnorm(cfg: StudyConfig) -> bool:
    """Whether the config's model, built on the meta device, has a BatchNorm layer."""
    import torch
    import torch.nn as nn

    from .. import data as _data
    from .. import models as _models

    meta = _data.describe_dataset(cfg.data.dataset, **cfg.data.options)
    size = max(meta.image_size, _models.model_info(cfg.model.arch).min_size)
    with torch.device("meta"):
        net = _models.create_model(cfg.model.arch, num_classes=meta.num_classes,
                                   in_chans=meta.in_chans, input_size=size, **cfg.model.kwargs())
    bn = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    return any(isinstance(m, bn) for m in net.modules())
