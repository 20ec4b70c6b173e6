"""``RunResult``: one evaluation of one model on one benchmark, saved as versioned JSON.

Schema ``condsim.run/1``::

    {"schema": "condsim.run/1", "condsim_version": str, "benchmark": str,
     "created": ISO-8601 str, "model": {ModelMeta fields}, "protocol": {...},
     "seed": int, "headline": {"name": str, "mean": float, "ci_low": float,
     "ci_high": float, "std": float (fold-based benchmarks)},
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


def headline_value(headline: dict[str, Any], where: str) -> float:
    """The headline's ``mean`` (LRVS-F results written before every benchmark's headline
    had the cell shape ``mean``/``ci_low``/``ci_high`` call it ``value``); a clear error
    naming ``where`` when it is absent or not finite."""
    import math

    value = headline.get("mean", headline.get("value"))
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise DataError(f"{where}: headline {headline!r} has no numeric 'mean'")
    return float(value)


#: required fields of a results.json and their JSON types
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "benchmark": str, "model": dict, "protocol": dict, "seed": int, "headline": dict,
    "metrics": dict,
}


def load_result(path: str | Path) -> RunResult:
    """Read a ``results.json`` (or a run directory holding one), checking its schema.

    :class:`DataError` naming the file when it is missing, not UTF-8, not valid JSON
    (truncated: line and column), not a JSON object, of another schema, or lacks a field
    (``metrics``, ...) or has one of the wrong type.
    """
    from condsim.data.jsonio import read_utf8

    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.exists():
        raise DataError(f"{p}: no such results file")
    text = read_utf8(p, "results file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}: not valid JSON (line {exc.lineno} column {exc.colno}: "
                        f"{exc.msg}); rerun the evaluation to rewrite it") from exc
    if not isinstance(data, dict):
        raise DataError(f"{p}: expected a JSON object (a condsim results file), found a "
                        f"{type(data).__name__}")
    if data.get("schema") != SCHEMA_VERSION:
        raise DataError(f"{p}: schema {data.get('schema')!r}, expected {SCHEMA_VERSION!r}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise DataError(f"{p}: not a complete results file: no {', '.join(missing)}; rerun "
                        "the evaluation to rewrite it")
    wrong = [f"{k} is a {type(data[k]).__name__}" for k, t in _REQUIRED.items()
             if not isinstance(data[k], t) or (t is int and isinstance(data[k], bool))]
    if wrong:
        raise DataError(f"{p}: malformed results file ({'; '.join(wrong)}); rerun the "
                        "evaluation to rewrite it")
    known = set(RunResult.__dataclass_fields__)
    return RunResult(**{k: v for k, v in data.items() if k in known})
