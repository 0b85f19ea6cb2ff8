"""Study files: YAML -> validated pydantic model -> code.

A study file has the sections ``data``, ``model``, ``train``, ``search``,
``tracking``, ``storage`` and ``report``. Unknown keys and wrong types are
rejected with the field's dotted name; ``--set a.b=c`` overrides are applied to
the parsed file and validated by the same schema. ``data`` and ``model`` also
take the chosen dataset's / architecture's own keyword arguments, checked
against the registry.

Any problem raises :class:`ConfigError`, whose message names the file (or flag),
the field and what was expected; the CLI turns it into exit code 2 before
anything is written to a store.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, field_validator, model_validator

from .. import data as _data
from .. import models as _models
from ..names import (
    DEFAULT_REPORT_DIR,
    DEFAULT_STORAGE,
    DEFAULT_TRACKING_URI,
    OBJECTIVE_METRICS,
    STORAGE_ENV,
    TRACKING_ENV,
)
from ._base import (
    COMPILE_MODES,
    OPTIMIZERS,
    PRUNERS,
    SAMPLERS,
    SCHEDULERS,
    ConfigError,
    Strict,
    read_yaml,
    validate,
)
from .guide import GuideConfig
from .space import resolve_key, resolve_space
from .toolbox import FINETUNE_MODES, TTA_MODES, check_toolbox, parse_init_from

METRICS = OBJECTIVE_METRICS


# --------------------------------------------------------------------- data
class DataConfig(Strict):
    """``data:`` which images, how they are split and batched.

    Dataset-specific options (``n_classes`` of ``synthetic``, ``svhn_extra``...)
    go in this section too; they are checked against the dataset's loader.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    dataset: str = "digits"
    root: str | None = None  # None: $HPSTUDY_DATA or ~/.cache/hpstudy/data
    download: bool = False
    # fraction (<1) or count (>=1) of the training images that validate; 0: none, every
    # training image trains (the thesis's final runs; needs train.select: last)
    val_split: float = Field(0.2, ge=0)
    seed: int = 0  # split and shuffling seed
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int | None = Field(None, ge=1)
    augmentation: str | list[str] = "none"
    subset: int | None = Field(None, ge=1)  # keep this many training images (tiny runs)
    # DataLoader workers of streamed datasets (large ImageFolders); None: min(8, CPUs - 1)
    num_workers: int | None = Field(None, ge=0)

    @field_validator("val_split")
    @classmethod
    def _fraction_or_count(cls, v: float) -> float:
        if v >= 1 and v != int(v):
            raise ValueError("a fraction of the training images must be below 1, a count of "
                             "images a whole number")
        return v

    @field_validator("augmentation")
    @classmethod
    def _known_augmentation(cls, v: str | list[str]) -> str | list[str]:
        from ..data import augment

        augment.resolve(v)
        return v

    @model_validator(mode="after")
    def _known_dataset(self) -> DataConfig:
        if self.dataset not in _data.list_datasets():
            _data.describe_dataset(self.dataset)  # raises with close matches
        extras = set(self.model_extra or {})
        unknown = extras - _data.dataset_options(self.dataset)
        if unknown:
            opts = sorted(_data.dataset_options(self.dataset)) or ["none"]
            raise ValueError(
                f"unknown key(s) {', '.join(sorted(unknown))} for dataset '{self.dataset}' "
                f"(its options: {', '.join(opts)})"
            )
        return self

    @property
    def options(self) -> dict[str, Any]:
        """Dataset-specific options."""
        return dict(self.model_extra or {})


# -------------------------------------------------------------------- model
_FROM_DATA = frozenset({"num_classes", "in_chans", "input_size"})


