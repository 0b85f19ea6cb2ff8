"""Run one trial in its own process: crash isolation and multi-device (DDP) trials.

The process that holds the Optuna trial (the *parent*) has already sampled the
trial's hyperparameters; it writes the concrete config to a file and starts
``python -m hpstudy.train.ddp_worker CONFIG ADDRESS`` in a new session. For
``train.strategy: ddp`` Lightning relaunches that child command once per extra
rank, so every rank trains the same concrete config and none of them can
create a trial of its own (optuna #3281, #4835). Rank 0 streams each epoch's
record (reduced across ranks) to the parent over a 127.0.0.1 socket; the
parent logs it to MLflow, reports it to Optuna, and answers whether to prune;
rank 0 broadcasts the answer so every rank stops together. This works with
every Optuna storage: only the parent touches it.

A child that dies (segfault, out-of-memory kill, ``os._exit``) closes the
socket; the parent turns the exit status into :class:`TrialProcessError`
("killed by signal SIGKILL ..."), which the objective records as the trial's
``fail_reason`` and the MLflow run's ``hpstudy.fail_reason``; the study goes on.

Cost: a fresh process imports torch and Lightning again (seconds, see
``benchmarks/parallel.py``), so single-device trials stay in-process unless
``train.isolate: true``.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._proc import stop_process_group
from ..config import StudyConfig
from ..train import FitResult, read_checkpoint
from ..train.ddp_worker import DIST_ENV, LINK_TOKEN_ENV, receive, send

_log = logging.getLogger("hpstudy")
_SPAWNING_STRATEGIES = ("ddp", "fsdp", "deepspeed")
_SIGNAL_HINTS = {
    "SIGKILL": "out of memory? the kernel's OOM killer sends SIGKILL",
    "SIGSEGV": "segmentation fault",
    "SIGBUS": "bus error",
    "SIGABRT": "aborted",
}


class TrialProcessError(RuntimeError):
    """The trial's process failed or died; ``str()`` is the reason that gets recorded.

    Attributes:
        returncode: the child's exit status (negative: killed by that signal).
    """

    def __init__(self, reason: str, returncode: int | None = None):
        super().__init__(reason)
        self.returncode = returncode


def device_count(devices: int | str | list[int], accelerator: str = "auto") -> int:
    """How many processes Lightning starts for ``train.devices`` on one node."""
    if isinstance(devices, list):
        return len(devices)
    if isinstance(devices, str):
        s = devices.strip()
        if "," in s:
            return len([p for p in s.split(",") if p.strip()])
        if s.lstrip("-").isdigit():
            devices = int(s)
        else:  # "auto": every GPU when there are GPUs, one CPU process otherwise
            return max(1, _gpu_count()) if accelerator in ("auto", "gpu", "cuda") else 1
    if devices == -1:
        return _gpu_count() or os.cpu_count() or 1
    return int(devices)


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def needs_process(cfg: StudyConfig) -> bool:
    """Whether a trial of ``cfg`` trains in a child process.

    Yes for ``train.isolate: true``, for more than one device or node, and for
    strategies that launch processes (``ddp``, ``ddp_spawn``, ``fsdp``...): a
    launcher in the study's own process would re-run the study per rank.
    """
    t = cfg.train
    return bool(t.isolate or t.num_nodes > 1 or device_count(t.devices, t.accelerator) > 1
                or t.strategy.startswith(_SPAWNING_STRATEGIES))


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


def _accept(server: socket.socket, proc: subprocess.Popen, token: str
            ) -> tuple[socket.socket, Any] | None:
    """Wait for rank 0's hello (None if the child exits first)."""
    while True:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            if proc.poll() is not None:
                return None
            continue
        conn.settimeout(60)  # the hello follows the connect immediately
        reader = conn.makefile("r", encoding="utf-8")
        try:
            hello = receive(reader)
        except (OSError, ValueError):
            hello = None
        if hello and hello.get("kind") == "hello" and secrets.compare_digest(
            str(hello.get("token", "")), token
        ):
            conn.settimeout(None)  # epochs take as long as they take; a death closes the socket
            return conn, reader
        conn.close()  # a stranger on the port: ignore it


