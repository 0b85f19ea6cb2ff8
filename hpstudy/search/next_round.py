"""The next round of a study: a study file narrowed around its best trials, with the
remedies their verdicts call for (``hpstudy diagnose STUDY --next FILE``).

From the collected study (:class:`hpstudy.analyze.StudyData`: every trial's
values as trained) and its diagnosis table (:func:`hpstudy.analyze.diagnose_trials`):

1. **The best trials.** The top ``k`` completed trials by the objective,
   ``k = max(3, ceil(n / 4))`` of ``n`` completed (all of them when fewer).
2. **Narrowing.** Each numeric entry of the space shrinks to the range of the
   top trials' values, widened by ``max(25% of that range, 10% of the old
   range)`` on the entry's scale (decades for a log entry), rounded outwards to
   3 significant digits (whole numbers for ints, the step's grid for a stepped
   entry) and clipped to the old bounds. An ``allow_zero`` entry keeps 0 only if
   a top trial trained with 0. A categorical entry keeps the choices the top
   trials used; if they all used one (three or more of them), it is fixed in the
   config instead; with fewer, the next best trial's different choice is kept too.
3. **Remedies**, when a verdict is at least half of the top trials':
   ``not_converged`` doubles ``train.max_epochs`` (the diagnosis calls a run
   converged when its last third improves by under 5% of its descent; twice the
   epochs gives such a run room for a visible gain); ``overfit`` raises the
   regularization range (dropout, weight decay) and searches the augmentation
   presets that are safe for the dataset (:func:`hpstudy.data.safe_presets`);
   ``underfit`` doubles the capacity knobs the architecture takes
   (``hidden``, ``widths``, ``width``, ``widen_factor``, ``growth_rate``,
   ``width_mult``) or, with none, says to pick a larger architecture.
4. **The file.** The new study is named ``<name>-r2`` (``-r3`` after that),
   keeps the storage and tracking store the study was read from, enqueues the
   best trial's values (inside the new space) as its trial 0, and carries a
   comment per change naming the evidence. It is validated by loading it back
   with :func:`hpstudy.config.load_study`; a remedy that would not validate is
   left out with a comment saying why.
"""

from __future__ import annotations

import copy
import math
import re
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..analyze.fmt import finite
from ..config import ConfigError, SearchParam, StudyConfig, from_dict, load_study, resolve_space
from ..config.study import set_dotted

CAPACITY_KNOBS = ("hidden", "widths", "width", "widen_factor", "growth_rate", "width_mult")
"""Model keyword arguments that set a network's width: doubled for an underfit round."""
DROPOUT_MAX = 0.8  # the course searches 0-0.5; beyond 0.8 most nets stop learning
WEIGHT_DECAY_MAX = 0.1  # L2 beyond 0.1 swamps the loss's gradient on every net here
EPOCH_FACTOR = 2


@dataclass
class Change:
    """One change from the study's file to the next round's, with the evidence behind it."""

    key: str  # dotted: train.max_epochs, search.space.train.lr, ...
    old: Any
    new: Any
    why: str


@dataclass
class NextRound:
    """What ``hpstudy diagnose --next`` writes: the new study and why it differs."""

    name: str
    config: dict[str, Any]
    changes: list[Change] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    top: list[int] = field(default_factory=list)

    def to_yaml(self) -> str:
        """The study file: YAML with a comment above every changed key."""
        return render_yaml(self.config, self.changes, self.header)


# ------------------------------------------------------------------ the best trials
def top_trials(trials: pd.DataFrame, direction: str) -> list[dict[str, Any]]:
    """The top ``k`` completed trials, best first (see the module docstring)."""
    done = trials[(trials["state"] == "COMPLETE") & trials["value"].map(finite)]
    if len(done) < 2:
        raise ValueError(f"a next round needs at least 2 completed trials, this study has "
                         f"{len(done)}")
    k = min(len(done), max(3, math.ceil(len(done) / 4)))
    ranked = done.sort_values(["value", "number"], ascending=[direction == "minimize", True])
    return ranked.head(k).to_dict("records")


