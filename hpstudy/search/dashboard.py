"""``hpstudy dashboard``: optuna-dashboard on a study's storage, live while the study runs.

optuna-dashboard (an optional dependency: ``pip install -e ".[dashboard]"``)
reads the Optuna storage directly, so it shows trials as they finish, from
any number of workers. Studies name their objective (``set_metric_names``),
so the dashboard says ``val_acc`` rather than ``Objective 0``.

The server runs in its own process group on 127.0.0.1 (``--host`` to expose
it: it has no login), with its access log off; the study's page URL is
printed once it answers; Ctrl-C stops it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from ..track.ui import LOOPBACK, UIError, port_free, serve_foreground

INSTALL_HINT = 'pip install optuna-dashboard (or pip install -e ".[dashboard]")'


class DashboardMissing(UIError):
    """optuna-dashboard is not installed."""


def dashboard_command(storage_url: str, host: str, port: int) -> list[str]:
    """The ``optuna-dashboard`` command line serving ``storage_url`` quietly."""
    exe = Path(sys.executable).with_name("optuna-dashboard")
    found = str(exe) if exe.exists() else shutil.which("optuna-dashboard")
    if importlib.util.find_spec("optuna_dashboard") is None or found is None:
        raise DashboardMissing(f"optuna-dashboard is not installed: {INSTALL_HINT}")
    args = [found, "--host", host, "--port", str(port), "--quiet"]
    if storage_url.startswith("journal:///"):
        return [*args, "--storage-class", "JournalFileStorage",
                storage_url.removeprefix("journal:///")]
    return [*args, storage_url]


def study_url(base: str, storage_url: str, study_name: str) -> str:
    """The study's page, ``<base>/dashboard/studies/<id>`` (the study list if it is unknown)."""
    from .storage import get_storage

    try:
        study_id = get_storage(storage_url).get_study_id_from_name(study_name)
    except KeyError:
        return f"{base}/dashboard/"
    return f"{base}/dashboard/studies/{study_id}"


def serve_dashboard(study_name: str, storage_url: str, *, host: str = "127.0.0.1",
                    port: int = 8080, ready_timeout: float = 120.0,
                    echo: Callable[[str], None] | None = None) -> int:
    """Run optuna-dashboard on ``storage_url`` in the foreground until Ctrl-C.

    Args:
        study_name: the study whose page URL is printed.
        storage_url: the Optuna storage (``sqlite:///...``, ``postgresql://...``,
            ``journal:///path``).
        host: bind address; anything but the loopback exposes the dashboard (no login).
        port: TCP port.
        ready_timeout: seconds to wait for the server to answer.
        echo: where messages go (default: print to stdout, flushed).

    Returns:
        0 after Ctrl-C or SIGTERM stopped the server, else the server's exit code.

    Raises:
        DashboardMissing: optuna-dashboard is not installed.
        UIError: the port is taken, or the server exited or hung while starting.
    """
    say = echo or (lambda m: print(m, flush=True))
    cmd = dashboard_command(storage_url, host, port)
    if not port_free(host, port):
        raise UIError(f"port {port} on {host} is in use; pick another with --port")
    shown = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
    shown = f"[{shown}]" if ":" in shown else shown
    url = study_url(f"http://{shown}:{port}", storage_url, study_name)
    if host not in LOOPBACK:
        say(f"warning: optuna-dashboard has no login; anyone who reaches {host}:{port} can read "
            "and change the study")
    from .progress import safe_url

    return serve_foreground(
        cmd, f"http://{shown}:{port}/api/studies",
        f"optuna-dashboard on {safe_url(storage_url)}\n  {url}\n(Ctrl-C to stop)",
        env={**os.environ}, ready_timeout=ready_timeout, what="optuna-dashboard",
        stopped="optuna-dashboard stopped", say=say)
