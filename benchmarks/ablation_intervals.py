"""How often an ablation cell's 95% interval holds the true mean accuracy, by method.

An ablation cell trains a few seeds; each run's validation accuracy is ``k / n_val``.
This simulates such cells: every seed draws its own true accuracy from a
logit-normal distribution (seed effects: init, batch order, split), then a
binomial count on ``n_val`` validation images. The true mean of a run's
accuracy is known (from a large sample), so each method's coverage (share of
cells whose interval holds it; 0.95 is the target) and median width can be
measured:

- ``t``: the t interval of the mean, clipped to [0, 1];
- ``logit t``: the t interval on the logit scale (empirical logit
  ``(k + 0.5) / (n_val + 1)``), mapped back; identical runs give zero width;
- ``hpstudy``: :func:`hpstudy.analyze.ablation.mean_ci` with ``scale="proportion"``
  (the clipped t interval, widened to the Wilson interval of the pooled counts;
  identical runs: the Wilson interval of one run's count).

Usage::

    .venv/bin/python benchmarks/ablation_intervals.py            # 3000 cells per row
    .venv/bin/python benchmarks/ablation_intervals.py --cells 500 --runs 2 3
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hpstudy.analyze.ablation import mean_ci  # noqa: E402

CASES = ((0.8, 0.2), (0.9, 0.3), (0.97, 0.3), (0.99, 0.0), (0.99, 0.4), (0.995, 0.5))
"""(median accuracy, seed-to-seed std on the logit scale) of the simulated cells."""


def _t(x: np.ndarray) -> tuple[float, float]:
    n, m = len(x), float(x.mean())
    half = float(stats.t.ppf(0.975, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return max(0.0, m - half), min(1.0, m + half)


def _logit_t(x: np.ndarray, n_val: int) -> tuple[float, float]:
    q = (x * n_val + 0.5) / (n_val + 1)
    z = np.log(q / (1 - q))
    half = float(stats.t.ppf(0.975, len(x) - 1)) * float(z.std(ddof=1)) / math.sqrt(len(x))
    return 1 / (1 + math.exp(-(z.mean() - half))), 1 / (1 + math.exp(-(z.mean() + half)))


def _hpstudy(x: np.ndarray, n_val: int) -> tuple[float, float]:
    m = mean_ci(x.tolist(), scale="proportion", n_val=n_val)
    return m.ci_low, m.ci_high


def simulate(median: float, sd_logit: float, runs: int, n_val: int, cells: int,
             rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    """method -> (coverage, median width) over ``cells`` simulated cells."""
    centre = math.log(median / (1 - median))
    truth = float((1 / (1 + np.exp(-(centre + rng.normal(0, sd_logit, 400_000))))).mean())
    methods = {"t": _t, "logit t": lambda x: _logit_t(x, n_val),
               "hpstudy": lambda x: _hpstudy(x, n_val)}
    hits = dict.fromkeys(methods, 0)
    widths: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(cells):
        p = 1 / (1 + np.exp(-(centre + rng.normal(0, sd_logit, runs))))
        x = rng.binomial(n_val, p) / n_val
        for name, fn in methods.items():
            lo, hi = fn(x)
            hits[name] += lo <= truth <= hi
            widths[name].append(hi - lo)
    return {k: (hits[k] / cells, float(np.median(widths[k]))) for k in methods}


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=3000, help="simulated cells per row")
    ap.add_argument("--runs", type=int, nargs="+", default=[2, 3, 5], help="seeds per cell")
    ap.add_argument("--n-val", type=int, default=287, help="validation images (digits: 287)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    rows = []
    print(f"{args.cells} cells per row, {args.n_val} validation images; coverage / median "
          "width of the 95% interval (target coverage 0.95)")
    print(f"{'runs':>4s}  {'median':>6s}  {'sd':>4s}  {'t':>16s}  {'logit t':>16s}  "
          f"{'hpstudy':>16s}")
    for runs in args.runs:
        for median, sd in CASES:
            r = simulate(median, sd, runs, args.n_val, args.cells, rng)
            rows.append({"runs": runs, "median": median, "sd_logit": sd, **r})
            print(f"{runs:>4d}  {median:>6.3f}  {sd:>4.1f}  " + "  ".join(
                f"{r[k][0]:>7.3f} / {r[k][1]:.4f}" for k in ("t", "logit t", "hpstudy")))
    return rows


if __name__ == "__main__":
    main()
