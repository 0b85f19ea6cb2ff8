"""Shared fixtures: tiny real studies on real stores in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

# Lightning/torch spawn threads per process; on 2 cores keep tests from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def tiny_study(name: str = "tiny", **sections: Any) -> dict[str, Any]:
    """A study dict that trains in about a second per trial on digits."""
    cfg: dict[str, Any] = {
        "name": name,
        "data": {"dataset": "digits", "batch_size": 64, "subset": 256},
        "model": {"arch": "mlp", "hidden": [32]},
        "train": {"max_epochs": 2, "optimizer": "adam", "lr": 0.01},
        "search": {
            "n_trials": 3,
            "sampler": {"name": "random", "seed": 0},
            "pruner": "none",
            "space": {
                "train.lr": {"type": "float", "low": 1e-3, "high": 0.05, "log": True},
                "data.batch_size": [32, 64],
                "model.drop_rate": {"type": "float", "low": 0.0, "high": 0.5},
            },
        },
        "report": {"enabled": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture
def stores(tmp_path: Path) -> dict[str, str]:
    """A fresh Optuna SQLite storage and MLflow SQLite store under tmp_path."""
    return {
        "storage": f"sqlite:///{tmp_path}/optuna.db",
        "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
    }


@pytest.fixture
def write_study(tmp_path: Path):
    """Write a study dict to tmp_path/<name>.yaml and return the path."""

    def _write(cfg: dict[str, Any], filename: str | None = None) -> Path:
        path = tmp_path / (filename or f"{cfg['name']}.yaml")
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    return _write


def run_cli(*args: str, monkeypatch, cwd: Path, capsys) -> tuple[int, str, str]:
    """The real CLI entry point in-process (exit code, stdout, stderr): no interpreter start-up."""
    from hpstudy.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("HPSTUDY_STORAGE", raising=False)
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
