"""CIRCO-sized mAP@K: condsim's blockwise engine vs a full score matrix (time, peak memory).

Data (seeded, written once to a temp folder): a Q x N x d float32 gallery of random unit
vectors as an ``np.memmap`` on disk; each query has 1-20 relevant gallery items (a geometric
draw with mean 4.5, truncated at 20: CIRCO's val set averages about 4.5 ground truths) and
one reference image, excluded from its ranking. A query is the normalised sum of its
reference (weight 1.0), its relevant items (mean, weight 0.8) and noise (weight 1.2), so the
reference would come first if it were not removed and mAP is far from 0 and from 1.

Two ways to the same numbers (mAP@5/10/25/50, each query's expected AP under random
tie-breaking, AP normalised by min(#gt, K)):

  blockwise    condsim.search.blockwise.rank_relevant (gallery read 8,192 rows at a time,
               queries 1,024 at a time) + condsim.metrics.ap.expected_ap_from_ranks;
  full-matrix  what condsim's CIRCO code did before the engine: scores = (q @ g.T) as
               float64, the reference's score set to -inf, condsim.metrics.ap.map_at_ks.

Each runs in a fresh subprocess (same interpreter, same environment). Memory = peak of the
process's anonymous resident memory (``RssAnon`` in /proc/self/status, sampled every 2 ms by
a thread) minus its value just before the run, after imports, the lazy opening of the
memmap and the loading of the queries. File-backed memmap pages are page cache, not
anonymous, so reading the gallery does not count; what counts is every array the method
allocates (numpy and torch alike). ``ru_maxrss`` growth is printed too: it includes the
memmap pages the process touched (about N x d x 4 bytes for both methods).

Run: python benchmarks/cir_memory.py            (800 x 123,403 x 768: CIRCO test x COCO
                                                 unlabeled2017; ~380 MB of disk, a few GB RAM)
     python benchmarks/cir_memory.py --small    (100 x 10,000: a quick check)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

KS = (5, 10, 25, 50)
MIB = 2**20


def write_data(folder: Path, n_q: int, n: int, d: int, seed: int) -> dict[str, float]:
    """Gallery memmap, queries, relevant sets and references in ``folder``; data stats."""
    rng = np.random.default_rng(seed)
    gallery = np.lib.format.open_memmap(folder / "gallery.npy", "w+", np.float32, (n, d))
    for s in range(0, n, 16_384):
        e = min(n, s + 16_384)
        x = rng.standard_normal((e - s, d), dtype=np.float32)
        gallery[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    gallery.flush()
    n_rel = np.minimum(rng.geometric(1 / 4.5, size=n_q), 20)
    queries = np.empty((n_q, d), np.float32)
    refs = np.empty(n_q, np.int64)
    offsets = np.r_[0, np.cumsum(n_rel)]
    flat = np.empty(int(offsets[-1]), np.int64)
    for q in range(n_q):
        picked = rng.choice(n, size=int(n_rel[q]) + 1, replace=False)
        refs[q], flat[offsets[q]:offsets[q + 1]] = picked[0], picked[1:]
        x = (1.0 * gallery[picked[0]] + 0.8 * gallery[picked[1:]].mean(axis=0)
             + 1.2 * rng.standard_normal(d).astype(np.float32) / np.sqrt(d))
        queries[q] = x / np.linalg.norm(x)
    del gallery
    np.savez(folder / "queries.npz", queries=queries, refs=refs, flat=flat, offsets=offsets)
    return {"mean_relevant": float(n_rel.mean()), "min_relevant": int(n_rel.min()),
            "max_relevant": int(n_rel.max())}


def anon_rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


class AnonPeak:
    """Peak anonymous RSS above its value at ``__enter__``, sampled every 2 ms."""

    def __enter__(self) -> AnonPeak:
        self.base = self.peak = anon_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, anon_rss())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anon_rss())


def run_blockwise(queries, gallery, relevant, refs):
    from condsim.metrics.ap import expected_ap_from_ranks
    from condsim.search.blockwise import rank_relevant

    ranks = rank_relevant(queries, gallery, relevant, [[int(r)] for r in refs], device="cpu")
    ap = np.zeros((len(queries), len(KS)))
    for q in range(len(queries)):
        n = int(ranks.n_relevant[q])
        ap[q] = expected_ap_from_ranks(ranks.scores[q, :n], ranks.greater[q, :n],
                                       ranks.ties[q, :n], n, KS)
    return ap


def run_full(queries, gallery, relevant, refs):
    from condsim.metrics.ap import map_at_ks

    scores = (queries @ gallery.T).astype(np.float64)
    scores[np.arange(len(queries)), refs] = -np.inf
    return map_at_ks(scores, [np.asarray(r) for r in relevant], KS)


def worker(method: str, folder: Path, profile: bool) -> None:
    """One method in this (fresh) process; prints one JSON line, saves per-query APs."""
    import torch  # noqa: F401  (imported before the baseline, as condsim's engine needs it)

    import condsim.metrics.ap  # noqa: F401
    import condsim.search.blockwise  # noqa: F401

    gallery = np.load(folder / "gallery.npy", mmap_mode="r")
    data = np.load(folder / "queries.npz")
    queries, refs, flat, offsets = (data[k] for k in ("queries", "refs", "flat", "offsets"))
    relevant = [flat[offsets[q]:offsets[q + 1]].tolist() for q in range(len(queries))]
    fn = run_blockwise if method == "blockwise" else run_full
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    with AnonPeak() as mem:
        t0 = time.perf_counter()
        ap = fn(queries, gallery, relevant, refs)
        seconds = time.perf_counter() - t0
    if prof is not None:
        import pstats

        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    np.save(folder / f"ap_{method}.npy", ap)
    print(json.dumps({"method": method, "seconds": seconds, "anon_extra": mem.peak - mem.base,
                      "maxrss_extra": maxrss - maxrss0}))


def spawn(method: str, folder: Path, profile: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", method, "--dir", str(folder)]
    if profile:
        cmd.append("--profile")
    out = subprocess.run(cmd, text=True, stdout=subprocess.PIPE,
                         stderr=None if profile else subprocess.PIPE)
    if out.returncode:
        sys.exit(f"{method} run failed ({out.returncode}):\n{out.stderr or ''}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b > 0 else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="100 queries x 10,000 gallery")
    ap.add_argument("--queries", type=int, default=800)
    ap.add_argument("--gallery", type=int, default=123_403)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per method, alternating (the fastest time, the largest memory)")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile each run (top entries to stderr; slows the run)")
    ap.add_argument("--worker", choices=("blockwise", "full"), help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.dir, args.profile)
        return
    if args.small:
        args.queries, args.gallery = 100, 10_000
    import torch

    with tempfile.TemporaryDirectory(dir=os.environ.get("CONDSIM_BENCH_TMP")) as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        stats = write_data(folder, args.queries, args.gallery, args.dim, args.seed)
        size = (folder / "gallery.npy").stat().st_size
        print(f"CIRCO-sized mAP@K: {args.queries:,} queries x {args.gallery:,} gallery x "
              f"{args.dim}-d float32 memmap ({size / MIB:.0f} MiB, written in "
              f"{time.perf_counter() - t0:.1f} s), seed {args.seed}")
        print(f"relevant per query: {stats['min_relevant']}-{stats['max_relevant']}, mean "
              f"{stats['mean_relevant']:.2f} (geometric, mean 4.5, truncated at 20); reference "
              f"excluded; torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{os.cpu_count()} CPUs")
        runs: dict[str, list[dict[str, float]]] = {"blockwise": [], "full": []}
        for _ in range(args.repeat):
            for method in runs:
                runs[method].append(spawn(method, folder, args.profile))
        aps = {m: np.load(folder / f"ap_{m}.npy") for m in runs}
    best = {m: {"seconds": min(r["seconds"] for r in rs),
                "anon_extra": max(r["anon_extra"] for r in rs),
                "maxrss_extra": max(r["maxrss_extra"] for r in rs)} for m, rs in runs.items()}
    b, f = best["blockwise"], best["full"]
    print(f"\n{'method':<12} {'time (s)':>9} {'peak extra anon (MiB)':>22} "
          f"{'ru_maxrss growth (MiB)':>23}")
    for name, r in (("blockwise", b), ("full-matrix", f)):
        print(f"{name:<12} {r['seconds']:>9.2f} {r['anon_extra'] / MIB:>22.0f} "
              f"{r['maxrss_extra'] / MIB:>23.0f}")
    print(f"{'ratio b/f':<12} {b['seconds'] / f['seconds']:>9.2f} "
          f"{_ratio(b['anon_extra'], f['anon_extra']):>22} "
          f"{_ratio(b['maxrss_extra'], f['maxrss_extra']):>23}")
    diff = float(np.abs(aps["blockwise"] - aps["full"]).max())
    means = {m: a.mean(axis=0) for m, a in aps.items()}
    print("\nmAP@K (%)    " + "  ".join(f"{'@' + str(k):>7}" for k in KS))
    for name, m in (("blockwise", "blockwise"), ("full-matrix", "full")):
        print(f"{name:<12} " + "  ".join(f"{v * 100:7.3f}" for v in means[m]))
    print(f"max |per-query AP difference| = {diff:.3g} (identical to 1e-9: {diff <= 1e-9})")
    ok_mem = b["anon_extra"] <= 512 * MIB
    ok_time = b["seconds"] <= 1.2 * f["seconds"]
    print(f"goals: blockwise extra memory <= 512 MiB: {'yes' if ok_mem else 'NO'}; "
          f"time <= 1.2x full-matrix: {'yes' if ok_time else 'NO'} "
          f"({b['seconds'] / f['seconds']:.2f}x)")
    if diff > 1e-9:
        sys.exit(1)


if __name__ == "__main__":
    main()
