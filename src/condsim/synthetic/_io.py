"""Atomic writes for the synthetic writers: a temp file in the target folder, then
``os.replace``; files get the usual ``0666 & ~umask`` mode (``mkstemp`` alone gives 0600)."""

from __future__ import annotations

import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


@lru_cache(maxsize=1)
def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` (parents created) through a temp file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as compact JSON (one line, like the GeneCIS files) atomically."""
    return atomic_write_text(path, json.dumps(data))


def parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as parquet file bytes (snappy, pyarrow defaults: deterministic)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def atomic_write_parquet(path: str | Path, table: pa.Table) -> Path:
    """Write ``table`` as a parquet file atomically."""
    return atomic_write_bytes(path, parquet_bytes(table))
