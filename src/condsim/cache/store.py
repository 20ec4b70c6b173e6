"""Embedding cache: content-addressed rows in append-only shards that verify themselves.

Layout under ``root/<space>/`` where ``space`` = digest of the model's
:attr:`~condsim.types.ModelMeta.cache_id` (name, weights revision, preprocessing id):

- ``shard-<n>-<token>.npy``: float32 ``(rows, dim)`` embeddings,
- ``shard-<n>-<token>.check.json``: checksums (crc32) of the ``.npy`` file and of the keys
  file, and the row count,
- ``shard-<n>-<token>.keys.npy``: the rows' keys (``S32`` hex digests of image bytes +
  condition), written *last*: a shard exists only once its keys file exists,
- ``space.json``: the model metadata, for ``condsim cache info``,
- ``quarantine/``: shards that failed verification, moved aside (never deleted, except by an
  explicit ``condsim cache prune``), each with a ``<stem>.why`` note saying what was wrong.

Each file is written to a temp name and renamed, so a killed writer leaves at most an
orphan temp file (ignored, removed by ``prune``), never a half shard.

Integrity (see :class:`EmbeddingCache` for when checks run): a shard whose files are
unreadable, whose shapes disagree, whose checksum does not match or that has no checksum is
*quarantined*: moved to ``quarantine/``, its rows dropped from the index (so they are
re-encoded) and a WARNING logged. Shards of condsim versions before the ``.check.json``
sidecar carry a ``.sum`` file (blake2b-128 of the ``.npy`` only): they are verified against it
(keys are then checked for shape only; a damaged key can only cause a miss, never a wrong
row). Shards with neither file (the very first cache format, or a deleted sidecar) cannot be
verified and are quarantined: their rows are re-encoded once.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import mmap
import os
import re
import secrets
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from condsim.data.lazy_images import LazyImage
from condsim.errors import CacheError, EmbeddingError
from condsim.types import ModelMeta, as_float32_rows

logger = logging.getLogger(__name__)

KEY_DTYPE = "S32"
QUARANTINE = "quarantine"
# shard-<number>-<writer token>: the token keeps concurrent writers (torchrun ranks, two
# runs sharing a cache) from ever picking the same file names
_SHARD_RE = re.compile(r"^(shard-(\d+)(?:-\d+)?)\.keys\.npy$")
_SHARD_FILES = (".keys.npy", ".npy", ".check.json", ".sum")  # keys first: un-commit first
_CHECK_ALGO = "crc32"

#: Shard states reported by :meth:`EmbeddingCache.check`.
OK, MISMATCH, UNREADABLE, MISSING_CHECKSUM = "ok", "mismatch", "unreadable", "missing checksum"


def item_keys(images: Sequence[Any], conditions: Sequence[str] | None = None, *,
              namespace: str = "") -> np.ndarray:
    """``S32`` keys: blake2b-128 hex digest of the image bytes (+ ``\\0`` + condition); a
    query ``namespace`` (:attr:`~condsim.types.ModelMeta.query_namespace`) is hashed in
    before the condition (``\\0`` + namespace + ``\\0`` + condition). An image may also be
    a :class:`~condsim.data.lazy_images.LazyImage` (a file or parquet cell read when
    needed): its stored digest is the key of the image, its bytes are read only for a
    query key."""
    keys = np.empty(len(images), dtype=KEY_DTYPE)
    for i, img in enumerate(images):
        if isinstance(img, LazyImage):
            if conditions is None:
                keys[i] = img.digest.encode()
                continue
            img = img.read_bytes()
        h = hashlib.blake2b(img if img is not None else b"<null>", digest_size=16)
        if conditions is not None:
            h.update(condition_salt(conditions[i], namespace))
        keys[i] = h.hexdigest().encode()
    return keys


def condition_salt(condition: str, namespace: str = "") -> bytes:
    """What a query key hashes after its image: ``\\0 + condition``, or
    ``\\0 + namespace + \\0 + condition`` for a model with a query namespace."""
    if namespace:
        return b"\0" + namespace.encode() + b"\0" + condition.encode()
    return b"\0" + condition.encode()


def derived_keys(keys: np.ndarray, tag: str) -> np.ndarray:
    """Keys of another quantity of the same items (``blake2b-128(key + \\1 + tag)``): e.g. the
    un-normalised image features a textual-inversion adapter composes its queries from,
    stored next to the targets under keys that can never equal an image or query key."""
    out = np.empty(len(keys), dtype=KEY_DTYPE)
    salt = b"\1" + tag.encode()
    for i, k in enumerate(keys):
        out[i] = hashlib.blake2b(bytes(k) + salt, digest_size=16).hexdigest().encode()
    return out


def file_checksum(path: Path) -> str:
    """blake2b-128 hex digest of a file's bytes."""
    from condsim.io import file_digest

    return file_digest(path)


