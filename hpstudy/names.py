"""The contract's names, in one leaf module (DESIGN.md, "Contracts others rely on").

Every MLflow tag, param and metric name, every Optuna user-attr key, the
per-epoch history keys and the default store URIs that more than one module
reads or writes are defined here, and only here. This module imports nothing,
so every layer (config, train, track, search, analyze, report, cli) can
import it.
"""

from __future__ import annotations

# ----------------------------------------------------------------- defaults
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"  # MLflow store (artifacts in mlruns/artifacts)
DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"  # Optuna storage
DEFAULT_REPORT_DIR = "dashboards"  # dashboards land in <dir>/<study>/index.html
TRACKING_ENV = "MLFLOW_TRACKING_URI"
STORAGE_ENV = "HPSTUDY_STORAGE"

# ------------------------------------------------------------ history/metrics
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s")
"""Keys of one epoch's record (the history is the single source of truth downstream)."""
EPOCH_METRICS = HISTORY_KEYS[1:]
"""MLflow metrics logged once per epoch (step = epoch)."""
CURVE_KEYS = HISTORY_KEYS[1:5]
"""The four learning-curve values of a record."""
OBJECTIVE_METRICS = {"val_acc": "maximize", "val_loss": "minimize"}
"""Metrics a study can optimize and their directions."""

# summary metrics logged when a run ends
METRIC_BEST_VAL_ACC = "best_val_acc"
METRIC_BEST_VAL_LOSS = "best_val_loss"
METRIC_BEST_EPOCH = "best_epoch"
PARAM_NUM_PARAMS = "model.num_params"
# test-time augmentation (train.tta): separate metrics, never replacing the plain ones
TTA_SUFFIX = "_tta"
TTA_METRICS = ("val_acc_tta", "val_loss_tta", "test_acc_tta", "test_loss_tta")
METRIC_COMPILE_TIME = "compile_time_s"  # torch.compile's time in the fit (not in epoch_time_s)
METRIC_GPU_PEAK_MEMORY = "gpu_peak_memory_mb"  # most CUDA memory the trial's process allocated

# ------------------------------------------------------------------ states
COMPLETE, PRUNED, FAIL, KILLED, RUNNING = "COMPLETE", "PRUNED", "FAIL", "KILLED", "RUNNING"
STATE_TO_RUN_STATUS = {COMPLETE: "FINISHED", PRUNED: "FINISHED", FAIL: "FAILED",
                       KILLED: "KILLED", RUNNING: "RUNNING"}
"""hpstudy's trial states (Optuna's words) -> MLflow run statuses."""

# -------------------------------------------------------------- MLflow tags
TAG_KIND = "hpstudy.kind"  # what a run is: one of the KIND_* values
KIND_STUDY = "study"  # a study's parent run
KIND_TRIAL = "trial"  # one Optuna trial
KIND_TRAIN = "train"  # `hpstudy train`
KIND_ABLATION = "ablation"  # one (cell, seed) of an ablation
KIND_ABLATION_SUMMARY = "ablation_summary"  # an ablation's summary run
KIND_REFIT = "refit"  # `hpstudy refit`: a study's best config on train + validation, tested once
KIND_REPRODUCTION = "reproduction"  # `hpstudy reproduce`: one thesis cell x seed
TAG_STATE = "hpstudy.state"  # COMPLETE / PRUNED / FAIL / KILLED (RUNNING while it runs)
TAG_DIAGNOSIS = "hpstudy.diagnosis"  # the verdict
TAG_DIAGNOSIS_REASON = "hpstudy.diagnosis_reason"  # one sentence with the numbers behind it
DIAGNOSIS_ARTIFACT = "diagnosis.json"  # verdict, reason, evidence and advice of a run
TAG_FAIL_REASON = "hpstudy.fail_reason"  # why a run failed or was stopped
TAG_STUDY = "optuna.study_name"
TAG_TRIAL_NUMBER = "optuna.trial_number"
TAG_PARENT_RUN = "mlflow.parentRunId"  # MLflow's own nesting tag
TAG_NOTE = "mlflow.note.content"  # the run's description: why a trial was pruned or failed
TAG_ABLATION = "hpstudy.ablation"
TAG_CELL = "hpstudy.cell"
TAG_CELL_LABEL = "hpstudy.cell_label"
TAG_SEED = "hpstudy.seed"
TAG_CONFIG_HASH = "hpstudy.config_hash"
TAG_FACTOR_PREFIX = "hpstudy.factor."
TAG_REFIT_OF = "hpstudy.refit_of"  # refit run: the trial number it retrains
TAG_SOURCE_RUN = "hpstudy.source_run_id"  # refit run: that trial's MLflow run
TAG_REFIT_RUN = "hpstudy.refit_run_id"  # study run: its latest refit run
TAG_SMOKE = "hpstudy.smoke"  # reproduction run: "true" for generated data and cut epochs
TAG_EPOCHS_SCALE = "hpstudy.epochs_scale"  # reproduction run: fraction of the recipe's epochs

