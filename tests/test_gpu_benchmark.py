"""benchmarks/gpu.py --quick runs on a machine without a GPU: small fits, clear skip lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU run is make gpu-check's")
def test_gpu_benchmark_quick_on_the_cpu(tmp_path: Path):
    out = subprocess.run([sys.executable, "benchmarks/gpu.py", "--quick", "--json",
                          str(tmp_path / "r.json")], cwd=REPO, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("hpstudy GPU benchmark (quick) on cpu (")
    assert "trials/hour per GPU: skipped: no GPU" in out.stdout
    assert "MNIST recipe: skipped: no GPU" in out.stdout
    result = json.loads((tmp_path / "r.json").read_text())
    rows = result["throughput"]
    assert [(r["model"], r["precision"], r["compile"]) for r in rows] == [
        ("baseline_cnn", "32-true", False), ("baseline_cnn", "bf16-mixed", False),
        ("preact_resnet20", "32-true", False), ("preact_resnet20", "bf16-mixed", False)]
    assert all(r["images_per_s"] > 0 and r["busy"] is None for r in rows)
