"""The CLI as a user runs it: a subprocess, its exit code and its output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
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
    raw = tiny_study("clirun", train={"evaluate_test": True})
    path = write_study(raw)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "80"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("HPSTUDY_STORAGE", None)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "hpstudy", "run", str(path), "--n-trials", "2",
                             "--set", "train.max_epochs=1"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    first_s = time.perf_counter() - start
    rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    # a first line before torch, Lightning and MLflow are imported (seconds)
    assert first.startswith("loading      ") and str(path) in first
    assert first_s < 3.0, f"first line after {first_s:.2f}s"  # about 0.5 s on an idle machine
    out = first + rest
    lines = out.splitlines()
    assert lines[1] == "study        clirun: 2 trials to run, maximize val_acc"
    assert lines[2] == "optuna       sqlite:///mlruns/optuna.db"
    assert lines[3].startswith("mlflow       sqlite:///mlruns/mlflow.db, experiment clirun")
    trial_lines = [line for line in lines if line.startswith("trial ")]
    assert len(trial_lines) == 2
    for line in trial_lines:  # state, value, verdict, epochs, duration
        assert re.match(r"trial +\d+ COMPLETE +val_acc 0\.\d{4} +\w+ +1 epochs +\d+\.\ds$",
                        line), line
    assert "study        clirun: 2 trials (2 complete" in out
    assert "best value" in out and "best run" in out
    assert re.search(r"^best test    test_acc 0\.\d{4}, test_loss", out, flags=re.M)
    # the best params one per line, aligned: no line wraps inside a value
    params = [line for line in lines if line.startswith(("best params", " " * 13))]
    assert [p.split()[-2] for p in params] == ["train.lr", "data.batch_size", "model.drop_rate"]
    assert "sqlite:///mlruns/optuna.db" in out and "sqlite:///mlruns/mlflow.db" in out
    # an 80-column terminal: no line of ours and no state of the bar is wider
    bar_states = [s for s in re.split(r"[\r\n]", err) if "|" in s]
    assert bar_states and bar_states[-1].startswith("2/2 |")
    assert re.search(r"2 complete 0 pruned 0 failed best 0\.\d{4}$", bar_states[-1]), bar_states
    too_wide = [s for s in [*lines[1:], *bar_states] if len(s) > 80]  # [0] holds the path
    assert not too_wide, too_wide
    # the documented default stores, relative to the working directory
    assert (tmp_path / "mlruns" / "optuna.db").exists()
    assert (tmp_path / "mlruns" / "mlflow.db").exists()
    assert (tmp_path / "mlruns" / "artifacts" / "clirun").is_dir()
    study = optuna.load_study(study_name="clirun", storage="sqlite:///" + str(
        tmp_path / "mlruns" / "optuna.db"))
    assert len(study.trials) == 2


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


def test_version_and_short_help(tmp_path: Path, monkeypatch, capsys):
    from hpstudy import __version__

    code, out, _ = cli("--version", monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 0 and out.strip() == f"hpstudy {__version__}"
    code, out, _ = cli("run", "-h", monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 0 and "STUDY.yaml" in out and "--n-trials" in out


def test_every_option_has_help_and_a_meaningful_metavar(tmp_path: Path, monkeypatch, capsys):
    import typer

    from hpstudy.cli import app

    group = typer.main.get_command(app)
    verbs = sorted(group.commands)
    assert {"run", "worker", "train", "ablate", "models", "ui", "dashboard"} <= set(verbs)
    for verb in verbs:
        for param in group.commands[verb].params:
            if param.param_type_name != "option":
                continue
            assert param.help, f"hpstudy {verb} {param.opts[0]} has no help text"
            flag = getattr(param, "is_flag", False)
            assert param.metavar == "" if flag else (param.metavar or "").isupper() or \
                "=" in (param.metavar or ""), f"hpstudy {verb} {param.opts[0]}: {param.metavar!r}"
        monkeypatch.setenv("COLUMNS", "200")
        code, out, _ = cli(verb, "--help", monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
        assert code == 0, verb
        for bad in ("<bool>", "<list[", "<int", "<float", "{study}", "<str> "):
            options = out[out.index("Options"):]
            assert bad not in options, f"hpstudy {verb} --help shows {bad}:\n{options}"


def test_help_says_which_verbs_take_a_study_name(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    for verb, takes_name in [("run", False), ("train", False), ("worker", True),
                             ("report", True), ("diagnose", True), ("dashboard", True)]:
        _, out, _ = cli(verb, "--help", monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
        assert ("study name" in out) == takes_name, f"hpstudy {verb}:\n{out}"


def test_models_sorts_names_naturally():
    from hpstudy.cli import natural_key

    names = ["preact_resnet110", "preact_resnet20", "preact_resnet164", "preact_resnet56", "nin"]
    assert sorted(names, key=natural_key) == ["nin", "preact_resnet20", "preact_resnet56",
                                              "preact_resnet110", "preact_resnet164"]
