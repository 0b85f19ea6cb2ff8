"""The three stages as data: what each searches, what it fixes, what it hands on.

A stage (or a part of stage 3) is a :class:`StagePart`: its search space
(entries like ``search.space``, some of them guide-only coordinates such as
``guide.lr_base``), the trials to run first, the settings that hold for its
trials only (regularization off, few epochs, a subset), and a ``transform``
from sampled values to config overrides. A trial's concrete config is the
study file's config, then the earlier stages' *carry* (the values their
winners handed on), then the trial's overrides, then the part's settings.
What a stage's winner carries on is exactly its overrides.

:func:`plan_guide` checks the ``guide:`` section against the study (its
architecture, dataset and search space) before anything is written; every
problem is a :class:`~hpstudy.config.ConfigError` naming ``guide.<field>``.

The course's rules of thumb, as they appear here:

* learning rates by orders of magnitude (log scale) and below 1;
* batch sizes in powers of 2, and "when one doubles, double the other": stage 1
  samples ``guide.lr_base``, the lr at the reference batch ``batch_ref``, and
  trains with ``lr = lr_base x batch / batch_ref``;
* Adam to explore (stages 1-2), momentum SGD for a narrower final selection
  (stage 3's refinement, its lr mapped from the Adam winner's);
* decoupled weight decay for adaptive optimizers: stage 3 trains an ``adam``
  winner as ``adamw`` (the same optimizer while weight decay is 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import data as _data
from .. import models as _models
from ..analyze.guide import STAGE_GOALS, STAGE_TITLES
from ..config import (
    ADAM_FAMILY,
    SGD_FAMILY,
    ConfigError,
    SearchParam,
    StudyConfig,
    resolve_key,
    resolve_space,
)
from ..names import GUIDE_STAGES

STAGES = GUIDE_STAGES
TITLES, GOALS = STAGE_TITLES, STAGE_GOALS
LR_BASE = "guide.lr_base"  # stage 1: the lr at the reference batch size
WIDTH_SCALE = "guide.width_scale"  # stage 2: one factor on every width-like argument
# width-like builder arguments the guide scales by default (depth has family-specific legal
# values, e.g. 6n+2 for ResNets: list it in guide.everything.capacity instead)
WIDTH_KNOBS = ("widths", "hidden", "filters", "width", "stem_width", "stem_widths",
               "entry_widths", "exit_widths", "growth_rate", "widen_factor", "width_mult")
# regularization off: stages 1 and 2 look at what the network can learn, not at generalizing
REG_OFF: dict[str, Any] = {"model.drop_rate": 0.0, "train.weight_decay": 0.0,
                           "data.augmentation": "none", "train.early_stopping.enabled": False,
                           "train.label_smoothing": 0.0}
COURSE_LR = (1e-4, 0.3)  # the course space's lr range, when the study space has none
COURSE_BATCHES = [16, 32, 64, 128, 256]
LR_CEILING = 0.99  # "always below 1"
PART_SEARCH, PART_SGD = "search", "sgd"


# ------------------------------------------------------------------ capacity
def _scalable(v: Any) -> bool:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return False
    if isinstance(v, int | float):
        return v > 0
    if isinstance(v, list | tuple):
        return any(_scalable(x) for x in v)
    return False


def scale_width(v: Any, s: float) -> Any:
    """``v`` with every positive number scaled by ``s`` (ints stay ints, at least 1).

    Lists are scaled element by element (nested ones too); strings (``"M"`` in a
    VGG layer list), booleans, zeros and None are left as they are.
    """
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return max(1, round(v * s)) if v > 0 else v
    if isinstance(v, float):
        return v * s if v > 0 else v
    if isinstance(v, list | tuple):
        return [scale_width(x, s) for x in v]
    return v


def width_knobs(model: dict[str, Any]) -> dict[str, Any]:
    """Width-like arguments of a model section with a value to scale (the file's or the
    builder's default).

    ``width_mult`` counts only when nothing else does: the generic ``cnn`` uses
    it as the growth per stage, not as a scale of the whole network.
    """
    arch = model["arch"]
    accepted = _models.model_kwargs(arch)
    defaults = _models.model_defaults(arch)
    out = {k: model.get(k, defaults.get(k)) for k in WIDTH_KNOBS if k in accepted}
    out = {k: v for k, v in out.items() if _scalable(v)}
    if "width_mult" in out and len(out) > 1:
        out.pop("width_mult")
    return out


# ------------------------------------------------------------------ the plan
@dataclass
class GuidePlan:
    """A checked guide: the study file's config and everything the stages derive from it.

    Attributes:
        cfg: the study file's config (after ``--set``).
        source: the file (or flag) messages name.
        budget: total training epochs of all stages.
        weights: stage -> weight of its share of the budget.
        batch_ref: the batch the lr is given for (``lr = lr_base x batch / batch_ref``).
        lr_bounds: the study space's lr range (below 1).
        batch_sizes: stage 1's batch sizes (powers of 2).
        inits: stage 1's weight inits.
        optimizer: stage 1's optimizer (the file's if it is of the Adam family, else adam).
        capacity: stage 2's capacity entries (``guide.width_scale`` when discovered).
        knobs: the width-like arguments ``guide.width_scale`` multiplies, with their values.
        regularizers: stage 3's search entries.
        experiment: the MLflow experiment of every stage.
    """

    cfg: StudyConfig
    source: str
    budget: float
    weights: dict[str, float]
    batch_ref: int
    lr_bounds: tuple[float, float]
    batch_sizes: list[int]
    inits: list[str]
    optimizer: str
    capacity: dict[str, SearchParam]
    knobs: dict[str, Any]
    regularizers: dict[str, SearchParam]
    experiment: str

    @property
    def name(self) -> str:
        return self.cfg.name

    def epochs(self, stage: str) -> int:
        """Epochs per trial of ``stage``."""
        g, full = self.cfg.guide, self.cfg.train.max_epochs
        fit = g.everything.epochs or full  # stage 3 regularizes what fit in this many epochs
        per = {"1-anything": g.anything.epochs or max(3, full // 3), "2-everything": fit,
               "3-right-thing": g.right_thing.epochs or fit}[stage]
        return int(per)

    def trial_cap(self, stage: str) -> int | None:
        g = self.cfg.guide
        return {"1-anything": g.anything.trials, "2-everything": g.everything.trials,
                "3-right-thing": g.right_thing.trials}[stage]


def _bad(plan_source: str, field: str, message: str) -> ConfigError:
    return ConfigError(plan_source, field, message)


def plan_guide(cfg: StudyConfig, source: str = "study file",
               budget_epochs: float | None = None) -> GuidePlan:
    """Check the ``guide:`` section against the study and derive every stage's inputs.

    Args:
        cfg: the study config (``--set`` applied).
        source: the file or flag named in messages.
        budget_epochs: ``--budget-epochs`` (over ``guide.budget_epochs``).

    Raises:
        ConfigError: naming ``guide.<field>`` (or ``data.val_split``), before anything
            is written.
    """
    g = cfg.guide
    if cfg.data.val_split == 0:
        raise _bad(source, "data.val_split", "0 leaves no validation images, and stage 3 "
                                             "selects on them; the guide needs a validation "
                                             "split")
    space = resolve_space(cfg.search.space, source)
    lr_bounds = _lr_bounds(space)
    batches = _batch_sizes(cfg, space, source)
    inits = _inits(cfg, space, source)
    batch_ref = g.batch_ref or cfg.data.batch_size
    if batch_ref & (batch_ref - 1):
        raise _bad(source, "guide.batch_ref", f"data.batch_size {batch_ref} is not a power of "
                                              "2: set guide.batch_ref (the batch the lr is "
                                              "given for)")
    optimizer = cfg.train.optimizer if cfg.train.optimizer in ADAM_FAMILY else "adam"
    probe = cfg.concrete({"search.space": "none", "search.enqueue": [], **REG_OFF},
                         source=source)
    capacity, knobs = _capacity(probe, source)
    regs = _regularizers(cfg, space, probe, source)
    plan = GuidePlan(
        cfg=cfg, source=source, budget=0.0,
        weights={"1-anything": g.anything.weight, "2-everything": g.everything.weight,
                 "3-right-thing": g.right_thing.weight},
        batch_ref=batch_ref, lr_bounds=lr_bounds, batch_sizes=batches, inits=inits,
        optimizer=optimizer, capacity=capacity, knobs=knobs, regularizers=regs,
        experiment=cfg.tracking.experiment or cfg.name,
    )
    plan.budget = _budget(plan, budget_epochs, source)
    return plan


def _lr_bounds(space: dict[str, SearchParam]) -> tuple[float, float]:
    p = space.get("train.lr")
    if p is not None and p.type == "float" and p.low and p.high:
        return float(p.low), float(min(p.high, LR_CEILING))
    return COURSE_LR


def _batch_sizes(cfg: StudyConfig, space: dict[str, SearchParam], source: str) -> list[int]:
    if cfg.guide.anything.batch_sizes:
        return list(cfg.guide.anything.batch_sizes)
    p = space.get("data.batch_size")
    if p is not None and p.type == "categorical":
        pow2 = sorted({int(b) for b in p.choices or [] if isinstance(b, int) and b > 0
                       and not b & (b - 1)})
        if pow2:
            return pow2
    return list(COURSE_BATCHES)


def _inits(cfg: StudyConfig, space: dict[str, SearchParam], source: str) -> list[str]:
    inits = cfg.guide.anything.inits
    if inits is None:
        p = space.get("model.init")
        inits = list(p.choices or []) if p is not None and p.type == "categorical" \
            else [cfg.model.init]
    bad = [i for i in inits if i not in _models.INITS]
    if not inits or bad:
        raise _bad(source, "guide.anything.inits",
                   f"must be inits from {', '.join(_models.INITS)}; not {bad or 'empty'}")
    return list(dict.fromkeys(inits))


def _probe(base: StudyConfig, overrides: dict[str, Any], source: str, field: str) -> None:
    """Validate ``base`` with ``overrides`` as a whole study (model build included)."""
    try:
        base.with_overrides(overrides, source=source)
    except ConfigError as e:
        raise _bad(source, field, f"{overrides} does not make a valid config: "
                                  f"{e.field or ''}: {e.message}") from None


def _capacity(probe: StudyConfig, source: str) -> tuple[dict[str, SearchParam], dict[str, Any]]:
    """Stage 2's capacity entries and the width knobs they scale (checked by building them)."""
    ev = probe.guide.everything
    field = "guide.everything.capacity"
    if ev.capacity:
        entries = resolve_space(ev.capacity, source)
        out: dict[str, SearchParam] = {}
        for key, p in entries.items():
            if not key.startswith(("model.", "data.", "train.")):
                raise _bad(source, f"{field}.{key}", "capacity entries are config keys "
                                                     "(model.widths, model.hidden, model.arch...)")
            for value in p.probe_values():
                _probe(probe, capacity_overrides(probe, {key: value}, {}), source,
                       f"{field}.{key}")
            out[key] = p
        return out, {}
    knobs = width_knobs(probe.to_dict()["model"])
    if not knobs:
        raise _bad(source, field, f"architecture '{probe.model.arch}' has no width-like "
                                  f"argument with a value to scale ({', '.join(WIDTH_KNOBS)}); "
                                  "list the capacity to search, e.g. {model.arch: [...]} or "
                                  "{model.depth: [...]}")
    scales = list(ev.width_scales)
    for s in scales:
        _probe(probe, capacity_overrides(probe, {WIDTH_SCALE: s}, knobs), source,
               "guide.everything.width_scales")
    return {WIDTH_SCALE: SearchParam(type="categorical", choices=scales)}, knobs


