"""Read a trial's learning curves the way the course teaches, with their noise measured.

``diagnose(history, num_classes, status=..., n_val=...)`` returns one verdict,
the numbers it rests on, and what to try next (shared/reference/RECIPES.md,
"Diagnosis advice from the course"). Verdicts are checked in a fixed order,
the first that applies wins:

1. ``pruned``        the pruner stopped the trial (``status="pruned"``): its
                     partial curves are not a verdict on the configuration;
2. ``diverged``      a loss became NaN/inf, or the training loss exploded above
                     the loss of guessing and stayed there;
3. ``not_learning``  training and validation accuracy end near chance (1 / classes);
4. ``unstable``      the epoch-mean training loss scatters around its trend by a
                     large fraction of how far it came down (lr too high, batch
                     too small);
5. ``overfit``       validation loss rose after its minimum AND training accuracy
                     is above validation accuracy, both beyond their noise;
6. ``not_converged`` a loss or the validation accuracy still improves over the
                     last third of the run, beyond its noise: train longer;
7. ``underfit``      converged at a low training accuracy, with a training error at
                     least as large as the train-validation gap (bias, not variance);
8. ``good_fit``      none of the above.

The order matters: a diverged run is also at chance, a noisy run's validation
loss also rises, and a run still improving has not shown where it plateaus.

**Noise.** Every signal is compared with the noise of the run's own curves and
must exceed it by ``noise_factor`` (3 by default). Two sources are measured:

* the epoch-to-epoch scatter of a curve around its smooth trend, estimated from
  second differences (``y[i-1] - 2 y[i] + y[i+1]`` removes any locally linear
  trend; a robust median keeps the fast first epochs from counting as noise);
* the resolution of the validation set: accuracy on ``n_val`` images has the
  binomial standard error ``sqrt(p (1 - p) / n_val)``, and one image moving from
  right to a guess changes the mean validation loss by about ``ln(C) / n_val``.

A verdict whose deciding signal is less than ``borderline_factor`` times its
threshold, or a ``good_fit`` that came that close to another verdict, says so
in its reason (``evidence["certainty"] == "borderline"``).

**Best epoch.** ``best_epoch`` is the study metric's (``monitor``, ``val_acc``
by default, as in MLflow and Optuna); the validation-loss minimum has its own
name, ``val_loss_min_epoch``.

Every threshold is a field of :class:`Thresholds` with its unit and reason;
pass any of them to :func:`diagnose` by name to override it. Advice that names
this study's other trials is :func:`hpstudy.analyze.advice.advise`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

VERDICTS = ("good_fit", "overfit", "underfit", "not_converged", "unstable", "diverged",
            "not_learning", "pruned")
"""Every verdict, in the order reports list them (healthy first, pruned last)."""

STATUSES = ("completed", "early_stopped", "pruned", "diverged")
"""How a run ended (``FitResult.status``)."""


@dataclass(frozen=True)
class Thresholds:
    """Where one verdict ends and the next begins. Units and reasons inline."""

    # every signal: how many times its noise it must exceed (dimensionless). 3 standard
    # errors: a one-sided Gaussian tail of 0.1%; the minimum and the last epochs of a
    # curve are picked after the fact, which fattens the tail, so 2 would be too few.
    noise_factor: float = 3.0
    # a verdict decided by less than this multiple of its threshold (or a good_fit that
    # came within it of another verdict) is reported as borderline (dimensionless).
    borderline_factor: float = 1.5
    # not_learning: training and validation accuracy (means of the last epochs) both below
    # chance + this fraction of the headroom above chance (0.19 for 10 classes, 0.55 for
    # 2), or below chance + noise_factor binomial standard errors of the validation set.
    # A tenth of the way to perfect is clearly beyond the wander of an untrained net.
    chance_margin: float = 0.1
    # diverged: training loss above this multiple of the chance loss ln(C) and never
    # back below ln(C); or, after having learned, back above ln(C) at this multiple of
    # its best so far. A fresh net starts near ln(C); 3x that is not an init accident.
    explode_factor: float = 3.0
    # unstable: epoch-to-epoch scatter of the training loss around its trend (from epoch
    # 2), as a fraction of how far the loss came down from ln(C); the loss must also have
    # gone up at least twice. An epoch mean averages many batches, so a healthy run's
    # training loss is smooth: measured on digits and synthetic shapes, healthy runs
    # 0.000-0.017; lr far too high for batch 4-8 (Adam 0.05, SGD 0.5-1) 0.03-0.11.
    noise_max: float = 0.025
    # unstable, not_converged: a loss's descent from ln(C) counts as at least this fraction
    # of ln(C). A run that barely moved (training loss still above 0.75 ln C) has no
    # progress to compare its wiggles and falls with; a quarter of the way is the least
    # that a learning run shows after a few epochs.
    descent_floor: float = 0.25
    # overfit: the validation loss at the end (mean of the last epochs) above its minimum
    # by at least this fraction of the minimum, besides clearing its noise: a smaller
    # rise, however certain on a large validation set, is the onset of overfitting
    # rather than a reason to regularize.
    val_rise: float = 0.05
    # overfit: the validation-loss minimum at least this many epochs before the last:
    # one or two epochs past the minimum are one noisy validation snapshot.
    min_epochs_after_min: int = 3
    # overfit: train minus validation accuracy (fraction) must exceed this, besides
    # clearing the binomial noise of the validation set. Dropout and augmentation put a
    # point or two between the two measurements without any memorizing.
    gap_min: float = 0.02
    # underfit: a converged run whose training accuracy (mean of the last epochs) stays
    # below this fraction (and whose training error is at least its train-validation
    # gap). The course's milestone 2 is to learn the training set ("grow capacity until
    # the train set is overfit"); 90% is far below that on the course's datasets. Lower
    # it for hard ones (e.g. 0.6 for CIFAR-100).
    fit_acc: float = 0.9
    # not_converged: over the last third of the epochs a loss still fell by more than
    # this fraction of the way it has come down from ln(C), or the validation accuracy
    # rose by more than this fraction of the headroom above chance (and beyond noise).
    # At 5% per third of a run, doubling the epochs buys a visible improvement.
    converged_fall: float = 0.05
    # epochs in the trailing window for the end-of-run means (at most a third of the
    # run). Three epochs smooth one noisy validation pass.
    window: int = 3
    # validation images assumed when the caller does not pass n_val and the accuracy
    # values do not reveal it (number of images). Small on purpose: an unknown
    # validation set is assumed noisy rather than precise (sklearn digits has 287).
    n_val_default: int = 300


@dataclass(frozen=True)
class Diagnosis:
    """A verdict, the evidence it rests on, and what to try next.

    Attributes:
        verdict: one of :data:`VERDICTS`.
        reason: one sentence with the numbers that decided the verdict (and, when
            the verdict is borderline, how close it was).
        evidence: named numbers (``gap``, ``best_epoch``, ``val_loss_min_epoch``,
            ``val_loss_noise``...); ``None`` where a number cannot be measured.
        advice: what to try next, most useful first, naming this run's numbers.
    """

    verdict: str
    reason: str
    evidence: dict[str, Any]
    advice: list[str]

    @property
    def certainty(self) -> str:
        """``clear`` or ``borderline`` (how close the deciding signal was to its threshold)."""
        return str(self.evidence.get("certainty") or "clear")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (floats rounded to 6 significant digits, NaN/inf -> None)."""
        def clean(v: Any) -> Any:
            if isinstance(v, float):
                return float(f"{v:.6g}") if math.isfinite(v) else None
            if isinstance(v, list | tuple):
                return [clean(x) for x in v]
            return v

        return {"verdict": self.verdict, "reason": self.reason,
                "evidence": {k: clean(v) for k, v in self.evidence.items()},
                "advice": list(self.advice)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Diagnosis:
        """Inverse of :meth:`to_dict` (e.g. an Optuna user attr)."""
        return cls(d["verdict"], d.get("reason", ""), dict(d.get("evidence", {})),
                   list(d.get("advice", [])))


# ------------------------------------------------------------------ curve statistics
def _series(history: Sequence[dict[str, Any]], key: str) -> list[float]:
    out = []
    for r in history:
        v = r.get(key)
        try:
            out.append(float("nan") if v is None else float(v))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return out


def _finite(xs: Sequence[float]) -> list[float]:
    return [x for x in xs if math.isfinite(x)]


def _mean(xs: Sequence[float]) -> float:
    xs = _finite(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


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


def scatter(ys: Sequence[float]) -> float | None:
    """Epoch-to-epoch scatter of a curve around its smooth trend (same units as ``ys``).

    The standard deviation of independent per-epoch noise, estimated from second
    differences ``d = y[i-1] - 2 y[i] + y[i+1]`` (variance ``6 sigma^2`` for pure
    noise; a locally linear trend cancels) with the robust median absolute value
    (``1.4826 * median|d| / sqrt(6)``), so the curvature of a few fast early epochs
    does not count as noise. ``None`` for fewer than 4 finite points.
    """
    y = _finite(ys)
    if len(y) < 4:
        return None
    d = [abs(y[i - 1] - 2 * y[i] + y[i + 1]) for i in range(1, len(y) - 1)]
    return 1.4826 * _median(d) / math.sqrt(6)


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` images.

    ``p`` is pulled half an image away from 0 and 1: a perfect score on 300 images
    does not mean the error rate is known to be exactly 0.
    """
    p = min(max(p, 0.5 / n), 1 - 0.5 / n)
    return math.sqrt(p * (1 - p) / n)


def infer_n_val(val_acc: Sequence[float], max_n: int = 100_000) -> int | None:
    """The smallest validation-set size whose fractions ``k / n`` explain every accuracy.

    Accuracies are counts over ``n`` images stored as float32 fractions; three or
    more distinct values rarely all fit a wrong small ``n``. ``None`` when fewer than
    three distinct values are in (0, 1) or no ``n`` up to ``max_n`` fits (averaged
    curves, e.g. an ablation cell's mean over seeds).
    """
    import numpy as np

    vals = np.unique(np.round(np.asarray(_finite(val_acc), dtype=np.float64), 9))
    vals = vals[(vals > 0) & (vals < 1)]
    if len(vals) < 3:
        return None
    ns = np.arange(2, max_n + 1, dtype=np.float64)
    ok = np.ones(len(ns), dtype=bool)
    for v in vals:
        x = v * ns
        ok &= np.abs(x - np.round(x)) <= 2e-7 * ns + 1e-9  # float32 rounding of k / n
        if not ok.any():
            return None
    return int(ns[np.argmax(ok)])


def _trend_change(ys: Sequence[float], span: int, sigma: float | None
                  ) -> tuple[float, float | None]:
    """Change of the least-squares line over the last ``span`` epochs, and its standard
    error from the curve's scatter ``sigma`` (None when the scatter is unknown)."""
    tail = list(ys[-(span + 1):])
    k = len(tail) - 1
    if k < 1:
        return 0.0, None
    change = _slope(tail) * k
    sxx = sum((i - k / 2) ** 2 for i in range(k + 1))
    return change, None if sigma is None else sigma * k / math.sqrt(sxx)


def _last_lr_step(lrs: Sequence[float]) -> int:
    """Index of the first epoch after the last learning-rate step (a drop to half or
    less from one epoch to the next, as step and multistep schedules make), else 0.

    A step restarts the descent: a loss falling right after one says nothing about
    whether the run had converged before it, nor whether it has since.
    """
    last = 0
    for i in range(1, len(lrs)):
        if math.isfinite(lrs[i]) and math.isfinite(lrs[i - 1]) and 0 < lrs[i] <= 0.5 * lrs[i - 1]:
            last = i
    return last


def _last_third(k: int, start: int = 0) -> int:
    """Epochs (steps between points) in the last third of the ``k`` epochs from ``start``:
    at least 2 where the run allows; the whole run when too few epochs follow ``start``."""
    seg = k - start
    if seg < 4:  # fewer than 4 epochs since the step: judge the run as a whole
        seg = k
    return max(2, round((seg - 1) / 3)) if seg >= 3 else seg - 1


def _snr(signal: float | None, noise: float | None) -> float | None:
    if signal is None or noise is None or not math.isfinite(signal):
        return None
    return signal / noise if noise > 0 else (math.inf if signal > 0 else 0.0)


# ------------------------------------------------------------------ evidence
def measure(history: Sequence[dict[str, Any]], num_classes: int, t: Thresholds | None = None,
            *, n_val: int | None = None, monitor: str = "val_acc", mode: str = "max"
            ) -> dict[str, Any]:
    """The evidence :func:`diagnose` decides on, from a per-epoch history.

    Keys (fractions for accuracies, nats for losses; ``None`` when not measurable):

    * the run: ``epochs``, ``num_classes``, ``chance_acc``, ``chance_loss`` (ln C),
      ``n_val`` and ``n_val_source`` (``given``, ``accuracy steps``, ``assumed``),
      ``nonfinite_epoch``, ``max_train_loss``;
    * the study metric: ``monitor``, ``best_epoch`` (its best epoch, ties to the
      first, as ``fit`` picks it), ``best_value``;
    * accuracies: ``best_acc`` (best train or validation accuracy seen),
      ``final_train_acc``, ``final_val_acc`` (means of the last epochs),
      ``final_acc`` (the larger of the two),
      ``best_val_acc``, ``val_acc_se`` (binomial standard error of the final
      validation accuracy), ``gap`` (train minus validation accuracy at the end),
      ``gap_noise``, ``gap_snr``, ``gap_slope``;
    * the validation-loss minimum: ``val_loss_min``, ``val_loss_min_epoch``,
      ``epochs_after_val_loss_min``, ``val_loss_rise`` (end over minimum, minus 1),
      ``val_loss_rise_nats``, ``val_loss_noise`` (scatter), ``val_loss_resolution``
      (ln C / n_val), ``val_loss_rise_snr``, ``train_loss_drop_after_min``;
    * convergence over the last third (``last_third_epochs``; of the epochs since the
      last learning-rate step, ``lr_step_epoch``, if there was one): ``train_loss_fall`` and
      ``val_loss_fall`` (fraction of the way down from ln C), ``val_acc_gain``
      (fraction of the headroom above chance), each with its ``_snr``;
      ``train_loss_slope`` (relative change per epoch over the last epochs);
    * stability: ``noise`` (training-loss scatter as a fraction of its descent),
      ``train_loss_noise`` (nats), ``lr_final_ratio`` (last lr over the largest).
    """
    t = t or Thresholds()
    n = len(history)
    chance_loss = math.log(num_classes)
    chance_acc = 1.0 / num_classes
    tl, vl = _series(history, "train_loss"), _series(history, "val_loss")
    ta, va = _series(history, "train_acc"), _series(history, "val_acc")
    lrs = _finite(_series(history, "lr"))
    epochs = [int(r.get("epoch", i + 1)) for i, r in enumerate(history)]
    # the trailing window, at most a third of the run: a short run's first epochs
    # (an untrained net) must not weigh on its "final" numbers
    w = max(1, min(t.window, n // 3))
    if n_val is not None and n_val > 0:
        nv, nv_src = int(n_val), "given"
    else:
        guess = infer_n_val(va)
        nv, nv_src = (guess, "accuracy steps") if guess else (t.n_val_default, "assumed")

    nonfinite = next((epochs[i] for i in range(n)
                      if not (math.isfinite(tl[i]) and math.isfinite(vl[i]))), None)
    mon = _series(history, monitor)
    best_i = None
    for i, v in enumerate(mon):  # fit()'s rule: strictly better, ties to the first
        if math.isfinite(v) and (best_i is None or (v > mon[best_i] if mode == "max"
                                                    else v < mon[best_i])):
            best_i = i
    # everything below reads the epochs before the first non-finite one
    k = n if nonfinite is None else epochs.index(nonfinite)
    tl, vl, ta, va, ep = tl[:k], vl[:k], ta[:k], va[:k], epochs[:k]

    final_va = _mean(va[-w:]) if va else float("nan")
    ev: dict[str, Any] = {
        "epochs": n, "num_classes": num_classes, "chance_acc": chance_acc,
        "chance_loss": chance_loss, "n_val": nv, "n_val_source": nv_src,
        "nonfinite_epoch": nonfinite,
        "max_train_loss": max(tl) if tl else None,
        "monitor": monitor,
        "best_epoch": epochs[best_i] if best_i is not None else None,
        "best_value": mon[best_i] if best_i is not None else None,
        "best_acc": max(_finite(ta) + _finite(va), default=None),
        "final_acc": max((x for x in (_mean(ta[-w:]) if ta else None, final_va)
                          if x is not None and math.isfinite(x)), default=None),
        "final_train_acc": _mean(ta[-w:]) if ta else None,
        "final_val_acc": final_va if va else None,
        "best_val_acc": max(_finite(va), default=None),
        "val_acc_se": binomial_se(final_va, nv) if math.isfinite(final_va) else None,
        "lr_final_ratio": (lrs[-1] / max(lrs)) if lrs and max(lrs) > 0 else None,
    }
    for key in ("gap", "gap_noise", "gap_snr", "gap_slope", "val_loss_min",
                "val_loss_min_epoch", "epochs_after_val_loss_min", "val_loss_rise",
                "val_loss_rise_nats", "val_loss_noise", "val_loss_resolution",
                "val_loss_rise_snr", "train_loss_drop_after_min", "last_third_epochs",
                "lr_step_epoch",
                "train_loss_fall", "train_loss_fall_snr", "val_loss_fall", "val_loss_fall_snr",
                "val_acc_gain", "val_acc_gain_snr", "train_loss_slope", "noise",
                "train_loss_noise", "train_loss_rises"):
        ev[key] = None
    if not tl:
        return ev

    ev.update(_minimum_and_gap(ev, tl, vl, ta, va, ep, w))
    ev.update(_trends(ev, tl, vl, va, ep, _series(history, "lr")[:k], t, w))
    return ev


def _minimum_and_gap(ev: dict[str, Any], tl: list[float], vl: list[float], ta: list[float],
                     va: list[float], ep: list[int], w: int) -> dict[str, Any]:
    """The validation-loss minimum and the rise after it, the train-validation gap, each
    with its noise (see :func:`measure`)."""
    b = min(range(len(vl)), key=lambda i: vl[i])  # the validation-loss minimum
    after = len(vl) - 1 - b
    tail = min(w, after)
    sig_vl = scatter(vl)
    resolution = ev["chance_loss"] / ev["n_val"]  # one image from right to a guess
    rise = (_mean(vl[-tail:]) - vl[b]) if tail else 0.0
    gaps = [a - v for a, v in zip(ta, va, strict=True)]
    gap = _mean(gaps[-w:])
    # the gap's noise: the validation set's binomial error, or the gap's own scatter
    # averaged over the window, whichever is larger
    gap_noise = max(ev["val_acc_se"] or 0.0, (scatter(gaps) or 0.0) / math.sqrt(w))
    return {
        "val_loss_min": vl[b], "val_loss_min_epoch": ep[b], "epochs_after_val_loss_min": after,
        "val_loss_rise": (rise / vl[b]) if tail and vl[b] > 0 else 0.0,
        "val_loss_rise_nats": rise, "val_loss_noise": sig_vl,
        "val_loss_resolution": resolution,
        # the noise of the rise: one epoch's scatter or one image's worth of loss
        "val_loss_rise_snr": _snr(rise, max(sig_vl or 0.0, resolution)),
        "train_loss_drop_after_min": (1.0 - _mean(tl[-tail:]) / tl[b]) if tail and tl[b] > 0
        else 0.0,
        "gap": gap, "gap_noise": gap_noise, "gap_snr": _snr(gap, gap_noise),
        # from epoch 2: epoch 1's training accuracy averages over a net still untrained
        "gap_slope": _slope(gaps[1:]),
    }


def _trends(ev: dict[str, Any], tl: list[float], vl: list[float], va: list[float],
            ep: list[int], lrs: list[float], t: Thresholds, w: int) -> dict[str, Any]:
    """Stability and the last third's trends of the curves, each with its noise."""
    k = len(tl)
    floor = t.descent_floor * ev["chance_loss"]
    descent = max(ev["chance_loss"] - min(tl), floor)
    vdescent = max(ev["chance_loss"] - min(vl), floor)
    # the training loss from epoch 2: epoch 1's mean covers a net still untrained
    sig_tl = scatter(tl[1:])
    ref = max(0, k - 1 - w)  # start of the trailing window for the slope
    span = k - 1 - ref
    step = _last_lr_step(lrs)
    third = _last_third(k, step)
    out: dict[str, Any] = {
        "train_loss_slope": (tl[-1] - tl[ref]) / (tl[ref] * span) if span and tl[ref] > 0
        else 0.0,
        "train_loss_noise": sig_tl,
        "noise": (sig_tl / descent) if sig_tl is not None else None,
        "train_loss_rises": sum(1 for x, y in zip(tl, tl[1:], strict=False) if y > x),
        "last_third_epochs": third,
        "lr_step_epoch": ep[step] if step else None,
    }
    if third < 1:
        return out
    # validation curves have a floor under their noise (the validation set's
    # resolution); the training loss's noise is unknown below 5 epochs, and its trend
    # then does not count
    fall, se = _trend_change(tl, third, sig_tl)
    out.update(train_loss_fall=-fall / descent, train_loss_fall_snr=_snr(-fall, se))
    fall, se = _trend_change(vl, third, scatter(vl))
    out.update(val_loss_fall=-fall / vdescent,
               val_loss_fall_snr=_snr(-fall, max(se or 0.0, ev["chance_loss"] / ev["n_val"])))
    gain, se = _trend_change(va, third, scatter(va))
    out.update(val_acc_gain=gain / (1.0 - ev["chance_acc"]),
               val_acc_gain_snr=_snr(gain, max(se or 0.0, ev["val_acc_se"] or 0.0)))
    return out


# ------------------------------------------------------------------ verdict
@dataclass(frozen=True)
class _Call:
    """One verdict, its reason, and (when the call was close) how close it was."""

    verdict: str
    reason: str
    borderline: str | None = None


def diagnose(history: Sequence[dict[str, Any]], num_classes: int, *,
             status: str = "completed", n_val: int | None = None,
             max_epochs: int | None = None, prune_reason: str | None = None,
             monitor: str = "val_acc", mode: str = "max", **thresholds: Any) -> Diagnosis:
    """The verdict on one trial's learning curves.

    Args:
        history: per-epoch records with ``epoch``, ``train_loss``, ``train_acc``,
            ``val_loss``, ``val_acc`` (accuracies as fractions in [0, 1]), and
            optionally ``lr``.
        num_classes: number of classes (sets chance accuracy and chance loss).
        status: how the run ended, one of :data:`STATUSES`. ``pruned`` gives the
            verdict ``pruned``; ``early_stopped`` means early stopping already judged
            the validation curve flat, so the run is not called ``not_converged``.
        n_val: validation images (sets the accuracy and loss resolution). Unknown:
            inferred from the accuracy values (``k / n``), else
            ``Thresholds.n_val_default``.
        max_epochs: the configured epoch budget (for advice such as "raise
            train.max_epochs to 30"); default: the epochs run.
        prune_reason: the pruner's reason, e.g. "below the median of earlier trials
            at epoch 3" (shown with a ``pruned`` verdict).
        monitor: the study metric that picks ``best_epoch`` (a history key).
        mode: ``max`` or ``min`` for ``monitor``.
        **thresholds: any field of :class:`Thresholds`, by name.

    Returns:
        The :class:`Diagnosis`; ``evidence["certainty"]`` is ``clear`` or
        ``borderline`` (then the reason says how close the call was).

    Raises:
        ValueError: empty history, fewer than 2 classes, or an unknown status/mode.
        TypeError: an unknown threshold name.
    """
    if not history:
        raise ValueError("cannot diagnose an empty history (no epoch was recorded)")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    t = Thresholds(**thresholds)
    ev = measure(history, num_classes, t, n_val=n_val, monitor=monitor, mode=mode)
    ev.update(status=status, prune_reason=prune_reason,
              max_epochs=max_epochs if max_epochs else len(history))
    call = _verdict(ev, _finite(_series(history, "train_loss")), t, status, prune_reason)
    reason = call.reason + (f" (borderline: {call.borderline})" if call.borderline else "")
    ev["certainty"] = "borderline" if call.borderline else "clear"
    return Diagnosis(call.verdict, reason, ev, local_advice(call.verdict, ev, t))


def _f(x: float | None, pct: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.4g}"


def _pts(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f} points"


def _close(m: float, t: Thresholds) -> str | None:
    """How close a deciding ratio ``m`` (>= 1: decided) was, if within the borderline band."""
    return f"{m:.2g}x its threshold" if m < t.borderline_factor else None


def _verdict(ev: dict[str, Any], train_loss: list[float], t: Thresholds, status: str,
             prune_reason: str | None) -> _Call:
    """The first verdict that applies, with its reason."""
    return _not_a_fit(ev, train_loss, t, status, prune_reason) or _fit(ev, t, status)


def _not_a_fit(ev: dict[str, Any], train_loss: list[float], t: Thresholds, status: str,
               prune_reason: str | None) -> _Call | None:
    """``pruned``, ``diverged``, ``not_learning`` or ``unstable``: runs whose fit is not
    (yet) worth judging; None for the others."""
    n = ev["epochs"]
    if status == "pruned":
        why = f" ({prune_reason})" if prune_reason else ""
        at = (f"; validation accuracy {_f(ev['final_val_acc'], True)}, training accuracy "
              f"{_f(ev['final_train_acc'], True)} when stopped")
        return _Call("pruned", f"pruned at epoch {n}{why}{at}: partial curves, not a verdict "
                               "on how the configuration would have ended")
    if ev["nonfinite_epoch"] is not None:
        return _Call("diverged", f"non-finite loss at epoch {ev['nonfinite_epoch']}")
    exploded = _explosion(train_loss, ev["chance_loss"], t)
    if exploded:
        return _Call("diverged", exploded)

    # the end of the run, not its best epoch: a net that touched 20% once and fell back
    # to guessing (weight decay crushing the weights) has not learned
    c_acc, final = ev["chance_acc"], ev["final_acc"]
    bar = c_acc + max(t.chance_margin * (1.0 - c_acc),
                      t.noise_factor * binomial_se(c_acc, ev["n_val"]))
    if final is None or final < bar:
        return _Call("not_learning", f"training and validation accuracy end at "
                                     f"{_f(final, True)}, near chance {_f(c_acc, True)} "
                                     f"(needs {_f(bar, True)} or more)")

    noise = ev["noise"]
    # a training loss that never went up is not unstable, however curved its descent
    if noise is not None and noise > t.noise_max and ev["train_loss_rises"] >= 2:
        return _Call("unstable", f"the training loss scatters {_f(ev['train_loss_noise'])} "
                                 f"around its trend from epoch to epoch, {_f(noise, True)} of "
                                 f"its descent from ln C (limit {_f(t.noise_max, True)})",
                     _close(noise / t.noise_max, t))
    return None


def _fit(ev: dict[str, Any], t: Thresholds, status: str) -> _Call:
    """``overfit``, ``not_converged``, ``underfit`` or ``good_fit``, for a run that learned."""
    n, c_acc = ev["epochs"], ev["chance_acc"]
    over_m = _overfit_margin(ev, t)
    if over_m >= 1:
        return _Call("overfit", (
            f"validation loss rose {_f(ev['val_loss_rise'], True)} after its minimum at epoch "
            f"{ev['val_loss_min_epoch']} of {n} ({ev['val_loss_rise_snr']:.1f}x its noise) "
            f"while training loss fell {_f(ev['train_loss_drop_after_min'], True)}; "
            f"train-validation accuracy gap {_pts(ev['gap'])} ({ev['gap_snr']:.1f}x its noise "
            f"of {_pts(ev['gap_noise'])})"), _close(over_m, t))

    conv = _convergence(ev, t)
    conv_m = max(conv.values(), default=0.0)
    if status != "early_stopped" and n < 2:
        return _Call("not_converged", "a single epoch: no trend to judge, and a run this "
                                      "short has rarely converged", "one epoch")
    if status != "early_stopped" and conv_m >= 1:
        parts = {
            "train_loss": f"training loss fell {_f(ev['train_loss_fall'], True)} of its "
                          f"descent ({_snr_txt(ev['train_loss_fall_snr'])})",
            "val_loss": f"validation loss fell {_f(ev['val_loss_fall'], True)} of its descent "
                        f"({_snr_txt(ev['val_loss_fall_snr'])})",
            "val_acc": f"validation accuracy rose {_pts(ev['val_acc_gain'] * (1 - c_acc))} "
                       f"({_snr_txt(ev['val_acc_gain_snr'])})",
        }
        said = "; ".join(parts[k] for k, m in conv.items() if m >= 1)
        return _Call("not_converged", f"still improving over the last "
                                      f"{ev['last_third_epochs']} epochs of {n}: {said}",
                     _close(conv_m, t))

    tr_acc = ev["final_train_acc"]
    accs = (f"training accuracy {_f(tr_acc, True)}, validation accuracy "
            f"{_f(ev['final_val_acc'], True)}")
    gap = ev["gap"] if ev["gap"] is not None and math.isfinite(ev["gap"]) else 0.0
    fit_known = tr_acc is not None and math.isfinite(tr_acc)
    # the training accuracy's resolution, taken at the validation set's size (the
    # training set is usually larger: a conservative stand-in)
    se_tr = binomial_se(tr_acc, ev["n_val"]) if fit_known else 0.0
    low = fit_known and tr_acc < t.fit_acc
    # bias dominates when the training error is at least the train-validation gap: the
    # model cannot fit its training set, rather than fitting it better than validation
    if low and 1.0 - tr_acc >= gap:
        how = ("early stopping ended it" if status == "early_stopped"
               else f"the training loss fell only {_f(ev['train_loss_fall'], True)} of its "
                    f"descent over the last {ev['last_third_epochs']} epochs")
        near = (f"training accuracy within noise of {_f(t.fit_acc, True)}"
                if t.fit_acc - tr_acc < t.noise_factor * se_tr else None)
        return _Call("underfit", f"converged at {accs}: training accuracy below "
                                 f"{_f(t.fit_acc, True)}, training error at least the "
                                 f"train-validation gap; {how}", near)

    near = None
    close = 1.0 / t.borderline_factor
    if over_m >= close:
        near = f"close to overfit ({over_m:.2g}x its threshold)"
    elif status != "early_stopped" and conv_m >= close:
        near = f"close to not_converged ({conv_m:.2g}x its threshold)"
    elif fit_known and abs(tr_acc - t.fit_acc) < t.noise_factor * se_tr:
        near = f"training accuracy within noise of the underfit limit {_f(t.fit_acc, True)}"
    gap_txt = (f"; gap {_pts(ev['gap'])} ({_snr_txt(ev['gap_snr'])})"
               if ev["gap"] is not None else "")
    variance = (f"; training accuracy is below {_f(t.fit_acc, True)}, but the gap exceeds "
                "the training error: it fits its training set better than it generalizes"
                if low else "")
    return _Call("good_fit", (
        f"{accs}{gap_txt}; validation loss {_f(max(ev['val_loss_rise'] or 0.0, 0.0), True)} "
        f"above its minimum at epoch {ev['val_loss_min_epoch']} of {n}; converged{variance}"),
        near)


def _snr_txt(x: float | None) -> str:
    return "noise unknown" if x is None else f"{x:.1f}x its noise"


def _overfit_margin(ev: dict[str, Any], t: Thresholds) -> float:
    """How far past 'overfit' the run is (>= 1: overfit): the weaker of the validation-loss
    rise and the train-validation gap, each against its noise and its practical minimum;
    0 unless the minimum lies ``min_epochs_after_min`` epochs back and training loss fell."""
    late = (ev["epochs_after_val_loss_min"] or 0) >= t.min_epochs_after_min
    fell = (ev["train_loss_drop_after_min"] or 0.0) > 0
    if not (late and fell):
        return 0.0
    rise = min((ev["val_loss_rise_snr"] or 0.0) / t.noise_factor,
               (ev["val_loss_rise"] or 0.0) / t.val_rise)
    gap = min((ev["gap_snr"] or 0.0) / t.noise_factor, (ev["gap"] or 0.0) / t.gap_min)
    return max(0.0, min(rise, gap))


def _convergence(ev: dict[str, Any], t: Thresholds) -> dict[str, float]:
    """Per curve, how far past 'still improving' it is (>= 1: beyond noise and
    ``converged_fall``): the training loss, the validation loss, the validation accuracy."""
    out = {}
    for key, change, snr in (("train_loss", "train_loss_fall", "train_loss_fall_snr"),
                             ("val_loss", "val_loss_fall", "val_loss_fall_snr"),
                             ("val_acc", "val_acc_gain", "val_acc_gain_snr")):
        if ev[change] is None or ev[snr] is None:
            continue
        out[key] = max(0.0, min(ev[snr] / t.noise_factor, ev[change] / t.converged_fall))
    return out


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


# ------------------------------------------------------------------ advice (this run only)
ADVICE: dict[str, list[str]] = {
    "good_fit": [
        "Compare it with the study's best trial before building on it; change one thing "
        "at a time and test each change alone and combined (ablation).",
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
    "not_converged": [
        "Train longer (raise train.max_epochs), or raise the learning rate if it is small.",
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
    "pruned": [
        "Nothing to change for this trial alone: the pruner judged it against the other "
        "trials at the same epoch, not against its own curve.",
    ],
}
"""The course's advice per verdict; :func:`local_advice` puts this run's numbers in."""


def local_advice(verdict: str, ev: dict[str, Any], t: Thresholds | None = None) -> list[str]:
    """The course's advice for ``verdict`` with this run's own numbers (no study context)."""
    t = t or Thresholds()
    advice = list(ADVICE[verdict])
    n, max_ep = ev["epochs"], ev.get("max_epochs") or ev["epochs"]
    if verdict == "overfit":
        advice[3] = (f"Use early stopping on validation loss: it was lowest at epoch "
                     f"{ev['val_loss_min_epoch']} of {n}.")
    elif verdict == "not_converged":
        which = ("validation loss" if (ev.get("val_loss_fall_snr") or 0) >= t.noise_factor
                 else "training loss")
        advice = [f"The {which} was still falling at epoch {n}: raise train.max_epochs to "
                  f"{2 * max(n, max_ep)}."]
        if (ev.get("lr_final_ratio") or 1.0) < 0.1:
            advice.append("The learning rate had been annealed to "
                          f"{_f(ev['lr_final_ratio'], True)} of its peak by the end: the "
                          "schedule stops the descent, so stretch the schedule with the epochs "
                          "or raise the learning rate.")
        else:
            advice.append("Or raise the learning rate if it is below the usual range "
                          "(1e-3 for Adam, 1e-2 to 1e-1 for SGD with momentum).")
    elif verdict == "underfit":
        if (ev.get("final_val_acc") or 0) > (ev.get("final_train_acc") or 0):
            advice.insert(0, f"Training accuracy ({_f(ev['final_train_acc'], True)}) is below "
                             f"validation accuracy ({_f(ev['final_val_acc'], True)}): "
                             "regularization (dropout, weight decay, augmentation) holds the "
                             "fit back; lower it before adding capacity.")
        if (ev.get("lr_final_ratio") or 1.0) < 0.1:
            advice.append("The learning rate had been annealed to "
                          f"{_f(ev['lr_final_ratio'], True)} of its peak: the plateau may be "
                          "the schedule's; try a higher peak learning rate.")
    elif verdict == "pruned":
        advice.append(f"It ran {n} of {max_ep} epochs; if many good trials are pruned "
                      "this early, raise the pruner's warm-up (n_warmup_steps).")
    elif verdict == "good_fit" and (ev.get("gap_snr") or 0) >= t.noise_factor \
            and (ev.get("gap") or 0) >= t.gap_min:
        advice.append(f"Training accuracy is {_pts(ev['gap'])} above validation accuracy, "
                      f"{ev['gap_snr']:.1f}x its noise, although validation loss has not "
                      "risen: more regularization or data may still raise validation "
                      "accuracy.")
    return advice


def threshold_defaults() -> dict[str, Any]:
    """Every threshold with its default value (for help texts and reports)."""
    return {f.name: f.default for f in fields(Thresholds)}