def run_trial_process(
    cfg: StudyConfig,
    report: Callable[[dict[str, Any]], bool],
    *,
    label: str = "trial",
    on_failure_log: Callable[[Path], None] | None = None,
) -> FitResult:
    """Train ``cfg`` in a child process (all ranks of it), reporting epochs to ``report``.

    Args:
        cfg: the concrete trial config (already sampled).
        report: called in this process with each epoch's record; returns True to
            stop (prune). It logs to MLflow and reports to Optuna.
        label: names the temporary folder (``trial-0007``).
        on_failure_log: called with the child's log file when the trial fails
            (e.g. to attach it to the MLflow run).

    Returns:
        The :class:`FitResult` rank 0 sent (``module`` and ``datamodule`` are None).

    Raises:
        TrialProcessError: the child raised (its reason), or died (signal/exit code).
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"hpstudy-{label}-"))
    cfg_path, log_path = workdir / "config.yaml", workdir / "trial.log"
    cfg_path.write_text(cfg.to_yaml(), encoding="utf-8")
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env[LINK_TOKEN_ENV] = token
    env.setdefault("PYTHONUNBUFFERED", "1")
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    address = f"127.0.0.1:{server.getsockname()[1]}"
    failed = True
    with open(log_path, "wb") as log:
        # a new session: the group holds rank 0 and every rank it launches, so one
        # killpg ends them all (an orphaned rank would wait on a collective forever)
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpstudy.train.ddp_worker", str(cfg_path), address],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        try:
            result = _serve(server, proc, token, report, log_path)
            failed = False
            return result
        finally:
            server.close()
            stop_process_group(proc, grace_s=5.0)
            kept_elsewhere = False
            if failed and on_failure_log is not None:
                try:
                    on_failure_log(log_path)
                    kept_elsewhere = True
                except Exception as e:  # noqa: BLE001 - the failure itself is what matters
                    _log.warning("could not keep the log of %s: %s", label, e)
            if not failed or kept_elsewhere:
                _remove(workdir)
            else:
                _log.warning("%s failed; its process log is kept in %s", label, log_path)


def _remove(workdir: Path) -> None:
    for p in workdir.iterdir():
        p.unlink(missing_ok=True)
    workdir.rmdir()


def _serve(server: socket.socket, proc: subprocess.Popen, token: str,
           report: Callable[[dict[str, Any]], bool], log_path: Path) -> FitResult:
    # ddp_spawn: the spawned rank 0 streams the epochs and the launching process
    # sends the result afterwards, on a second connection; so serve until a final
    # message arrives or the child is gone
    message: dict[str, Any] | None = None
    while (accepted := _accept(server, proc, token)) is not None:
        conn, reader = accepted
        try:
            message = _relay(conn, reader, report)
        finally:
            conn.close()
        if message is not None and message.get("kind") in ("final", "error"):
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
        raise TrialProcessError(str(message.get("reason")), returncode)
    log_text = log_path.read_text(encoding="utf-8", errors="replace")[-20000:]
    raise TrialProcessError(death_reason(returncode, log_text), returncode)


def _relay(conn: socket.socket, reader: Any, report: Callable[[dict[str, Any]], bool]
           ) -> dict[str, Any] | None:
    """Answer epoch records until the connection ends; returns the last other message."""
    while True:
        try:
            message = receive(reader)
        except (OSError, ValueError):
            return None  # a torn line from a dying process
        if message is None or message.get("kind") != "epoch":
            return message
        stop = bool(report(message["record"]))
        try:
            send(conn, {"stop": stop})
        except OSError:
            return None  # the child died meanwhile: its exit status says why


# ------------------------------------------------------------------ heartbeats
# A worker that dies (kill -9, a lost machine) leaves its trial RUNNING. With
# RDB storage (SQLite, PostgreSQL) every trial's process writes a heartbeat;
# any worker that starts a trial first fails the trials whose heartbeat is older
# than the grace period and queues a retry (Optuna's own mechanism). Optuna
# needs whole seconds; the environment overrides them (tests use 1 s / 3 s).
HEARTBEAT_ENV = "HPSTUDY_HEARTBEAT_INTERVAL"  # seconds between heartbeats (default 20)
GRACE_ENV = "HPSTUDY_HEARTBEAT_GRACE"  # seconds of silence before a trial is stale (default 120)
RETRY_ENV = "HPSTUDY_MAX_RETRY"  # retries of a stale trial (default 2)
_PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study.PARENT_RUN_ATTR (study.py imports this module)
_TRACKERS: dict[str, Any] = {}  # study name -> Tracker of this process (set by connect)


def register_tracker(study_name: str, tracker: Any) -> None:
    """Let the stale-trial handler of this process mark MLflow runs of ``study_name``."""
    _TRACKERS[study_name] = tracker


def heartbeat_kwargs() -> dict[str, Any]:
    """``RDBStorage`` keyword arguments: heartbeat, grace period, stale-trial retry."""
    interval = int(os.environ.get(HEARTBEAT_ENV, "20"))
    grace = int(os.environ.get(GRACE_ENV, str(max(6 * interval, 2 * interval + 1))))
    retries = int(os.environ.get(RETRY_ENV, "2"))
    return {"heartbeat_interval": interval, "grace_period": grace,
            "heartbeat_stale_trial_callback": StaleTrialHandler(grace, retries)}


class StaleTrialHandler:
    """Optuna's ``heartbeat_stale_trial_callback``: record why, then retry.

    Optuna has already set the stale trial to FAIL (a finished trial takes no
    more user attrs); this marks its MLflow run FAILED with the reason and
    queues a retry with :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`
    (same parameters; ``retry_of`` in its user attrs names the lost trial).
    """

    def __init__(self, grace_s: int, max_retry: int | None):
        self.grace_s, self.max_retry = grace_s, max_retry

    def __call__(self, study: Any, trial: Any) -> None:
        import copy

        import optuna

        reason = (f"worker lost: no heartbeat for over {self.grace_s}s "
                  "(its process was killed or its machine is gone)")
        _log.warning("trial %d of %s: %s; retrying", trial.number, study.study_name, reason)
        tracker = _TRACKERS.get(study.study_name)
        if tracker is not None:
            mark_run_failed(tracker, study.study_name, trial.number,
                            trial.user_attrs.get("mlflow_run_id"), reason,
                            study.user_attrs.get(_PARENT_RUN_ATTR), trial.params)
        retry = copy.deepcopy(trial)
        attrs = {k: v for k, v in trial.user_attrs.items()
                 if k not in ("mlflow_run_id", "fail_reason")}  # the retry gets its own run
        retry.user_attrs = {**attrs, "retry_of": trial.number, "retry_reason": reason}
        with quiet_experimental():
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)(study, retry)


def mark_run_failed(tracker: Any, study_name: str, number: int, run_id: str | None,
                    reason: str, parent_id: str | None = None,
                    params: dict[str, Any] | None = None) -> str | None:
    """End the MLflow run of trial ``number`` as FAILED with ``hpstudy.fail_reason``.

    The run is found by id, or (a worker killed between creating the run and
    recording its id) by its tags; a trial killed before its run existed gets
    one now under ``parent_id`` with ``params``, so every trial keeps its run.
    Returns the run id (None if there is none and no parent to create it under).
    """
    try:
        if run_id is None:
            found = tracker.client.search_runs(
                [tracker.experiment_id],
                filter_string=(f"tags.`optuna.study_name` = '{study_name}' and "
                               f"tags.`optuna.trial_number` = '{number}' and "
                               "tags.`hpstudy.kind` = 'trial'"),
                max_results=1, order_by=["attributes.start_time DESC"],
            )
            if found:
                run_id = found[0].info.run_id
            elif parent_id is not None:
                run_id = tracker.start_trial(parent_id, study_name, number, params or {})
            else:
                return None
        tracker.end_run(run_id, "FAIL", {"hpstudy.fail_reason": reason[:1000]})
    except Exception as e:  # noqa: BLE001 - the Optuna state is what counts
        _log.warning("could not mark the MLflow run of trial %d failed: %s", number, e)
        return None
    return run_id


@contextmanager
def quiet_experimental() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning for features this project relies on deliberately."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
