"""Bad input through the real CLI: exit 2, one line naming the file/flag and field, no
traceback, and neither store written (the Optuna storage and the MLflow store)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import run_cli, tiny_study
from test_config import BAD


def _study(patch: dict[str, Any]) -> dict[str, Any]:
    raw = tiny_study("bad")
    for section, values in patch.items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict):
            raw[section] = {**raw[section], **values}
        else:
            raw[section] = values
    return raw


def _write(tmp: Path, raw: Any) -> Path:
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _file_bytes(data: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / "study.yaml"
        path.write_bytes(data)
        return path

    return make


def _folder(tmp: Path) -> Path:
    path = tmp / "a_folder.yaml"
    path.mkdir()
    return path


def _a_file(tmp: Path) -> Path:
    p = tmp / "plainfile"
    p.write_text("not a folder")
    return p


# (id, study (a patch of tiny_study, or a function making the file), extra args,
#  fragments the one line must hold). "{tmp}" in args is the test's folder.
CASES: list[tuple[str, Any, list[str], list[str]]] = [
    # files
    ("binary file", _file_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))), [],
     ["binary file"]),
    ("not utf-8", _file_bytes("name: caf\xe9\n".encode("latin-1")), [], ["not UTF-8"]),
    ("a folder", _folder, [], ["is a folder"]),
    ("missing file", lambda tmp: tmp / "nope.yaml", [], ["no such study file"]),
    ("empty file", _file_bytes(b""), [], ["empty"]),
    ("yaml list", _file_bytes(b"- a\n- b\n"), [], ["mapping"]),
    ("broken yaml", _file_bytes(b"name: x\ntrain: [unclosed\n"), [], ["not valid YAML"]),
    ("python tag", _file_bytes(b"name: !!python/object/apply:os.system ['echo pwned']\n"), [],
     ["not valid YAML"]),
    # counts and fractions
    ("val_split 1.5", {"data": {"val_split": 1.5}}, [], ["data.val_split", "whole number"]),
    ("val_split negative", {"data": {"val_split": -0.1}}, [], ["data.val_split"]),
    ("n_trials 0", {"search": {"n_trials": 0}}, [], ["search.n_trials"]),
    ("workers 0", {"search": {"workers": 0}}, [], ["search.workers"]),
    ("timeout negative", {"search": {"timeout": -5}}, [], ["search.timeout"]),
    ("patience 0", {"train": {"early_stopping": {"enabled": True, "patience": 0}}}, [],
     ["train.early_stopping.patience"]),
    ("step_size 0", {"train": {"scheduler": {"name": "step", "step_size": 0}}}, [],
     ["train.scheduler.step_size"]),
    ("num_threads 0", {"train": {"num_threads": 0}}, [], ["train.num_threads"]),
    ("devices 0", {"train": {"devices": 0}}, [], ["train.devices"]),
    ("limit batches negative", {"train": {"limit_train_batches": -1}}, [],
     ["train.limit_train_batches"]),
    ("num_workers negative", {"data": {"num_workers": -1}}, [], ["data.num_workers"]),
    ("eval batch 0", {"data": {"eval_batch_size": 0}}, [], ["data.eval_batch_size"]),
    ("num_nodes 0", {"train": {"num_nodes": 0}}, [], ["train.num_nodes"]),
    ("max_epochs 0", {"train": {"max_epochs": 0}}, [], ["train.max_epochs"]),
    ("negative width", {"model": {"hidden": [-4]}}, [], ["model", "cannot be built"]),
    # flags
    ("--set unknown key", {}, ["--set", "train.nope=1"], ["--set", "train.nope", "unknown key"]),
    ("--set wrong type", {}, ["--set", "train.lr=fast"], ["--set", "train.lr"]),
    ("--set val_split 2.5", {}, ["--set", "data.val_split=2.5"], ["--set", "data.val_split"]),
    ("--n-trials 0", {}, ["--n-trials", "0"], ["--n-trials"]),
    # stores
    ("storage refused", {}, ["--storage", "postgresql://nobody@127.0.0.1:1/x"],
     ["--storage", "connection refused"]),
    ("storage under a file", {}, ["--storage", "sqlite:///{tmp}/plainfile/x.db"],
     ["--storage", "is a file"]),
    ("storage is a folder", {}, ["--storage", "sqlite:///{tmp}"], ["--storage", "is a folder"]),
    ("storage driver missing", {}, ["--storage", "mysql://root@127.0.0.1/test"],
     ["--storage", "driver missing"]),
    ("storage not a url", {}, ["--storage", "optuna.db"], ["--storage", "not a database URL"]),
    ("tracking under a file", {}, ["--tracking-uri", "sqlite:///{tmp}/plainfile/m.db"],
     ["--tracking-uri", "is a file"]),
    ("tracking server refused", {}, ["--tracking-uri", "http://127.0.0.1:1"],
     ["--tracking-uri", "no MLflow server answers"]),
    ("tracking not sqlite", {}, ["--tracking-uri", "sqlite:///{tmp}/garbage.db"],
     ["--tracking-uri", "not a SQLite database"]),
    ("study file storage refused", {"storage": "postgresql://nobody@127.0.0.1:1/x"}, [],
     ["study.yaml: storage", "connection refused"]),
    ("study file tracking refused", {"tracking": {"uri": "http://127.0.0.1:1"}}, [],
     ["study.yaml: tracking.uri", "no MLflow server answers"]),
    # transfer learning: the weights must exist before anything is written
    ("init_from missing file", {"model": {"init_from": "nope.pt"}}, [],
     ["study.yaml: model.init_from", "no checkpoint file nope.pt"]),
    ("init_from in another store", {"model": {"init_from": "models:/ghost/1"}}, [],
     ["study.yaml: model.init_from", "not in --tracking-uri"]),
    ("init_from without a store", {"model": {"init_from": "models:/ghost/1"},
                                   "tracking": {"uri": "sqlite:///mlflow.db"}}, [],
     ["study.yaml: model.init_from", "no MLflow store at sqlite:///mlflow.db"]),
]
CASES += [(f"schema {b[1] or b[2]}", {k: v for k, v in b[0].items()}, [],
           [b[1] or "", b[2]]) for b in BAD]


@pytest.mark.parametrize(("study", "args", "fragments"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_no_store_written(study, args, fragments,
                                                              tmp_path, monkeypatch, capsys):
    _a_file(tmp_path)
    (tmp_path / "garbage.db").write_bytes(b"this is not a database, just some bytes" * 10)
    path = study(tmp_path) if callable(study) else _write(tmp_path, _study(study))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    stores = []
    if "--storage" not in args and not (isinstance(study, dict) and "storage" in study):
        args += ["--storage", f"sqlite:///{tmp_path}/optuna.db"]
        stores.append(tmp_path / "optuna.db")
    if "--tracking-uri" not in args and not (isinstance(study, dict) and "tracking" in study):
        args += ["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
        stores.append(tmp_path / "mlflow.db")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run_cli("run", str(path), *args, monkeypatch=monkeypatch, cwd=tmp_path,
                             capsys=capsys)
    assert code == 2, (out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in out + err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    for store in stores:
        assert not store.exists(), f"{store} was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no mlruns/, no db, nothing


def test_read_only_stores_are_refused_before_anything_is_written(tmp_path, monkeypatch, capsys,
                                                                  write_study):
    """A read-only MLflow database (immutable: root ignores file modes) is refused by name."""
    db = tmp_path / "mlflow.db"
    path = write_study(tiny_study("readonly"))
    code, _, err = run_cli("run", str(path), "--n-trials", "1", "-q", "--storage",
                           f"sqlite:///{tmp_path}/optuna.db", "--tracking-uri", f"sqlite:///{db}",
                           "--no-report", "--set", "train.max_epochs=1", monkeypatch=monkeypatch,
                           cwd=tmp_path, capsys=capsys)
    assert code == 0, err
    (tmp_path / "optuna.db").unlink()
    locked = subprocess.run(["chattr", "+i", str(db)], capture_output=True)
    if locked.returncode != 0 and not os.environ.get("CI"):
        pytest.skip(f"chattr +i is not available here: {locked.stderr.decode().strip()}")
    assert locked.returncode == 0, locked.stderr
    try:
        code, out, err = run_cli("run", str(path), "--storage", f"sqlite:///{tmp_path}/optuna.db",
                                 "--tracking-uri", f"sqlite:///{db}", monkeypatch=monkeypatch,
                                 cwd=tmp_path, capsys=capsys)
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)
    assert code == 2
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    assert line.startswith("error: --tracking-uri:") and "read-only" in line, line
    assert not (tmp_path / "optuna.db").exists()  # the other store was not created either