class ModelConfig(Strict):
    """``model:`` an architecture from the registry plus its keyword arguments.

    ``drop_rate``, ``act_layer`` and ``norm_layer`` are common to every model;
    ``None`` keeps the architecture's own default. Anything else is passed to
    the builder (``hidden: [256, 128]`` for ``mlp``, ``depth`` for ``wrn``...).
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    arch: str = "baseline_cnn"
    init: str = "default"  # weight init scheme; biases are zeroed by every scheme
    drop_rate: float | None = Field(None, ge=0.0, lt=1.0)
    act_layer: str | None = None
    norm_layer: str | None = None
    # transfer learning: start from a trained model's weights, a registered model
    # (models:/name/version), an MLflow run id or a checkpoint file; None: from scratch
    init_from: str | None = None

    @field_validator("init_from")
    @classmethod
    def _init_from_form(cls, v: str | None) -> str | None:
        if v is not None:
            parse_init_from(v)  # the form; the source's existence is checked before training
        return v

    @field_validator("init")
    @classmethod
    def _known_init(cls, v: str) -> str:
        if v not in _models.INITS:
            raise ValueError(f"must be one of {', '.join(_models.INITS)}")
        return v

    @field_validator("act_layer")
    @classmethod
    def _known_act(cls, v: str | None) -> str | None:
        if v is not None and v not in _models.ACTIVATIONS:
            raise ValueError(f"must be one of {', '.join(_models.ACTIVATIONS)}")
        return v

    @field_validator("norm_layer")
    @classmethod
    def _known_norm(cls, v: str | None) -> str | None:
        if v is not None and v not in _models.NORMS:
            raise ValueError(f"must be one of {', '.join(_models.NORMS)}")
        return v

    @model_validator(mode="after")
    def _known_arch(self) -> ModelConfig:
        accepted = _models.model_kwargs(self.arch)  # raises UnknownModelError
        given = set(self.kwargs())
        from_data = sorted(given & _FROM_DATA)
        if from_data:
            raise ValueError(f"{', '.join(from_data)} come(s) from the data (the dataset's "
                             "classes, channels and image size), not from model:")
        unknown = given - accepted
        if unknown:
            raise ValueError(
                f"architecture '{self.arch}' does not take {', '.join(sorted(unknown))} "
                f"(it takes {', '.join(sorted(accepted - _FROM_DATA))})"
            )
        return self

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`hpstudy.models.create_model`."""
        out = {k: getattr(self, k) for k in ("drop_rate", "act_layer", "norm_layer")}
        out = {k: v for k, v in out.items() if v is not None}
        out.update(self.model_extra or {})
        return out


# -------------------------------------------------------------------- train
class SchedulerConfig(Strict):
    """``train.scheduler:`` a name (shorthand) or a table.

    ``milestones`` below 1 are fractions of ``max_epochs`` (DenseNet's 50%/75%).
    ``multistep`` multiplies the lr by ``gamma`` at every milestone, or by its
    own factor with ``gammas`` (one per milestone: NiN on MNIST, lr/2 at 40 and
    /5 at 50, is ``milestones: [40, 50], gammas: [0.5, 0.2]``), or sets it to
    explicit ``values`` (one more than milestones, the first being ``train.lr``:
    NiN on CIFAR is ``milestones: [200, 230], values: [0.025, 0.01, 0.001]``).
    """

    name: Literal[SCHEDULERS] = "constant"  # type: ignore[valid-type]
    step_size: int = Field(30, ge=1)  # step: epochs between decays
    gamma: float = Field(0.1, gt=0)  # step/multistep/exponential decay factor
    milestones: list[float] = Field(default_factory=list)  # multistep epochs (or fractions)
    # multistep: one decay factor per milestone (instead of one gamma for all)
    gammas: list[float] | None = None
    # multistep: the lr of each phase, len(milestones) + 1 values (instead of factors)
    values: list[float] | None = None
    eta_min: float = Field(0.0, ge=0)  # cosine floor
    pct_start: float = Field(0.3, gt=0, lt=1)  # onecycle warm-up fraction
    patience: int = Field(5, ge=0)  # plateau: epochs without improvement
    factor: float = Field(0.1, gt=0, lt=1)  # plateau decay factor

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("milestones")
    @classmethod
    def _positive_milestones(cls, v: list[float]) -> list[float]:
        if any(m <= 0 for m in v):
            raise ValueError("milestones are epochs (>= 1) or fractions of max_epochs (0 < m < 1)")
        return v

    @field_validator("gammas", "values")
    @classmethod
    def _positive(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(not x > 0 for x in v):
            raise ValueError("every entry must be > 0")
        return v

    @model_validator(mode="after")
    def _phases_match(self) -> SchedulerConfig:
        if self.gammas is None and self.values is None:
            return self
        if self.gammas is not None and self.values is not None:
            raise ValueError("give either gammas (a factor per milestone) or values (an lr per "
                             "phase), not both")
        if self.name != "multistep":
            raise ValueError(f"gammas and values belong to the multistep scheduler, not "
                             f"'{self.name}' (set name: multistep)")
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:], strict=False)):
            raise ValueError(f"milestones must increase with gammas or values (got "
                             f"{self.milestones})")
        n = len(self.milestones)
        if self.gammas is not None and len(self.gammas) != n:
            raise ValueError(f"{len(self.gammas)} gammas for {n} milestones: give one decay "
                             "factor per milestone")
        if self.values is not None and len(self.values) != n + 1:
            raise ValueError(f"{len(self.values)} values for {n} milestones: give the lr of "
                             f"each phase, {n + 1} values (the first is train.lr)")
        return self


