"""``hpstudy ui`` for real: the CLI process, its ``mlflow server``, headless Chromium, Ctrl-C.

A 3-trial study is written to a SQLite store in tmp_path; ``hpstudy ui
STUDY.yaml --port P`` is started as a process, the URL it prints is opened in
headless Chromium (tests/browser.py), the rendered page must list the trial
runs (best first: the URL sorts by the objective) and a screenshot is saved
under tmp_path. SIGINT to the CLI then has to stop the server and free the port.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from browser import need_chromium, screenshot_and_check
from conftest import tiny_study
from mlflow import MlflowClient
from servers import free_port

from hpstudy.api import run_config as run_study  # study + registration + report
from hpstudy.cli import main
from hpstudy.config import from_dict
from hpstudy.track.ui import (
    VIEW_BEST,
    VIEW_NESTED,
    UIError,
    runs_url,
    serve_ui,
    study_views,
    ui_command,
    view_url,
)

REPO = Path(__file__).resolve().parents[1]


def hpstudy(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpstudy", *args]


def _lines(proc: subprocess.Popen) -> queue.Queue:
    """The process's output lines, read on a thread (so waits can time out)."""
    q: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _wait_for(q: queue.Queue, pattern: str, timeout: float, seen: list[str]) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    raise AssertionError(f"no line matching {pattern!r} within {timeout:.0f}s:\n{''.join(seen)}")


