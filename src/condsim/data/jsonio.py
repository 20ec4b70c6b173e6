"""Reading annotation JSON with errors that name the file and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from condsim.errors import DataError


def load_json(path: str | Path, what: str = "annotation file") -> Any:
    """Parsed JSON of ``path``; :class:`DataError` naming the file when it is missing or
    malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such {what}") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON ({exc})") from exc