def _who(rows: list[dict[str, Any]]) -> str:
    return ", ".join(f"#{int(r['number'])}" for r in rows)


def _sig(x: float, up: bool) -> float:
    """``x`` rounded outwards to 3 significant digits (down for a low, up for a high)."""
    if x == 0 or not math.isfinite(x):
        return x
    scale = 10 ** (math.floor(math.log10(abs(x))) - 2)
    q = round(x / scale, 6)  # 0.35000000000000003 is 0.35, not a reason to round up
    return (math.ceil(q) if up else math.floor(q)) * scale


def _clean(x: float) -> float:
    return float(f"{x:.6g}")


# ------------------------------------------------------------------ narrowing
def narrow_numeric(p: SearchParam, values: list[float]) -> tuple[float, float]:
    """The new ``(low, high)`` of a numeric entry around ``values`` (the top trials'
    non-zero values), as the module docstring says."""
    log = p.log or p.allow_zero
    f = (lambda v: math.log10(v)) if log else (lambda v: v)
    inv = (lambda u: 10 ** u) if log else (lambda u: u)
    lo_u, hi_u = min(f(v) for v in values), max(f(v) for v in values)
    old_lo, old_hi = f(p.low), f(p.high)
    margin = max(0.25 * (hi_u - lo_u), 0.1 * (old_hi - old_lo))
    low, high = inv(max(lo_u - margin, old_lo)), inv(min(hi_u + margin, old_hi))
    if p.type == "int":
        low, high = math.floor(low), math.ceil(high)
    elif p.step:
        n_lo = math.floor(round((low - p.low) / p.step, 6))
        n_hi = math.ceil(round((high - p.low) / p.step, 6))
        low, high = p.low + n_lo * p.step, p.low + n_hi * p.step
    else:
        low, high = _sig(low, up=False), _sig(high, up=True)
    low, high = max(low, p.low), min(high, p.high)
    if p.type == "int":
        return int(low), int(high)
    return _clean(low), _clean(high)


def _entry(p: SearchParam) -> dict[str, Any]:
    """A space entry as plain data, only the fields that say something."""
    if p.type == "categorical":
        return {"type": "categorical", "choices": list(p.choices or [])}
    out: dict[str, Any] = {"type": p.type, "low": p.low, "high": p.high}
    if p.type == "int":
        out.update(low=int(p.low), high=int(p.high))
    if p.log:
        out["log"] = True
    if p.step is not None:
        out["step"] = int(p.step) if p.type == "int" else p.step
    if p.allow_zero:
        out["allow_zero"] = True
    return out


def _numeric_entry(key: str, p: SearchParam, top: list[dict[str, Any]],
                   out: dict[str, Any], changes: list[Change]) -> None:
    vals = [r.get(key) for r in top]
    vals = [float(v) for v in vals if finite(v)]
    zeros = sum(1 for v in vals if v == 0) if p.allow_zero else 0
    nonzero = [v for v in vals if not (p.allow_zero and v == 0)]
    old = _entry(p)
    if not nonzero:
        out[key] = old
        if zeros:
            changes.append(Change(f"search.space.{key}", old, old, (
                f"kept: all {zeros} best trials ({_who(top)}) trained with {key} = 0")))
        return
    low, high = narrow_numeric(p, nonzero)
    new = {**old, "low": low, "high": high}
    span = f"{min(nonzero):.3g}-{max(nonzero):.3g}"
    why = f"narrowed to the {len(top)} best trials ({_who(top)}: {span}"
    if p.allow_zero:
        if zeros:
            why += f"; {zeros} of them trained with 0, so 0 stays allowed"
        else:
            new.pop("allow_zero", None)
            why += "; none trained with 0, so 0 is no longer searched"
    why += ("), widened by a quarter of that range or a tenth of the old one and kept "
            f"inside {_num(p.low)}-{_num(p.high)}")
    if new == old:
        why = (f"kept: the {len(top)} best trials ({_who(top)}: {span}) span about the whole "
               "range")
    out[key] = new
    changes.append(Change(f"search.space.{key}", old, new, why))


