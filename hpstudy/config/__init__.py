"""Config files: YAML -> validated pydantic model -> code.

Study files (:mod:`.study`), their search spaces as data (:mod:`.space`) and
ablation files (:mod:`.ablation`) share one YAML loader, one strict base model
and one error mapping (:mod:`._base`). Any problem raises
:class:`ConfigError`, whose message names the file (or flag), the field and
what was expected; the CLI turns it into exit code 2 before anything is
written to a store.
"""

from __future__ import annotations

from ..names import DEFAULT_STORAGE, DEFAULT_TRACKING_URI
from ._base import (
    OPTIMIZERS,
    PRUNERS,
    SAMPLERS,
    SCHEDULERS,
    ConfigError,
    Strict,
    first_error,
    load_yaml_text,
    read_yaml,
)
from .ablation import (
    ABLATION_SET_KEYS,
    NAME_PATTERN,
    SEED_KEYS,
    AblationFile,
    Factor,
    parse_ablation,
    read_ablation,
)
from .guide import (
    ADAM_FAMILY,
    SGD_FAMILY,
    AnythingConfig,
    EverythingConfig,
    GuideConfig,
    LrRangeConfig,
    RightThingConfig,
)
from .space import ALIASES, PRESETS, SearchParam, resolve_key, resolve_space
from .study import (
    METRICS,
    DataConfig,
    EarlyStoppingConfig,
    ModelConfig,
    PrunerConfig,
    ReportConfig,
    SamplerConfig,
    SchedulerConfig,
    SearchConfig,
    StudyConfig,
    TrackingConfig,
    TrainConfig,
    apply_overrides,
    check_model_builds,
    flatten,
    from_dict,
    load_study,
    parse_set,
    set_dotted,
    set_source,
    trial_params,
    validate_space,
)

__all__ = [
    "ABLATION_SET_KEYS",
    "ADAM_FAMILY",
    "SGD_FAMILY",
    "AnythingConfig",
    "EverythingConfig",
    "GuideConfig",
    "LrRangeConfig",
    "RightThingConfig",
    "ALIASES",
    "DEFAULT_STORAGE",
    "DEFAULT_TRACKING_URI",
    "METRICS",
    "NAME_PATTERN",
    "OPTIMIZERS",
    "PRESETS",
    "PRUNERS",
    "SAMPLERS",
    "SCHEDULERS",
    "SEED_KEYS",
    "AblationFile",
    "ConfigError",
    "DataConfig",
    "EarlyStoppingConfig",
    "Factor",
    "ModelConfig",
    "PrunerConfig",
    "ReportConfig",
    "SamplerConfig",
    "SchedulerConfig",
    "SearchConfig",
    "SearchParam",
    "Strict",
    "StudyConfig",
    "TrackingConfig",
    "TrainConfig",
    "apply_overrides",
    "check_model_builds",
    "first_error",
    "flatten",
    "from_dict",
    "load_study",
    "load_yaml_text",
    "parse_ablation",
    "parse_set",
    "read_ablation",
    "read_yaml",
    "resolve_key",
    "resolve_space",
    "set_dotted",
    "set_source",
    "trial_params",
    "validate_space",
]