def capacity_overrides(base: StudyConfig, sampled: dict[str, Any],
                       knobs: dict[str, Any]) -> dict[str, Any]:
    """Config overrides for sampled capacity values.

    ``guide.width_scale`` multiplies every width knob; a new ``model.arch``
    replaces the model section (its own arguments at their defaults, the
    contract's kept: init, dropout, activation, normalization) before any other
    ``model.*`` entry applies.
    """
    out: dict[str, Any] = {}
    arch = sampled.get("model.arch")
    if arch is not None and arch != base.model.arch:
        m = base.to_dict()["model"]
        out["model"] = {"arch": arch, **{k: m.get(k) for k in ("init", "drop_rate", "act_layer",
                                                              "norm_layer")}}
    for key, value in sampled.items():
        if key == WIDTH_SCALE:
            for k, v in knobs.items():
                out[f"model.{k}"] = scale_width(v, float(value))
        elif key != "model.arch" or "model" not in out:
            out[key] = value
    return out


def _regularizers(cfg: StudyConfig, space: dict[str, SearchParam], probe: StudyConfig,
                  source: str) -> dict[str, SearchParam]:
    """Stage 3's entries: the study space's own regularizer entries, else the course's."""
    d = cfg.data
    defaults: dict[str, Any] = {
        "model.drop_rate": {"type": "float", "low": 0.0, "high": 0.5},
        "train.weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True,
                               "allow_zero": True},
        "data.augmentation": {"type": "categorical",
                              "choices": _data.safe_presets(d.dataset, **d.options)},
        "model.norm_layer": {"type": "categorical", "choices": ["none", "batch"]},
        "train.early_stopping.enabled": {"type": "categorical", "choices": [False, True]},
    }
    entries: dict[str, Any] = {k: space.get(k) or v for k, v in defaults.items()}
    for key, spec in (cfg.guide.right_thing.space or {}).items():
        canon = resolve_key(key)
        if spec is None:
            entries.pop(canon, None)
        else:
            entries[canon] = spec
    out: dict[str, SearchParam] = {}
    for key, spec in entries.items():
        field = f"guide.right_thing.space.{key}"
        try:
            p = spec if isinstance(spec, SearchParam) else SearchParam.model_validate(spec)
        except Exception as e:  # noqa: BLE001 - pydantic's message, one line
            msg = str(e).splitlines()[-1] if str(e) else type(e).__name__
            raise _bad(source, field, msg) from None
        for value in p.probe_values():
            _probe(probe, {key: value}, source, field)
        out[key] = p
    return out


