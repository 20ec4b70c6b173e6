"""Open a condsim HTML report in headless Chromium, fail on console errors, save a PNG.

Usage: python scripts/screenshot_report.py REPORT.html OUT.png [--width 1200 --height 2200]
Needs Debian's chromium (/usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def screenshot(report: Path, out: Path, width: int, height: int) -> list[str]:
    """Render ``report``; return console error lines (empty list = clean)."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--hide-scrollbars", f"--window-size={width},{height}",
             f"--screenshot={out}", report.resolve().as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    log = proc.stderr.splitlines()
    errors = [line for line in log if re.search(r"CONSOLE|Uncaught|Failed to load", line)]
    if proc.returncode != 0 or not out.is_file():
        errors.append(f"chromium exited {proc.returncode}: {proc.stderr[-500:]}")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=2200)
    args = ap.parse_args()
    errors = screenshot(args.report, args.out, args.width, args.height)
    for e in errors:
        print("console:", e)
    print(f"screenshot {args.out} ({args.out.stat().st_size if args.out.exists() else 0} bytes),"
          f" {len(errors)} console error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
