"""Shard naming and bookkeeping shared by the scene-graph parser and the triplet miner.

A shard ``<prefix>-00003-of-00008`` is a parquet file plus a JSON sidecar with its counts
and settings. Both are written atomically (:mod:`condsim.io`: temp file + rename); the
sidecar is written *after* the parquet file, so a shard counts as finished only once its
sidecar exists.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from condsim.errors import DataError
from condsim.io import atomic_path

_SHARD_RE = re.compile(r"^(?P<prefix>[a-z]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")


def shard_stats_path(parquet: Path) -> Path:
    """The stats sidecar of a shard: ``_<stem>.json`` beside it (parquet readers skip files
    starting with ``_``), or the ``<stem>.json`` of older runs when only that one exists."""
    current = parquet.with_name(f"_{parquet.stem}.json")
    legacy = parquet.with_suffix(".json")
    return legacy if legacy.exists() and not current.exists() else current


def shard_stem(prefix: str, index: int, count: int) -> str:
    """``<prefix>-<index:05d>-of-<count:05d>`` (the shard's file name without suffix)."""
    return f"{prefix}-{index:05d}-of-{count:05d}"


def check_shard_args(num_shards: int, shard_index: int | None) -> None:
    """Raise :class:`DataError` unless ``0 <= shard_index < num_shards``."""
    if num_shards < 1:
        raise DataError(f"--shards must be >= 1 (got {num_shards})")
    if shard_index is not None and not 0 <= shard_index < num_shards:
        raise DataError(
            f"--shard-index must be in [0, {num_shards - 1}] for --shards {num_shards} "
            f"(got {shard_index})"
        )


def shard_range(num_items: int, num_shards: int, shard_index: int) -> tuple[int, int]:
    """``[start, end)`` of shard ``shard_index``: contiguous, sizes differ by at most one."""
    base, extra = divmod(num_items, num_shards)
    start = shard_index * base + min(shard_index, extra)
    return start, start + base + (1 if shard_index < extra else 0)


def utc_now() -> str:
    """The current UTC time as ISO-8601 (seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextmanager
def atomic_parquet_writer(path: str | Path, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """A parquet writer (zstd) on a temp file, renamed to ``path`` only if the block
    succeeds (:func:`condsim.io.atomic_path`)."""
    with atomic_path(path) as tmp, pq.ParquetWriter(str(tmp), schema, compression="zstd") as writer:
        yield writer


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object, with a :class:`DataError` naming the file when it is broken."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); delete it and rerun the step") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def find_shards(directory: Path, prefix: str) -> tuple[int, dict[int, Path]]:
    """The shard count and the finished shards (index -> parquet path) of ``prefix`` in a dir.

    A shard is finished when both its parquet file and its JSON sidecar exist. Shards named
    with different counts (``-of-00004`` next to ``-of-00008``) are an error.
    """
    if not directory.is_dir():
        raise DataError(f"{directory}: directory not found")
    counts: set[int] = set()
    found: dict[int, Path] = {}
    for path in sorted(directory.iterdir()):
        m = _SHARD_RE.match(path.name)
        if m is None or m["prefix"] != prefix:
            continue
        counts.add(int(m["count"]))
        if shard_stats_path(path).exists():
            found[int(m["index"])] = path
    if not counts:
        raise DataError(f"{directory}: no {prefix}-*-of-*.parquet shards found")
    if len(counts) > 1:
        raise DataError(
            f"{directory}: {prefix} shards from runs with different --shards "
            f"({sorted(counts)}); keep one run per directory"
        )
    return counts.pop(), found


def missing_shards_message(directory: Path, prefix: str, count: int, found: dict[int, Path]) -> str:
    """A message naming the shards of ``count`` that are not finished yet."""
    missing = [i for i in range(count) if i not in found]
    names = ", ".join(shard_stem(prefix, i, count) + ".parquet" for i in missing[:10])
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    return (
        f"{directory}: {len(missing)} of {count} {prefix} shards are missing or unfinished: "
        f"{names}{more}; run them with --shard-index"
    )


def json_digest(data: Any) -> str:
    """sha256 (first 16 hex digits) of ``data`` serialised as canonical JSON."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