def _digest(algo: str, data: Any) -> str:
    """Hex digest of a bytes-like object (``crc32``, or ``blake2b-128`` of legacy shards)."""
    if algo == "crc32":
        return f"{zlib.crc32(data):08x}"
    if algo == "blake2b-128":
        return hashlib.blake2b(data, digest_size=16).hexdigest()
    raise ValueError(f"unknown checksum algorithm {algo!r}")


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _atomic_save(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a unique temp file + fsync + rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _npy_header(fh: Any) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran order, data offset) of an open ``.npy`` file."""
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(fh)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    return tuple(shape), np.dtype(dtype), bool(fortran), fh.tell()


class _Damage(Exception):
    """A shard failed a check: ``state`` is one of the shard states, ``detail`` says why."""

    def __init__(self, state: str, detail: str) -> None:
        super().__init__(f"{state}: {detail}")
        self.state = state
        self.detail = detail


@dataclass(frozen=True)
class _Checksum:
    algo: str
    npy: str
    keys: str | None  # None for legacy ``.sum`` shards
    rows: int | None


@dataclass
class _Shard:
    stem: str
    number: int
    rows: int
    checksum: _Checksum
    state: str = "unverified"  # -> "ok" or "dead" (quarantined / vanished)


@dataclass
class CacheIntegrity:
    """What the cache found while checking its shards in this process (see
    :class:`EmbeddingCache`). ``to_dict()`` is JSON-ready for ``results.json``."""

    #: shards whose checksum was computed and matched
    verified_shards: int = 0
    #: stems of the shards this object moved to ``quarantine/`` (or, read-only, would move)
    quarantined_shards: list[str] = field(default_factory=list)
    #: stems of indexed shards that disappeared before they were verified (another process
    #: quarantined or pruned them); their rows are re-encoded like quarantined ones
    vanished_shards: list[str] = field(default_factory=list)
    #: rows removed from the index (quarantined + vanished shards): re-encoded when asked for
    dropped_rows: int = 0
    #: wall time spent opening and checksumming shards
    verify_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` copy (lists copied, seconds rounded to 0.1 ms)."""
        d = asdict(self)
        d["verify_seconds"] = round(self.verify_seconds, 4)
        return d