def _budget(plan: GuidePlan, flag: float | None, source: str) -> float:
    cfg = plan.cfg
    if flag is not None and flag <= 0:
        raise _bad("--budget-epochs", None, f"must be positive epochs, got {flag:g}")
    budget = flag or cfg.guide.budget_epochs
    if budget is None:
        budget = float((cfg.search.n_trials or 20) * cfg.train.max_epochs)
    need = sum(plan.epochs(s) for s in STAGES)
    if budget < need:
        where = "--budget-epochs" if flag else "guide.budget_epochs"
        raise _bad(source if not flag else "--budget-epochs", None if flag else where,
                   f"{budget:g} epochs cannot run one trial of each stage ({need} epochs: "
                   f"{', '.join(f'{s} {plan.epochs(s)}' for s in STAGES)}); raise it")
    return float(budget)


# ------------------------------------------------------------------ stage parts
Transform = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class StagePart:
    """One Optuna-searched part of a stage (stage 3 has two: search, then SGD).

    Attributes:
        stage: the stage key.
        part: ``search`` or ``sgd``.
        space: the search entries (``search.space`` of the stage's study).
        enqueue: trials to run first (Optuna param values).
        settings: overrides for this part's trials only (not carried on).
        prefix: overrides every trial of the part carries on (e.g. ``adamw``).
        transform: sampled values -> config overrides.
        pruner: the part's pruner (``none`` where every epoch counts toward the rule).
        note: what the part searches, in words.
    """

    stage: str
    part: str
    space: dict[str, SearchParam]
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    prefix: dict[str, Any] = field(default_factory=dict)
    transform: Transform = dict
    pruner: str | dict[str, Any] = "none"
    note: str = ""


