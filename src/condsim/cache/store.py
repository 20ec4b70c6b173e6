"""Embedding cache: content-addressed rows in append-only shards.

Layout under ``root/<space>/`` where ``space`` = digest of the model's
:attr:`~condsim.types.ModelMeta.cache_id` (name, weights revision, preprocessing id):

- ``shard-<n>.npy``: float32 ``(rows, dim)`` embeddings,
- ``shard-<n>.keys.npy``: the rows' keys (``S32`` hex digests of image bytes + condition),
  written *after* the embeddings: a shard exists only once its keys file exists,
- ``space.json``: the model metadata, for ``condsim cache info``.

Each file is written to a temp name and renamed, so a killed writer leaves at most an
orphan temp file (ignored, removed by ``prune``), never a half shard. Shards whose sizes do
not match their keys are reported as corrupt and skipped (their rows get re-encoded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from condsim.types import ModelMeta

logger = logging.getLogger(__name__)

KEY_DTYPE = "S32"
# shard-<number>-<writer token>: the token keeps concurrent writers (torchrun ranks, two
# runs sharing a cache) from ever picking the same file names
_SHARD_RE = re.compile(r"^(shard-(\d+)(?:-\d+)?)\.keys\.npy$")


def item_keys(images: Sequence[bytes], conditions: Sequence[str] | None = None) -> np.ndarray:
    """``S32`` keys: blake2b-128 hex digest of the image bytes (+ ``\\0`` + condition)."""
    keys = np.empty(len(images), dtype=KEY_DTYPE)
    for i, img in enumerate(images):
        h = hashlib.blake2b(img if img is not None else b"<null>", digest_size=16)
        if conditions is not None:
            h.update(b"\0" + conditions[i].encode())
        keys[i] = h.hexdigest().encode()
    return keys


def file_checksum(path: Path) -> str:
    """blake2b-128 hex digest of a file's bytes."""
    from condsim.io import file_digest

    return file_digest(path)


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class _Shard:
    number: int
    emb_path: Path
    rows: int


