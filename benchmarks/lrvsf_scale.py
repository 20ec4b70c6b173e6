"""LRVS-F counting split over ranks: 1 rank vs 2 gloo ranks, identical counts.

The full protocol's scoring (20 folds x 10K/100K/500K/1M draws) over N memmapped synthetic
distractor embeddings (512-d float32; default N = 4M, ``--small``: 200K), 2,000 products.
Rank r of R takes the contiguous distractor rows ``[r N / R, (r + 1) N / R)``, makes the
same seeded draws as every rank (``seeded_draws(seed, n, N, window=shard)``), keeps only the
multiplicity rows of its shard and counts them
(:func:`condsim.benchmarks.lrvsf.shared_fold_counts`: rank 0 adds the product targets, one
``all_reduce`` sums the int64 ``(P, F, L)`` arrays):

    greater[p, f, l] = sum_r sum_{j in D_r} mult[j, l F + f] [q_p . d_j > q_p . t_p]

Each rank is a spawned process limited to one thread (``torch.set_num_threads(1)``), so a
rank stands for one device. Reports, in one run: wall time of each configuration (process
start to counts, draws included; memmap already in the page cache), peak anonymous memory
(RssAnon, memmap pages excluded) and peak RSS per rank, the bytes all-reduced, and whether
the counts of 1 and 2 ranks are identical.
Run: python benchmarks/lrvsf_scale.py [--small] [--n N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

DIM = 512
N_PRODUCTS = 2000
SEED = 0


class PeakMemory:
    """Peak ``RssAnon`` (sampled every 5 ms) and ``VmHWM`` (peak RSS, memmap pages included)
    of this process, in bytes."""

    def __init__(self) -> None:
        self.anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def status(field: str) -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.anon = max(self.anon, self.status("RssAnon"))
            time.sleep(0.005)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.anon = max(self.anon, self.status("RssAnon"))


def write_data(folder: Path, n: int) -> tuple[Path, Path]:
    """Unit-norm random distractors (``n x 512`` float32 memmap, written in chunks) and
    model-like products (targets correlated with their queries), seeded."""
    rng = np.random.default_rng(SEED)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    q = unit(rng.standard_normal((N_PRODUCTS, DIM), dtype=np.float32))
    t = unit(q + 4.0 * unit(rng.standard_normal((N_PRODUCTS, DIM), dtype=np.float32)))
    prod = folder / "products.npz"
    np.savez(prod, q=q, t=t)
    path = folder / "distractors.f32"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, DIM))
    for s in range(0, n, 200_000):
        e = min(n, s + 200_000)
        mm[s:e] = unit(rng.standard_normal((e - s, DIM), dtype=np.float32))
    mm.flush()
    del mm
    return prod, path


def _rank(rank: int, world: int, init: str, prod: str, dist_path: str, report: str,
          n_dists: tuple[int, ...]) -> None:
    """One rank: its shard's counts, summed over the ranks; writes timings and counts."""
    t0 = time.perf_counter()
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    from condsim.benchmarks.lrvsf import NFOLDS, shared_fold_counts
    from condsim.distributed import shard_bounds

    if world > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    with PeakMemory() as mem:
        data = np.load(prod)
        q, t = data["q"], data["t"]
        dists = np.load(dist_path, mmap_mode="r")
        n = dists.shape[0]
        start, stop = shard_bounds(n, rank, world)
        folds = np.random.default_rng([SEED, 0x5EED]).integers(0, N_PRODUCTS,
                                                               (NFOLDS, N_PRODUCTS // 2))
        t_draw = time.perf_counter()
        from condsim.benchmarks.lrvsf import seeded_draws

        draws = seeded_draws(SEED, n_dists, NFOLDS, n,
                             window=None if world == 1 else (start, stop))
        t_score = time.perf_counter()
        counts = shared_fold_counts(q, t, dists[start:stop], folds, draws, block_size=16384,
                                    device="cpu")
        t_end = time.perf_counter()
    np.savez(Path(report) / f"w{world}r{rank}.npz", greater=counts.greater, ties=counts.ties,
             times=np.array([t_draw - t0, t_score - t_draw, t_end - t_score, t_end - t0]),
             mem=np.array([mem.anon, PeakMemory.status("VmHWM")]),
             drawn=np.array([int(draws.mult.any(axis=1).sum())]))
    if world > 1:
        dist.destroy_process_group()


def spawn_ranks(target: Any, world: int, tmp: Path, *args: Any) -> float:
    """Run ``target(rank, world, init, *args)`` in ``world`` spawned processes (``init``: a
    file:// rendezvous in ``tmp``); their wall time. A failed rank ends the benchmark."""
    ctx = mp.get_context("spawn")
    init = f"file://{tmp / f'pg{world}'}"
    start = time.perf_counter()
    procs = [ctx.Process(target=target, args=(r, world, init, *args)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    wall = time.perf_counter() - start
    if any(p.exitcode for p in procs):
        raise SystemExit(f"a rank of the {world}-rank run failed")
    return wall


def run(world: int, prod: Path, dist_path: Path, tmp: Path, n_dists: tuple[int, ...]
        ) -> tuple[float, list[Any]]:
    """Wall time of ``world`` spawned ranks, and each rank's report."""
    wall = spawn_ranks(_rank, world, tmp, str(prod), str(dist_path), str(tmp), n_dists)
    return wall, [np.load(tmp / f"w{world}r{r}.npz") for r in range(world)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4_000_000, help="distractors")
    parser.add_argument("--small", action="store_true", help="200K distractors")
    parser.add_argument("--n-dists", default="10000,100000,500000,1000000",
                        help="distractor counts drawn per fold (the protocol's by default; "
                        "fewer draws leave rows undrawn, which are not read)")
    args = parser.parse_args()
    n_dists = tuple(int(x) for x in args.n_dists.split(","))
    n = 200_000 if args.small else args.n
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        prod, dist_path = write_data(tmp, n)
        np.load(dist_path, mmap_mode="r").sum(dtype=np.float64)  # into the page cache
        print(f"{n:,} x {DIM} float32 distractors ({n * DIM * 4 / 2**30:.2f} GiB memmap), "
              f"{N_PRODUCTS} products, 20 folds x {'/'.join(map(str, n_dists))} draws; data "
              f"{time.perf_counter() - t0:.1f} s")
        results = {w: run(w, prod, dist_path, tmp, n_dists) for w in (1, 2)}
        for world, (wall, reps) in results.items():
            print(f"{world} rank(s): wall {wall:.1f} s")
            for r, rep in enumerate(reps):
                tm, mem = rep["times"], rep["mem"]
                print(f"  rank {r}: startup {tm[0]:.1f} s, draws {tm[1]:.1f} s, counting "
                      f"{tm[2]:.1f} s; peak RssAnon {mem[0] / 2**20:.0f} MiB, peak RSS (with "
                      f"memmap pages) {mem[1] / 2**20:.0f} MiB")
        one, two = results[1][1][0], results[2][1]
        print(f"rows drawn at least once (the only ones read): {int(one['drawn'][0]):,} of "
              f"{n:,} ({one['drawn'][0] / n:.1%})")
        per_rank = [n / one["times"][2]] + [n / 2 / rep["times"][2] for rep in two]
        print(f"counting throughput per rank (distractor rows/s, {N_PRODUCTS:,} products x "
              f"{20 * len(n_dists)} fold-draw columns, 1 thread): "
              + ", ".join(f"{x:,.0f}" for x in per_rank))
        payload = one["greater"].nbytes + one["ties"].nbytes
        same = all(np.array_equal(one[k], rep[k]) for rep in two for k in ("greater", "ties"))
        print(f"all-reduced per rank: greater + ties int64 {one['greater'].shape} x 2 = "
              f"{payload / 2**20:.2f} MiB (gloo ring: ~{payload / 2**20:.2f} MiB sent per "
              "rank for 2 ranks), independent of N")
        print(f"counts identical (1 rank vs both of 2 ranks): {same}")
        print(f"ratio 2 ranks / 1 rank (wall): {results[2][0] / results[1][0]:.2f} "
              "(goal <= 0.6)")


if __name__ == "__main__":
    main()