def apply_layers(cfg: StudyConfig, *layers: dict[str, Any], source: str = "guide"
                 ) -> StudyConfig:
    """``cfg`` with each layer of dotted overrides applied in turn (schema checked)."""
    for layer in layers:
        if layer:
            cfg = cfg.concrete(layer, source=source)
    return cfg


def _clip(lr: float, bounds: tuple[float, float]) -> float:
    return float(min(max(lr, bounds[0]), bounds[1]))


def _log_entry(low: float, high: float) -> SearchParam:
    return SearchParam(type="float", low=float(low), high=float(high), log=True)


def stage1_part(plan: GuidePlan, lr_range: tuple[float, float], subset: int | None
                ) -> StagePart:
    """Stage 1: lr (at the reference batch, inside the range test's range), batch size, init."""
    low, high = lr_range
    ref = plan.batch_ref
    bounds = plan.lr_bounds

    def transform(s: dict[str, Any]) -> dict[str, Any]:
        batch = int(s.get("data.batch_size", ref))
        lr = _clip(float(s[LR_BASE]) * batch / ref, bounds)
        return {"train.lr": lr, "data.batch_size": batch,
                "model.init": s.get("model.init", plan.cfg.model.init)}

    space = {LR_BASE: _log_entry(low, high),
             "data.batch_size": SearchParam(type="categorical", choices=plan.batch_sizes),
             "model.init": SearchParam(type="categorical", choices=plan.inits)}
    first = {LR_BASE: math.sqrt(low * high),
             "data.batch_size": min(plan.batch_sizes, key=lambda b: abs(math.log2(b / ref)))}
    if plan.cfg.model.init in plan.inits:
        first["model.init"] = plan.cfg.model.init
    settings = {**REG_OFF, "train.max_epochs": plan.epochs("1-anything"),
                "train.evaluate_test": False}
    if subset is not None:
        settings["data.subset"] = subset
    return StagePart("1-anything", PART_SEARCH, space, [first], settings,
                     {"train.optimizer": plan.optimizer}, transform, "none",
                     f"lr at batch {ref} in {low:.3g}..{high:.3g} (x batch/{ref}), batch size "
                     f"{plan.batch_sizes}, init {plan.inits}; {plan.optimizer}, regularization "
                     f"off, {plan.epochs('1-anything')} epochs"
                     + (f", {subset} training images" if subset else ""))


