"""``RunResult``: one evaluation of one model on one benchmark, saved as versioned JSON.

Schema ``condsim.run/1``::

    {"schema": "condsim.run/1", "condsim_version": str, "benchmark": str,
     "created": ISO-8601 str, "model": {ModelMeta fields}, "protocol": {...},
     "seed": int, "headline": {"name": str, "value": float, ...},
     "metrics": {...benchmark-specific...}, "skipped": {...counts...}, "extra": {...}}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from condsim.errors import DataError
from condsim.io import atomic_write_json

SCHEMA_VERSION = "condsim.run/1"


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
        """Write the result as indented JSON (atomically; NaN refused); returns ``path``."""
        return atomic_write_json(path, self.to_dict())


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
