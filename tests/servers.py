"""Real servers for tests: an ``mlflow server`` process and a throwaway PostgreSQL database.

Both are the real components (no mocks). They bind to 127.0.0.1 only.

``start_mlflow_server`` launches ``mlflow server`` as its own process group,
waits for ``/health`` and stops the whole group afterwards (the server forks
uvicorn workers). ``postgres_url`` creates a database named
``hpstudy_test_<random>`` on this machine's PostgreSQL and drops it afterwards;
when PostgreSQL is unreachable it skips the test with the reason, or, when
``$CI`` is set, fails it with the reason (CI must not pass by skipping).

Environment: ``HPSTUDY_TEST_PG`` overrides the admin URL
(default ``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

from hpstudy._proc import stop_process_group

PG_ADMIN_URL = os.environ.get("HPSTUDY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mlflow_exe() -> list[str]:
    # the venv's console script next to this interpreter, else `python -m mlflow`
    exe = Path(sys.executable).with_name("mlflow")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("mlflow")
    return [found] if found else [sys.executable, "-m", "mlflow"]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError) as e:
            last = e
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s (last error: {last})")


@contextmanager
def start_mlflow_server(
    tmp_path: Path, backend_uri: str | None = None, *, timeout: float = 90.0
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run ``mlflow server`` on a free 127.0.0.1 port for the duration of the block.

    Args:
        tmp_path: folder for the backend store (when ``backend_uri`` is None),
            the served artifacts and the server's log.
        backend_uri: MLflow backend store (default ``sqlite:///<tmp_path>/mlflow-server.db``).
        timeout: seconds to wait for ``/health``.

    Yields:
        ``(url, proc)``: the tracking URI (``http://127.0.0.1:PORT``) and the server process.
    """
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    backend = backend_uri or f"sqlite:///{tmp_path / 'mlflow-server.db'}"
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "wb")  # noqa: SIM115 - closed below
    cmd = [*_mlflow_exe(), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", backend,
           "--artifacts-destination", str(tmp_path / "mlflow-artifacts"),
           "--workers", "1"]
    # The job runner (a dozen huey worker processes for GenAI jobs) is of no use
    # to run tracking and costs seconds of start-up on a shared 2-core machine.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(f"{url}/health", timeout, proc)
        except (RuntimeError, TimeoutError) as e:
            log.flush()
            tail = (tmp_path / "mlflow-server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"mlflow server did not start: {e}\n{tail}") from None
        yield url, proc
    finally:
        stop_process_group(proc)
        log.close()


def under_ci() -> bool:
    """``$CI`` is set (``true``, ``1``...): a missing service must fail its tests, not skip them."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def service_unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason``; under CI fail it instead, saying why (CI cannot skip)."""
    if under_ci():
        pytest.fail(f"{reason} (CI is set: tests that need it fail rather than skip)",
                    pytrace=False)
    pytest.skip(reason)


def skip_without_postgres(prefix: str = "") -> pytest.MarkDecorator:
    """A mark that skips when PostgreSQL is absent, except under CI (where the test fails)."""
    reason = postgres_skip_reason()
    return pytest.mark.skipif(reason is not None and not under_ci(), reason=f"{prefix}{reason}")


@functools.lru_cache(maxsize=4)
def postgres_skip_reason(admin_url: str = PG_ADMIN_URL) -> str | None:
    """Why PostgreSQL tests cannot run here (None when they can)."""
    try:
        import psycopg2
    except ImportError:
        return "psycopg2 is not installed (pip install psycopg2-binary)"
    parts = urlsplit(admin_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as e:
        return f"PostgreSQL is not reachable at {host}:{port} ({e})"
    try:
        psycopg2.connect(_libpq(admin_url), connect_timeout=5).close()
    except Exception as e:  # noqa: BLE001 - any refusal is a reason to skip
        return f"cannot log in to PostgreSQL with {admin_url}: {str(e).strip()}"
    return None


def _with_driver(url: str) -> str:
    return "postgresql+psycopg2://" + url.split("://", 1)[1] if url.startswith("postgresql://") \
        else url


def _libpq(url: str) -> str:
    # psycopg2 takes libpq URIs, which know no SQLAlchemy "+driver" suffix
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


def _admin_exec(admin_url: str, sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(_libpq(admin_url), connect_timeout=5)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@contextmanager
def postgres_url(tmp_db: bool = True, admin_url: str = PG_ADMIN_URL) -> Iterator[str]:
    """A PostgreSQL URL for a test; skips the test with the reason when PostgreSQL is absent.

    Args:
        tmp_db: create a fresh database ``hpstudy_test_<random>`` and drop it
            (with its open connections) afterwards; False yields ``admin_url`` itself.
        admin_url: a database the test user may connect to and create databases from.

    Yields:
        A SQLAlchemy URL naming the psycopg2 driver explicitly
        (``postgresql+psycopg2://postgres@127.0.0.1:5432/hpstudy_test_ab12cd34``):
        SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which is not installed.
    """
    reason = postgres_skip_reason(admin_url)
    if reason:
        service_unavailable(reason)
    if not tmp_db:
        yield _with_driver(admin_url)
        return
    name = f"hpstudy_test_{uuid.uuid4().hex[:10]}"
    _admin_exec(admin_url, f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    url = _with_driver(urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query,
                                   parts.fragment)))
    try:
        yield url
    finally:
        _admin_exec(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
