"""``RunResult``: one evaluation of one model on one benchmark, saved as versioned JSON.

Schema ``condsim.run/1``::

    {"schema": "condsim.run/1", "condsim_version": str, "benchmark": str,
     "created": ISO-8601 str, "model": {ModelMeta fields}, "protocol": {...},
     "seed": int, "headline": {"name": str, "value": float, ...},
     "metrics": {...benchmark-specific...}, "skipped": {...counts...}, "extra": {...}}
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from condsim.errors import DataError

SCHEMA_VERSION = "condsim.run/1"


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temp file + rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass
class RunResult:
    benchmark: str
    model: dict[str, Any]
    protocol: dict[str, Any]
    seed: int
    headline: dict[str, Any]
    metrics: dict[str, Any]
    skipped: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    schema: str = SCHEMA_VERSION
    condsim_version: str = ""

    def __post_init__(self) -> None:
        if not self.condsim_version:
            from condsim import __version__

            self.condsim_version = __version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False))


def load_result(path: str | Path) -> RunResult:
    """Read a ``results.json`` (or a run directory holding one), checking its schema."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{p}: no such results file") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}: not valid JSON ({exc})") from exc
    if data.get("schema") != SCHEMA_VERSION:
        raise DataError(f"{p}: schema {data.get('schema')!r}, expected {SCHEMA_VERSION!r}")
    known = set(RunResult.__dataclass_fields__)
    return RunResult(**{k: v for k, v in data.items() if k in known})