class EarlyStoppingConfig(Strict):
    """``train.early_stopping:`` ``true``/``false`` or a table (Lightning's EarlyStopping)."""

    enabled: bool = False
    monitor: Literal["val_loss", "val_acc"] = "val_loss"
    patience: int = Field(10, ge=1)  # epochs without improvement before stopping
    min_delta: float = Field(0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"enabled": v} if isinstance(v, bool) else v


class TrainConfig(Strict):
    """``train:`` optimization and the Lightning Trainer."""

    max_epochs: int = Field(20, ge=1)
    optimizer: Literal[OPTIMIZERS] = "adam"  # type: ignore[valid-type]
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # momentum/nesterov/rmsprop
    weight_decay: float = Field(0.0, ge=0)  # L2 for SGD-family, decoupled for adamw
    # which parameters decay: all, or the conv/linear kernels only (no biases, no
    # normalization scales/shifts), as the thesis's equation and its Keras code
    weight_decay_on: Literal["all", "weights"] = "all"
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # which parameters train: all; head (the classifier only, BatchNorm statistics frozen);
    # batchnorm (BatchNorm scales and shifts, and the classifier). See train/transfer.py
    finetune: Literal[FINETUNE_MODES] = "all"  # type: ignore[valid-type]
    # max-norm constraint c (Srivastava et al. 2014): after every step each unit's incoming
    # weights are rescaled to L2 norm <= c; the course: "typically around 3 or 4"
    max_norm: float | None = Field(None, gt=0)
    # L1 penalty: l1 * sum|w| over conv/linear kernels, added to the training loss
    # (train_loss logs the data loss alone, comparable across runs)
    l1: float = Field(0.0, ge=0)
    # test-time augmentation: predictions averaged over views, reported as separate
    # metrics (test_acc_tta; val_acc_tta with tta_on_val), never replacing the plain ones
    tta: Literal[TTA_MODES] = "none"  # type: ignore[valid-type]
    tta_on_val: bool = False
    gradient_clip: float | None = Field(None, gt=0)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | str | list[int] = 1
    strategy: str = "auto"  # auto, ddp, ddp_spawn, ...
    num_nodes: int = Field(1, ge=1)
    precision: Literal["32-true", "32", "16-mixed", "bf16-mixed", "64-true"] = "32-true"
    seed: int = 0  # weights and batch order; the split seed is data.seed
    deterministic: bool = False
    limit_train_batches: int | float | None = None  # tiny runs: batches per epoch
    limit_val_batches: int | float | None = None
    evaluate_test: bool = False  # evaluate the selected epoch on the test split at the end
    # which epoch's weights a run keeps and reports: the best by search.metric, or the
    # last (the thesis reports its final configuration; required without validation)
    select: Literal["best", "last"] = "best"
    num_threads: int | None = Field(None, ge=1)  # torch CPU threads for the trial
    # train each trial in its own process: a segfault or OOM kill fails only that
    # trial; costs the imports of a fresh process (seconds). DDP trials always do.
    isolate: bool = False
    # device options (README "Fast training on GPUs"); checked against this machine
    # before training by hpstudy.train.device.check_device_options
    channels_last: bool = False  # NHWC weights and batches: faster convolutions on tensor cores
    # torch.compile of the network: true (mode "default") or a mode; compiled once per
    # architecture, options and input shape in a process, its time logged as compile_time_s
    compile: bool | str = False
    # float32 matmuls and convolutions: highest (exact fp32, torch's default), high (TF32 on
    # NVIDIA GPUs, ~1e-3 relative error), medium (bf16 passes)
    matmul_precision: Literal["highest", "high", "medium"] = "highest"
    cudnn_benchmark: bool = False  # time cuDNN's convolution algorithms once per input shape

    @field_validator("limit_train_batches", "limit_val_batches")
    @classmethod
    def _batches(cls, v: int | float | None) -> int | float | None:
        if v is None:
            return v
        if isinstance(v, float) and not 0 < v <= 1:
            raise ValueError("a fraction of the batches must be in (0, 1]; a count, an int >= 1")
        if isinstance(v, int) and v < 1:
            raise ValueError("must be at least 1 batch (or a fraction in (0, 1])")
        return v

    @model_validator(mode="after")
    def _values_start_at_lr(self) -> TrainConfig:
        values = self.scheduler.values if self.scheduler.name == "multistep" else None
        if values is not None and not math.isclose(values[0], self.lr, rel_tol=1e-9):
            raise ValueError(f"scheduler.values starts at {values[0]:g} but train.lr is "
                             f"{self.lr:g}: the first value is the starting lr; make them equal")
        return self

    @model_validator(mode="after")
    def _benchmark_not_deterministic(self) -> TrainConfig:
        if self.cudnn_benchmark and self.deterministic:
            raise ValueError("cudnn_benchmark: true picks convolution algorithms by timing them, "
                             "which deterministic: true rules out: turn one of them off")
        return self

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_mode(cls, v: Any) -> Any:
        if isinstance(v, bool) or v in COMPILE_MODES:
            return v
        raise ValueError(f"must be true, false or a torch.compile mode ({', '.join(COMPILE_MODES)})")

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: int | str | list[int]) -> int | str | list[int]:
        if isinstance(v, int) and not (v == -1 or v >= 1):
            raise ValueError("must be a count >= 1, -1 (all), 'auto', or a list of device ids")
        if isinstance(v, list) and (not v or any(i < 0 for i in v)):
            raise ValueError("a list of device ids must be non-empty and >= 0")
        if isinstance(v, str) and v.strip() != "auto" and not all(
                p.strip().isdigit() for p in v.split(",") if p.strip()):
            raise ValueError("must be a count, 'auto', or device ids like '0,1'")
        return v


