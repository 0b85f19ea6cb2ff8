"""A trial in a child process (crash isolation, DDP): both ends of the link.

The parent (the process that holds the Optuna trial or the MLflow run) has
already sampled the trial's hyperparameters. :func:`run_in_child` writes the
concrete config to a file and starts ``python -m hpstudy.train.child CONFIG
ADDRESS`` in a new session (one process group: one ``killpg`` ends every rank).
For ``train.strategy: ddp`` Lightning relaunches that command once per extra
rank, so every rank trains the same concrete config and none can create a
trial of its own (optuna #3281, #4835).

The link is the standard library's authenticated connection
(:mod:`multiprocessing.connection`, HMAC challenge with a per-trial key passed
in the environment) on 127.0.0.1. Global rank 0 connects on its first epoch
and sends each epoch's record (already reduced across ranks); the parent runs
the hooks (MLflow logging, Optuna pruning) and answers whether to stop; rank 0
broadcasts the answer so every rank stops together. Then rank 0 sends the
result (or the error). Messages are JSON (``send_bytes``), never pickles, so
the parent unpickles nothing a child sends. ``ddp_spawn`` works too: the
spawned rank 0 streams the epochs on one connection and the launching process
sends the result on a second.

A child that dies (segfault, out-of-memory kill, ``os._exit``) closes its
connection; the parent turns the exit status into :class:`TrialProcessError`
("killed by signal SIGKILL ..."), with the last error line of the child's log.
Nothing here imports Optuna or MLflow: ranks never touch the study or the runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Sequence
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from .._proc import stop_process_group

LINK_KEY_ENV = "HPSTUDY_LINK_KEY"  # hex authkey of the link (never on a command line)
# Variables a fresh trial process must not inherit: they would make Lightning
# believe it is already one rank of a launched job (a parent that ran DDP).
DIST_ENV = ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
            "MASTER_ADDR", "MASTER_PORT", "PL_GLOBAL_SEED", "PL_TRAINER_GPUS")
_SIGNAL_HINTS = {
    "SIGKILL": "out of memory? the kernel's OOM killer sends SIGKILL",
    "SIGSEGV": "segmentation fault",
    "SIGBUS": "bus error",
    "SIGABRT": "aborted",
}
_log = logging.getLogger("hpstudy")


class TrialProcessError(RuntimeError):
    """The trial's process failed or died; ``str()`` is the reason that gets recorded.

    Attributes:
        returncode: the child's exit status (negative: killed by that signal).
    """

    def __init__(self, reason: str, returncode: int | None = None):
        super().__init__(reason)
        self.returncode = returncode
        self.fail_reason: str | None = None  # set when the child's reason is recorded as is


# ------------------------------------------------------------------ messages
def _plain(value: Any) -> Any:
    """JSON-safe copy (tensors and numpy scalars become floats; NaN stays NaN)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def send(conn: Connection, message: dict[str, Any]) -> None:
    """One JSON message (``allow_nan``: a diverged loss is a fact to report, not an error)."""
    conn.send_bytes(json.dumps(_plain(message)).encode())


def receive(conn: Connection) -> dict[str, Any] | None:
    """The next message, or None when the other end closed or died."""
    try:
        return json.loads(conn.recv_bytes())
    except (EOFError, OSError, ValueError):
        return None


