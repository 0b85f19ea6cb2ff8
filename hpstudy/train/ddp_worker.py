"""Child-process entry point for one trial: ``python -m hpstudy.train.ddp_worker CONFIG ADDRESS``.

The process that talks to Optuna samples the trial once, writes the concrete
config to ``CONFIG`` (YAML) and starts this module. Training here is a plain
:func:`hpstudy.train.fit`; Lightning's ``ddp`` strategy relaunches this same
command line once per extra rank (``LOCAL_RANK=1 python -m
hpstudy.train.ddp_worker CONFIG ADDRESS``), so every rank reads the same
concrete config: hyperparameters are identical across ranks by construction
(optuna #3281, #4835). ``ddp_spawn`` works too: the epoch hook below is a
picklable address, not an open socket.

Only global rank 0 talks to the parent, over a TCP connection to ``ADDRESS``
(127.0.0.1, one JSON object per line, authenticated by the token in
``$HPSTUDY_LINK_TOKEN``):

- ``{"kind": "hello", "pid": ...}`` once, on connecting;
- ``{"kind": "epoch", "record": {...}}`` after each validation (the record
  already reduced across ranks); the parent logs it to MLflow, reports it to
  Optuna and answers ``{"stop": true|false}``; rank 0 broadcasts that answer
  (``fit``'s recorder), so all ranks stop together when the trial is pruned;
- ``{"kind": "final", "result": {...}}`` or ``{"kind": "error", "reason": ...}``.

Nothing here imports Optuna or MLflow: ranks never touch the study or the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import traceback
from typing import Any

LINK_TOKEN_ENV = "HPSTUDY_LINK_TOKEN"
# Variables a fresh trial process must not inherit: they would make Lightning
# believe it is already one rank of a launched job (a parent that ran DDP).
DIST_ENV = ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
            "MASTER_ADDR", "MASTER_PORT", "PL_GLOBAL_SEED", "PL_TRAINER_GPUS")


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


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    """One JSON line (``allow_nan``: a diverged loss is a fact to report, not an error)."""
    sock.sendall((json.dumps(_plain(message)) + "\n").encode())


def receive(reader: Any) -> dict[str, Any] | None:
    """The next JSON line from a socket's file reader (None at end of stream)."""
    line = reader.readline()
    if not line:
        return None
    return json.loads(line)


class ParentLink:
    """The epoch hook of a trial process: reports records to the parent, returns its stop decision.

    Connects lazily on the first call, i.e. only in the process where
    :func:`fit` calls hooks (global rank 0), whatever the launcher.
    """

    def __init__(self, address: str, token: str):
        self.address, self.token = address, token
        self._sock: socket.socket | None = None
        self._reader: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # ddp_spawn pickles the callbacks into the rank processes: carry the address only
        return {"address": self.address, "token": self.token, "_sock": None, "_reader": None}

    def connect(self) -> None:
        if self._sock is not None:
            return
        host, port = self.address.rsplit(":", 1)
        self._sock = socket.create_connection((host, int(port)), timeout=30)
        self._sock.settimeout(None)  # the parent may take its time (a slow MLflow server)
        self._reader = self._sock.makefile("r", encoding="utf-8")
        send(self._sock, {"kind": "hello", "pid": os.getpid(), "token": self.token})

    def __call__(self, record: dict[str, Any]) -> bool:
        self.connect()
        assert self._sock is not None
        send(self._sock, {"kind": "epoch", "record": record})
        answer = receive(self._reader)
        if answer is None:
            raise ConnectionError("the trial's parent process closed the link")
        return bool(answer.get("stop", False))

    def finish(self, message: dict[str, Any]) -> None:
        """Send the final message and close."""
        self.connect()
        assert self._sock is not None
        send(self._sock, message)
        self._sock.close()
        self._sock = None


def is_global_zero() -> bool:
    """Rank 0 of the job: the launching process (no ``LOCAL_RANK``) or ``LOCAL_RANK=0``."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and \
        int(os.environ.get("NODE_RANK", "0")) == 0


def result_message(result: Any) -> dict[str, Any]:
    """The parts of a :class:`FitResult` the parent records (no module, no data)."""
    return {
        "kind": "final",
        "result": {
            "history": result.history, "status": result.status, "monitor": result.monitor,
            "mode": result.mode, "best_epoch": result.best_epoch, "best": result.best,
            "reason": result.reason, "test": result.test, "num_params": result.num_params,
            "data_info": result.data_info, "duration_s": result.duration_s,
            "checkpoint_path": result.checkpoint_path,
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Train the concrete config in CONFIG, reporting to the parent at ADDRESS."""
    parser = argparse.ArgumentParser(prog="python -m hpstudy.train.ddp_worker")
    parser.add_argument("config", help="concrete trial config (YAML)")
    parser.add_argument("address", help="the parent's HOST:PORT")
    args = parser.parse_args(argv)
    link = ParentLink(args.address, os.environ.get(LINK_TOKEN_ENV, ""))
    try:
        import yaml

        from ..config import from_dict
        from .fit import fit

        with open(args.config, encoding="utf-8") as f:
            cfg = from_dict(yaml.safe_load(f), args.config)
        result = fit(cfg, hooks=[link])
    except BaseException as e:  # noqa: BLE001 - reported to the parent, then re-raised
        if is_global_zero():
            reason = f"{type(e).__name__}: {e}"[:1000]
            traceback.print_exc()
            try:
                link.finish({"kind": "error", "reason": reason})
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
