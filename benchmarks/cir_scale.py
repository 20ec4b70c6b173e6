"""Composed-retrieval scoring split over ranks: 1 rank vs 2 gloo ranks, identical ranks.

CIRCO-sized data from ``benchmarks/cir_memory.py`` (800 queries x 123,403 gallery x 768-d
float32 memmap, 1-20 relevant items per query, the reference excluded; ``--small``: 100 x
10,000). :func:`condsim.benchmarks.protocol.rank_split` scores it with the top-50 candidates
(what CIRCO's submission needs): one process, then 2 gloo processes, each scoring its
contiguous gallery columns; their greater/tie counts are all-reduced and their top lists
gathered and merged. Each rank is a spawned process limited to one thread, so a rank stands
for one device. Prints each configuration's wall time (process start to ranks, data loading
included), the scoring time of each rank, and whether every rank's result equals the
1-process result (counts, top columns and scores).
Run: python benchmarks/cir_scale.py [--small]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from cir_memory import write_data  # benchmarks/: the script's folder
from lrvsf_scale import spawn_ranks

TOP = 50


def _rank(rank: int, world: int, init: str, folder: str) -> None:
    t0 = time.perf_counter()
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    from condsim.benchmarks.protocol import CIRSplit, EncodedSplit, rank_split

    if world > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    f = Path(folder)
    gallery = np.load(f / "gallery.npy", mmap_mode="r")
    data = np.load(f / "queries.npz")
    queries, offsets, flat = data["queries"], data["offsets"], data["flat"]
    relevant = [flat[offsets[q]:offsets[q + 1]].tolist() for q in range(len(queries))]
    # the items are never encoded here: placeholders of the right lengths
    split = CIRSplit(label="circo-like", gallery=[b""] * gallery.shape[0],
                     queries=[b""] * len(queries), conditions=[None] * len(queries),
                     query_ids=list(range(len(queries))), relevant=relevant,
                     excluded=[[int(r)] for r in data["refs"]])
    encoded = EncodedSplit(split, queries, gallery, 0)
    cfg = SimpleNamespace(device="cpu", query_block=1024, gallery_block=8192)
    t1 = time.perf_counter()
    ranks = rank_split(encoded, cfg, top=TOP)
    t2 = time.perf_counter()
    np.savez(f / f"w{world}r{rank}.npz", greater=ranks.greater, ties=ranks.ties,
             top_cols=ranks.top_cols, top_scores=ranks.top_scores,
             times=np.array([t1 - t0, t2 - t1]))
    if world > 1:
        dist.destroy_process_group()


def run(world: int, folder: Path) -> tuple[float, list[dict[str, np.ndarray]]]:
    """Wall time of ``world`` spawned ranks, and each rank's report."""
    wall = spawn_ranks(_rank, world, folder, str(folder))
    return wall, [dict(np.load(folder / f"w{world}r{r}.npz")) for r in range(world)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="100 queries x 10,000 gallery")
    args = ap.parse_args()
    n_q, n, d = (100, 10_000, 768) if args.small else (800, 123_403, 768)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_data(folder, n_q, n, d, seed=0)
        np.load(folder / "gallery.npy", mmap_mode="r").sum(dtype=np.float64)  # page cache
        print(f"{n_q} queries x {n:,} gallery x {d}-d float32 memmap, top {TOP} candidates")
        results = {w: run(w, folder) for w in (1, 2)}
        for world, (wall, reps) in results.items():
            scoring = ", ".join(f"rank {r}: {rep['times'][1]:.1f} s" for r, rep in
                                enumerate(reps))
            print(f"{world} rank(s): wall {wall:.1f} s (scoring {scoring})")
        one = results[1][1][0]
        same = all(np.array_equal(one[k], rep[k]) for rep in results[2][1]
                   for k in ("greater", "ties", "top_cols", "top_scores"))
        print(f"ranks identical (1 rank vs both of 2 ranks): {same}")
        print(f"ratio 2 ranks / 1 rank: wall {results[2][0] / results[1][0]:.2f}, scoring "
              f"{max(r['times'][1] for r in results[2][1]) / one['times'][1]:.2f}")


if __name__ == "__main__":
    main()