# ------------------------------------------------------------------ parent side
def death_reason(returncode: int, log_text: str = "") -> str:
    """A one-line reason for a child's exit status, with the last error line of its log."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = _SIGNAL_HINTS.get(name)
        reason = f"trial process killed by signal {name} ({-returncode})"
        reason += f": {hint}" if hint else ""
    elif returncode == 0:
        reason = "trial process exited without a result"
    else:
        reason = f"trial process exited with code {returncode}"
    last = last_error_line(log_text)
    return f"{reason}; last error: {last}" if last else reason


def last_error_line(log_text: str) -> str | None:
    """The last ``SomeError: message`` line of a traceback in ``log_text``."""
    found = re.findall(r"^(?:[\w.]+\.)?\w*(?:Error|Exception|Interrupt|Exit)\b.*$", log_text,
                       flags=re.MULTILINE)
    return found[-1].strip()[:500] if found else None


def _accept(listener: Listener, proc: subprocess.Popen, key: bytes) -> Connection | None:
    """The next authenticated connection, or None once the child has exited.

    ``Listener.accept`` has no timeout; a watcher thread connects to the
    listener itself when the child exits, which wakes ``accept`` (connections
    the child made before dying are queued first and still served).
    """
    done = threading.Event()

    def wake_on_exit() -> None:
        while not done.wait(0.2):
            if proc.poll() is not None:
                try:
                    Client(listener.address, authkey=key).close()
                except OSError:
                    pass
                return

    watcher = threading.Thread(target=wake_on_exit, daemon=True)
    watcher.start()
    try:
        while True:
            try:
                return listener.accept()
            except (AuthenticationError, OSError, EOFError) as e:  # a stranger, a torn handshake
                if proc.poll() is not None:
                    return None
                _log.debug("ignored a connection to the trial link: %s", e)
    finally:
        done.set()
        watcher.join()


def _relay(conn: Connection, hooks: Sequence[Callable[[dict[str, Any]], Any]]
           ) -> dict[str, Any] | None:
    """Run the hooks on each epoch record and answer; returns the last other message."""
    while True:
        message = receive(conn)
        if message is None or message.get("kind") != "epoch":
            return message
        stop = False
        for hook in hooks:
            stop = bool(hook(dict(message["record"]))) or stop
        try:
            send(conn, {"stop": stop})
        except OSError:
            return None  # the child died meanwhile: its exit status says why


def run_in_child(
    cfg: Any,
    hooks: Sequence[Callable[[dict[str, Any]], Any]] = (),
    *,
    label: str = "trial",
    on_failure_log: Callable[[Path], None] | None = None,
) -> Any:
    """Train the concrete config ``cfg`` in a child process (all ranks of it).

    Args:
        cfg: the concrete config (a :class:`hpstudy.config.StudyConfig`).
        hooks: called here with each epoch's record; any returning True stops
            training (pruning), on every rank.
        label: names the temporary folder (``quickstart-trial-0007``).
        on_failure_log: called with the child's log file when it fails (e.g.
            to attach it to the MLflow run); the log is removed afterwards.

    Returns:
        The :class:`~hpstudy.train.FitResult` rank 0 sent (``module`` and
        ``datamodule`` are None; ``checkpoint`` holds the kept weights, if any).

    Raises:
        TrialProcessError: the child raised (its reason), or died (signal/exit code).
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"hpstudy-{label}-"))
    cfg_path, log_path = workdir / "config.yaml", workdir / "trial.log"
    cfg_path.write_text(cfg.to_yaml(), encoding="utf-8")
    key = secrets.token_bytes(32)
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env[LINK_KEY_ENV] = key.hex()
    env.setdefault("PYTHONUNBUFFERED", "1")
    failed = True
    with Listener(("127.0.0.1", 0), authkey=key) as listener, open(log_path, "wb") as log:
        host, port = listener.address
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpstudy.train.child", str(cfg_path), f"{host}:{port}"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        try:
            result = _serve(listener, proc, key, hooks, log_path)
            failed = False
            return result
        finally:
            stop_process_group(proc, grace_s=5.0)
            _dispose(workdir, log_path, label, failed, on_failure_log)


def _dispose(workdir: Path, log_path: Path, label: str, failed: bool,
             on_failure_log: Callable[[Path], None] | None) -> None:
    """Remove the trial's folder, keeping a failed trial's log where it can be found."""
    kept_elsewhere = False
    if failed and on_failure_log is not None:
        try:
            on_failure_log(log_path)
            kept_elsewhere = True
        except Exception as e:  # noqa: BLE001 - the failure itself is what matters
            _log.warning("could not keep the log of %s: %s", label, e)
    if not failed or kept_elsewhere:
        for p in workdir.iterdir():
            p.unlink(missing_ok=True)
        workdir.rmdir()
    else:
        _log.warning("%s failed; its process log is kept in %s", label, log_path)


def _serve(listener: Listener, proc: subprocess.Popen, key: bytes,
           hooks: Sequence[Callable[[dict[str, Any]], Any]], log_path: Path) -> Any:
    from .checkpoint import read_checkpoint
    from .fit import FitResult

    # ddp_spawn: the spawned rank 0 streams the epochs and the launching process
    # sends the result afterwards, on a second connection; so serve until a final
    # message arrives or the child is gone
    message: dict[str, Any] | None = None
    while (conn := _accept(listener, proc, key)) is not None:
        with conn:
            message = _relay(conn, hooks)
        if message is not None and message.get("kind") in ("final", "error"):
            break
        if proc.poll() is not None:
            break
    if message is not None and message.get("kind") == "final":
        try:
            proc.wait(120)  # teardown; the result is already here
        except subprocess.TimeoutExpired:
            _log.warning("trial process %d did not exit after its result", proc.pid)
        result = FitResult(**message["result"])
        if result.checkpoint_path and Path(result.checkpoint_path).is_file():
            # read now: the trial's folder (and the file) is removed when we return
            result.checkpoint = read_checkpoint(result.checkpoint_path)
        return result
    returncode = proc.wait()
    if message is not None and message.get("kind") == "error":
        error = TrialProcessError(str(message.get("reason")), returncode)
        if message.get("as_is"):  # e.g. out_of_memory: recorded without this class's name
            error.fail_reason = str(message.get("reason"))
        raise error
    log_text = log_path.read_text(encoding="utf-8", errors="replace")[-20000:]
    raise TrialProcessError(death_reason(returncode, log_text), returncode)