def stage2_part(plan: GuidePlan, carry: StudyConfig) -> StagePart:
    """Stage 2: capacity and an Adam-family optimizer, lr around stage 1's, regularization off."""
    ev = plan.cfg.guide.everything
    lr1 = carry.train.lr
    half = math.sqrt(ev.lr_span)
    lo, hi = _clip(lr1 / half, plan.lr_bounds), _clip(lr1 * half, plan.lr_bounds)
    if lo >= hi:
        lo, hi = plan.lr_bounds
    knobs = width_knobs(carry.to_dict()["model"]) if WIDTH_SCALE in plan.capacity else {}

    def transform(s: dict[str, Any]) -> dict[str, Any]:
        cap = {k: v for k, v in s.items() if k in plan.capacity}
        out = capacity_overrides(carry, cap, knobs)
        out["train.optimizer"] = s["train.optimizer"]
        out["train.lr"] = float(s["train.lr"])
        return out

    space = {**plan.capacity,
             "train.optimizer": SearchParam(type="categorical", choices=list(ev.optimizers)),
             "train.lr": _log_entry(lo, hi)}
    first: dict[str, Any] = {"train.optimizer": ev.optimizers[0], "train.lr": _clip(lr1, (lo, hi))}
    enqueue = [{**first, **step} for step in growth(plan.capacity, carry)[:1]] or [first]
    settings = {**REG_OFF, "train.max_epochs": plan.epochs("2-everything"),
                "train.evaluate_test": False}
    what = (f"width x {plan.capacity[WIDTH_SCALE].choices} of {', '.join(knobs)}"
            if WIDTH_SCALE in plan.capacity else ", ".join(plan.capacity))
    return StagePart("2-everything", PART_SEARCH, space, enqueue, settings, {}, transform,
                     "none", f"capacity ({what}), optimizer {list(ev.optimizers)}, lr "
                             f"{lo:.3g}..{hi:.3g}; regularization off, "
                             f"{plan.epochs('2-everything')} epochs")