class EmbeddingCache:
    """Append-only embedding store for one model's embedding space.

    **Integrity.** Keys files are checked (checksum, shape) when the cache is opened, which is
    cheap (32 bytes a row). The embedding file of a shard is checksummed once per object, at
    its *first touch*: the first :meth:`lookup` that finds a key in it (or a :meth:`read` of
    its rows, for rows not obtained by ``lookup``). Checks happen before any row number of a
    shard is handed out, so a damaged shard can never have served data: :meth:`lookup`
    verifies the shards its hits fall in, quarantines the bad ones and looks the keys up again
    (they are now misses, which :func:`~condsim.cache.encode.encode_cached` re-encodes).
    Verification reads the shard through the same memory map that later serves its rows, so
    the bytes served are the bytes checked even if the file is renamed meanwhile (another
    process quarantining it does not disturb this one). Shards written by this object are
    trusted (their checksums are computed from the in-memory bytes written).

    Global row numbers are stable for the lifetime of the object: shards found later
    (appended by this or another process) get new rows at the end, and a quarantined shard
    keeps its row range, so rows handed out earlier still mean the same rows. Reading a row
    of a shard quarantined later (only possible through an explicit :meth:`verify`) raises
    :class:`~condsim.errors.CacheError` instead of returning data.

    ``cache.integrity`` (:class:`CacheIntegrity`) counts what happened in this object:
    ``verified_shards``, ``quarantined_shards`` (stems), ``vanished_shards``,
    ``dropped_rows``, ``verify_seconds``; ``cache.integrity.to_dict()`` is JSON-ready, e.g.
    for ``results.json``. Read it after encoding/reading: it grows as shards are touched.

    ``verify=False`` skips the embedding checksums (structure and keys are still checked);
    it exists to measure their cost (``benchmarks/cache_verify.py``), not for normal use.
    ``readonly=True`` changes no file: nothing is created, bad shards are only dropped from
    this object's index (and reported), :meth:`append` refuses (``condsim cache info``).
    """

    def __init__(self, root: str | Path, meta: ModelMeta, *, verify: bool = True,
                 readonly: bool = False) -> None:
        self.meta = meta
        self.readonly = readonly
        self._verify_on_touch = verify
        space = hashlib.blake2b(meta.cache_id.encode(), digest_size=10).hexdigest()
        self.dir = Path(root) / space
        if readonly:
            if not self.dir.is_dir():
                raise CacheError(f"{self.dir}: no embedding-cache space for {meta.cache_id}")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._ensure_space_json()
        self.integrity = CacheIntegrity()
        #: stem -> "state: detail" of every shard found damaged by this object
        self.damage: dict[str, str] = {}
        self._shards: list[_Shard] = []
        self._known: set[str] = set()
        self._offsets = np.zeros(1, np.int64)
        self._keys = np.empty(0, KEY_DTYPE)
        self._dead = np.empty(0, bool)
        self._order = np.empty(0, np.int64)
        self._sorted = np.empty(0, KEY_DTYPE)
        self._mmaps: dict[int, np.ndarray] = {}
        self._refresh()

    # -- space.json --------------------------------------------------------------------------
    def _ensure_space_json(self) -> None:
        """Write ``space.json`` when missing; rewrite it from the model's metadata when it is
        damaged (it is descriptive only: the folder name already is the space's identity)."""
        info = self.dir / "space.json"
        try:
            have = json.loads(info.read_text())
            if isinstance(have, dict) and have.get("cache_id") == self.meta.cache_id:
                return
            problem = "describes another model"
        except FileNotFoundError:
            problem = ""
        except (OSError, ValueError) as exc:
            problem = f"unreadable ({exc})"
        if problem:
            logger.warning("embedding cache: %s is %s; rewriting it from the metadata of %s",
                           info, problem, self.meta.cache_id)
        data = json.dumps({"cache_id": self.meta.cache_id, **self.meta.to_dict()}, indent=1)
        _atomic_save(info, data.encode())

    # -- index -------------------------------------------------------------------------------
    def _read_checksum(self, stem: str) -> _Checksum:
        check = self.dir / f"{stem}.check.json"
        legacy = self.dir / f"{stem}.sum"
        try:
            raw = json.loads(check.read_text())
            return _Checksum(str(raw["algo"]), str(raw["npy"]), str(raw["keys"]),
                             int(raw["rows"]))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _Damage(UNREADABLE, f"checksum file {check.name}: {exc}") from exc
        try:
            return _Checksum("blake2b-128", legacy.read_text().strip(), None, None)
        except FileNotFoundError:
            raise _Damage(MISSING_CHECKSUM, "no .check.json or .sum file: cannot be "
                          "verified") from None
        except (OSError, ValueError) as exc:
            raise _Damage(UNREADABLE, f"checksum file {legacy.name}: {exc}") from exc

    def _open_keys(self, stem: str) -> tuple[np.ndarray, _Checksum]:
        """Keys of a committed shard, after checking them and the embedding file's header."""
        checksum = self._read_checksum(stem)
        try:
            data = (self.dir / f"{stem}.keys.npy").read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _Damage(UNREADABLE, f"keys file: {exc}") from exc
        if checksum.keys is not None and _digest(checksum.algo, data) != checksum.keys:
            raise _Damage(MISMATCH, "keys file checksum does not match")
        try:
            keys = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise _Damage(UNREADABLE, f"keys file: {exc}") from exc
        if keys.ndim != 1 or keys.dtype != np.dtype(KEY_DTYPE):
            raise _Damage(UNREADABLE, f"keys file holds {keys.dtype} {keys.shape}, "
                          f"expected {KEY_DTYPE} (rows,)")
        if checksum.rows is not None and checksum.rows != keys.size:
            raise _Damage(MISMATCH, f"{keys.size} keys, checksum file says {checksum.rows}")
        self._check_npy_header(stem, keys.size)
        return keys, checksum

    def _check_npy_header(self, stem: str, rows: int) -> int:
        """Data offset of the shard's ``.npy``, after checking its shape, dtype and size."""
        path = self.dir / f"{stem}.npy"
        try:
            with open(path, "rb") as fh:
                shape, dtype, fortran, offset = _npy_header(fh)
                size = os.fstat(fh.fileno()).st_size
        except FileNotFoundError:
            raise
        except (OSError, ValueError, EOFError) as exc:
            raise _Damage(UNREADABLE, f"embedding file: {exc}") from exc
        dim = self.meta.embedding_dim
        if shape != (rows, dim) or dtype != np.dtype(np.float32) or fortran:
            raise _Damage(UNREADABLE, f"embedding file holds {dtype} {shape}, expected float32 "
                          f"({rows}, {dim})")
        if size != offset + rows * dim * 4:
            raise _Damage(UNREADABLE, f"embedding file is {size} bytes, expected "
                          f"{offset + rows * dim * 4} (truncated or padded)")
        return offset

    def _refresh(self) -> None:
        """Index committed shards not seen yet (in name order), after the known ones."""
        new_keys: list[np.ndarray] = []
        for entry in sorted(self.dir.iterdir()):
            m = _SHARD_RE.match(entry.name)
            if not m or m.group(1) in self._known:
                continue
            stem = m.group(1)
            try:
                keys, checksum = self._open_keys(stem)
            except FileNotFoundError:
                continue  # quarantined or pruned by another process while we listed
            except _Damage as dmg:
                if not (self.dir / f"{stem}.keys.npy").exists():
                    continue  # being quarantined by another process
                self._known.add(stem)
                self._bad(stem, dmg, self._claimed_rows(stem))
                continue
            self._known.add(stem)
            self._shards.append(_Shard(stem, int(m.group(2)), keys.size, checksum))
            new_keys.append(keys)
        if new_keys:
            self._add_rows(new_keys)

    def refresh(self) -> None:
        """Index the shards other processes committed since this object last looked (e.g.
        the other ranks' shards after a barrier)."""
        self._refresh()

    def _claimed_rows(self, stem: str) -> int:
        """Rows a damaged shard claims to hold (for ``dropped_rows``), 0 when unknown."""
        try:
            return int(json.loads((self.dir / f"{stem}.check.json").read_text())["rows"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        try:
            with open(self.dir / f"{stem}.keys.npy", "rb") as fh:
                shape = _npy_header(fh)[0]
            return int(shape[0]) if len(shape) == 1 else 0
        except (OSError, ValueError, EOFError):
            return 0

    def _add_rows(self, new_keys: list[np.ndarray]) -> None:
        self._keys = np.concatenate([self._keys, *new_keys])
        self._dead = np.concatenate([self._dead, np.zeros(sum(k.size for k in new_keys), bool)])
        self._offsets = np.concatenate(
            [self._offsets, self._offsets[-1] + np.cumsum([k.size for k in new_keys])])
        self._reindex()

    def _reindex(self) -> None:
        live = np.flatnonzero(~self._dead)
        self._order = live[np.argsort(self._keys[live], kind="stable")]
        self._sorted = self._keys[self._order]

    def __len__(self) -> int:
        """Rows currently served (quarantined shards excluded)."""
        return int(self._sorted.size)

    @property
    def corrupt(self) -> list[str]:
        """Stems of the shards this object found damaged (quarantined, or read-only: ignored)."""
        return list(self.damage)

    # -- lookup / read -----------------------------------------------------------------------
    def _find(self, keys: np.ndarray) -> np.ndarray:
        if self._sorted.size == 0 or keys.size == 0:
            return np.full(keys.shape, -1, np.int64)
        pos = np.searchsorted(self._sorted, keys)
        pos_c = np.minimum(pos, self._sorted.size - 1)
        found = self._sorted[pos_c] == keys
        return np.where(found, self._order[pos_c], -1).astype(np.int64)

    def _slots(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._offsets, rows, side="right") - 1

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Global row of each key, or -1 when absent. Shards holding hits are verified first
        (once); hits in a damaged shard become -1 (the shard is quarantined)."""
        keys = np.asarray(keys, dtype=KEY_DTYPE)
        while True:
            rows = self._find(keys)
            hit = rows[rows >= 0]
            todo = [int(s) for s in np.unique(self._slots(hit))
                    if self._shards[int(s)].state == "unverified"]
            if not todo:
                return rows
            if not any([self._touch(s) is None for s in todo]):  # all verified: rows stand
                return rows

    def _touch(self, slot: int) -> np.ndarray | None:
        """The shard's rows (memory map), verifying it at first touch; ``None`` when it is
        damaged or gone (then it is dropped from the index)."""
        shard = self._shards[slot]
        if shard.state == "ok":
            return self._mmaps[slot]
        if shard.state == "dead":
            return None
        t0 = time.perf_counter()
        try:
            arr = self._open_emb(shard, hash_it=self._verify_on_touch)
        except FileNotFoundError:
            logger.warning("embedding cache: shard %s vanished before it was verified (another "
                           "process quarantined or pruned it); its %d rows will be re-encoded",
                           self.dir / shard.stem, shard.rows)
            self.integrity.vanished_shards.append(shard.stem)
            self.integrity.dropped_rows += shard.rows
            self._drop(slot)
            return None
        except _Damage as dmg:
            self._bad(shard.stem, dmg, shard.rows)
            self._drop(slot)
            return None
        finally:
            self.integrity.verify_seconds += time.perf_counter() - t0
        if self._verify_on_touch:
            self.integrity.verified_shards += 1
        shard.state = "ok"
        self._mmaps[slot] = arr
        return arr

    def _open_emb(self, shard: _Shard, *, hash_it: bool) -> np.ndarray:
        """Memory-map a shard's embeddings; with ``hash_it`` check the mapped bytes against
        the shard's checksum (raises :class:`_Damage`)."""
        path = self.dir / f"{shard.stem}.npy"
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _Damage(UNREADABLE, f"embedding file: {exc}") from exc
        with fh:
            try:
                shape, dtype, fortran, offset = _npy_header(fh)
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError, EOFError) as exc:
                raise _Damage(UNREADABLE, f"embedding file: {exc}") from exc
        dim = self.meta.embedding_dim
        if hash_it and _digest(shard.checksum.algo, mm) != shard.checksum.npy:
            raise _Damage(MISMATCH, "embedding file checksum does not match")
        if shape != (shard.rows, dim) or dtype != np.dtype(np.float32) or fortran or \
                len(mm) != offset + shard.rows * dim * 4:
            raise _Damage(UNREADABLE, f"embedding file changed: {dtype} {shape}, {len(mm)} "
                          f"bytes, expected float32 ({shard.rows}, {dim})")
        return np.ndarray((shard.rows, dim), np.float32, buffer=mm, offset=offset)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Embeddings of global ``rows`` (from :meth:`lookup`), ``(len(rows), dim)`` float32.

        Raises :class:`~condsim.errors.CacheError` for a row this object does not serve
        (negative, out of range, or in a shard quarantined after the row was handed out)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.size, self.meta.embedding_dim), np.float32)
        if rows.size == 0:
            return out
        if rows.min() < 0 or rows.max() >= self._offsets[-1]:
            bad = rows[(rows < 0) | (rows >= self._offsets[-1])]
            raise CacheError(f"{self.dir}: rows {bad[:5].tolist()} are not cached rows "
                             f"(valid: 0..{int(self._offsets[-1]) - 1}); look keys up first")
        slot = self._slots(rows)
        for s in np.unique(slot):
            arr = self._touch(int(s))
            if arr is None:
                shard = self._shards[int(s)]
                raise CacheError(
                    f"{self.dir / shard.stem}.npy: shard {self.damage.get(shard.stem, 'gone')}; "
                    "rows of it were handed out before it was found bad (it is quarantined "
                    "now): run again to re-encode them")
            sel = np.flatnonzero(slot == s)
            out[sel] = arr[rows[sel] - self._offsets[s]]
        return out

    # -- damage ------------------------------------------------------------------------------
    def _drop(self, slot: int) -> None:
        shard = self._shards[slot]
        shard.state = "dead"
        self._mmaps.pop(slot, None)
        self._dead[self._offsets[slot]:self._offsets[slot + 1]] = True
        self._reindex()

    def _bad(self, stem: str, dmg: _Damage, rows: int) -> None:
        """Record a damaged shard; quarantine it unless read-only."""
        self.damage[stem] = str(dmg)
        self.integrity.quarantined_shards.append(stem)
        self.integrity.dropped_rows += rows
        if self.readonly:
            logger.warning("embedding cache: shard %s is damaged (%s); ignoring it (read-only)",
                           self.dir / stem, dmg)
            return
        try:
            where = self._quarantine(stem, str(dmg))
        except OSError as exc:  # e.g. a cache on a read-only file system
            logger.warning("embedding cache: shard %s is damaged (%s) and cannot be moved to "
                           "quarantine (%s); ignoring it in this process, its %d rows will be "
                           "re-encoded", self.dir / stem, dmg, exc, rows)
            return
        logger.warning("embedding cache: shard %s is damaged (%s); moved to %s, its %d rows "
                       "will be re-encoded", self.dir / stem, dmg, where, rows)

    def _quarantine(self, stem: str, why: str) -> Path:
        """Move a shard's files into ``quarantine/`` (keys first, which un-commits it for
        every other process); tolerate files another process moved already."""
        qdir = self.dir / QUARANTINE
        qdir.mkdir(exist_ok=True)
        dest = stem
        if any((qdir / f"{stem}{s}").exists() for s in (*_SHARD_FILES, ".why")):
            dest = f"{stem}~{time.time_ns()}"
        moved = 0
        for suffix in _SHARD_FILES:
            try:
                os.replace(self.dir / f"{stem}{suffix}", qdir / f"{dest}{suffix}")
                moved += 1
            except FileNotFoundError:
                pass  # never written (legacy shard), or moved by another process
        if moved:
                _atomic_save(qdir / f"{dest}.why",
                         f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {why}\n".encode())
        return qdir

    # -- writing -----------------------------------------------------------------------------
    def append(self, keys: np.ndarray, embeddings: Any, *, what: str = "embeddings") -> None:
        """Add a shard holding the rows whose keys are not cached yet; durable once this
        returns. ``embeddings`` must be ``(len(keys), dim)``, float32-convertible and finite,
        else :class:`~condsim.errors.EmbeddingError` (naming ``what``) and nothing is
        written."""
        if self.readonly:
            raise CacheError(f"{self.dir}: cache opened read-only")
        raw_keys = np.asarray(keys)
        if raw_keys.ndim != 1 or raw_keys.dtype.kind not in "SU" or raw_keys.dtype.itemsize > (
                32 if raw_keys.dtype.kind == "S" else 128):
            raise EmbeddingError(f"{what}: keys must be a 1-d array of <= 32-byte strings, got "
                                 f"{raw_keys.dtype} {raw_keys.shape}")
        try:
            keys = raw_keys.astype(KEY_DTYPE)
        except UnicodeEncodeError as exc:
            raise EmbeddingError(f"{what}: keys must be ASCII ({exc})") from exc
        try:
            emb = as_float32_rows(embeddings, keys.size, self.meta.embedding_dim, what)
        except (TypeError, ValueError) as exc:
            raise EmbeddingError(f"{what}: embeddings are not float32-convertible "
                                 f"({exc})") from exc
        new = self.lookup(keys) < 0
        _, first = np.unique(keys, return_index=True)
        keep = np.zeros(keys.size, bool)
        keep[first] = True
        keep &= new
        if not keep.any():
            return
        number = max((s.number for s in self._shards), default=-1) + 1
        stem = f"shard-{number:06d}-{os.getpid()}{secrets.randbelow(10**6):06d}"
        emb_bytes, key_bytes = _npy_bytes(emb[keep]), _npy_bytes(keys[keep])
        checksum = _Checksum(_CHECK_ALGO, _digest(_CHECK_ALGO, emb_bytes),
                             _digest(_CHECK_ALGO, key_bytes), int(keep.sum()))
        _atomic_save(self.dir / f"{stem}.npy", emb_bytes)
        _atomic_save(self.dir / f"{stem}.check.json", json.dumps(
            {"algo": checksum.algo, "npy": checksum.npy, "keys": checksum.keys,
             "rows": checksum.rows}).encode())
        _atomic_save(self.dir / f"{stem}.keys.npy", key_bytes)  # commit marker
        self._known.add(stem)
        self._shards.append(_Shard(stem, number, int(keep.sum()), checksum))
        self._add_rows([keys[keep]])
        slot = len(self._shards) - 1
        self._mmaps[slot] = self._open_emb(self._shards[slot], hash_it=False)
        self._shards[slot].state = "ok"  # checksummed from the bytes just written
        self._refresh()  # other writers' new shards

    # -- maintenance -------------------------------------------------------------------------
    def check(self) -> dict[str, str]:
        """State of every shard (``ok``, ``mismatch``, ``unreadable``, ``missing checksum``,
        with details after a colon for damaged ones), recomputing every checksum. Changes
        nothing (no quarantine, no index change), whatever the mode."""
        states = dict(self.damage)
        for shard in self._shards:
            if shard.state == "dead":
                continue
            t0 = time.perf_counter()
            try:
                self._open_emb(shard, hash_it=True)
                states[shard.stem] = OK
            except FileNotFoundError:
                states[shard.stem] = f"{UNREADABLE}: vanished (quarantined by another process?)"
            except _Damage as dmg:
                states[shard.stem] = str(dmg)
            finally:
                self.integrity.verify_seconds += time.perf_counter() - t0
        return dict(sorted(states.items()))

    def verify(self, repair: bool = True) -> list[str]:
        """Recompute every shard's checksum; return the stems of the damaged ones (including
        those found when the cache was opened) and, with ``repair``, quarantine them (their
        rows are re-encoded by the next run). Reads of rows of a shard quarantined here raise
        :class:`~condsim.errors.CacheError`."""
        if repair and self.readonly:
            raise CacheError(f"{self.dir}: cannot repair a cache opened read-only")
        bad = list(self.damage)
        for slot, shard in enumerate(self._shards):
            if shard.state == "dead":
                continue
            t0 = time.perf_counter()
            try:
                self._open_emb(shard, hash_it=True)
                continue
            except FileNotFoundError:
                logger.warning("embedding cache: shard %s vanished (another process "
                               "quarantined or pruned it)", self.dir / shard.stem)
                if repair:
                    self.integrity.vanished_shards.append(shard.stem)
                    self.integrity.dropped_rows += shard.rows
            except _Damage as dmg:
                bad.append(shard.stem)
                if repair:
                    self._bad(shard.stem, dmg, shard.rows)
                else:
                    logger.warning("embedding cache: shard %s is damaged (%s)",
                                   self.dir / shard.stem, dmg)
            finally:
                self.integrity.verify_seconds += time.perf_counter() - t0
            if repair:
                self._drop(slot)
        return bad

    def quarantined(self) -> list[Path]:
        """Files in ``quarantine/``."""
        qdir = self.dir / QUARANTINE
        return sorted(p for p in qdir.iterdir() if p.is_file()) if qdir.is_dir() else []

    def prune_temp(self, min_age_s: float = 3600.0) -> int:
        """Remove temp files left by killed writers: those not modified for ``min_age_s``
        seconds (a running writer's temp file is younger and is left alone); returns how
        many."""
        import time

        if self.readonly:
            raise CacheError(f"{self.dir}: cache opened read-only")
        n = 0
        now = time.time()
        for pattern in (".*.tmp", "*.sum.tmp"):
            for p in self.dir.glob(pattern):
                try:
                    if now - p.stat().st_mtime < min_age_s:
                        continue
                except FileNotFoundError:
                    continue
                p.unlink(missing_ok=True)
                n += 1
        return n

    @classmethod
    def open_space(cls, space_dir: str | Path, *, readonly: bool = False) -> EmbeddingCache:
        """Open an existing model space (a folder holding ``space.json``); a damaged
        ``space.json`` raises :class:`~condsim.errors.CacheError` naming it."""
        d = Path(space_dir)
        path = d / "space.json"
        try:
            raw = json.loads(path.read_text())
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            raw.pop("cache_id", None)
            raw["conditions"] = tuple(raw.get("conditions", ()))
            meta = ModelMeta(**raw)
            if not isinstance(meta.embedding_dim, int) or meta.embedding_dim < 1:
                raise ValueError(f"embedding_dim {meta.embedding_dim!r}")
        except (OSError, ValueError, TypeError) as exc:
            raise CacheError(
                f"{path}: damaged or not an embedding-cache space file ({exc}); it is "
                "rewritten the next time its model is evaluated, or delete the folder "
                "to drop the space") from exc
        cache = cls(d.parent, meta, readonly=readonly)
        if cache.dir.resolve() != d.resolve():
            raise CacheError(f"{path}: describes {meta.cache_id}, whose space is "
                             f"{cache.dir.name}, not {d.name}")
        return cache

    def info(self) -> dict[str, Any]:
        """Summary for ``condsim cache info`` (``shard_states`` from :meth:`check`)."""
        size = sum(p.stat().st_size for p in self.dir.glob("shard-*.npy"))
        states = self.check()
        return {"dir": str(self.dir), "model": self.meta.cache_id, "rows": len(self),
                "shards": len(states), "bytes": size, "corrupt": list(self.damage),
                "shard_states": states, "quarantined_files": len(self.quarantined())}


class CachedRows:
    """A read-only ``(n, dim)`` view over cache rows, sliceable like an array (for scoring
    blocks without materialising the whole gallery)."""

    def __init__(self, cache: EmbeddingCache, rows: np.ndarray) -> None:
        self.cache = cache
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shape = (self.rows.size, cache.meta.embedding_dim)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, item: slice | np.ndarray) -> np.ndarray:
        """Rows ``item`` (a slice, or a 1-D integer array of positions) as float32."""
        if not isinstance(item, slice) and not (
                isinstance(item, np.ndarray) and item.ndim == 1 and item.dtype.kind in "iu"):
            raise TypeError("CachedRows takes a slice or a 1-D integer array")
        return self.cache.read(self.rows[item])