# ------------------------------------------------------------------ child side
class ParentLink:
    """The epoch hook of a trial process: reports records to the parent, returns its stop decision.

    Connects lazily on the first call, i.e. only in the process where
    :func:`~hpstudy.train.fit` calls hooks (global rank 0), whatever the launcher.
    Picklable (``ddp_spawn`` pickles the callbacks into the rank processes): it
    carries the address and the key, never an open connection.
    """

    def __init__(self, address: str, key: bytes):
        self.address, self.key = address, key
        self._conn: Connection | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"address": self.address, "key": self.key, "_conn": None}

    def connect(self) -> Connection:
        if self._conn is None:
            host, port = self.address.rsplit(":", 1)
            self._conn = Client((host, int(port)), authkey=self.key)
        return self._conn

    def __call__(self, record: dict[str, Any]) -> bool:
        conn = self.connect()
        send(conn, {"kind": "epoch", "record": record})
        answer = receive(conn)
        if answer is None:
            raise ConnectionError("the trial's parent process closed the link")
        return bool(answer.get("stop", False))

    def finish(self, message: dict[str, Any]) -> None:
        """Send the final message and close."""
        conn = self.connect()
        send(conn, message)
        conn.close()
        self._conn = None


def is_global_zero() -> bool:
    """Rank 0 of the job: the launching process (no ``LOCAL_RANK``) or ``LOCAL_RANK=0``."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and \
        int(os.environ.get("NODE_RANK", "0")) == 0


def result_message(result: Any) -> dict[str, Any]:
    """The parts of a :class:`FitResult` the parent records (no module, no data)."""
    keys = ("history", "status", "monitor", "mode", "best_epoch", "best", "reason", "test",
            "num_params", "data_info", "duration_s", "checkpoint_path", "validated", "metrics")
    return {"kind": "final", "result": {k: getattr(result, k) for k in keys}}


def main(argv: list[str] | None = None) -> int:
    """Train the concrete config in CONFIG, reporting to the parent at ADDRESS."""
    parser = argparse.ArgumentParser(prog="python -m hpstudy.train.child")
    parser.add_argument("config", help="concrete trial config (YAML)")
    parser.add_argument("address", help="the parent's HOST:PORT")
    args = parser.parse_args(argv)
    link = ParentLink(args.address, bytes.fromhex(os.environ.get(LINK_KEY_ENV, "")))
    try:
        from ..config import from_dict, load_yaml_text
        from .fit import fit

        with open(args.config, encoding="utf-8") as f:
            # the parent built and validated this concrete config: schema only
            cfg = from_dict(load_yaml_text(f.read()), args.config, concrete=True)
        result = fit(cfg, hooks=[link])
    except BaseException as e:  # noqa: BLE001 - reported to the parent, then exit 1
        if is_global_zero():
            own = getattr(e, "fail_reason", None)  # a reason made to be recorded as is
            reason = (own if isinstance(own, str) and own else f"{type(e).__name__}: {e}")[:1000]
            traceback.print_exc()
            try:
                link.finish({"kind": "error", "reason": reason, "as_is": bool(own)})
            except OSError:
                pass  # the parent is gone or never listened: the exit code speaks
        return 1
    if is_global_zero():
        if result.module is not None and result.best_epoch is not None and (
                cfg.tracking.register_best or cfg.tracking.log_checkpoints):
            from .checkpoint import save_checkpoint

            # the weights live only here: the parent logs them if the trial is wanted
            result.checkpoint_path = str(save_checkpoint(
                result, os.path.join(os.path.dirname(os.path.abspath(args.config)),
                                     "checkpoint.pt")))
        link.finish(result_message(result))
        # the result is delivered: skip interpreter teardown (about 2 s of torch and
        # Lightning clean-up per trial); the parent ends the other ranks
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
