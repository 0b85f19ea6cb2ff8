"""Recording a benchmark's real output in ``benchmarks/README.md``.

A benchmark run with ``--write`` prints as usual, and its captured output
(with a line naming the machine, the date and the command) replaces the
section between ``<!-- begin NAME -->`` and ``<!-- end NAME -->`` in the
README: the numbers there are always pasted by the script that made them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """``2 cores (AMD EPYC), no GPU, torch 2.14.1, load 1.2, 2026-11-30 17:40 UTC``."""
    import torch

    gpu = (f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
           if torch.cuda.is_available() else "no GPU")
    try:
        load = f", load average {os.getloadavg()[0]:.1f}"
    except OSError:
        load = ""
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{os.cpu_count()} cores ({cpu_model()}), {gpu}, torch {torch.__version__}, "
            f"Python {platform.python_version()}{load}, {now}")


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the part between NAME's markers replaced by ``body`` (appended if absent)."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        return head + block + tail
    return text.rstrip("\n") + "\n\n" + block + "\n"


@contextlib.contextmanager
def recorded(name: str, argv: list[str], write: bool, readme: Path = README) -> Iterator[None]:
    """Tee stdout while the block runs; with ``write``, paste it into the README afterwards."""
    if not write:
        yield
        return
    buf, old = io.StringIO(), sys.stdout

    class _Tee(io.TextIOBase):
        def write(self, s: str) -> int:
            buf.write(s)
            return old.write(s)

        def flush(self) -> None:
            old.flush()

    sys.stdout = _Tee()
    try:
        yield
    finally:
        sys.stdout = old
    command = " ".join(["python", f"benchmarks/{name}", *argv])
    body = (f"Latest run: `{command}` on {machine_line()}\n\n```\n"
            f"{buf.getvalue().rstrip()}\n```")
    readme.write_text(replace_section(readme.read_text(), name, body))
    print(f"wrote the output into {readme}")