def growth(capacity: dict[str, SearchParam], carry: StudyConfig) -> list[dict[str, Any]]:
    """Stage 2's first trials: capacity grown step by step from the study file's ("grow
    capacity until the training set is fit"), with stage 1's optimizer and lr.

    ``guide.width_scale`` goes through its factors from 1 up; a categorical
    entry goes through its choices in the order listed (small to large), from
    the current value on (several entries step together). Ranges are left to
    the sampler.
    """
    cats = {k: list(p.choices or []) for k, p in capacity.items() if p.type == "categorical"}
    if WIDTH_SCALE in cats:  # discovered: the only capacity entry
        scales = sorted(cats[WIDTH_SCALE])
        return [{WIDTH_SCALE: x} for x in ([x for x in scales if x >= 1.0] or scales[-1:])]
    if not cats:
        return []
    start = {}
    for k, choices in cats.items():
        current = _current(carry, k)
        start[k] = choices.index(current) if current in choices else 0
    n = max(len(c) - start[k] for k, c in cats.items())
    return [{k: c[min(start[k] + i, len(c) - 1)] for k, c in cats.items()} for i in range(n)]


LR_STEP = math.sqrt(10)  # half an order of magnitude: the lr moves by orders of magnitude
STUCK = ("diverged", "unstable", "not_learning")


def next_step(last: dict[str, Any], verdict: str | None, ladder: list[dict[str, Any]],
              lr_band: tuple[float, float], tried: list[dict[str, Any]]
              ) -> tuple[dict[str, Any] | None, str]:
    """Stage 2's next trial from the diagnosis of the last one that did not fit.

    The course's loop, one change at a time (``last`` and the result are
    Optuna params: capacity entries, ``train.optimizer``, ``train.lr``):

    * diverged, unstable, not learning, or failed: reduce the lr (by half a
      decade), same capacity;
    * not_converged (still improving when the schedule ended): raise the lr;
    * converged below the target (underfit, good_fit, overfit): the next
      capacity step;

    falling back to the other move when the first is used up (the lr at the
    edge of its band, capacity at the top of its ladder). Returns ``(None,
    why)`` when neither applies or ``last`` is not on the ladder: the sampler
    takes over.
    """
    lo, hi = lr_band
    cap_keys = set(ladder[0]) if ladder else set()
    here = {k: last.get(k) for k in cap_keys}
    if ladder and here not in ladder:
        return None, "off the capacity ladder: the sampler proposes the next trial"
    i = ladder.index(here) if ladder else 0
    lr = float(last["train.lr"])

    def lr_move(factor: float) -> dict[str, Any] | None:
        new = min(max(lr * factor, lo), hi)
        return None if math.isclose(new, lr, rel_tol=1e-6) else {**last, "train.lr": new}

    def grow() -> dict[str, Any] | None:
        return {**last, **ladder[i + 1]} if i + 1 < len(ladder) else None

    if verdict in STUCK or verdict is None:
        moves = [(lr_move(1 / LR_STEP), "when stuck, reduce the learning rate"),
                 (grow(), "the lr is at the bottom of its band: grow capacity")]
    elif verdict == "not_converged":
        moves = [(lr_move(LR_STEP), "still improving when its schedule ended: raise the lr"),
                 (grow(), "the lr is at the top of its band: grow capacity")]
    else:
        moves = [(grow(), f"{verdict} below the target: grow capacity"),
                 (lr_move(LR_STEP), "capacity is at the top of its ladder: raise the lr")]
    for step, why in moves:
        if step is not None and not any(_same(step, t) for t in tried):
            return step, why
    return None, "the ladder and the lr band are used up: the sampler proposes the next trial"


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = set(a) | set(b)
    for k in keys:
        x, y = a.get(k), b.get(k)
        if isinstance(x, float) and isinstance(y, float):
            if not math.isclose(x, y, rel_tol=1e-6):
                return False
        elif x != y:
            return False
    return True


def _current(cfg: StudyConfig, key: str) -> Any:
    node: Any = cfg.to_dict()
    for p in key.split("."):
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return list(node) if isinstance(node, tuple) else node


