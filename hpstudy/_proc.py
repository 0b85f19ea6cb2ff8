"""Processes and signals: process-group stopping, and signals turned into one exception."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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


# ------------------------------------------------------------------ signals
class Interrupted(BaseException):  # noqa: N818 - reads as "the run was Interrupted"
    """A signal (SIGINT, SIGTERM, SIGHUP) ended the work in progress.

    A :class:`BaseException` but not a :class:`KeyboardInterrupt`: Lightning
    turns a ``KeyboardInterrupt`` inside ``trainer.fit`` into ``sys.exit(1)``
    and its own SIGTERM handling into a ``SystemExit`` without a code, which
    would decide the outcome for us. This passes through Lightning's generic
    error path (teardown, then re-raise) and through every ``except
    Exception``, so the code that owns the trial and the run records it.

    Attributes:
        signum: the signal number.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)
        self.progress: str | None = None  # what had finished, in words (set by the runner)
        self.remaining: int | None = None  # trials or runs left of what was asked for

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def reason(self) -> str:
        """What gets recorded: ``interrupted: SIGTERM``."""
        return f"interrupted: {self.name}"

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 SIGINT, 143 SIGTERM)."""
        return 128 + self.signum

    def __str__(self) -> str:
        return self.reason


def interruption(exc: BaseException) -> Interrupted | None:
    """The :class:`Interrupted` an exception stands for, or None when it is not an interruption.

    ``KeyboardInterrupt`` (Python's default SIGINT handler) is SIGINT;
    Lightning's ``SIGTERMException`` is SIGTERM.
    """
    if isinstance(exc, Interrupted):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(signal.SIGINT)
    if type(exc).__name__ == "SIGTERMException":  # lightning.pytorch.utilities.exceptions
        return Interrupted(signal.SIGTERM)
    return None


_TRAPPED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def trap_signals(signals: tuple[int, ...] = _TRAPPED) -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`Interrupted` for the block.

    The first signal raises where the main thread is (inside a trial, a store
    call, a sleep); later ones are noted and ignored, so the code recording the
    interrupted trial is not interrupted in turn. The previous handlers come
    back when the block ends. Outside the main thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        if len(received) == 1:
            raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


# ------------------------------------------------------------------ ownership
def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot; Linux), None if unknown or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])  # field 22 of stat(5): starttime
    except (IndexError, ValueError):
        return None


def this_process() -> dict[str, Any]:
    """Who owns work started here: host, pid and the pid's start time (pids are reused)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _start_ticks(pid)}


def owner_gone(owner: dict[str, Any]) -> bool:
    """Whether ``owner`` (from :func:`this_process`) is provably dead: same host, no such process.

    A process on another host cannot be checked from here: False (its heartbeat decides).
    """
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    start = owner.get("start")
    return start is not None and _start_ticks(pid) not in (None, start)  # a new process, same pid
