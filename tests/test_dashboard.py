"""``hpstudy dashboard`` for real: optuna-dashboard on a study's storage, read in headless Chromium."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from browser import need_chromium, screenshot_and_check
from conftest import tiny_study
from servers import free_port, service_unavailable
from test_ui import _answers, _lines, _wait_for

from hpstudy.api import run_config
from hpstudy.config import from_dict


def _dashboard_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("optuna_dashboard") is None:
        service_unavailable("optuna-dashboard is not installed (pip install -e '.[dev]')")


def test_dashboard_serves_the_study_live_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    _dashboard_installed()
    chromium = need_chromium()
    raw = tiny_study("dash-study", train={"max_epochs": 2, "limit_train_batches": 2},
                     tracking={"uri": f"sqlite:///{tmp_path}/mlflow.db", "register_best": False},
                     storage=f"sqlite:///{tmp_path}/optuna.db")
    run_config(from_dict(raw), progress=False)
    study_file = tmp_path / "dash-study.yaml"
    study_file.write_text(yaml.safe_dump(raw, sort_keys=False))

    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HPSTUDY_STORAGE", None)
    proc = subprocess.Popen([sys.executable, "-m", "hpstudy", "dashboard", str(study_file),
                             "--port", str(port)], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    seen: list[str] = []
    try:
        q = _lines(proc)
        url = _wait_for(q, r"(http://127\.0\.0\.1:\d+/dashboard/studies/\d+)", 120, seen).group(1)
        assert url == f"http://127.0.0.1:{port}/dashboard/studies/1"
        page = screenshot_and_check(url, tmp_path / "optuna-dashboard.png",
                                    window_size=(1400, 1000), virtual_time_ms=20000,
                                    chromium=chromium)
        dom = page["dom"]
        assert "dash-study" in dom, "the study's name is not on its page"
        assert "val_acc" in dom, "the objective should read val_acc (metric names set)"
        assert "Objective 0" not in dom
        assert re.search(r"Trials?\b", dom)
        shot = Path(page["screenshot"])
        assert shot.stat().st_size > 20_000
        # the trial list shows all three trials
        page = screenshot_and_check(url + "/trials", tmp_path / "optuna-trials.png",
                                    window_size=(1400, 1000), virtual_time_ms=20000,
                                    chromium=chromium)
        numbers = set(re.findall(r"Trial ([0-9]+)\b", page["dom"]))
        assert numbers == {"0", "1", "2"}, numbers

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, "".join(seen)
        _wait_for(q, r"optuna-dashboard stopped", 5, seen)
        assert not _answers(f"http://127.0.0.1:{port}/api/studies")
        assert not [line for line in seen if "GET /" in line], seen  # --quiet: no access log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_dashboard_without_optuna_dashboard_says_how_to_install(tmp_path: Path) -> None:
    # a Python that cannot import optuna_dashboard: the verb exits 2 with the install hint
    code = ("import sys; sys.modules['optuna_dashboard'] = None; from hpstudy.cli import main; "
            "main(['dashboard', 'some-study', '--storage', sys.argv[1]])")
    proc = subprocess.run([sys.executable, "-c", code, f"sqlite:///{tmp_path}/o.db"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("error: optuna-dashboard is not installed: pip install "
                                   'optuna-dashboard (or pip install -e ".[dashboard]")')
    assert not (tmp_path / "o.db").exists()


@pytest.mark.parametrize("url", ["journal:///runs/x.log", "sqlite:///a.db"])
def test_dashboard_command_passes_the_storage(url: str) -> None:
    _dashboard_installed()
    from hpstudy.search.dashboard import dashboard_command

    cmd = dashboard_command(url, "127.0.0.1", 8080)
    assert "--quiet" in cmd and cmd[cmd.index("--port") + 1] == "8080"
    if url.startswith("journal"):
        assert cmd[-3:] == ["--storage-class", "JournalFileStorage", "runs/x.log"]  # as sqlite:///
    else:
        assert cmd[-1] == url
