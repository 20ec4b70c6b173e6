"""Checksum-on-read overhead on a whole cached LRVS-F run (not just the cache reads).

Builds an LRVS-F test set with 200 products and ``--distractors`` (default 200,000) tiny
distinct PNG distractors in parquet shards, fills the embedding cache once with a cheap
512-d stub encoder, then times complete cached ``condsim`` LRVS-F runs (read every
distractor shard, key every image by its bytes digest, look the keys up, read and score
200,000 rows for every fold and distractor count) with shard verification on (the default)
and off (``EmbeddingCache(verify=False)``, for this measurement only), alternating, in one
process. Prints each time, the medians, the ratio and what verification itself took
(``skipped.cache_repairs.verify_seconds`` of the run).

Run: python benchmarks/cache_verify_lrvsf.py [--distractors 200000] [--reps 3]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import tempfile
import time
from functools import partialmethod
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from condsim.benchmarks.lrvsf import LRVSFConfig
from condsim.benchmarks.run import run_benchmark
from condsim.cache.store import EmbeddingCache
from condsim.synthetic.lrvsf import write_lrvsf
from condsim.types import ModelMeta

DIM = 512


class DigestEncoder:
    """A 512-d unit vector seeded by the image's pixels (+ condition): cheap to compute."""

    meta = ModelMeta("bench/digest", DIM, "digest")

    @staticmethod
    def _vec(key: bytes) -> torch.Tensor:
        seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
        v = torch.randn(DIM, generator=torch.Generator().manual_seed(seed % 2**63))
        return v / v.norm()

    def encode_targets(self, images):
        return torch.stack([self._vec(im.tobytes()) for im in images])

    def encode_queries(self, images, conditions):
        return torch.stack([self._vec(im.tobytes() + c.encode())
                            for im, c in zip(images, conditions, strict=True)])


def _jpeg(i: int) -> bytes:
    """An 8x8 JPEG whose pixels encode ``i`` (distinct images, distinct embeddings)."""
    rgb = np.frombuffer(int(i).to_bytes(3, "big"), np.uint8)
    pixels = np.broadcast_to(rgb, (8, 8, 3)).copy()
    pixels[0, 0] = (i % 251, i % 241, i % 239)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")  # lossless: every image decodes apart
    return buf.getvalue()


def build(root: Path, n: int) -> Path:
    data = write_lrvsf(root / "lrvsf", n_products=200, n_distractors=10, files=1, seed=0)
    for p in (data / "distractors").glob("*.parquet"):
        p.unlink()
    per_file = 50_000
    for f, start in enumerate(range(0, n, per_file)):
        rows = [_jpeg(i) for i in range(start, min(n, start + per_file))]
        pq.write_table(pa.table({"jpg": pa.array(rows, pa.binary())}),
                       data / "distractors" / f"part-{f:05d}.parquet")
    return data


def timed_run(cfg: LRVSFConfig, verify: bool) -> tuple[float, float, dict]:
    original = EmbeddingCache.__init__
    EmbeddingCache.__init__ = partialmethod(original, verify=verify)  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        result = run_benchmark(DigestEncoder(), cfg)
        return time.perf_counter() - t0, result.metrics["recall"], result.skipped
    finally:
        EmbeddingCache.__init__ = original  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--distractors", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="condsim-cv-") as tmp:
        t0 = time.perf_counter()
        data = build(Path(tmp), args.distractors)
        cfg = LRVSFConfig(data_root=str(data), n_dists=(10_000, 100_000), folds="seeded",
                          cache_dir=str(Path(tmp) / "cache"), num_workers=0, batch_size=256)
        print(f"built {args.distractors:,} distractors in {time.perf_counter() - t0:.1f} s")
        fill, reference, _ = timed_run(cfg, True)
        print(f"first run (encodes and caches every image): {fill:.1f} s")
        times: dict[bool, list[float]] = {True: [], False: []}
        verify_s = []
        for _ in range(args.reps):
            for verify in (True, False):
                t, recall, skipped = timed_run(cfg, verify)
                assert recall == reference, "a cached run changed the numbers"
                times[verify].append(t)
                if verify:
                    verify_s.append(skipped["cache_repairs"]["verify_seconds"])
        on, off = statistics.median(times[True]), statistics.median(times[False])
        size_gb = args.distractors * DIM * 4 / 1e9
        print(f"cached run, verification on : {', '.join(f'{t:.2f}' for t in times[True])} s")
        print(f"cached run, verification off: {', '.join(f'{t:.2f}' for t in times[False])} s")
        print(f"median on / off: {on:.2f} / {off:.2f} s = {on / off:.3f}x "
              f"(+{(on - off):.2f} s); verification itself: "
              f"{statistics.median(verify_s):.3f} s for {size_gb:.2f} GB of embeddings "
              f"({statistics.median(verify_s) / size_gb:.2f} s/GB); numbers identical: yes")


if __name__ == "__main__":
    main()
