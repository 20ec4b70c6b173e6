"""Images kept as references (where they are + the digest of their bytes), read when needed.

A corpus of image files, or a parquet file with the images inline (the MTEB / HF hub layout),
can be far larger than memory. Readers go over it once to list its images as
:class:`LazyImage` references: :class:`FileImage` (a file) or :class:`ParquetImage` (a cell:
file, column, row). The digest of the bytes (:func:`content_digest`) is the image's cache
key, the same as for the bytes themselves, and the bytes are read again only for the images
that must be decoded, checked against the digest (a file rewritten since it was listed is an
error, never an embedding cached under another image's key). :func:`read_cell` keeps the
last few row groups it read (:data:`MAX_GROUPS`), so memory is bounded by the file's
row-group size, not by the number of images.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condsim.errors import DataError

#: row groups kept in memory (across files), least recently used dropped first
MAX_GROUPS = 4
#: rows per batch when a column is streamed
STREAM_BATCH = 1024

_lock = threading.Lock()
_offsets: dict[tuple[str, int], list[int]] = {}
_groups: OrderedDict[tuple[str, int, str, int], list[bytes | None]] = OrderedDict()


def content_digest(data: bytes) -> str:
    """blake2b-128 hex digest of encoded image bytes: the cache key of an image (the same
    function :func:`condsim.cache.store.item_keys` applies to bytes)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class LazyImage:
    """An image read when needed: subclasses give ``where`` (how errors name it), ``digest``
    (:func:`content_digest` of its bytes, taken when it was listed) and ``_raw()``.
    :func:`condsim.data.images.decode_image` calls :meth:`load_image` (in the encoder's
    decode workers); :func:`condsim.cache.store.item_keys` keys it by ``digest``."""

    digest: str

    @property
    def where(self) -> str:
        raise NotImplementedError

    def _raw(self) -> bytes:
        raise NotImplementedError

    def read_bytes(self) -> bytes:
        """The image's bytes, checked against ``digest``: a file rewritten since it was
        listed is an error, never an image cached under another image's key."""
        data = self._raw()
        if content_digest(data) != self.digest:
            raise DataError(f"{self.where}: the image changed since the file was read "
                            "(it was rewritten during the run); run again")
        return data

    def load_image(self) -> Any:
        """The decoded RGB image."""
        from condsim.data.images import decode_image

        return decode_image(self.read_bytes(), self.where)


@dataclass(frozen=True)
class FileImage(LazyImage):
    """An image file; ``digest`` is :func:`content_digest` of its bytes."""

    path: str
    digest: str

    @property
    def where(self) -> str:
        return self.path

    def _raw(self) -> bytes:
        try:
            return Path(self.path).read_bytes()
        except FileNotFoundError:
            raise DataError(f"{self.path}: image file removed since it was read") from None

    @classmethod
    def of(cls, path: str | Path) -> FileImage:
        """The file at ``path``, hashed now (its bytes are not kept)."""
        return cls(str(path), content_digest(Path(path).read_bytes()))


@dataclass(frozen=True)
class ParquetImage(LazyImage):
    """The encoded image in ``column`` of row ``row`` of the parquet file ``path``; ``digest``
    is :func:`content_digest` of its bytes. Picklable and small."""

    path: str
    column: str
    row: int
    digest: str

    @property
    def where(self) -> str:
        """``<file> row <n>``: how errors and reports name the image."""
        return f"{self.path} row {self.row}"

    def _raw(self) -> bytes:
        return read_cell(self.path, self.column, self.row) or b""


def _stamp(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        raise DataError(f"{path}: parquet file not found (moved or deleted since it was "
                        "read?)") from None


def _group_offsets(path: str, stamp: int) -> list[int]:
    """First row of each row group, then the number of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _lock:
        found = _offsets.get((path, stamp))
    if found is not None:
        return found
    try:
        meta = pq.ParquetFile(path).metadata
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read parquet ({exc})") from exc
    offsets = [0]
    for g in range(meta.num_row_groups):
        offsets.append(offsets[-1] + meta.row_group(g).num_rows)
    with _lock:
        _offsets[(path, stamp)] = offsets
    return offsets


def read_cell(path: str, column: str, row: int) -> bytes | None:
    """The bytes of ``column`` (binary, or an HF ``{bytes, path}`` struct) in row ``row`` of
    ``path`` (``None`` for a null cell). Reads the row group holding it, unless one of the
    last :data:`MAX_GROUPS` read is it; a file changed since is read again."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from condsim.data.lrvsf import binary_values

    stamp = _stamp(path)
    offsets = _group_offsets(path, stamp)
    if not 0 <= row < offsets[-1]:
        raise DataError(f"{path}: no row {row} (the file has {offsets[-1]} rows)")
    group = bisect.bisect_right(offsets, row) - 1
    key = (path, stamp, column, group)
    with _lock:
        values = _groups.get(key)
        if values is not None:
            _groups.move_to_end(key)
    if values is None:
        try:
            table = pq.ParquetFile(path, pre_buffer=False).read_row_group(group,
                                                                          columns=[column])
        except (OSError, KeyError, pa.ArrowException) as exc:
            raise DataError(f"{path}: cannot read column {column!r} ({exc})") from exc
        if column not in table.column_names:
            raise DataError(f"{path}: cannot read column {column!r} (no such column)")
        values = binary_values(table.column(0), f"{path} column {column!r}")
        with _lock:
            _groups[key] = values
            while len(_groups) > MAX_GROUPS:
                _groups.popitem(last=False)
    return values[row - offsets[group]]


def stream_cells(path: str, column: str) -> Iterator[ParquetImage | None]:
    """Every cell of ``column`` in row order, as a :class:`ParquetImage` (``None`` for a
    null cell), reading :data:`STREAM_BATCH` rows at a time: the bytes are hashed and
    dropped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from condsim.data.lrvsf import binary_values

    row = 0
    try:
        # no pre-buffering: pyarrow would otherwise read far ahead (440 MiB of a 370 MiB file
        # measured by benchmarks/parquet_corpus_memory.py, against 94 MiB without)
        source = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
        if column not in source.schema_arrow.names:
            raise DataError(f"{path}: cannot read column {column!r} (no such column)")
        batches = source.iter_batches(batch_size=STREAM_BATCH, columns=[column])
        for batch in batches:
            for value in binary_values(batch.column(0), f"{path} column {column!r}"):
                yield None if value is None else ParquetImage(path, column, row,
                                                              content_digest(value))
                row += 1
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read column {column!r} ({exc})") from exc
