"""CIRR (composed image retrieval on real-life images).

Val: global Recall@{1,5,10,50} over every image of the split with the reference image
removed from the ranking (the reference code sets its score to -1e5; here it is excluded),
and Recall_subset@{1,2,3} over the query's ``img_set`` members minus the reference. Both are
tie-safe expected recalls (:func:`condsim.metrics.expected_recall_at_k`). Test: labels are
hidden; :func:`write_submissions` writes the two server files (top-50 / top-3 names).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from condsim.benchmarks.base import BenchmarkMeta
from condsim.benchmarks.retrieval import (
    FileDigests,
    check_files,
    encode_unique,
    save_run,
    summarize_recalls,
)
from condsim.cache.store import EmbeddingCache
from condsim.data.cirr import read_cirr
from condsim.errors import DataError
from condsim.io import atomic_write_text
from condsim.metrics.recall import expected_recall_at_k
from condsim.models.base import require_condition_kind
from condsim.paths import default_cache_dir
from condsim.progress import ProgressFactory, no_progress
from condsim.registry import register_benchmark
from condsim.results.run_result import RunResult

logger = logging.getLogger(__name__)

KS = (1, 5, 10, 50)
SUBSET_KS = (1, 2, 3)
META = BenchmarkMeta(
    name="cirr", description="CIRR val: global recall (reference removed) and R_subset",
    main_score="recall_at_1", split="val", protocol_version="1",
    reference="https://github.com/Cuberick-Orion/CIRR",
)


@dataclass
class CirrConfig:
    root: str
    split: str = "val"
    img_root: str | None = None
    seed: int = 0
    n_bootstrap: int = 1000
    max_missing: int = 0
    batch_size: int = 64
    num_workers: int = 0
    cache_dir: str | None = None


def cirr_scores(model: Any, cfg: CirrConfig, progress: ProgressFactory = no_progress
                ) -> tuple[list, list[str], np.ndarray, dict[str, Any], dict[str, int]]:
    """Queries, gallery names, ``(Q, N)`` scores with the reference at ``-inf``, the gallery
    (name -> ImageRef) and skip counts. Missing image files (at most ``max_missing``) leave
    the gallery, and the queries that need them are skipped."""
    require_condition_kind(model, "text", "CIRR")
    queries, gallery = read_cirr(cfg.root, cfg.split, cfg.img_root)
    missing = check_files(list(gallery.values()), cfg.max_missing, f"CIRR {cfg.split}")
    skipped = {"missing_files": len(missing), "queries": 0}
    if missing:
        gallery = {n: r for n, r in gallery.items() if r.path not in missing}
        kept = [q for q in queries
                if all(n in gallery for n in (q.reference, q.target, *q.members) if n)]
        skipped["queries"] = len(queries) - len(kept)
        queries = kept
        if not queries:
            raise DataError(f"CIRR {cfg.split}: every query needs a missing image")
    names = list(gallery)
    refs = [gallery[n] for n in names]
    cache = EmbeddingCache(cfg.cache_dir or default_cache_dir(), model.meta)
    digests = FileDigests()
    enc = {"batch_size": cfg.batch_size, "num_workers": cfg.num_workers}
    g_emb, g_err, _ = encode_unique(model, cache, refs, digests,
                                    progress=progress("encode CIRR images", len(refs)),
                                    what="CIRR images", **enc)
    q_emb, q_err, _ = encode_unique(model, cache, [gallery[q.reference] for q in queries],
                                    digests, [q.caption for q in queries],
                                    progress=progress("encode CIRR queries", len(queries)),
                                    what="CIRR queries", **enc)
    if g_err or q_err:
        raise DataError(f"CIRR: {len(g_err) + len(q_err)} images cannot be decoded; first: "
                        f"{next(iter({**g_err, **q_err}.values()))}")
    index = {n: i for i, n in enumerate(names)}
    scores = (q_emb @ g_emb.T).astype(np.float64)
    scores[np.arange(len(queries)), [index[q.reference] for q in queries]] = -np.inf
    return queries, names, scores, gallery, skipped


class CirrBenchmark:
    meta = META

    def __init__(self, cfg: CirrConfig) -> None:
        if cfg.split == "test1":
            raise DataError("CIRR test1 has no labels: use write_submissions / "
                            "`condsim eval cirr --split test1 --submission DIR`")
        self.cfg = cfg

    def run(self, model: Any, *, progress: ProgressFactory = no_progress) -> RunResult:
        cfg = self.cfg
        queries, names, scores, gallery, skipped = cirr_scores(model, cfg, progress)
        index = {n: i for i, n in enumerate(names)}
        target = np.array([index[q.target] for q in queries])
        if np.any(target == np.array([index[q.reference] for q in queries])):
            raise DataError("CIRR: a query's target equals its reference")
        glob = expected_recall_at_k(scores, target, KS)
        sub_rows = []
        for i, q in enumerate(queries):
            cands = [index[m] for m in q.members if m != q.reference]
            if q.target not in q.members:
                raise DataError(f"CIRR pairid {q.pairid}: target not among img_set members")
            sub_rows.append((scores[i, cands], cands.index(index[q.target])))
        width = max(len(s) for s, _ in sub_rows)
        sub_scores = np.full((len(queries), width), -np.inf)
        for i, (s, _) in enumerate(sub_rows):
            sub_scores[i, : len(s)] = s
        subset = expected_recall_at_k(sub_scores, np.array([t for _, t in sub_rows]),
                                      SUBSET_KS)
        metrics = {
            "recall": summarize_recalls(glob, KS, seed=cfg.seed, n_resamples=cfg.n_bootstrap),
            "recall_subset": summarize_recalls(subset, SUBSET_KS, seed=cfg.seed + 7,
                                               n_resamples=cfg.n_bootstrap),
            "n_queries": len(queries), "gallery_size": len(names),
            "per_query": {"recall_at_1": glob[:, 0].tolist()},
            "query_ids": [q.pairid for q in queries],
        }
        r1 = metrics["recall"]["1"]
        from condsim.results.failures import collect_failures, file_ref

        failures = collect_failures(
            scores, target, query_image=lambda i: file_ref(gallery[queries[i].reference].path),
            condition=lambda i: queries[i].caption,
            candidate_image=lambda i, j: file_ref(gallery[names[j]].path),
            query_ids=[q.pairid for q in queries], limit=12)
        return RunResult(
            benchmark="cirr", model=model.meta.to_dict(),
            protocol={**META.to_dict(), "ks": list(KS), "subset_ks": list(SUBSET_KS),
                      "reference_removed": True, "tie_rule": "expected recall",
                      "bootstrap": {"n_resamples": cfg.n_bootstrap, "seed": cfg.seed}},
            seed=cfg.seed, headline={"name": "recall_at_1", **r1}, metrics=metrics,
            skipped=skipped, extra={"config": asdict(cfg), "failures": failures},
        )


register_benchmark("cirr")(CirrBenchmark)


def evaluate_cirr(model: Any, cfg: CirrConfig, out_dir: str | Path | None = None, *,
                  progress: ProgressFactory = no_progress) -> RunResult:
    result = CirrBenchmark(cfg).run(model, progress=progress)
    save_run(result, out_dir)
    return result


def write_submissions(model: Any, cfg: CirrConfig, out_dir: str | Path, *,
                      progress: ProgressFactory = no_progress) -> dict[str, Path]:
    """The test server's two files: ``{"version": "rc2", "metric": "recall", "<pairid>":
    [top-50 names]}`` and the ``recall_subset`` file with the top-3 members (reference
    excluded from both)."""
    queries, names, scores, _, skipped = cirr_scores(model, cfg, progress)
    if skipped["queries"]:
        logger.warning("CIRR %s submission: %d queries skipped (missing images); the server "
                       "expects every pairid", cfg.split, skipped["queries"])
    index = {n: i for i, n in enumerate(names)}
    top = np.argsort(-scores, axis=1, kind="stable")[:, :50]
    recall: dict[str, Any] = {"version": "rc2", "metric": "recall"}
    subset: dict[str, Any] = {"version": "rc2", "metric": "recall_subset"}
    for i, q in enumerate(queries):
        recall[str(q.pairid)] = [names[j] for j in top[i] if np.isfinite(scores[i, j])]
        members = [m for m in q.members if m != q.reference]
        order = np.argsort(-scores[i, [index[m] for m in members]], kind="stable")[:3]
        subset[str(q.pairid)] = [members[j] for j in order]
    out = Path(out_dir)
    return {
        "recall": atomic_write_text(out / f"cirr_{cfg.split}_recall.json", json.dumps(recall)),
        "recall_subset": atomic_write_text(out / f"cirr_{cfg.split}_recall_subset.json",
                                           json.dumps(subset)),
    }