# ------------------------------------------------------ Optuna user attrs
ATTR_PARENT_RUN = "mlflow_parent_run_id"  # study: the study's parent MLflow run
ATTR_CONFIG = "config_yaml"  # study: its base config, so `hpstudy worker NAME` needs no file
# study: {param: low} of allow_zero entries; a sampled value below low means exactly 0
ATTR_ZERO_BELOW = "zero_below"
ATTR_RUN_ID = "mlflow_run_id"  # trial: its MLflow run
ATTR_DIAGNOSIS = "diagnosis"  # trial: the verdict
ATTR_DIAGNOSIS_DETAIL = "diagnosis_detail"  # trial: verdict, reason, evidence, advice
ATTR_BEST_EPOCH = "best_epoch"  # trial: the epoch of the study metric's best value
ATTR_EPOCHS = "epochs"  # trial: epochs it trained (pruned and early-stopped trials ran fewer)
ATTR_NUM_PARAMS = "num_params"
ATTR_PRUNE_REASON = "prune_reason"  # trial: why the pruner stopped it
ATTR_STATUS = "status"  # trial: how the fit ended (completed, early_stopped, pruned, diverged)
ATTR_FAIL_REASON = "fail_reason"
ATTR_CHECKPOINT = "checkpoint"  # trial: runs:/ URI of its kept weights
ATTR_RETRY_OF = "retry_of"  # trial: the number of the lost trial it retries
ATTR_REFIT_RUN = "refit_run_id"  # study: the MLflow run of its latest refit
SYSATTR_OWNER = "hpstudy:owner"  # trial system attr: host, pid, start time of its process
TRIAL_ATTRS = (ATTR_RUN_ID, ATTR_DIAGNOSIS, ATTR_BEST_EPOCH, ATTR_NUM_PARAMS, ATTR_STATUS,
               ATTR_FAIL_REASON)
"""User attrs that the collect API turns into columns."""


def trial_run_name(number: int) -> str:
    """The MLflow run name of trial ``number``: ``trial-0007``."""
    return f"trial-{number:04d}"

# ------------------------------------------------------------------ ablations
ABLATION_DESIGNS = ("one_at_a_time", "full_factorial")
ABLATION_METRICS = ("best_val_acc", "best_val_loss", "test_acc", "test_loss")

# ------------------------------------------------------------------ thesis reproduction
REPRODUCTION_EXPERIMENT = "thesis-reproduction"  # MLflow experiment of `hpstudy reproduce`
REPRODUCTION_DIR = "reproduction"  # dashboards/<this>/index.html and results.csv


# ------------------------------------------------------------------ guided tuning
GUIDE_STAGES = ("1-anything", "2-everything", "3-right-thing")
"""The course's three milestones, as the suffixes of a guide's stage studies."""
TAG_GUIDE = "hpstudy.guide"  # stage parent run: the guided study's name
TAG_STAGE = "hpstudy.stage"  # stage parent run: 1-anything, 2-everything, 3-right-thing
TAG_STAGE_OUTCOME = "hpstudy.stage_outcome"  # accepted | failed
TAG_STAGE_RULE = "hpstudy.stage_rule"  # the acceptance rule in words
TAG_STAGE_TARGET = "hpstudy.stage_target"  # the number the rule compares with
TAG_STAGE_EVIDENCE = "hpstudy.stage_evidence"  # one line: the numbers behind the outcome
TAG_STAGE_WINNER = "hpstudy.stage_winner"  # the winning trial's number ("none" when failed)
TAG_STAGE_OVERRIDES = "hpstudy.stage_overrides"  # JSON: what the winner hands on
TAG_LR_RANGE = "hpstudy.lr_range"  # stage 1 run: "low..high", the lr range searched
TAG_LR_RANGE_NOTE = "hpstudy.lr_range_note"  # stage 1 run: what the range test found
STAGE_ARTIFACT = "guide_stage.json"  # stage run: the stage's full record
GUIDE_CONFIG_ARTIFACT = "guide_config.yaml"  # stage 3 run: the config the guide recommends
ATTR_GUIDE = "guide"  # stage study: the guided study's name
ATTR_GUIDE_STAGE = "guide_stage"  # stage study: its stage key
ATTR_GUIDE_CONFIG = "guide_config"  # stage study: the study file's config (YAML)
ATTR_GUIDE_OUTCOME = "guide_outcome"  # stage study: accepted | failed (absent: not finished)
ATTR_GUIDE_RESULT = "guide_result"  # stage study: rule, target, evidence, winner, carry, advice
ATTR_GUIDE_LR_RANGE = "guide_lr_range"  # stage 1 study: the lr range test (curve and range)
ATTR_GUIDE_BUDGET = "guide_budget"  # stage study: total budget, weights, planned split
ATTR_GUIDE_SGD = "guide_sgd"  # stage 3 study: the base and lr band of the SGD refinement
ATTR_GUIDE_OVERRIDES = "guide_overrides"  # trial: the values it applied to its stage's base
ATTR_GUIDE_PART = "guide_part"  # trial: which part of its stage ran it (search, sgd)
LR_RANGE_ARTIFACT = "lr_range_test"  # stage 1 run: <name>.html (figure), .csv (curve)


def stage_study_name(study: str, stage: str) -> str:
    """The Optuna study (and MLflow run) name of a guide's stage: ``quickstart/1-anything``."""
    return f"{study}/{stage}"
