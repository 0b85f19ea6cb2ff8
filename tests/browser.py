"""Open a page in real headless Chromium: JavaScript errors, rendered Plotly figures, a screenshot.

No DevTools protocol and no Python browser driver: two plain Chromium runs.

1. ``--dump-dom`` with ``--enable-logging=stderr --v=0``: Chromium prints every
   console message to stderr (``INFO:CONSOLE... "Uncaught TypeError: ...",
   source: URL (line)``) and the DOM after scripts ran to stdout. For a local
   file, a copy with a small probe script is loaded instead; the probe records
   ``window.onerror``, unhandled promise rejections, failed resource loads and
   ``console.error`` into an attribute of ``<html>`` that the DOM dump carries
   (stderr alone cannot tell ``console.error`` from ``console.log``).
2. ``--screenshot`` of the page itself (not the probe copy).

``screenshot_and_check(url_or_file, out_png)`` returns what it saw; tests
assert on it. ``ensure_chromium()`` finds Chromium, installing Debian's
``chromium`` with apt-get when it is missing and that is possible.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

# what this kind of machine needs (no sandbox as root; without the networking flags
# Chromium tries, and fails, to reach Google's hosts at every start)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_CONSOLE = re.compile(r':CONSOLE[:(]\d*\)?\] "(?P<msg>.*)", source: (?P<src>.*?) \((?P<line>\d+)\)')
_ERRORS_ATTR = "data-probe-errors"
_MEASURE_ATTR = "data-probe-measure"
_MEASURE = """<script>window.addEventListener('load',function(){setTimeout(function(){
var v;try{v=(function(){@JS@})();}catch(e){v={'error':String(e)};}
document.documentElement.setAttribute('@ATTR@',JSON.stringify(v));},@DELAY@);});</script>"""
_PROBE = """<script>(function(){var e=[];function r(m){e.push(String(m));
document.documentElement.setAttribute('@ATTR@',JSON.stringify(e));}
window.addEventListener('error',function(ev){var t=ev.target;
if(t&&t!==window&&(t.src||t.href)){r('failed to load '+(t.src||t.href));return;}
r((ev.message||'error')+' at '+(ev.filename||'?')+':'+(ev.lineno||0));},true);
window.addEventListener('unhandledrejection',function(ev){r('unhandled rejection: '+ev.reason);});
var ce=console.error;console.error=function(){r('console.error: '+
Array.prototype.join.call(arguments,' '));return ce.apply(console,arguments);};
document.documentElement.setAttribute('@ATTR@','[]');})();</script>""".replace("@ATTR@", _ERRORS_ATTR)


class BrowserUnavailable(RuntimeError):
    """No Chromium could be found or installed."""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary on PATH (or $CHROMIUM), else None."""
    env = os.environ.get("CHROMIUM")
    if env and shutil.which(env):
        return shutil.which(env)
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure_chromium(install: bool = True, timeout_s: float = 900) -> tuple[str | None, str]:
    """Chromium's path, installing Debian's ``chromium`` package when missing.

    Returns:
        ``(path, "")`` when available, ``(None, reason)`` when not (the reason is
        what a skipped test should say).
    """
    path = find_chromium()
    if path or not install:
        return path, "" if path else "chromium not found on PATH"
    if not shutil.which("apt-get"):
        return None, "chromium not found and apt-get is not available to install it"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return None, "chromium not found and installing it needs root (apt-get install chromium)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        out = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env,
                             capture_output=True, text=True, timeout=timeout_s)
        if out.returncode != 0:  # package lists may be missing on a fresh image
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True,
                           timeout=timeout_s, check=False)
            out = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env,
                                 capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"installing chromium with apt-get failed: {e}"
    path = find_chromium()
    if path is None:
        tail = (out.stderr or out.stdout or "").strip().splitlines()[-1:] or ["no output"]
        return None, f"apt-get install chromium failed: {tail[0]}"
    return path, ""


def need_chromium() -> str:
    """Chromium's path for a test (installed with apt-get when missing and possible).

    Skips the test when there is none; under CI (``$CI`` set) fails it with the
    reason instead, so that a CI run cannot pass by skipping browser tests.
    """
    from servers import service_unavailable

    path, why = ensure_chromium()
    if path is None:
        service_unavailable(f"headless Chromium unavailable: {why}")
    return path


