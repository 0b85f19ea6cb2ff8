"""The diagnosis rules as they were before the noise-aware rewrite (a verbatim copy).

Copied from ``hpstudy/analyze/diagnose.py`` at commit ecaf19c (branch point of the
noise-aware diagnosis) so that ``diagnosis_accuracy.py`` scores the old and new rules
on the same curves in one run. Not imported by hpstudy; do not edit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

VERDICTS = ("good_fit", "overfit", "underfit", "unstable", "diverged", "not_learning")
"""Every verdict, in the order reports list them (healthy first)."""


@dataclass(frozen=True)
class Thresholds:
    """Where one verdict ends and the next begins. Units and reasons inline."""

    # not_learning: best accuracy below chance + this fraction of the headroom above
    # chance (0.19 for 10 classes, 0.55 for 2). An untrained net wanders a few points
    # around chance (class imbalance, small validation sets); a tenth of the way to
    # perfect is clearly beyond that.
    chance_margin: float = 0.1
    # diverged: training loss above this multiple of the chance loss ln(C) and never
    # back below ln(C); or, after having learned, back above ln(C) at this multiple of
    # its best so far. A fresh net starts near ln(C); 3x that is not an init accident.
    explode_factor: float = 3.0
    # unstable: mean relative epoch-to-epoch rise of the training loss (fraction per
    # epoch). An epoch mean averages many batches, so a healthy run's training loss
    # almost never rises; rising 10% of itself per epoch on average means the steps
    # overshoot. Measured on digits: healthy Adam/SGD runs 0.00-0.05, lr too high 0.2-0.35.
    noise_max: float = 0.1
    # unstable: losses below this fraction of ln(C) count as this (relative rises of a
    # loss near zero, e.g. 0.0005 -> 0.001, are not instability).
    noise_floor: float = 0.01
    # overfit: validation loss (mean of the last epochs) above its minimum by this
    # fraction. Beyond the epoch-to-epoch wobble of a few hundred validation images.
    val_rise: float = 0.1
    # overfit: the validation-loss minimum must lie at least this many epochs before
    # the last ("best epoch well before the last"): one or two epochs past the minimum
    # are noise of a single validation snapshot.
    min_epochs_after_best: int = 3
    # overfit: train minus validation accuracy (fraction, mean of the last epochs) that
    # counts as a large gap when its trend over the run is upward (a gap that closes as
    # training goes on is regularization catching up, not overfitting). Dropout and
    # augmentation put a few points between the two measurements; ten is memorizing.
    gap_max: float = 0.1
    # underfit: neither training nor best validation accuracy reached this fraction.
    # The course's milestone 2 is to learn the training set ("grow capacity until the
    # train set is overfit"); 90% is far below that for the course's datasets.
    fit_acc: float = 0.9
    # underfit: a training loss falling slower than this fraction per epoch over the
    # last epochs has plateaued (at 1%/epoch ten more epochs buy under 10%).
    plateau_slope: float = 0.01
    # epochs in the trailing window used for the plateau slope and the end-of-run means
    # (at most a third of the run). Three epochs smooth one noisy validation pass.
    window: int = 3


@dataclass(frozen=True)
class Diagnosis:
    """A verdict, the evidence it rests on, and what to try next.

    Attributes:
        verdict: one of :data:`VERDICTS`.
        reason: one sentence with the numbers that decided the verdict.
        evidence: named numbers (``gap``, ``best_epoch``, ``train_loss_slope``,
            ``noise``...); ``None`` where a number cannot be measured.
        advice: the course's advice for the verdict, most useful first.
    """

    verdict: str
    reason: str
    evidence: dict[str, Any]
    advice: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (floats rounded to 6 significant digits)."""
        ev = {k: (float(f"{v:.6g}") if isinstance(v, float) and math.isfinite(v) else v)
              for k, v in self.evidence.items()}
        ev = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
              for k, v in ev.items()}
        return {"verdict": self.verdict, "reason": self.reason, "evidence": ev,
                "advice": list(self.advice)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Diagnosis:
        """Inverse of :meth:`to_dict` (e.g. an Optuna user attr)."""
        return cls(d["verdict"], d.get("reason", ""), dict(d.get("evidence", {})),
                   list(d.get("advice", [])))


# ------------------------------------------------------------------ numbers
def _series(history: Sequence[dict[str, Any]], key: str) -> list[float]:
    out = []
    for r in history:
        v = r.get(key)
        out.append(float("nan") if v is None else float(v))
    return out


def _finite(xs: Sequence[float]) -> list[float]:
    return [x for x in xs if math.isfinite(x)]


def _slope(ys: Sequence[float]) -> float:
    """Least-squares slope per epoch of ``ys`` (0 for fewer than 2 points)."""
    n = len(ys)
    if n < 2:
        return 0.0
    mx = (n - 1) / 2
    my = sum(ys) / n
    num = sum((i - mx) * (y - my) for i, y in enumerate(ys))
    den = sum((i - mx) ** 2 for i in range(n))
    return num / den


def _mean(xs: Sequence[float]) -> float:
    xs = _finite(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def _noise(losses: Sequence[float], floor: float) -> float | None:
    """Mean relative rise per epoch: ``mean(max(0, L[i] - L[i-1]) / (L[i-1] + floor))``.

    Rises, not wiggles in both directions: a falling curve scores 0 however
    fast it falls, and an overfitting run's training loss keeps falling.
    """
    if len(losses) < 3:  # one transition cannot tell noise from a bad epoch
        return None
    rises = [max(0.0, b - a) / (a + floor) for a, b in zip(losses, losses[1:], strict=False)]
    return sum(rises) / len(rises)


def measure(history: Sequence[dict[str, Any]], num_classes: int,
            t: Thresholds | None = None) -> dict[str, Any]:
    """The evidence :func:`diagnose` decides on, from a per-epoch history.

    Keys: ``epochs``, ``chance_acc``, ``chance_loss`` (ln C), ``best_acc`` (best
    train or validation accuracy seen), ``final_train_acc``, ``final_val_acc``,
    ``best_val_acc``, ``best_epoch`` (epoch of the lowest validation loss),
    ``epochs_after_best``, ``min_val_loss``, ``val_loss_rise`` (end-of-run mean over
    the minimum, minus 1), ``train_loss_drop_after_best`` (fraction the training loss
    fell after the best epoch), ``gap`` (train minus validation accuracy, mean of the
    last epochs), ``gap_at_best``, ``gap_slope`` (least-squares trend per epoch, from epoch 2),
    ``train_loss_slope`` (relative change per epoch over the last epochs; negative
    is falling), ``noise`` (see :func:`_noise`), ``max_train_loss``,
    ``nonfinite_epoch`` (first epoch with a NaN/inf loss).
    """
    t = t or Thresholds()
    n = len(history)
    chance_loss = math.log(num_classes)
    tl, vl = _series(history, "train_loss"), _series(history, "val_loss")
    ta, va = _series(history, "train_acc"), _series(history, "val_acc")
    epochs = [int(r.get("epoch", i + 1)) for i, r in enumerate(history)]
    # the trailing window, at most a third of the run: a short run's first epochs
    # (an untrained net) must not weigh on its "final" numbers
    w = max(1, min(t.window, n // 3))

    nonfinite = next((epochs[i] for i in range(n)
                      if not (math.isfinite(tl[i]) and math.isfinite(vl[i]))), None)
    # everything below reads the epochs before the first non-finite one
    k = n if nonfinite is None else epochs.index(nonfinite)
    tl, vl, ta, va, ep = tl[:k], vl[:k], ta[:k], va[:k], epochs[:k]

    ev: dict[str, Any] = {
        "epochs": n,
        "num_classes": num_classes,
        "chance_acc": 1.0 / num_classes,
        "chance_loss": chance_loss,
        "nonfinite_epoch": nonfinite,
        "max_train_loss": max(tl) if tl else None,
        "best_acc": max(_finite(ta) + _finite(va), default=None),
        "final_train_acc": _mean(ta[-w:]) if ta else None,
        "final_val_acc": _mean(va[-w:]) if va else None,
        "best_val_acc": max(_finite(va), default=None),
        "noise": _noise(tl, t.noise_floor * chance_loss),
        # measured below when at least one epoch is finite
        "best_epoch": None, "epochs_after_best": None, "min_val_loss": None,
        "val_loss_rise": None, "train_loss_drop_after_best": None, "gap": None,
        "gap_at_best": None, "gap_slope": None, "train_loss_slope": None,
    }
    if not tl:
        return ev

    b = min(range(k), key=lambda i: vl[i])  # index of the lowest validation loss
    after = k - 1 - b
    tail = min(w, after)
    gaps = [a - v for a, v in zip(ta, va, strict=True)]
    ref = max(0, k - 1 - w)  # start of the trailing window for the plateau slope
    span = k - 1 - ref
    ev.update(
        best_epoch=ep[b],
        epochs_after_best=after,
        min_val_loss=vl[b],
        val_loss_rise=(_mean(vl[-tail:]) / vl[b] - 1.0) if tail and vl[b] > 0 else 0.0,
        train_loss_drop_after_best=(1.0 - _mean(tl[-tail:]) / tl[b]) if tail and tl[b] > 0
        else 0.0,
        gap=_mean(gaps[-w:]),
        gap_at_best=gaps[b],
        # from epoch 2: epoch 1's training accuracy averages over a net still untrained
        gap_slope=_slope(gaps[1:]),
        train_loss_slope=(tl[-1] - tl[ref]) / (tl[ref] * span) if span and tl[ref] > 0 else 0.0,
    )
    return ev


# ------------------------------------------------------------------ advice
ADVICE: dict[str, list[str]] = {
    "good_fit": [
        "Keep this configuration as the baseline; change one thing at a time and "
        "test each change alone and combined (ablation).",
        "To gain more, raise capacity a little and regularize to fit the validation set "
        "(the course's milestone 3: learn the right thing).",
    ],
    "overfit": [
        "Add or raise dropout (0.2-0.5, on the dense layers).",
        "Add weight decay (L2; decoupled AdamW for adaptive optimizers), searched on a log scale.",
        "Add data augmentation.",
        "Use early stopping on validation loss.",
        "Lower capacity (fewer or narrower layers).",
    ],
    "underfit": [
        "Check the weight init: He for the ReLU family, Glorot/Xavier otherwise, biases zero.",
        "Tune the learning rate by orders of magnitude (1e-4 ... 1e-1).",
        "Revisit the batch size (powers of 2; doubling it suggests doubling the lr).",
        "Raise capacity: more layers or wider ones, until the training set is fit.",
    ],
    "unstable": [
        "Lower the learning rate (try 3-10x smaller).",
        "Use a larger batch (next power of 2), which averages out gradient noise.",
    ],
    "diverged": [
        "Lower the learning rate by an order of magnitude.",
        "Check the init (He/Glorot, biases zero) and the input normalization "
        "(zero mean, unit std per channel).",
        "Consider gradient clipping or a learning-rate warm-up.",
    ],
    "not_learning": [
        "Check the init (He for ReLU family, Glorot otherwise; biases zero).",
        "Check the input normalization (zero mean, unit std per channel) and the labels.",
        "Change the learning rate by orders of magnitude (1e-4, 1e-3, 1e-2, 1e-1).",
    ],
}


def _f(x: float | None, pct: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.4g}"


# ------------------------------------------------------------------ verdict
def diagnose(history: Sequence[dict[str, Any]], num_classes: int, **thresholds: Any) -> Diagnosis:
    """The verdict on one trial's learning curves.

    Args:
        history: per-epoch records with ``epoch``, ``train_loss``, ``train_acc``,
            ``val_loss``, ``val_acc`` (accuracies as fractions in [0, 1]).
        num_classes: number of classes (sets chance accuracy and chance loss).
        **thresholds: any field of :class:`Thresholds`, by name.

    Returns:
        The :class:`Diagnosis`.

    Raises:
        ValueError: empty history or fewer than 2 classes.
        TypeError: an unknown threshold name.
    """
    if not history:
        raise ValueError("cannot diagnose an empty history (no epoch was recorded)")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    t = Thresholds(**thresholds)
    ev = measure(history, num_classes, t)
    train_loss = _finite(_series(history, "train_loss"))
    verdict, reason = _verdict(ev, train_loss, t)
    advice = list(ADVICE[verdict])
    if verdict == "overfit" and (ev["epochs_after_best"] or 0) >= t.min_epochs_after_best:
        advice[3] = (f"Use early stopping on validation loss: its best epoch was "
                     f"{ev['best_epoch']} of {ev['epochs']}.")
    if verdict == "underfit" and ev.get("train_loss_slope", 0.0) < -t.plateau_slope:
        advice.insert(0, f"Train longer: the training loss still falls "
                         f"{_f(-ev['train_loss_slope'], pct=True)} per epoch.")
    return Diagnosis(verdict, reason, ev, advice)


def _verdict(ev: dict[str, Any], train_loss: list[float], t: Thresholds) -> tuple[str, str]:
    """The first verdict that applies, and why (one sentence with its numbers)."""
    if ev["nonfinite_epoch"] is not None:
        return "diverged", f"non-finite loss at epoch {ev['nonfinite_epoch']}"
    exploded = _explosion(train_loss, ev["chance_loss"], t)
    if exploded:
        return "diverged", exploded

    c_acc, best = ev["chance_acc"], ev["best_acc"]
    floor = c_acc + t.chance_margin * (1.0 - c_acc)
    if best is None or best < floor:
        return "not_learning", (f"best accuracy {_f(best, True)} is near chance "
                                f"{_f(c_acc, True)} (needs {_f(floor, True)} or more)")

    noise = ev["noise"]
    if noise is not None and noise > t.noise_max:
        return "unstable", (f"training loss rises {_f(noise, True)} per epoch on average "
                            f"(limit {_f(t.noise_max, True)})")

    rise, drop = ev["val_loss_rise"], ev["train_loss_drop_after_best"]
    if ev["epochs_after_best"] >= t.min_epochs_after_best and rise > t.val_rise and drop > 0:
        return "overfit", (f"validation loss rose {_f(rise, True)} after its minimum at epoch "
                           f"{ev['best_epoch']} of {ev['epochs']} while training loss fell "
                           f"{_f(drop, True)}")
    gap = ev["gap"]
    if math.isfinite(gap) and gap > t.gap_max and ev["gap_slope"] > 0:
        return "overfit", (f"train-val accuracy gap {_f(gap, True)} (limit {_f(t.gap_max, True)})"
                           f" and growing {_f(ev['gap_slope'], True)} per epoch")

    tr_acc, va_acc = ev["final_train_acc"], ev["best_val_acc"]
    fit = max(x for x in (tr_acc, va_acc, 0.0) if x is not None and math.isfinite(x))
    accs = f"train accuracy {_f(tr_acc, True)}, best validation accuracy {_f(va_acc, True)}"
    if fit < t.fit_acc:
        slope = ev["train_loss_slope"]
        how = ("has plateaued" if slope > -t.plateau_slope
               else f"still falls {_f(-slope, True)} per epoch")
        return "underfit", (f"{accs}: both far from a fit ({_f(t.fit_acc, True)}); "
                            f"training loss {how}")
    return "good_fit", (f"{accs}, gap {_f(gap, True)}; validation loss "
                        f"{_f(max(rise, 0.0), True)} above its minimum at epoch "
                        f"{ev['best_epoch']} of {ev['epochs']}")


def _explosion(train_loss: Sequence[float], chance_loss: float, t: Thresholds) -> str | None:
    """Why the training loss counts as exploded, or None.

    Either it went far above the loss of guessing (``explode_factor * ln C``) and
    ended no better than guessing (a bad init that recovers is not a divergence),
    or it climbed back above guessing after having learned (``explode_factor``
    times its best so far).
    """
    if not train_loss:
        return None
    peak = max(train_loss)
    if peak > t.explode_factor * chance_loss and train_loss[-1] >= chance_loss:
        return (f"training loss reached {_f(peak)} (over {t.explode_factor:g} x the chance "
                f"loss {_f(chance_loss)}) and ended at {_f(train_loss[-1])}")
    best = train_loss[0]
    for i, x in enumerate(train_loss[1:], start=2):
        if x > chance_loss and x > t.explode_factor * best:
            return (f"training loss jumped to {_f(x)} at epoch {i} after reaching {_f(best)}, "
                    f"above the chance loss {_f(chance_loss)}")
        best = min(best, x)
    return None


def threshold_defaults() -> dict[str, Any]:
    """Every threshold with its default value (for help texts and reports)."""
    return {f.name: f.default for f in fields(Thresholds)}