def _row_order(dom: str, names: list[str]) -> dict[str, int]:
    """The runs table row index (ag-grid ``row-index``) holding each run name."""
    order: dict[str, int] = {}
    for m in re.finditer(r'row-index="(\d+)"(.*?)(?=row-index="|\Z)', dom, flags=re.S):
        for name in names:
            if name not in order and f">{name}<" in m.group(2):
                order[name] = int(m.group(1))
    return order


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3):
            return True
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.slow  # tens of seconds of the 15-minute default suite: `make test-all` runs it
def test_hpstudy_ui_lands_on_the_study_in_chromium_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    chromium = need_chromium()
    raw = tiny_study("ui-study", train={"max_epochs": 2, "limit_train_batches": 2,
                                        "evaluate_test": True},
                     tracking={"uri": f"sqlite:///{tmp_path}/mlflow.db", "register_best": False},
                     storage=f"sqlite:///{tmp_path}/optuna.db")
    summary = run_study(from_dict(raw), progress=False)
    study_file = tmp_path / "ui-study.yaml"
    study_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    best = f"trial-{summary.best_trial:04d}"
    client = MlflowClient(tracking_uri=raw["tracking"]["uri"])
    # the study run holds the optimization history by trial number (the chart view draws it)
    history = client.get_metric_history(summary.parent_run_id, "best_value")
    assert [m.step for m in history][:3] == [0, 1, 2]
    assert history[2].value == pytest.approx(summary.best_value)

    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(hpstudy("ui", str(study_file), "--port", str(port)), cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    seen: list[str] = []
    try:
        q = _lines(proc)
        base = f"http://127.0.0.1:{port}"
        nested = _wait_for(q, r"(http://\S+#/experiments/\S+)", 240, seen).group(1)
        flat = _wait_for(q, r"(http://\S+#/experiments/\S+)", 10, seen).group(1)
        assert nested == view_url(base, summary.experiment_id, VIEW_NESTED)
        assert flat == view_url(base, summary.experiment_id, VIEW_BEST)
        names = [f"trial-{i:04d}" for i in range(3)]

        # the study's landing page: the study run, its trials nested under it (collapsed)
        page = screenshot_and_check(nested, tmp_path / "mlflow-nested.png", window_size=(1600, 900),
                                    virtual_time_ms=20000, chromium=chromium)
        assert _row_order(page["dom"], ["ui-study"]) == {"ui-study": 0}, "study run not listed"
        assert not _row_order(page["dom"], names), "trials should be nested under the study run"
        assert "study: 3 trials, 3 complete" in page["dom"]  # its description
        assert "shared view" in page["dom"]  # MLflow applied the saved view

        # best first: every trial, its state/value/verdict in words, the key metrics as columns
        # (a wide window: the grid renders only the columns in view)
        page = screenshot_and_check(flat, tmp_path / "mlflow-best.png", window_size=(3200, 900),
                                    virtual_time_ms=20000, chromium=chromium)
        rows = _row_order(page["dom"], names)
        assert set(rows) == set(names), f"trial runs not rendered: {rows}"
        assert rows[best] == 0, f"the best trial {best} should be the first row: {rows}"
        assert ">Description<" in page["dom"]
        for header in ("best_val_acc", "test_acc", "best_epoch", "train.lr", "hpstudy.state"):
            assert f'data-testid="sort-header-{header}"' in page["dom"], f"no column {header}"
        assert page["dom"].count(">COMPLETE val_acc 0.") == 3
        shot = Path(page["screenshot"])
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

        # the chart view of the landing page: the study run's optimization history first
        page = screenshot_and_check(nested + "&compareRunsMode=CHART", tmp_path / "mlflow-chart.png",
                                    window_size=(1600, 1100), virtual_time_ms=40000,
                                    chromium=chromium)
        assert "best_value vs trial_value" in page["dom"]
        assert "ui-study (best_value)" in page["dom"]  # drawn: the legend names the study run

        # Ctrl-C: the CLI stops its server's whole process group and exits 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, "".join(seen)
        _wait_for(q, r"MLflow UI stopped", 5, seen)
        # no access log: three page loads did not print hundreds of request lines
        assert not [line for line in seen if '"GET ' in line or "HTTP/1.1" in line], seen
        assert not _answers(f"http://127.0.0.1:{port}/health")
        with socket.socket() as s:  # nothing listens there any more
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # the server ran in its own group; make sure nothing of it outlived the test
        leftover = subprocess.run(["pgrep", "-f", "--", f"--port {port} "], capture_output=True,
                                  text=True).stdout.split()
        for pid in leftover:
            os.kill(int(pid), signal.SIGKILL)
    assert not leftover, f"server processes outlived hpstudy ui: {leftover}"


def test_ui_fails_clearly_when_the_port_is_taken(tmp_path: Path, capsys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(SystemExit) as exc:  # the CLI entry point, in this process
            main(["ui", "--port", str(port), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    assert exc.value.code == 1
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
    assert not (tmp_path / "m.db").exists()  # refused before touching the store


def test_ui_on_a_tracking_server_prints_its_url_and_starts_nothing() -> None:
    said: list[str] = []
    assert serve_ui(tracking_uri="http://mlflow.example:5000", echo=said.append) == 0
    assert "http://mlflow.example:5000/" in said[0]


def test_ui_command_admits_this_host_only_when_exposed() -> None:
    local = ui_command("sqlite:///mlruns/mlflow.db", "127.0.0.1", 5000)
    assert "--allowed-hosts" not in local and local[local.index("--host") + 1] == "127.0.0.1"
    assert local[local.index("--default-artifact-root") + 1].endswith("/mlruns/artifacts")
    exposed = ui_command("sqlite:///mlruns/mlflow.db", "0.0.0.0", 5000)
    allowed = exposed[exposed.index("--allowed-hosts") + 1].split(",")
    assert f"{socket.gethostname()}:5000" in allowed and "0.0.0.0" not in allowed
    assert local[local.index("--uvicorn-opts") + 1] == "--no-access-log"
    assert runs_url("http://h:1", "7", "val_loss", "minimize").endswith(
        "#/experiments/7/runs?orderByKey=metrics.%60best_val_loss%60&orderByAsc=true")


def test_study_views_nest_by_start_time_and_sort_trials_by_the_objective() -> None:
    views = study_views("val_loss", "minimize", ["train.lr"])
    nested, best = views[VIEW_NESTED], views[VIEW_BEST]
    # MLflow nests child runs only when sorted by start time without a filter
    assert nested["orderByKey"] == "attributes.start_time" and nested["searchFilter"] == ""
    assert best["orderByKey"] == "metrics.`best_val_loss`" and best["orderByAsc"] is True
    assert best["searchFilter"] == "tags.`hpstudy.kind` = 'trial'"
    assert nested["selectedColumns"][:3] == ["attributes.`Description`", "metrics.`best_val_loss`",
                                             "metrics.`test_acc`"]
    assert "params.`train.lr`" in nested["selectedColumns"]
    assert view_url("http://h:1", "7").endswith("#/experiments/7/runs?viewStateShareKey=hpstudy")
    assert issubclass(UIError, RuntimeError)
