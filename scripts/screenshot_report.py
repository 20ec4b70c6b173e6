"""Open a condsim HTML report in headless Chromium, fail on any console error, save a PNG.

    python scripts/screenshot_report.py REPORT.html OUT.png [--width 1400 --height 2400]
        [--max-width 900]

Talks to Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``, no
network port, standard library only) and records, while the page loads:
``Runtime.exceptionThrown`` (uncaught errors), ``Runtime.consoleAPICalled`` of type
error/assert/warning, ``Log.entryAdded`` of level error/warning (failed resource loads,
CSP, ...), ``Network.loadingFailed`` and every request that is not a ``data:`` URI or the
report itself (a self-contained report fetches nothing). The screenshot is the top
``width x height`` of the page, downscaled to ``--max-width`` and palette-quantised so it
stays small enough for the README. Needs Debian's chromium (``/usr/bin/chromium``).
Exit code 0 = clean, 1 = problems (listed), 2 = chromium missing or failed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe",
)
CONSOLE_ERROR_TYPES = {"error", "assert", "warning"}
LOG_ERROR_LEVELS = {"error", "warning"}


def find_chromium() -> str | None:
    """``chromium`` on PATH (Debian's package), else ``/usr/bin/chromium`` if present."""
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


class CDPPipe:
    """Minimal DevTools-protocol client over Chromium's fds 3 (commands) and 4 (replies);
    messages are JSON terminated by NUL."""

    def __init__(self, chromium: str, profile: str, width: int, height: int) -> None:
        # a file, not a pipe: chromium's chatty stderr must never fill a buffer and block it
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        cmd_r, self._cmd_w = _high_fds(os.pipe())
        self._out_r, out_w = _high_fds(os.pipe())
        # Chromium reads commands on fd 3 and replies on fd 4: bash moves the pipes there
        # (dash cannot redirect fds above 9; Popen closes fds after preexec_fn)
        redirect = f'exec "$0" "$@" 3<&{cmd_r} 4>&{out_w} {cmd_r}<&- {out_w}>&-'
        self.proc = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", redirect, chromium, *CHROMIUM_FLAGS,
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
            pass_fds=(cmd_r, out_w),
        )
        os.close(cmd_r)
        os.close(out_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """Send a command and wait for its reply (events seen meanwhile are kept)."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply is None:
                raise TimeoutError(f"chromium did not answer {method} in {timeout:.0f}s")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float) -> bool:
        """Read events until ``method`` arrives (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        if any(e.get("method") == method for e in self.events):
            return True
        while True:
            msg = self._read(deadline)
            if msg is None:
                return False
            self.events.append(msg)
            if msg.get("method") == method:
                return True

    def drain(self, seconds: float) -> None:
        """Collect late events (errors thrown after load) for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (msg := self._read(deadline)) is not None:
            self.events.append(msg)

    def _read(self, deadline: float) -> dict[str, Any] | None:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out_r], [], [], left)[0]:
                return None
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe (crashed or exited): "
                                   + self.stderr_tail())
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def stderr_tail(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-800:]

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._out_r)
        self._log.close()


def _high_fds(fds: tuple[int, int]) -> tuple[int, int]:
    """The pipe's ends moved to fds >= 10, so redirecting them to 3 and 4 cannot collide."""
    out = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds)
    for fd in fds:
        os.close(fd)
    return out  # type: ignore[return-value]


@dataclass
class PageCheck:
    """What the browser reported while loading the page."""

    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    png: bytes = b""


def _problems(events: list[dict[str, Any]], page_url: str) -> tuple[list[str], list[str]]:
    problems, requests = [], []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            text = d.get("exception", {}).get("description") or d.get("text", "")
            problems.append(f"uncaught exception: {text}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in CONSOLE_ERROR_TYPES:
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            problems.append(f"console.{p['type']}: {args}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") in LOG_ERROR_LEVELS:
            entry = p["entry"]
            problems.append(f"log {entry['level']}: {entry.get('text')} {entry.get('url', '')}")
        elif method == "Network.loadingFailed":
            problems.append(f"load failed: {p.get('errorText')} ({p.get('type')})")
        elif method == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            requests.append(url)
            if not url.startswith("data:") and url != page_url:
                problems.append(f"external request (the report must be self-contained): {url}")
    return problems, requests


def check_page(report: Path, width: int = 1400, height: int = 2400,
               chromium: str | None = None, settle: float = 0.5) -> PageCheck:
    """Load ``report`` in headless Chromium; problems seen and a ``width x height`` PNG."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium not found: apt-get install -y chromium")
    url = report.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="condsim-chromium-") as profile:
        cdp = CDPPipe(chromium, profile, width, height)
        try:
            target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = cdp.send("Target.attachToTarget",
                               {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                cdp.send(f"{domain}.enable", session=session)
            cdp.send("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                session=session)
            cdp.events.clear()
            nav = cdp.send("Page.navigate", {"url": url}, session=session)
            check = PageCheck()
            if nav.get("errorText"):
                check.problems.append(f"navigation failed: {nav['errorText']}")
            if not cdp.wait_event("Page.loadEventFired", timeout=60):
                check.problems.append("page did not finish loading in 60 s")
            cdp.drain(settle)
            shot = cdp.send("Page.captureScreenshot", {"format": "png"}, session=session)
            check.png = base64.b64decode(shot["data"])
            problems, check.requests = _problems(cdp.events, url)
            check.problems += problems
            return check
        finally:
            cdp.close()


def small_png(png: bytes, max_width: int, colors: int = 192) -> bytes:
    """Downscale to ``max_width`` and quantise to a palette (README-sized screenshot)."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > max_width:
        img = img.resize((max_width, round(img.height * max_width / img.width)),
                         Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG",
                                                                       optimize=True)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=2400)
    ap.add_argument("--max-width", type=int, default=900,
                    help="downscale the saved PNG to this width (0 = keep full size)")
    args = ap.parse_args(argv)
    if not args.report.is_file():
        print(f"error: {args.report}: no such report")
        return 2
    try:
        check = check_page(args.report, args.width, args.height)
    except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}")
        return 2
    png = small_png(check.png, args.max_width) if args.max_width else check.png
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(png)
    tmp.replace(args.out)
    for p in check.problems:
        print("problem:", p)
    print(f"screenshot {args.out} ({len(png) // 1024} KB); {len(check.requests)} request(s), "
          f"{len(check.problems)} console error(s)/problem(s)")
    return 1 if check.problems else 0


if __name__ == "__main__":
    sys.exit(main())