# ------------------------------------------------------------------- search
class SamplerConfig(Strict):
    """``search.sampler:`` a name or ``{name, seed, options}`` (Optuna's samplers)."""

    name: Literal[SAMPLERS] = "tpe"  # type: ignore[valid-type]
    seed: int | None = 0  # fixed seed: the study's sequence of trials is reproducible
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


class PrunerConfig(Strict):
    """``search.pruner:`` a name or ``{name, options}`` (Optuna's pruners)."""

    name: Literal[PRUNERS] = "median"  # type: ignore[valid-type]
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


class SearchConfig(Strict):
    """``search:`` what Optuna samples and how long it searches."""

    n_trials: int | None = Field(20, ge=1)
    timeout: float | None = Field(None, gt=0)  # seconds
    metric: Literal["val_acc", "val_loss"] = "val_acc"  # best epoch's value is the objective
    direction: Literal["maximize", "minimize"] | None = None  # None: from the metric
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    # a preset name, or entries {dotted.key: SearchParam}; key `preset` merges a preset first
    space: str | dict[str, Any] = "course"
    enqueue: list[dict[str, Any]] = Field(default_factory=list)  # trials to run first
    # worker processes on this machine; None: one per trial slot (GPUs x trials_per_gpu, or
    # GPUs // train.devices), and trials_per_gpu on the CPU (hpstudy.search.placement)
    workers: int | None = Field(None, ge=1)
    trials_per_gpu: int = Field(1, ge=1)  # concurrent one-GPU trials per GPU (small models)

    @model_validator(mode="after")
    def _direction(self) -> SearchConfig:
        if self.direction is None:
            object.__setattr__(self, "direction", METRICS[self.metric])
        return self


# ----------------------------------------------------------------- tracking
class TrackingConfig(Strict):
    """``tracking:`` where MLflow runs go."""

    uri: str | None = None  # None: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db
    experiment: str | None = None  # None: the study name
    artifact_location: str | None = None  # None: mlruns/artifacts for local stores
    register_best: bool = True  # log + register the best trial's model at the end
    log_checkpoints: bool = False  # log every trial's model (large!)


class ReportConfig(Strict):
    """``report:`` the dashboard written at the end of ``hpstudy run``."""

    enabled: bool = True
    dir: str = DEFAULT_REPORT_DIR


