"""Cost of the embedding cache's integrity checks: a warm cache of 200,000 x 512-d float32
rows (written through the real EmbeddingCache, in shards of encode_cached's usual 8192 rows)
read back in full by a fresh EmbeddingCache, with shard verification on (the default) and
off (``verify=False``, for this measurement only). Also the throughput of candidate hashes.

Run: python benchmarks/cache_verify.py [--rows 200000] [--dim 512] [--reps 3]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from condsim.cache.store import EmbeddingCache
from condsim.types import ModelMeta


def hash_throughput(mib: int = 256) -> dict[str, float]:
    """GB/s of each candidate checksum on ``mib`` MiB of random float32 (best of 3)."""
    data = memoryview(np.random.default_rng(0).standard_normal(mib << 18, np.float32))
    data = data.cast("B")
    candidates = {
        "blake2b-128": lambda: hashlib.blake2b(data, digest_size=16).digest(),
        "sha1": lambda: hashlib.sha1(data).digest(),
        "sha256": lambda: hashlib.sha256(data).digest(),
        "zlib.crc32": lambda: zlib.crc32(data),
        "zlib.adler32": lambda: zlib.adler32(data),
    }
    try:
        import xxhash

        candidates["xxh3_64"] = lambda: xxhash.xxh3_64(data).digest()
    except ImportError:
        pass
    out = {}
    for name, fn in candidates.items():
        best = min(_timed(fn) for _ in range(3))
        out[name] = data.nbytes / best / 1e9
    return out


def _timed(fn) -> float:  # noqa: ANN001 - a zero-argument callable
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--shard-rows", type=int, default=8192, help="encode_cached's chunk")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="cache root (default: a temp dir)")
    args = ap.parse_args()

    print("hash throughput (256 MiB in memory, best of 3):")
    for name, gbps in hash_throughput().items():
        print(f"  {name:14s} {gbps:6.2f} GB/s")

    root = args.dir or Path(tempfile.mkdtemp(prefix="condsim-cache-verify-"))
    meta = ModelMeta("bench/cache-verify", args.dim, "none")
    rng = np.random.default_rng(0)
    keys = np.array([hashlib.blake2b(i.to_bytes(8, "little"), digest_size=16).hexdigest()
                     .encode() for i in range(args.rows)], dtype="S32")
    try:
        t0 = time.perf_counter()
        cache = EmbeddingCache(root, meta)
        checksum = 0.0
        for start in range(0, args.rows, args.shard_rows):
            emb = rng.standard_normal((min(args.shard_rows, args.rows - start), args.dim),
                                      np.float32)
            checksum += float(emb.sum(dtype=np.float64))
            cache.append(keys[start:start + args.shard_rows], emb)
        n_shards = len(list(cache.dir.glob("shard-*.keys.npy")))
        gb = sum(p.stat().st_size for p in cache.dir.glob("shard-*[0-9].npy")) / 1e9
        print(f"\nwrote {args.rows} rows x {args.dim} in {n_shards} shards ({gb:.3f} GB) in "
              f"{time.perf_counter() - t0:.1f} s (page cache warm from here on)")

        times: dict[bool, list[float]] = {True: [], False: []}
        spent: list[float] = []
        for rep in range(args.reps + 1):  # rep 0 warms allocator and page tables: not counted
            for verify in (True, False) if rep % 2 else (False, True):
                t0 = time.perf_counter()
                fresh = EmbeddingCache(root, meta, verify=verify)
                out = fresh.read(fresh.lookup(keys))
                if rep:
                    times[verify].append(time.perf_counter() - t0)
                assert abs(float(out.sum(dtype=np.float64)) - checksum) < 1e-3 * args.rows
                if verify and rep:
                    assert fresh.integrity.verified_shards == n_shards
                    spent.append(fresh.integrity.verify_seconds)
                del out, fresh
        print(f"\nread all rows in a fresh EmbeddingCache (open + lookup + read), {args.reps} "
              "reps after one warm-up, on/off order alternating:")
        for verify, label in ((True, "verify on "), (False, "verify off")):
            ts = times[verify]
            print(f"  {label}: {', '.join(f'{t:.3f}' for t in ts)} s  (min {min(ts):.3f}, "
                  f"median {statistics.median(ts):.3f})")
        for stat in (min, statistics.median):
            on, off = stat(times[True]), stat(times[False])
            print(f"  {stat.__name__:6s}: ratio on/off {on / off:.2f}x, verification cost "
                  f"{(on - off) / gb:.3f} s per GB end to end")
        print(f"  integrity.verify_seconds (median): {statistics.median(spent):.3f} s = "
              f"{statistics.median(spent) / gb:.3f} s per GB")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
