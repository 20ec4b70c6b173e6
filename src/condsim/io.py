"""Atomic file writes and file digests: the one copy of both for the whole package.

Every writer here builds its output under a temporary name in the *same folder* as the
target (``.<name>.<random>.tmp``: hidden, so a killed writer leaves at most a hidden orphan,
never a half-written file under the real name), flushes it to disk (``fsync``) and only then
renames it over the target (``os.replace``, atomic on POSIX). Readers therefore see either
the old file or the complete new one. If writing fails the temporary is removed and the old
file is left untouched.

File mode: the temporary is created with ``0o666`` (``0o777`` for directories) filtered by
the process umask, i.e. exactly the mode a plain ``open(path, "w")`` or ``mkdir`` would give
(``tempfile.mkstemp``/``mkdtemp`` alone would give 0600/0700, which makes shared results,
caches and datasets unreadable to the rest of a group). Parent folders are created.

The folder itself is not fsync'd after the rename: a power loss right after a write may
roll the rename back (the old file reappears), but can never expose a partial file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

logger = logging.getLogger(__name__)

#: read size of :func:`file_digest`
_CHUNK = 1 << 20
#: attempts at finding an unused temporary name before giving up
_NAME_ATTEMPTS = 100


def _temp_name(path: Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden sibling name ``.<name>.<random><suffix>`` of ``path``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")


def _create_temp_file(path: Path) -> tuple[int, Path]:
    """Create (``O_EXCL``) an empty temporary sibling of ``path`` with mode
    ``0o666 & ~umask``; returns its write-only descriptor and its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(_NAME_ATTEMPTS):
        tmp = _temp_name(path)
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}: no free temporary name after {_NAME_ATTEMPTS} attempts")


def _fsync_path(path: Path) -> None:
    """Flush a file (or a directory entry list) that someone else wrote to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """An open binary temp file, fsync'd and renamed to ``path`` when the block succeeds,
    removed when it raises."""
    fd, tmp = _create_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path next to ``path`` for writers that need a file name
    (``savefig``, ``torch.save``, ``pq.ParquetWriter``, ...); on success it is fsync'd and
    renamed to ``path``, on an exception it is removed and ``path`` is left as it was.

    The temporary already exists (empty, mode ``0o666 & ~umask``) so that its name is
    reserved; the writer must overwrite it in place (not delete it and create a
    directory, and not append a suffix of its own as ``np.save`` does for names that do not
    end in ``.npy``: use :func:`atomic_save_npy` for arrays).

    >>> with atomic_path("plot.png") as tmp:  # doctest: +SKIP
    ...     fig.savefig(tmp, format="png")
    """
    path = Path(path)
    fd, tmp = _create_temp_file(path)
    os.close(fd)
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); returns ``path``."""
    path = Path(path)
    with _atomic_file(path) as fh:
        fh.write(data)
    return path


def atomic_write_many(files: dict[str, tuple[str | Path, bytes]]) -> dict[str, Path]:
    """Write every ``key -> (path, bytes)`` or none: each goes to a temporary sibling first
    (so a full disk or a permission error leaves no new file behind and the old ones
    untouched), then all are renamed into place in the given order (put the file whose
    presence means "complete" last). Returns ``key -> path``."""
    staged: list[tuple[str, Path, Path]] = []
    try:
        for key, (target, data) in files.items():
            path = Path(target)
            fd, tmp = _create_temp_file(path)
            staged.append((key, path, tmp))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        for _, path, tmp in staged:
            os.replace(tmp, path)
    except BaseException:
        for _, _, tmp in staged:
            tmp.unlink(missing_ok=True)
        raise
    return {key: path for key, path, _ in staged}


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` as UTF-8, atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (``indent`` spaces, ``None`` for one compact line, then a
    newline) atomically; returns ``path``. NaN and infinities are refused with a
    ``ValueError`` (they are not JSON: other readers reject them) and nothing is written."""
    text = json.dumps(obj, indent=indent, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def atomic_write_parquet(path: str | Path, table: pa.Table, **kwargs: Any) -> Path:
    """Write ``table`` as a parquet file atomically; ``kwargs`` go to
    :func:`pyarrow.parquet.write_table` (e.g. ``compression="zstd"``). Returns ``path``."""
    import pyarrow.parquet as pq

    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, str(tmp), **kwargs)
    return path


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    """Save ``array`` in ``.npy`` format (``allow_pickle=False``: object arrays are refused)
    at exactly ``path`` (no ``.npy`` suffix is appended), atomically; returns ``path``."""
    import numpy as np

    path = Path(path)
    with _atomic_file(path) as fh:
        np.save(fh, np.asarray(array), allow_pickle=False)
    return path