class StudyConfig(Strict):
    """A whole study file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=128)
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    storage: str | None = None  # Optuna URL; None: $HPSTUDY_STORAGE or sqlite:///mlruns/optuna.db
    report: ReportConfig = Field(default_factory=ReportConfig)
    guide: GuideConfig = Field(default_factory=GuideConfig)  # `hpstudy guide` (config/guide.py)

    @model_validator(mode="after")
    def _validation_needed(self) -> StudyConfig:
        if self.data.val_split == 0:
            if self.train.select != "last":
                raise ValueError("data.val_split: 0 leaves no validation images to pick the best "
                                 "epoch by: set train.select: last")
            if self.train.early_stopping.enabled:
                raise ValueError("data.val_split: 0 leaves no validation images for "
                                 "train.early_stopping to watch: turn it off")
            if self.train.scheduler.name == "plateau":
                raise ValueError("data.val_split: 0 leaves no validation loss for the plateau "
                                 "scheduler to watch: pick another train.scheduler")
        return self

    # ------------------------------------------------------------ helpers
    @property
    def direction(self) -> str:
        return self.search.direction or METRICS[self.search.metric]

    def tracking_uri(self, flag: str | None = None) -> str:
        """Flag > study file > $MLFLOW_TRACKING_URI > default SQLite store."""
        return flag or self.tracking.uri or os.environ.get(TRACKING_ENV) or DEFAULT_TRACKING_URI

    def storage_url(self, flag: str | None = None) -> str:
        """Flag > study file > $HPSTUDY_STORAGE > default SQLite storage."""
        return flag or self.storage or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE

    def with_overrides(self, params: dict[str, Any], source: str = "--set") -> StudyConfig:
        """A copy with dotted-key values applied, validated as a whole study (space included)."""
        return apply_overrides(self.to_dict(), params, source=source)

    def concrete(self, params: dict[str, Any], source: str = "trial") -> StudyConfig:
        """A trial's concrete config: this (validated) study with ``params`` applied.

        Only the schema runs (types, ranges, names): the study's space was
        validated once, value by value, when the study was loaded, so neither
        the space nor a model build is checked again (about a millisecond, not
        tens of them). A combination of values no single probe could catch (a
        depth and a width that cannot be built together) fails the trial when
        its model is built, with the builder's message as the reason.
        """
        data = self.to_dict()
        for key, value in params.items():
            set_dotted(data, key, value, source)
        return from_dict(data, source, concrete=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, shorthands expanded (round-trips through :func:`from_dict`)."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        """The config as YAML; a default ``guide:`` section is left out (only ``hpstudy
        guide`` reads it, and every trial's ``config.yaml`` would repeat it)."""
        d = self.to_dict()
        if self.guide == GuideConfig():
            d.pop("guide")
        return yaml.safe_dump(d, sort_keys=False)


# ----------------------------------------------------------- loading/overrides
def from_dict(raw: Any, source: str = "<dict>", *, concrete: bool = False) -> StudyConfig:
    """Validate plain data into a :class:`StudyConfig`, raising :class:`ConfigError`.

    Args:
        raw: the parsed study file (or a config's ``to_dict()``).
        source: the file or flag named in messages.
        concrete: a trial's config derived from an already validated study:
            check the schema only (see :meth:`StudyConfig.concrete`).
    """
    if not isinstance(raw, dict):
        raise ConfigError(source, None, "a study file must be a YAML mapping (key: value)")
    try:
        cfg = validate(StudyConfig, raw, source)
    except (_models.UnknownModelError, _data.DatasetError) as e:
        raise ConfigError(source, None, str(e)) from None
    if not concrete:
        check_augmentation(cfg, source)
        check_model_builds(cfg, source)
        check_toolbox(cfg, source)
        validate_space(cfg, source)
    return cfg


def check_augmentation(cfg: StudyConfig, source: str) -> None:
    """The augmentation suits the dataset's classes (no flips of digits or house numbers)."""
    d = cfg.data
    try:
        _data.augmentations_for(d.dataset, d.augmentation, **d.options)
    except _data.DatasetError as e:
        raise ConfigError(source, "data.augmentation",
                          str(e).removeprefix("data.augmentation: ")) from None


def check_model_builds(cfg: StudyConfig, source: str) -> None:
    """Build the model on the meta device: catches bad architecture kwargs cheaply."""
    import torch

    meta = _data.describe_dataset(cfg.data.dataset, **cfg.data.options)
    info = _models.model_info(cfg.model.arch)
    size = max(meta.image_size, info.min_size)
    try:
        with torch.device("meta"):
            _models.create_model(
                cfg.model.arch, num_classes=meta.num_classes, in_chans=meta.in_chans,
                input_size=size, **cfg.model.kwargs(),
            )
    except Exception as e:  # the builder's own complaint, e.g. a bad depth
        raise ConfigError(source, "model", f"'{cfg.model.arch}' cannot be built: {e}") from None


def validate_space(cfg: StudyConfig, source: str) -> None:
    """Check once per study that every value each space entry can take makes a valid config.

    Every choice (or both bounds, and 0 for ``allow_zero``) is applied alone to
    the base config and validated with a model build; enqueued trials may only
    name keys of the space.
    """
    space = resolve_space(cfg.search.space, source)
    base = cfg.to_dict()
    probe_base = base | {"search": {**base["search"], "space": "none", "enqueue": []}}
    for key, p in space.items():
        for value in p.probe_values():
            try:
                apply_overrides(probe_base, {key: value}, source=source)
            except ConfigError as e:
                raise ConfigError(
                    source, f"search.space.{key}",
                    f"value {value!r} is not valid for {e.field or key}: {e.message}",
                ) from None
    for i, params in enumerate(cfg.search.enqueue):
        for key in params:
            if resolve_key(key) not in space:
                raise ConfigError(source, f"search.enqueue[{i}].{key}",
                                  f"not a key of the search space ({', '.join(space)})")


def set_dotted(d: dict[str, Any], key: str, value: Any, source: str) -> None:
    """Set ``d[a][b][c] = value`` for ``key='a.b.c'``; unknown intermediate keys are errors."""
    parts = resolve_key(key).split(".")
    node = d
    for i, p in enumerate(parts[:-1]):
        if p not in node:
            raise ConfigError(source, ".".join(parts[: i + 1]), "unknown key")
        if not isinstance(node[p], dict):
            # a shorthand (scheduler: cosine) written as its full table
            node[p] = {"name": node[p]} if isinstance(node[p], str) else {"enabled": node[p]}
        node = node[p]
    if parts[-1] not in node and parts[0] not in ("data", "model") and not (
        parts[:2] == ["search", "space"] or parts[0] == "search" and parts[-2:-1] == ["options"]
    ):
        raise ConfigError(source, ".".join(parts), "unknown key")
    node[parts[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any], source: str) -> StudyConfig:
    """Apply dotted-key overrides to plain data and validate the result."""
    data = copy.deepcopy(raw)
    for key, value in overrides.items():
        set_dotted(data, key, value, source)
    return from_dict(data, source)


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["train.lr=0.1", "data.augmentation=[hflip]"]`` -> dict; values parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError("--set", item, "expected key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError("--set", item, "expected key=value")
        try:
            out[key] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            out[key] = text
    return out


def set_source(overrides: dict[str, Any]) -> str:
    """How messages name a set of ``--set`` overrides."""
    return "--set " + " ".join(f"{k}={v}" for k, v in overrides.items())


def load_study(path: str | Path, overrides: dict[str, Any] | list[str] | None = None) -> StudyConfig:
    """Load and validate a study file, then apply ``--set`` overrides.

    Args:
        path: the YAML study file.
        overrides: ``{"train.lr": 0.1}`` or ``["train.lr=0.1"]`` (aliases allowed).

    Raises:
        ConfigError: naming the file or flag, the field, and what was expected.
    """
    cfg = from_dict(read_yaml(path), str(path))  # the file alone must be valid: errors name the file
    if overrides:
        ov = parse_set(overrides) if isinstance(overrides, list) else dict(overrides)
        cfg = apply_overrides(cfg.to_dict(), ov, source=set_source(ov))
    return cfg


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> flat dotted keys (lists kept as values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def trial_params(cfg: StudyConfig) -> dict[str, Any]:
    """Every hyperparameter of a concrete config as flat dotted keys (MLflow params)."""
    d = cfg.to_dict()
    return flatten({k: d[k] for k in ("data", "model", "train")})