class _PlotCounter(HTMLParser):
    """Counts Plotly containers (``.plotly``) and those holding a drawn ``svg.main-svg``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, set[str]]] = []
        self.plots = 0
        self.drawn = 0
        self._open: list[dict[str, Any]] = []  # .plotly containers we are inside
        self.errors_attr: str | None = None
        self.measure_attr: str | None = None

    _VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
             "param", "source", "track", "wbr"}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html" and _ERRORS_ATTR in a:
            self.errors_attr = a[_ERRORS_ATTR]
        if tag == "html" and _MEASURE_ATTR in a:
            self.measure_attr = a[_MEASURE_ATTR]
        if tag in self._VOID:
            return
        classes = set((a.get("class") or "").split())
        self.stack.append((tag, classes))
        if tag == "div" and "plotly" in classes:
            self.plots += 1
            self._open.append({"depth": len(self.stack), "svg": 0, "marks": 0})
        elif self._open:
            cur = self._open[-1]
            if tag == "svg" and "main-svg" in classes:
                cur["svg"] += 1
            # something drawn: a path/line/text mark inside the figure's svg
            if cur["svg"] and tag in ("path", "rect", "circle", "text", "line", "polyline"):
                cur["marks"] += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self._VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._VOID:
            return
        # pop to the matching open tag (the dump is well formed; this is belt and braces)
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                depth = i + 1
                del self.stack[i:]
                while self._open and self._open[-1]["depth"] >= depth:
                    done = self._open.pop()
                    if done["svg"] and done["marks"]:
                        self.drawn += 1
                break


def _target(url_or_file: str | os.PathLike[str]) -> tuple[str, Path | None]:
    s = str(url_or_file)
    if re.match(r"^[a-z][a-z0-9+.-]*://", s):
        return s, None
    path = Path(s).resolve()
    if not path.is_file():
        raise FileNotFoundError(path)
    return path.as_uri(), path


def _run(chromium: str, args: list[str], url: str, timeout_s: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="hpstudy-chromium-") as profile:
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr",
               "--v=0", *args, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              errors="replace")


def _console(stderr: str) -> list[dict[str, Any]]:
    return [{"message": m["msg"], "source": m["src"], "line": int(m["line"])}
            for m in _CONSOLE.finditer(stderr)]


def screenshot_and_check(url_or_file: str | os.PathLike[str], out_png: str | os.PathLike[str],
                         *, window_size: tuple[int, int] = (1400, 900),
                         virtual_time_ms: int = 15000, timeout_s: float = 120,
                         chromium: str | None = None, measure_js: str | None = None,
                         measure_delay_ms: int = 1500) -> dict[str, Any]:
    """Load a page in headless Chromium, collect JS errors, count Plotly figures, screenshot it.

    Args:
        url_or_file: an ``http(s)://``/``file://`` URL or a local HTML file.
        out_png: where the screenshot goes (its folder is created).
        window_size: viewport in pixels; the screenshot is this size (use a tall
            one to capture a long page).
        virtual_time_ms: Chromium's virtual-time budget: scripts and timers run
            until the page is idle or this much virtual time passed.
        timeout_s: wall-clock limit of each Chromium run.
        chromium: the binary (default: :func:`find_chromium`).
        measure_js: the body of a JavaScript function run ``measure_delay_ms`` after
            the page loaded (local files only), in a viewport of ``window_size``;
            what it returns (JSON-able: bounding boxes, counts) comes back as
            ``measure``.
        measure_delay_ms: virtual milliseconds between load and the measurement
            (figures draw first).

    Returns:
        ``errors`` (uncaught exceptions from the console, and for local files
        also ``console.error``, failed loads and unhandled rejections),
        ``console`` (every console message: dicts with message/source/line),
        ``plots`` (``.plotly`` containers in the rendered DOM), ``plots_drawn``
        (those whose ``svg.main-svg`` holds drawn marks), ``probe`` (True when
        the probe ran), ``screenshot`` (path, or None if Chromium wrote none),
        ``dom`` (the rendered HTML), ``measure`` (what ``measure_js`` returned,
        None without it) and ``returncodes``.

    Raises:
        BrowserUnavailable: no Chromium.
        FileNotFoundError: a local file that does not exist.
    """
    chromium = chromium or find_chromium()
    if chromium is None:
        raise BrowserUnavailable("chromium not found; see ensure_chromium()")
    url, path = _target(url_or_file)
    budget = f"--virtual-time-budget={virtual_time_ms}"

    probe_path: Path | None = None
    dom_url = url
    if path is not None:  # a sibling copy, so relative resources resolve as in the original
        text = path.read_text(encoding="utf-8", errors="replace")
        if measure_js:  # the measuring script runs in the probe copy, at the end of its body
            text += _MEASURE.replace("@JS@", measure_js).replace(
                "@ATTR@", _MEASURE_ATTR).replace("@DELAY@", str(int(measure_delay_ms)))
        m = re.search(r"<head[^>]*>", text, flags=re.I)
        at = m.end() if m else 0
        probe_path = path.with_name(f".{path.stem}.probe-{uuid.uuid4().hex[:8]}.html")
        probe_path.write_text(text[:at] + _PROBE + text[at:], encoding="utf-8")
        dom_url = probe_path.as_uri()
    w, h = window_size
    size = f"--window-size={w},{h}"  # the DOM of the same viewport (grids render what is in view)
    try:
        dom_run = _run(chromium, [budget, size, "--dump-dom"], dom_url, timeout_s)
    finally:
        if probe_path is not None:
            probe_path.unlink(missing_ok=True)

    out = Path(out_png).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    shot_run = _run(chromium, [budget, "--hide-scrollbars", size,
                               f"--screenshot={out}"], url, timeout_s)

    counter = _PlotCounter()
    counter.feed(dom_run.stdout)
    console = _console(dom_run.stderr) + _console(shot_run.stderr)
    probed = json.loads(counter.errors_attr) if counter.errors_attr else []
    errors = list(probed)
    for c in console:  # uncaught errors the probe did not already report
        msg = c["message"]
        if msg.startswith("Uncaught") and not any(p.startswith(msg) for p in probed):
            errors.append(msg)
    return {
        "errors": list(dict.fromkeys(errors)),
        "console": console,
        "plots": counter.plots,
        "plots_drawn": counter.drawn,
        "probe": counter.errors_attr is not None,
        "screenshot": str(out) if out.is_file() else None,
        "dom": dom_run.stdout,
        "measure": json.loads(counter.measure_attr) if counter.measure_attr else None,
        "returncodes": (dom_run.returncode, shot_run.returncode),
    }
