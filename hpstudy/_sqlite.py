"""SQLite as hpstudy's stores use it: WAL and ``synchronous=NORMAL`` (:func:`tune_sqlite`).

A leaf module: the Optuna storage (:mod:`hpstudy.search.storage`) and the
MLflow tracker (:mod:`hpstudy.track.tracker`) both call it before opening a
SQLite database.
"""

from __future__ import annotations

import os
import sqlite3

_SQLITE_TUNED = False
_FILES: set[str] = set()  # the store files to tune (real paths)


def tune_sqlite(url: str) -> None:
    """The SQLite store at ``url`` (``sqlite:///path``), from its next connection on: WAL,
    ``synchronous=NORMAL``.

    The Optuna storage and the MLflow store commit several times per trial and
    per epoch (a report, a metrics batch, user attrs, tags); in SQLite's default
    rollback journal with ``synchronous=FULL`` each commit waits for the disk
    (2 ms a commit here, 15-25 ms per MLflow ``log_batch``). In WAL mode with
    ``synchronous=NORMAL`` a commit is an append (0.01 ms): a killed or crashed
    process loses nothing committed, and the database stays consistent through
    a power cut, which may lose only the last commits. WAL needs the database on
    a local disk (as SQLite does for several processes anyway: many machines use
    PostgreSQL); it also lets readers (``hpstudy ui``, a live report) read while
    a study writes. An SQLAlchemy ``connect`` listener (its public event API),
    installed once. Only hpstudy's own store files are tuned: a program that
    uses hpstudy and its own SQLite databases through SQLAlchemy keeps its
    settings.
    """
    global _SQLITE_TUNED
    if url.startswith("sqlite:///"):
        _FILES.add(os.path.realpath(url.removeprefix("sqlite:///")))
    if _SQLITE_TUNED:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.listen(Engine, "connect", _tune_connection)
    _SQLITE_TUNED = True


def _tune_connection(dbapi_connection: object, _record: object) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cur = dbapi_connection.cursor()
    try:
        main = next((row[2] for row in cur.execute("PRAGMA database_list") if row[1] == "main"), "")
        if not main or os.path.realpath(main) not in _FILES:
            return
        if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() not in ("wal", "memory"):
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.DatabaseError:  # read-only or locked: keep the defaults
        pass
    finally:
        cur.close()