def _num(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _categorical_entry(key: str, p: SearchParam, top: list[dict[str, Any]],
                       ranked: list[dict[str, Any]], out: dict[str, Any],
                       fixed: dict[str, Any], changes: list[Change]) -> None:
    choices = list(p.choices or [])
    used = [c for c in choices if any(r.get(key) == c for r in top)]
    old = _entry(p)
    counts = Counter(str(r.get(key)) for r in top)
    tally = ", ".join(f"{c} x{counts[str(c)]}" for c in used)
    if len(used) >= 2:
        out[key] = {"type": "categorical", "choices": used}
        why = (f"the {len(top)} best trials ({_who(top)}) used {tally}" +
               ("" if len(used) < len(choices) else "; every choice kept"))
        changes.append(Change(f"search.space.{key}", old, out[key], why))
        return
    if len(used) == 1 and len(top) < 3:
        other = next((r.get(key) for r in ranked if r.get(key) in choices
                      and r.get(key) != used[0]), None)
        if other is not None:
            out[key] = {"type": "categorical", "choices": [used[0], other]}
            changes.append(Change(f"search.space.{key}", old, out[key], (
                f"the {len(top)} best trials used {used[0]}; the next best other choice, "
                f"{other}, stays in so that two are compared")))
            return
    if used:
        fixed[key] = used[0]
        changes.append(Change(key, old, used[0], (
            f"fixed: all {len(top)} best trials ({_who(top)}) used {used[0]}; no longer "
            "searched")))
    else:
        out[key] = old


# ------------------------------------------------------------------ remedies
def _share(top: list[dict[str, Any]], verdict: str) -> list[dict[str, Any]]:
    return [r for r in top if r.get("verdict") == verdict]


def _first_reason(rows: list[dict[str, Any]], limit: int = 160) -> str:
    reason = str(rows[0].get("reason") or "")
    return f" (#{int(rows[0]['number'])}: {textwrap.shorten(reason, limit, placeholder='...')})"


def _more_epochs(cfg: dict[str, Any], space: dict[str, Any], hits: list[dict[str, Any]],
                 top: list[dict[str, Any]], changes: list[Change]) -> None:
    old = cfg["train"]["max_epochs"]
    why = (f"{len(hits)} of the {len(top)} best trials were still improving over their last "
           f"third (not_converged){_first_reason(hits)}; the diagnosis calls a run converged "
           f"when its last third gains under 5% of its descent, so {EPOCH_FACTOR}x the epochs "
           "gives these runs room for a visible gain")
    if "train.max_epochs" in space:
        e = space["train.max_epochs"]
        new = {**e, "low": int(e["low"]) * EPOCH_FACTOR, "high": int(e["high"]) * EPOCH_FACTOR}
        changes.append(Change("search.space.train.max_epochs", e, new, why))
        space["train.max_epochs"] = new
        return
    cfg["train"]["max_epochs"] = old * EPOCH_FACTOR
    changes.append(Change("train.max_epochs", old, old * EPOCH_FACTOR,
                          f"raised {old} -> {old * EPOCH_FACTOR}: {why}"))


def _regularize(cfg: dict[str, Any], space: dict[str, Any], hits: list[dict[str, Any]],
                top: list[dict[str, Any]], dataset_presets: list[str],
                original: dict[str, SearchParam], changes: list[Change]) -> None:
    lead = (f"{len(hits)} of the {len(top)} best trials overfit{_first_reason(hits)}: "
            "more regularization")
    vals = [float(r["model.drop_rate"]) for r in top if finite(r.get("model.drop_rate"))]
    e = space.get("model.drop_rate")
    if e is not None:
        low = min(vals) if vals else e["low"]
        top_old = max(e["high"], original["model.drop_rate"].high)
        new = {**e, "low": _clean(low), "high": _clean(min(DROPOUT_MAX, top_old + 0.2))}
        changes.append(Change("search.space.model.drop_rate", e, new,
                              f"{lead}: dropout from the best trials' lowest to 0.2 above "
                              "the old range"))
        space["model.drop_rate"] = new
    else:
        cur = float(cfg["model"].get("drop_rate") or 0.0)
        new = {"type": "float", "low": _clean(cur), "high": _clean(min(DROPOUT_MAX, cur + 0.4))}
        space["model.drop_rate"] = new
        changes.append(Change("search.space.model.drop_rate", None, new,
                              f"{lead}: dropout searched from the current {cur:g} up by 0.4"))
    e = space.get("train.weight_decay")
    if e is not None:
        top_old = max(e["high"], original["train.weight_decay"].high)
        new = {**e, "high": _clean(min(WEIGHT_DECAY_MAX, top_old * 10))}
        new.pop("allow_zero", None)
        if new["low"] >= new["high"]:
            new["low"] = _clean(new["high"] / 100)
        changes.append(Change("search.space.train.weight_decay", e, new,
                              f"{lead}: weight decay up to 10x the old top, 0 no longer "
                              "searched"))
        space["train.weight_decay"] = new
    else:
        cur = float(cfg["train"].get("weight_decay") or 0.0)
        low = cur if cur > 0 else 1e-5
        new = {"type": "float", "low": _clean(low),
               "high": _clean(min(WEIGHT_DECAY_MAX, max(low * 100, 1e-2))), "log": True}
        space["train.weight_decay"] = new
        changes.append(Change("search.space.train.weight_decay", None, new,
                              f"{lead}: weight decay searched (log scale) from "
                              f"{'the current ' + format(cur, 'g') if cur else '1e-5'}"))
    aug = cfg["data"].get("augmentation")
    if "data.augmentation" not in space and aug in ("none", [], None) and len(dataset_presets) > 1:
        new = {"type": "categorical", "choices": list(dataset_presets)}
        space["data.augmentation"] = new
        changes.append(Change("search.space.data.augmentation", None, new, (
            f"{lead}: augmentation presets that suit {cfg['data']['dataset']} (no flips where "
            "a flip changes the class)")))


def _widen(cfg: dict[str, Any], hits: list[dict[str, Any]], top: list[dict[str, Any]],
           accepted: set[str], changes: list[Change]) -> None:
    lead = (f"{len(hits)} of the {len(top)} best trials underfit{_first_reason(hits)}: "
            "more capacity")
    model = cfg["model"]
    done = False
    for knob in CAPACITY_KNOBS:
        if knob not in accepted or model.get(knob) is None:
            continue
        cur = model[knob]
        if isinstance(cur, list) and all(isinstance(x, int) for x in cur):
            new: Any = [2 * x for x in cur]
        elif isinstance(cur, int) and not isinstance(cur, bool):
            new = 2 * cur
        elif isinstance(cur, float):
            new = _clean(2 * cur)
        else:
            continue
        model[knob] = new
        changes.append(Change(f"model.{knob}", cur, new, f"{lead}: model.{knob} doubled"))
        done = True
    if not done:
        changes.append(Change("model.arch", model["arch"], model["arch"], (
            f"{lead}, but {model['arch']} exposes no width knob in this config "
            f"({', '.join(CAPACITY_KNOBS)}): pick a larger architecture (hpstudy models)")))


# ------------------------------------------------------------------ the study
def next_name(name: str) -> str:
    """``study`` -> ``study-r2``; ``study-r2`` -> ``study-r3``."""
    m = re.fullmatch(r"(.*)-r(\d+)", name)
    return f"{m.group(1)}-r{int(m.group(2)) + 1}" if m else f"{name}-r2"


def _inside(value: Any, entry: dict[str, Any]) -> Any:
    """``value`` as an enqueued value of ``entry`` (clipped into a numeric range), or None."""
    if entry["type"] == "categorical":
        return value if value in entry["choices"] else None
    if not finite(value):
        return None
    if value == 0 and entry.get("allow_zero"):
        return 0.0
    v = min(max(float(value), entry["low"]), entry["high"])
    return int(round(v)) if entry["type"] == "int" else v


def plan_next_round(data: Any, table: pd.DataFrame, cfg: StudyConfig, *,
                    storage: str | None = None, tracking_uri: str | None = None) -> NextRound:
    """The next round's study (not yet written): see the module docstring.

    Args:
        data: the collected study (:func:`hpstudy.analyze.collect`).
        table: its diagnosis (:func:`hpstudy.analyze.diagnose_trials`).
        cfg: the study's config (its file, or the config stored with it).
        storage: the Optuna storage the study was read from (kept for the next round).
        tracking_uri: the MLflow store it was read from (kept too).

    Raises:
        ValueError: fewer than 2 completed trials.
    """
    from ..data import safe_presets
    from ..models import model_kwargs

    verdicts = dict(zip(table["number"], table["verdict"], strict=True))
    reasons = dict(zip(table["number"], table["reason"], strict=True))
    trials = data.trials.assign(verdict=[verdicts.get(n) for n in data.trials["number"]],
                                reason=[reasons.get(n) for n in data.trials["number"]])
    top = top_trials(trials, data.direction)
    done = trials[(trials["state"] == "COMPLETE") & trials["value"].map(finite)]
    ranked = done.sort_values(["value", "number"], ascending=[data.direction == "minimize",
                                                               True]).to_dict("records")
    base = cfg.to_dict()
    new = copy.deepcopy(base)
    changes: list[Change] = []
    space: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    original = resolve_space(cfg.search.space, "search.space")
    for key, p in original.items():
        if p.type == "categorical":
            _categorical_entry(key, p, top, ranked, space, fixed, changes)
        else:
            _numeric_entry(key, p, top, space, changes)
    for key, value in fixed.items():
        set_dotted(new, key, value, "next round")

    remedies = []
    half = len(top) / 2
    if len(hits := _share(top, "not_converged")) >= half:
        remedies.append(lambda c, s, h=hits: _more_epochs(c, s, h, top, changes))
    if len(hits := _share(top, "overfit")) >= half:
        presets = safe_presets(cfg.data.dataset, **cfg.data.options)
        remedies.append(lambda c, s, h=hits: _regularize(c, s, h, top, presets, original,
                                                         changes))
    if len(hits := _share(top, "underfit")) >= half:
        accepted = model_kwargs(cfg.model.arch)
        remedies.append(lambda c, s, h=hits: _widen(c, h, top, accepted, changes))
    for remedy in remedies:  # each must leave a valid study, or it is left out
        trial_cfg, trial_space, n = copy.deepcopy(new), copy.deepcopy(space), len(changes)
        remedy(trial_cfg, trial_space)
        try:
            from_dict(_assemble(trial_cfg, trial_space, cfg, [], storage, tracking_uri),
                      "next round")
        except ConfigError as e:
            dropped = changes[n:]
            del changes[n:]
            for c in dropped:
                changes.append(Change(c.key, c.old, c.old, f"not applied ({e.message}): {c.why}"))
            continue
        new, space = trial_cfg, trial_space

    best = top[0]
    enqueue = {k: v for k, e in space.items()
               if (v := _inside(best.get(k), e)) is not None}
    name = next_name(cfg.name)
    out = _assemble(new, space, cfg, [enqueue] if enqueue else [], storage, tracking_uri)
    n_done = len(done)
    counts = Counter(str(r.get("verdict") or "no verdict") for r in top)
    tally = ", ".join(f"{v} x{n}" for v, n in counts.most_common())
    applied = [v for v in ("not_converged", "overfit", "underfit") if counts[v] >= half]
    values = ", ".join(f"{float(r['value']):.4g}" for r in top)
    header = [
        f"Next round of study '{cfg.name}', written by hpstudy diagnose --next.",
        f"From {n_done} completed of {len(trials)} trials; the {len(top)} best "
        f"({_who(top)}, {data.metric} {values}) set the space below.",
        f"Their verdicts: {tally}; "
        + (f"remedies for {', '.join(applied)} below." if applied else
           "none is at least half of them, so no remedy: only the space is narrowed."),
        f"Trial 0 re-runs the best trial (#{int(best['number'])}) inside the new space.",
        f"Run it with: hpstudy run <this file>   (same storage: study '{name}' next to "
        f"'{cfg.name}')",
    ]
    return NextRound(name, out, changes, header, [int(r["number"]) for r in top])


def _assemble(cfg_dict: dict[str, Any], space: dict[str, Any], cfg: StudyConfig,
              enqueue: list[dict[str, Any]], storage: str | None,
              tracking_uri: str | None) -> dict[str, Any]:
    out = copy.deepcopy(cfg_dict)
    out["name"] = next_name(cfg.name)
    out["search"]["space"] = dict(space)
    out["search"]["enqueue"] = enqueue
    out["storage"] = storage or cfg.storage
    out["tracking"]["uri"] = tracking_uri or cfg.tracking.uri
    return out


# ------------------------------------------------------------------ writing
def _comment(lines: list[str], indent: str) -> list[str]:
    out = []
    for text in lines:
        out += textwrap.wrap(text, 96 - len(indent), initial_indent=f"{indent}# ",
                             subsequent_indent=f"{indent}#   ")
    return out


def _comments_for(changes: list[Change]) -> dict[str, list[str]]:
    """Comment lines by the key they sit above (``section.key``, or a space entry)."""
    out: dict[str, list[str]] = {}
    for c in changes:
        if c.key.startswith("search.space."):
            anchor = c.key
        else:
            anchor = ".".join(c.key.split(".")[:2])
        out.setdefault(anchor, []).append(c.why)
    return out


def _dump(key: str, value: Any, indent: str) -> list[str]:
    text = yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False, width=96)
    return [indent + line for line in text.rstrip("\n").splitlines()]


