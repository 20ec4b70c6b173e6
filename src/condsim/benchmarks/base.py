"""Benchmark metadata as data (mteb-style)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class BenchmarkMeta:
    name: str
    description: str
    main_score: str
    split: str
    protocol_version: str
    reference: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
