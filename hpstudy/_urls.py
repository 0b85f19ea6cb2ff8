"""Store URLs made independent of the working directory.

``sqlite:///mlruns/optuna.db`` is relative to the directory a command runs in.
MLflow caches one store per URI string and hpstudy one Optuna storage per URL,
so a process that changes directory (a notebook, a test suite) would keep
writing to the first directory's files. Every client and storage is opened
with the absolute form; what the user sees stays as written.
"""

from __future__ import annotations

import os


def absolute_url(url: str) -> str:
    """``sqlite:///rel/x.db`` -> ``sqlite:////abs/rel/x.db`` (and ``journal:///``); else as is."""
    for scheme in ("sqlite:///", "journal:///"):
        if url.startswith(scheme):
            path = url.removeprefix(scheme)
            if path and not path.startswith("/") and not path.startswith(":memory:"):
                return scheme + os.path.abspath(path)
    return url