def render_yaml(config: dict[str, Any], changes: list[Change], header: list[str]) -> str:
    """The study file: each section dumped with ``yaml.safe_dump``, a comment line above
    every changed key, space entries one per line (flow style)."""
    notes = _comments_for(changes)
    lines = _comment(header, "")
    for section, value in config.items():
        if not isinstance(value, dict):
            lines += _dump(section, value, "")
            continue
        lines.append(f"{section}:")
        for key, sub in value.items():
            if section == "search" and key == "space":
                lines.append("  space:")
                for entry, spec in sub.items():
                    lines += _comment(notes.get(f"search.space.{entry}", []), "    ")
                    flow = yaml.safe_dump(spec, sort_keys=False, default_flow_style=True,
                                          width=10 ** 6).strip()
                    lines.append(f"    {entry}: {flow}")
                for c in changes:  # entries fixed in the config: say so where they were
                    if not c.key.startswith("search.") and c.key not in sub and \
                            c.why.startswith("fixed:"):
                        lines += _comment([f"{c.key} {c.why}"], "    ")
                continue
            lines += _comment(notes.get(f"{section}.{key}", []), "  ")
            lines += _dump(key, sub, "  ")
    return "\n".join(lines) + "\n"


def write_next_round(path: str | Path, plan: NextRound) -> Path:
    """Write the study file and load it back (it must validate as it is).

    Raises:
        ConfigError: the written file does not validate (a bug: the remedies are
            checked one by one before).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plan.to_yaml(), encoding="utf-8")
    load_study(path)
    return path