def stage3_search_part(plan: GuidePlan, carry: StudyConfig) -> StagePart:
    """Stage 3, first part: the regularizers on stage 2's winner (pruned like the study)."""
    prefix = {"train.optimizer": "adamw"} if carry.train.optimizer == "adam" else {}
    settings = {"train.max_epochs": plan.epochs("3-right-thing")}
    pruner = plan.cfg.to_dict()["search"]["pruner"]
    return StagePart("3-right-thing", PART_SEARCH, dict(plan.regularizers),
                     [mild_regularization(plan.regularizers)], settings, prefix, dict, pruner,
                     f"{', '.join(plan.regularizers)} on stage 2's winner"
                     + (" (adam as adamw: decoupled weight decay)" if prefix else "")
                     + f", {plan.epochs('3-right-thing')} epochs")


def mild_regularization(space: dict[str, SearchParam]) -> dict[str, Any]:
    """Stage 3's first trial: "regularize a little", then let the sampler go on.

    Dropout in the middle of its range (the course: 0.2-0.5 on the dense
    layers), weight decay at the geometric middle of its range (1e-4 for the
    course's 1e-6..1e-2) and early stopping on; augmentation and batch norm are
    left to the sampler.
    """
    first: dict[str, Any] = {}
    p = space.get("model.drop_rate")
    if p is not None and p.type == "float":
        first["model.drop_rate"] = (p.low + p.high) / 2
    p = space.get("train.weight_decay")
    if p is not None and p.type == "float" and p.low and p.low > 0:
        first["train.weight_decay"] = math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2
    p = space.get("train.early_stopping.enabled")
    if p is not None and p.type == "categorical" and True in (p.choices or []):
        first["train.early_stopping.enabled"] = True
    return first


def sgd_band(plan: GuidePlan, winner: StudyConfig) -> tuple[float, float, float]:
    """(low, high, centre) of the refinement's lr: the winner's lr x ``sgd_lr_ratio`` when
    it is adaptive (Adam's lr is typically 10-100x smaller than SGD's), x ``sgd_lr_band``."""
    rt = plan.cfg.guide.right_thing
    lr = winner.train.lr
    centre = lr if winner.train.optimizer in SGD_FAMILY + ("sgd",) else lr * rt.sgd_lr_ratio
    hi_b = LR_CEILING if plan.lr_bounds[1] < centre else plan.lr_bounds[1]
    lo, hi = _clip(centre * rt.sgd_lr_band[0], (plan.lr_bounds[0], hi_b)), \
        _clip(centre * rt.sgd_lr_band[1], (plan.lr_bounds[0], hi_b))
    if lo >= hi:
        lo = hi / 3
    return lo, hi, centre


def stage3_sgd_part(plan: GuidePlan, winner: StudyConfig, winner_overrides: dict[str, Any],
                    band: tuple[float, float]) -> StagePart:
    """Stage 3, second part: momentum/Nesterov SGD around the winner, lr in a narrow band.

    Weight decay keeps its per-step effect: AdamW shrinks weights by ``lr x wd``
    per step; SGD with momentum ``m`` adds ``wd x w`` to a gradient whose steps
    are ``lr / (1 - m)`` long, so ``wd_sgd = wd x lr_adamw x (1 - m) / lr_sgd``.
    L2 of Adam or NAdam (not decoupled) is kept as it is.
    """
    lo, hi = band
    t = winner.train
    decoupled = t.optimizer == "adamw" and t.weight_decay > 0

    def transform(s: dict[str, Any]) -> dict[str, Any]:
        out = {"train.optimizer": s["train.optimizer"], "train.lr": float(s["train.lr"])}
        if decoupled:
            out["train.weight_decay"] = t.weight_decay * t.lr * (1 - t.momentum) / out["train.lr"]
        return out

    space = {"train.optimizer": SearchParam(type="categorical", choices=list(SGD_FAMILY)),
             "train.lr": _log_entry(lo, hi)}
    # not pruned: a few trials of the final selection, whose SGD curves start slower
    # than the Adam trials a pruner would compare them with
    return StagePart("3-right-thing", PART_SGD, space, [], {"train.max_epochs":
                                                           plan.epochs("3-right-thing")},
                     dict(winner_overrides), transform, "none",
                     f"momentum/nesterov SGD on the winner, lr {lo:.3g}..{hi:.3g}"
                     + (" (weight decay mapped from AdamW's)" if decoupled else ""))
