"""LRVS-F evaluator speed and memory: reference-style fold loop vs condsim's single pass.

Part 1 (speed, same inputs, identical outputs): P products x F folds x n draws x d dims.
  reference: per fold, gather the gallery (fold's unique targets + drawn distractors),
             torch.topk(q @ gallery.T, 100), hit@K weighted by query multiplicity
             (the official LRVSF.evaluate_1_fold loop).
  condsim:   condsim.benchmarks.lrvsf.fold_recalls (one pass over the distractors).
Part 2 (memory, --memmap-n): the full 4-level protocol (10K/100K/500K/1M draws x 20 folds)
  over an N x d float32 np.memmap; prints peak extra anonymous memory (RssAnon sampled
  every 5 ms) and wall time vs one plain float32 matmul pass (q @ block.T over all blocks).

Embeddings are "model-like": targets correlate with their queries so recall is realistic.
Run: python benchmarks/lrvsf_eval.py [--quick] [--memmap-n 2000000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from condsim.benchmarks.lrvsf import DIST_COUNTS, KS, fold_recalls, seeded_draws
from condsim.benchmarks.lrvsf_core import recalls_from_fold_counts
from condsim.search.exact import fold_rank_counts


def make_embeddings(p: int, n: int, d: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    q = unit(rng.standard_normal((p, d), dtype=np.float32))
    t = unit(q + 4.0 * unit(rng.standard_normal((p, d), dtype=np.float32)))
    dist = np.empty((n, d), np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        dist[s:e] = unit(rng.standard_normal((e - s, d), dtype=np.float32))
    return q, t, dist


def reference_loop(q, t, dist, folds, draws, ks) -> np.ndarray:
    qt, tt, dt = (torch.from_numpy(x) for x in (q, t, dist))
    out = np.zeros((folds.shape[0], len(ks)))
    for f in range(folds.shape[0]):
        uniq, counts = torch.unique(torch.from_numpy(folds[f]), return_counts=True)
        gallery = torch.cat([tt[uniq], dt[torch.from_numpy(draws[f])]], dim=0)
        top = torch.topk(qt[uniq] @ gallery.T, 100, dim=1).indices
        hits = (top == torch.arange(len(uniq))[:, None]).float().cumsum(1) > 0
        w = counts.double()
        for j, k in enumerate(ks):
            out[f, j] = float((hits[:, k - 1].double() * w).sum() / w.sum())
    return out


class AnonPeak:
    """Peak of RssAnon (anonymous resident memory, excludes file-backed memmap pages)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def read() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        return 0

    def __enter__(self) -> AnonPeak:
        self.base = self.read()
        self.peak = self.base

        def loop() -> None:
            while not self._stop.is_set():
                self.peak = max(self.peak, self.read())
                time.sleep(0.005)

        self._t = threading.Thread(target=loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.read())

    @property
    def extra(self) -> int:
        return self.peak - self.base


def part1(p: int, f: int, b: int, n_draws: int, pool: int, d: int) -> None:
    print(f"== speed: {p} products x {f} folds x {b} per fold, {n_draws:,} draws from "
          f"{pool:,} distractors, d={d}, torch threads={torch.get_num_threads()}")
    q, t, dist = make_embeddings(p, pool, d, 0)
    rng = np.random.default_rng(1)
    folds = rng.integers(0, p, (f, b))
    draws = rng.integers(0, pool, (f, n_draws))
    t0 = time.perf_counter()
    ref = reference_loop(q, t, dist, folds, draws, KS)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = fold_recalls(q, t, dist, folds, draws, KS)
    t_ours = time.perf_counter() - t0
    diff = float(np.abs(ref - ours).max())
    print(f"reference loop : {t_ref:8.2f} s   R@1 mean {ref[:, 0].mean() * 100:.2f}")
    print(f"condsim        : {t_ours:8.2f} s   R@1 mean {ours[:, 0].mean() * 100:.2f}")
    print(f"max |difference| over folds x K: {diff:.3g}  (identical: {diff == 0.0})")
    print(f"speed ratio    : {t_ref / t_ours:.1f}x")


def part2(n: int, p: int, d: int, block: int) -> None:
    print(f"== memory: full protocol, {n:,} x {d} float32 memmap, {p} products, 20 folds, "
          f"draws {list(DIST_COUNTS)}")
    q, t, _ = make_embeddings(p, 1, d, 0)
    with tempfile.TemporaryDirectory(dir=os.environ.get("CONDSIM_BENCH_TMP")) as tmp:
        path = Path(tmp) / "dist.npy"
        mm = np.lib.format.open_memmap(path, "w+", np.float32, (n, d))
        rng = np.random.default_rng(2)
        for s in range(0, n, 100_000):
            e = min(n, s + 100_000)
            x = rng.standard_normal((e - s, d), dtype=np.float32)
            mm[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
        mm.flush()
        del mm
        dist = np.load(path, mmap_mode="r")
        folds = np.random.default_rng(3).integers(0, p, (20, p // 2))
        qt = torch.from_numpy(q)
        dist[:]  # noqa: B018  (touch nothing; keep the page cache state comparable)
        t0 = time.perf_counter()
        for s in range(0, n, block):
            _ = qt @ torch.from_numpy(np.array(dist[s:s + block])).T
        t_mm = time.perf_counter() - t0
        with AnonPeak() as mem:
            t0 = time.perf_counter()
            draws = seeded_draws(0, DIST_COUNTS, 20, n)
            counts = fold_rank_counts(q, t, dist, folds, draws, block_size=block)
            rec = recalls_from_fold_counts(counts, KS)
            t_ours = time.perf_counter() - t0
        print(f"one float32 matmul pass : {t_mm:8.2f} s")
        print(f"condsim full protocol   : {t_ours:8.2f} s  ({t_ours / t_mm:.2f}x the matmul pass)")
        print(f"peak extra anon memory  : {mem.extra / 2**20:8.0f} MiB "
              f"(multiplicities {draws.mult.nbytes / 2**20:.0f} MiB)")
        print("R@1 per distractor count:",
              ", ".join(f"{n_:,}: {rec[:, i, 0].mean() * 100:.2f}"
                        for i, n_ in enumerate(DIST_COUNTS)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--products", type=int, default=2000)
    ap.add_argument("--draws", type=int, default=500_000)
    ap.add_argument("--pool", type=int, default=500_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--memmap-n", type=int, default=0, help="run part 2 with N distractors")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.products, args.draws, args.pool = 400, 20_000, 20_000
    if not args.skip_speed:
        part1(args.products, 20, args.products // 2, args.draws, args.pool, args.dim)
    if args.memmap_n:
        part2(args.memmap_n, args.products, args.dim, 16384)


if __name__ == "__main__":
    main()