def _remove(path: Path) -> None:
    """Remove a file, symlink or directory tree (whatever is at ``path``), if anything."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_tree(root: Path) -> None:
    """fsync every regular file and directory under ``root`` (and ``root`` itself)."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            file = Path(folder) / name
            if file.is_file() and not file.is_symlink():
                _fsync_path(file)
        with suppress(OSError):  # some platforms/filesystems cannot fsync a directory
            _fsync_path(Path(folder))


@contextmanager
def atomic_directory(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh empty temporary directory next to ``path`` to build a directory in;
    when the block succeeds, its files are fsync'd and it is renamed to ``path``; when the
    block raises, it is removed and ``path`` is left as it was.

    If ``path`` already exists:

    - ``replace=False`` (default): refuse: :class:`FileExistsError`, before the block runs
      (and again at the end if ``path`` appeared meanwhile; the new build is then removed);
    - ``replace=True``: the old ``path`` is renamed aside (``.<name>.<random>.old``), the
      new directory renamed into place, then the old one deleted. Between the two renames
      (a few microseconds) ``path`` does not exist; a writer killed exactly then leaves the
      previous version in the hidden ``.old`` sibling, never a mix of the two.

    The temporary directory gets mode ``0o777 & ~umask``, like a plain ``mkdir``. Orphans
    of killed writers can be removed with :func:`remove_stale_temps`.
    """
    path = Path(path)
    if not replace and (path.exists() or path.is_symlink()):
        raise FileExistsError(f"{path}: already exists (pass replace=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(_NAME_ATTEMPTS):
        tmp = _temp_name(path)
        try:
            os.mkdir(tmp, 0o777)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"{path}: no free temporary name after {_NAME_ATTEMPTS} attempts")
    try:
        yield tmp
        _fsync_tree(tmp)
        if path.exists() or path.is_symlink():
            if not replace:
                raise FileExistsError(f"{path}: appeared while it was being built; "
                                      "the new build was discarded")
            old = _temp_name(path, ".old")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove the temporaries (``.<name>.*.tmp``, ``.<name>.*.old``) that killed writers
    of ``path`` left behind; returns what was removed. Call it only where no other process
    can be writing ``path`` at the same time (it would delete that writer's temporary)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = [p for pattern in (f".{path.name}.*.tmp", f".{path.name}.*.old")
             for p in sorted(path.parent.glob(pattern))]
    for p in stale:
        logger.debug("removing stale temporary %s", p)
        _remove(p)
    return stale


def file_digest(path: str | Path, digest_size: int = 16, *, algorithm: str = "blake2b") -> str:
    """Hex digest of the bytes of the file at ``path``, read in 1 MiB chunks.

    ``blake2b`` with ``digest_size`` bytes (default 16: 32 hex digits) unless ``algorithm``
    names another :mod:`hashlib` algorithm (e.g. ``"sha256"``, whose size is fixed:
    ``digest_size`` then applies to blake2b/blake2s only and must be left at its default).
    """
    if algorithm in ("blake2b", "blake2s"):
        h = hashlib.new(algorithm, digest_size=digest_size)
    elif digest_size != 16:
        raise ValueError(f"digest_size applies to blake2b/blake2s only, not {algorithm}")
    else:
        h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
