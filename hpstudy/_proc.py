"""Process-group helpers shared by the trial runner, the UI and the tests."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process_group(proc: subprocess.Popen, grace_s: float = 10.0) -> int:
    """End ``proc`` and every process in its group; returns its exit code.

    ``proc`` must lead its own group (started with ``start_new_session=True``).
    SIGTERM lets the leader shut down gracefully (uvicorn, Lightning) for up to
    ``grace_s``; a SIGKILL to the group then ends anything left behind (DDP
    ranks or server workers that outlived the leader would otherwise wait on
    a collective or hold a port forever).
    """
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return proc.wait()
