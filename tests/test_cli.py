"""The CLI as a user runs it: a subprocess, its exit code and its output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import run_cli as cli
from conftest import tiny_study


def hpstudy(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    full_env.pop("HPSTUDY_STORAGE", None)
    return subprocess.run([sys.executable, "-m", "hpstudy", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def test_run_prints_summary_and_uses_default_stores(tmp_path: Path, write_study):
    path = write_study(tiny_study("clirun"))
    proc = hpstudy("run", str(path), "--n-trials", "2", "--set", "train.max_epochs=1",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "study        clirun: 2 trials (2 complete" in out
    assert "best value" in out and "best params  train.lr=" in out
    assert "best run" in out
    assert "sqlite:///mlruns/optuna.db" in out and "sqlite:///mlruns/mlflow.db" in out
    # the documented default stores, relative to the working directory
    assert (tmp_path / "mlruns" / "optuna.db").exists()
    assert (tmp_path / "mlruns" / "mlflow.db").exists()
    assert (tmp_path / "mlruns" / "artifacts" / "clirun").is_dir()
    study = optuna.load_study(study_name="clirun", storage="sqlite:///" + str(
        tmp_path / "mlruns" / "optuna.db"))
    assert len(study.trials) == 2
    assert "trials" in proc.stderr  # the progress bar


def test_environment_overrides_default_stores(tmp_path: Path, write_study, monkeypatch,
                                              capsys):
    path = write_study(tiny_study("clienv"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPSTUDY_STORAGE", f"sqlite:///{tmp_path}/elsewhere/o.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/elsewhere/m.db")
    from hpstudy.cli import main

    with pytest.raises(SystemExit) as info:
        main(["run", str(path), "--n-trials", "1", "--set", "train.max_epochs=1", "-q"])
    assert info.value.code == 0, capsys.readouterr().err
    assert (tmp_path / "elsewhere" / "o.db").exists() and (tmp_path / "elsewhere" / "m.db").exists()
    assert not (tmp_path / "mlruns" / "optuna.db").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--set", "train.lr=fast"], "train.lr"),
        (["--set", "train.nope=1"], "train.nope: unknown key"),
        (["--set", "model.arch=resnet9000"], "unknown model 'resnet9000'"),
        (["--n-trials", "0"], "--n-trials"),
    ],
)
def test_bad_flags_exit_2_and_write_nothing(tmp_path: Path, write_study, args, fragment,
                                           monkeypatch, capsys):
    path = write_study(tiny_study("clibad"))
    code, _, err = cli("run", str(path), *args, monkeypatch=monkeypatch, cwd=tmp_path,
                       capsys=capsys)
    assert code == 2, err
    assert fragment in err
    assert not (tmp_path / "mlruns").exists()


def test_bad_study_file_exits_2_naming_file_and_field(tmp_path: Path, write_study):
    raw = tiny_study("clibadfile")
    raw["train"]["optimizer"] = "adamax"
    path = write_study(raw)
    proc = hpstudy("run", str(path), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert len(lines) == 1, proc.stderr  # one clear message
    assert str(path) in lines[0] and "train.optimizer" in lines[0]
    assert not (tmp_path / "mlruns").exists()


def test_train_verb_runs_once_with_fixed_values(tmp_path: Path, write_study, monkeypatch,
                                                capsys):
    path = write_study(tiny_study("clitrain"))
    code, out, err = cli("train", str(path), "--set", "lr=0.02", "--set", "max_epochs=2",
                         monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 0, err
    assert out.count("epoch ") >= 2 and "status       completed" in out
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("clitrain")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].data.params["train.lr"] == "0.02"
    assert runs[0].data.tags["hpstudy.kind"] == "train"


def test_worker_joins_by_study_name(tmp_path: Path, write_study, monkeypatch, capsys):
    path = write_study(tiny_study("cliworker"))
    storage = f"sqlite:///{tmp_path}/shared.db"
    tracking = f"sqlite:///{tmp_path}/m.db"
    code, _, err = cli("run", str(path), "--n-trials", "1", "--storage", storage,
                       "--tracking-uri", tracking, "--set", "train.max_epochs=1", "-q",
                       monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 0, err
    # a second machine needs only the study name and the storage URL
    other = tmp_path / "elsewhere"
    other.mkdir()
    code, _, err = cli("worker", "cliworker", "--storage", storage, "--tracking-uri", tracking,
                       "--n-trials", "1", "-q", monkeypatch=monkeypatch, cwd=other, capsys=capsys)
    assert code == 0, err
    study = optuna.load_study(study_name="cliworker", storage=storage)
    assert sorted(t.number for t in study.trials) == [0, 1]
    code, _, err = cli("worker", "nosuchstudy", "--storage", storage, monkeypatch=monkeypatch,
                       cwd=other, capsys=capsys)
    assert code == 2 and "no study of that name" in err


def test_help_and_usage_errors(tmp_path: Path, monkeypatch, capsys):
    assert cli("--help", monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)[0] == 0
    # a missing argument is a usage error: exit 2
    assert cli("run", monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)[0] == 2
