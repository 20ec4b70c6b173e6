"""Reading annotation JSON with errors that name the file, the place and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from condsim.errors import DataError


def read_utf8(path: str | Path, what: str = "file") -> str:
    """The text of ``path`` decoded as UTF-8 (a leading BOM is dropped).

    :class:`DataError` naming the file when it is missing, a folder, unreadable, or not
    UTF-8 (with the byte offset of the first bad byte).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such {what}") from exc
    except IsADirectoryError as exc:
        raise DataError(f"{path}: is a folder; expected the {what}") from exc
    except PermissionError as exc:
        raise DataError(f"{path}: permission denied reading the {what}") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (byte offset {exc.start}: {exc.reason}, byte "
            f"0x{data[exc.start]:02x}); re-save the {what} as UTF-8"
        ) from exc


def load_json(path: str | Path, what: str = "annotation file") -> Any:
    """Parsed JSON of ``path``; :class:`DataError` naming the file when it is missing, a
    folder, not UTF-8 (byte offset) or malformed (line and column)."""
    path = Path(path)
    text = read_utf8(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (the file ends early: truncated?)" if exc.pos >= len(text.rstrip()) else ""
        raise DataError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}{hint}"
        ) from exc
    except RecursionError as exc:
        raise DataError(f"{path}: JSON nested too deeply to read") from exc
