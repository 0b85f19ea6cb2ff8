"""How long a user waits for the first line of ``hpstudy run``, and for the study's header.

Runs ``python -m hpstudy run`` on a one-trial, one-epoch digits study in a
temporary folder (fresh stores) a few times and prints, per run, the seconds
from start to the first line (``loading ...``), to the header (``study ...``,
printed once the stores are open) and to the end::

    python benchmarks/first_line.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = """\
name: first-line
data: {dataset: digits, subset: 256}
model: {arch: mlp, hidden: [32]}
train: {max_epochs: 1}
search:
  n_trials: 1
  space: {train.lr: {type: float, low: 0.001, high: 0.1, log: true}}
tracking: {register_best: false}
report: {enabled: false}
"""


def one_run() -> tuple[float, float, float]:
    """(first line, header, exit) in seconds for one fresh ``hpstudy run``."""
    with tempfile.TemporaryDirectory(prefix="hpstudy-first-line-") as tmp:
        Path(tmp, "study.yaml").write_text(STUDY)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("HPSTUDY_STORAGE", None)
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "hpstudy", "run", "study.yaml", "-q"],
                                cwd=tmp, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        first = header = None
        for line in proc.stdout:
            now = time.perf_counter() - start
            if first is None:
                first = now
            if header is None and line.startswith("study "):
                header = now
        proc.wait()
        if proc.returncode != 0:
            raise SystemExit(f"hpstudy run failed with exit code {proc.returncode}")
        return first or float("nan"), header or float("nan"), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = [one_run() for _ in range(args.repeats)]
    print(f"{'run':>4s} {'first line':>11s} {'header':>8s} {'exit':>7s}")
    for i, (first, header, end) in enumerate(rows, 1):
        print(f"{i:4d} {first:10.2f}s {header:7.2f}s {end:6.1f}s")
    med = [statistics.median(c) for c in zip(*rows, strict=True)]
    print(f"{'med':>4s} {med[0]:10.2f}s {med[1]:7.2f}s {med[2]:6.1f}s")


if __name__ == "__main__":
    main()