class EmbeddingCache:
    """Append-only embedding store for one model's embedding space."""

    def __init__(self, root: str | Path, meta: ModelMeta) -> None:
        self.meta = meta
        space = hashlib.blake2b(meta.cache_id.encode(), digest_size=10).hexdigest()
        self.dir = Path(root) / space
        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.dir / "space.json"
        if not info.exists():
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".space.", suffix=".json.tmp")
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps({"cache_id": meta.cache_id, **meta.to_dict()}, indent=1))
            os.replace(tmp, info)
        self.corrupt: list[str] = []
        self._load()

    # -- index ---------------------------------------------------------------------------
    def _load(self) -> None:
        shards: list[_Shard] = []
        keys: list[np.ndarray] = []
        for entry in sorted(self.dir.iterdir()):
            m = _SHARD_RE.match(entry.name)
            if not m:
                continue
            emb_path = self.dir / f"{m.group(1)}.npy"
            try:
                k = np.load(entry, allow_pickle=False)
                e = np.load(emb_path, mmap_mode="r", allow_pickle=False)
                if e.ndim != 2 or e.shape != (k.shape[0], self.meta.embedding_dim) or \
                        e.dtype != np.float32 or k.dtype != np.dtype(KEY_DTYPE):
                    raise ValueError(f"shape {e.shape} / {k.shape} mismatch")
            except (OSError, ValueError) as exc:
                logger.warning("embedding cache: corrupt shard %s (%s); ignoring it", entry, exc)
                self.corrupt.append(entry.name)
                continue
            shards.append(_Shard(int(m.group(2)), emb_path, int(k.shape[0])))
            keys.append(k)
        self._shards = shards
        self._offsets = np.cumsum([0] + [s.rows for s in shards])
        all_keys = np.concatenate(keys) if keys else np.empty(0, KEY_DTYPE)
        self._order = np.argsort(all_keys, kind="stable")
        self._sorted = all_keys[self._order]
        self._mmaps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Global row of each key, or -1 when absent."""
        keys = np.asarray(keys, dtype=KEY_DTYPE)
        if self._sorted.size == 0 or keys.size == 0:
            return np.full(keys.shape, -1, np.int64)
        pos = np.searchsorted(self._sorted, keys)
        pos_c = np.minimum(pos, self._sorted.size - 1)
        found = self._sorted[pos_c] == keys
        return np.where(found, self._order[pos_c], -1).astype(np.int64)

    def _mmap(self, i: int) -> np.ndarray:
        if i not in self._mmaps:
            self._mmaps[i] = np.load(self._shards[i].emb_path, mmap_mode="r")
        return self._mmaps[i]

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Embeddings of global ``rows`` (all must exist), ``(len(rows), dim)`` float32."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.size, self.meta.embedding_dim), np.float32)
        if rows.size == 0:
            return out
        shard = np.searchsorted(self._offsets, rows, side="right") - 1
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            out[sel] = self._mmap(int(s))[rows[sel] - self._offsets[s]]
        return out

    def append(self, keys: np.ndarray, embeddings: np.ndarray) -> None:
        """Add a shard (keys not already cached); durable once this returns."""
        keys = np.asarray(keys, dtype=KEY_DTYPE)
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.shape != (keys.size, self.meta.embedding_dim):
            raise ValueError(f"embeddings {emb.shape} do not match {keys.size} keys")
        new = self.lookup(keys) < 0
        _, first = np.unique(keys, return_index=True)
        keep = np.zeros(keys.size, bool)
        keep[first] = True
        keep &= new
        if not keep.any():
            return
        number = max((s.number for s in self._shards), default=-1) + 1
        stem = f"shard-{number:06d}-{os.getpid()}{secrets.randbelow(10**6):06d}"
        emb_path = self.dir / f"{stem}.npy"
        _atomic_save(emb_path, emb[keep])
        sum_path = self.dir / f"{stem}.sum"
        tmp = sum_path.with_suffix(".sum.tmp")
        tmp.write_text(file_checksum(emb_path))
        os.replace(tmp, sum_path)
        _atomic_save(self.dir / f"{stem}.keys.npy", keys[keep])  # commit marker
        self._load()

    def verify(self, repair: bool = True) -> list[str]:
        """Recompute every shard's checksum; return the names of corrupt shards and, with
        ``repair``, delete them (their rows are simply re-encoded by the next run)."""
        bad = list(self.corrupt)
        for shard in self._shards:
            sum_path = shard.emb_path.with_suffix(".sum")
            if not sum_path.is_file():
                continue  # written by an older condsim: sizes were checked at load
            if sum_path.read_text().strip() != file_checksum(shard.emb_path):
                logger.warning("embedding cache: checksum mismatch in %s", shard.emb_path)
                bad.append(shard.emb_path.name.replace(".npy", ".keys.npy"))
        if repair and bad:
            self._mmaps.clear()
            for name in bad:
                stem = name.replace(".keys.npy", "")
                for suffix in (".keys.npy", ".npy", ".sum"):
                    (self.dir / f"{stem}{suffix}").unlink(missing_ok=True)
            self.corrupt = []
            self._load()
        return bad

    def prune_temp(self) -> int:
        """Remove temp files left by killed writers; returns how many."""
        n = 0
        for p in self.dir.glob(".*.tmp"):
            p.unlink(missing_ok=True)
            n += 1
        for p in self.dir.glob("*.sum.tmp"):
            p.unlink(missing_ok=True)
            n += 1
        return n

    @classmethod
    def open_space(cls, space_dir: str | Path) -> EmbeddingCache:
        """Open an existing model space (a folder holding ``space.json``)."""
        d = Path(space_dir)
        try:
            meta = json.loads((d / "space.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{d}: not an embedding-cache space ({exc})") from exc
        meta.pop("cache_id", None)
        meta["conditions"] = tuple(meta.get("conditions", ()))
        cache = cls(d.parent, ModelMeta(**meta))
        if cache.dir != d:
            raise ValueError(f"{d}: space.json does not match the folder name")
        return cache

    def info(self) -> dict[str, Any]:
        size = sum(p.stat().st_size for p in self.dir.glob("shard-*.npy"))
        return {"dir": str(self.dir), "model": self.meta.cache_id, "rows": len(self),
                "shards": len(self._shards), "bytes": size, "corrupt": list(self.corrupt)}


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

    def __getitem__(self, item: slice) -> np.ndarray:
        if not isinstance(item, slice):
            raise TypeError("CachedRows supports slicing only")
        return self.cache.read(self.rows[item])
