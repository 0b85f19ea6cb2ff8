"""Check that a store can be used before anything is written to any store.

``hpstudy run`` writes to two stores: the Optuna storage and the MLflow
tracking store. Both are opened and checked first (reachable, writable, right
driver installed); a store that cannot be used is one :class:`ConfigError`
naming where its URL came from (``--storage``, ``tracking.uri`` in the study
file, ``$HPSTUDY_STORAGE``...) and the cause in plain words. Nothing here
creates a file, a folder, a table or a run.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

from .config import ConfigError

_DRIVER_HINTS = {
    "postgresql": "pip install 'hpstudy[postgres]'",
    "mysql": "pip install pymysql (and use mysql+pymysql://)",
    "mariadb": "pip install pymysql (and use mysql+pymysql://)",
}
_CONNECT_TIMEOUT_S = 5


def sqlalchemy_url(url: str) -> str:
    """``postgresql://`` names psycopg 3 in SQLAlchemy 2.1; use psycopg2 when only it is here.

    Optuna gets this URL; MLflow is given the user's URL as is (it needs psycopg 3,
    which ``hpstudy[postgres]`` installs).
    """
    if url.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and \
                importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def check_storage(url: str, origin: str) -> None:
    """Check an Optuna storage URL (``sqlite:///``, ``postgresql://``, ``journal:///``...)."""
    if url.startswith("journal:///"):
        _check_file(Path(url.removeprefix("journal:///")), origin, "journal file")
        return
    _check_sqlalchemy(sqlalchemy_url(url), origin)


def check_tracking(uri: str, origin: str) -> None:
    """Check an MLflow tracking URI (SQLite, another database, or an ``http(s)://`` server)."""
    if uri.startswith(("http://", "https://")):
        _check_server(uri, origin)
    elif uri.startswith("file:") or "://" not in uri:
        path = Path(uri.removeprefix("file://").removeprefix("file:"))
        _check_folder(path, origin)
    elif not uri.startswith(("databricks", "uc:")):
        _check_sqlalchemy(uri, origin)
        if uri.startswith("sqlite:///"):  # artifacts go to a folder beside the database
            db = Path(uri.removeprefix("sqlite:///"))
            _check_folder(db.resolve().parent / "artifacts", origin)


# ------------------------------------------------------------------ databases
def _check_sqlalchemy(url: str, origin: str) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(origin, None, f"'{url}' is not a database URL "
                                        "(e.g. sqlite:///mlruns/optuna.db)") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _check_sqlite(Path(parsed.database), origin)
        return
    try:
        parsed.get_dialect().import_dbapi()
    except (ImportError, NoSuchModuleError) as e:
        backend = parsed.get_backend_name()
        hint = _DRIVER_HINTS.get(backend, f"install the Python driver for {backend}")
        raise ConfigError(origin, None, f"driver missing for {parsed.drivername}:// ({e}): "
                                        f"{hint}") from None
    args = {"connect_timeout": _CONNECT_TIMEOUT_S} if parsed.get_backend_name() in (
        "postgresql", "mysql", "mariadb") else {}
    engine = create_engine(parsed, connect_args=args, pool_pre_ping=False)
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as e:
        raise ConfigError(origin, None, f"cannot connect to {_safe(parsed)}: "
                                        f"{_plain_cause(e)}") from None
    finally:
        engine.dispose()


def _safe(parsed: object) -> str:
    """The URL without its password."""
    return parsed.render_as_string(hide_password=True)  # type: ignore[attr-defined]


def _plain_cause(e: Exception) -> str:
    """A driver's error in a few words (no SQL, no traceback)."""
    text = str(getattr(e, "orig", None) or e)
    low = text.lower()
    for needle, words in (
        ("connection refused", "connection refused (is the server running on that port?)"),
        ("password authentication failed", "password authentication failed"),
        ("does not exist", text.strip().splitlines()[0].split("FATAL:")[-1].strip()),
        ("could not translate host name", "unknown host name"),
        ("name or service not known", "unknown host name"),
        ("timeout expired", "no answer (timeout)"),
        ("access denied", "access denied"),
        ("too many clients", "the server has too many connections open"),
    ):
        if needle in low:
            return words
    return text.strip().splitlines()[0][:200] if text.strip() else type(e).__name__


def _check_sqlite(path: Path, origin: str) -> None:
    _check_file(path, origin, "database file")
    if path.is_file():
        try:  # read-only, so a garbage file is reported, never modified
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                con.execute("PRAGMA schema_version").fetchone()
            finally:
                con.close()
        except sqlite3.DatabaseError as e:
            raise ConfigError(origin, None, f"{path} is not a SQLite database ({e})") from None


# ------------------------------------------------------------------ files
def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_file(path: Path, origin: str, what: str) -> None:
    """``path`` is a writable file, or can be created (its folder is, or can be made, writable)."""
    if path.is_dir():
        raise ConfigError(origin, None, f"{path} is a folder, not a {what}")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise ConfigError(origin, None, f"{path} is read-only")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            # SQLite and the journal write lock/journal files beside the file
            raise ConfigError(origin, None, f"the folder {path.parent} is read-only")
        return
    _check_folder(path.parent, origin)


def _check_folder(folder: Path, origin: str) -> None:
    """``folder`` exists as a writable folder or can be created."""
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise ConfigError(origin, None, f"{base} is a file, so the folder {folder} cannot be "
                                        "created")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(origin, None, f"the folder {base} is read-only"
                                        + (f" ({folder} cannot be created)" if base != folder
                                           else ""))


# ------------------------------------------------------------------ servers
def _check_server(uri: str, origin: str) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=_CONNECT_TIMEOUT_S) as r:  # noqa: S310
            if r.status != 200:
                raise ConfigError(origin, None, f"the MLflow server at {uri} answered HTTP "
                                                f"{r.status}")
    except urllib.error.HTTPError as e:
        raise ConfigError(origin, None, f"the MLflow server at {uri} answered HTTP {e.code}") \
            from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        text = "connection refused (is `mlflow server` running?)" if isinstance(
            reason, ConnectionRefusedError) else str(reason)
        raise ConfigError(origin, None, f"no MLflow server answers at {uri}: {text}") from None
