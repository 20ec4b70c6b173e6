"""MIT-States as GeneCIS evaluates it: change an object's state (adjective).

Layout ``images/<adj> <noun>/*.jpg`` (folders without a space, and adjective ``adj``, are
skipped). Test split = images of the 49 test nouns. Queries: every test image x every other
adjective seen with its noun; condition = the target adjective (or "<adj> <noun>" with
``complete_text``); relevant = every test image captioned "<target adj> <noun>"; gallery =
all test images with the reference removed. Recall@{1,5,10} = P(any relevant in the top K)
under random tie-breaking (:func:`condsim.metrics.recall.expected_any_hit_at_k`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from condsim.benchmarks.base import BenchmarkMeta, register_function_benchmark
from condsim.benchmarks.retrieval import FileDigests, encode_unique, save_run, summarize_recalls
from condsim.cache.store import EmbeddingCache
from condsim.data.crops import ImageRef
from condsim.errors import DataError
from condsim.metrics.recall import expected_any_hit_at_k
from condsim.models.base import require_condition_kind
from condsim.paths import default_cache_dir
from condsim.progress import ProgressFactory, no_progress
from condsim.results.run_result import RunResult

KS = (1, 5, 10)
TEST_NOUNS = (
    "armor", "bracelet", "bush", "camera", "candy", "castle", "ceramic", "cheese", "clock",
    "clothes", "coffee", "fan", "fig", "fish", "foam", "forest", "fruit", "furniture", "garden",
    "gate", "glass", "horse", "island", "laptop", "lead", "lightning", "mirror", "orange",
    "paint", "persimmon", "plastic", "plate", "potato", "road", "rubber", "sand", "shell", "sky",
    "smoke", "steel", "stream", "table", "tea", "tomato", "vacuum", "wax", "wheel", "window",
    "wool",
)
META = BenchmarkMeta(
    name="mitstates", description="MIT-States state change (GeneCIS protocol, 49 test nouns)",
    main_score="recall_at_1", split="test", protocol_version="1",
    reference="https://github.com/facebookresearch/genecis",
)


@dataclass
class MitStatesConfig:
    root: str  # holds images/
    complete_text: bool = False
    seed: int = 0
    n_bootstrap: int = 1000
    num_workers: int = 0
    cache_dir: str | None = None
    query_block: int = 2048


def read_test_images(root: str | Path) -> list[tuple[str, str, Path]]:
    """``(adj, noun, path)`` of the test split, sorted."""
    folder = Path(root) / "images"
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (expected images/<adj> <noun>/)")
    out = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        if " " not in d.name:
            continue
        adj, noun = d.name.split(" ", 1)
        if adj == "adj" or noun not in TEST_NOUNS:
            continue
        out += [(adj, noun, p) for p in sorted(d.glob("*.jpg"))]
    if not out:
        raise DataError(f"{folder}: no test images (nouns: {', '.join(TEST_NOUNS[:5])}, ...)")
    return out


def evaluate_mitstates(model: Any, cfg: MitStatesConfig, out_dir: str | Path | None = None,
                       *, progress: ProgressFactory = no_progress) -> RunResult:
    require_condition_kind(model, "text", "MIT-States")
    items = read_test_images(cfg.root)
    adjs_of: dict[str, list[str]] = {}
    for adj, noun, _ in items:
        adjs_of.setdefault(noun, [])
        if adj not in adjs_of[noun]:
            adjs_of[noun].append(adj)
    queries = [(i, a) for i, (adj, noun, _) in enumerate(items)
               for a in adjs_of[noun] if a != adj]
    if not queries:
        raise DataError("MIT-States: no noun has two adjectives in the test split")
    refs = [ImageRef(str(p)) for _, _, p in items]
    cache = EmbeddingCache(cfg.cache_dir or default_cache_dir(), model.meta)
    digests = FileDigests()
    g, g_err, _ = encode_unique(model, cache, refs, digests, num_workers=cfg.num_workers,
                                progress=progress("encode MIT-States images", len(refs)),
                                what="MIT-States images")
    texts = [f"{a} {items[i][1]}" if cfg.complete_text else a for i, a in queries]
    q, q_err, _ = encode_unique(model, cache, [refs[i] for i, _ in queries], digests, texts,
                                num_workers=cfg.num_workers, what="MIT-States queries",
                                progress=progress("encode MIT-States queries", len(queries)))
    if g_err or q_err:
        raise DataError(f"MIT-States: {len(g_err) + len(q_err)} images cannot be decoded")
    labels = np.array([f"{adj} {noun}" for adj, noun, _ in items])
    query_ids = [f"{items[i][2].parent.name}/{items[i][2].name}->{a}" for i, a in queries]
    rec = np.zeros((len(queries), len(KS)))
    cases: list[dict[str, Any]] = []
    for s in range(0, len(queries), cfg.query_block):
        block = queries[s:s + cfg.query_block]
        scores = (q[s:s + len(block)] @ g.T).astype(np.float64)
        ref = np.array([i for i, _ in block])
        scores[np.arange(len(block)), ref] = -np.inf
        relevant = labels[None, :] == np.array([f"{a} {items[i][1]}" for i, a in block])[:, None]
        rec[s:s + len(block)] = expected_any_hit_at_k(scores, relevant, KS)
        cases += _block_failures(scores, relevant, block, s, refs, texts, query_ids)
    metrics = {"recall": summarize_recalls(rec, KS, seed=cfg.seed, n_resamples=cfg.n_bootstrap),
               "n_queries": len(queries), "gallery_size": len(items),
               "per_query": {"recall_at_1": rec[:, 0].tolist()},
               "query_ids": query_ids}
    keep = np.unique(np.linspace(0, len(cases) - 1, min(len(cases), FAILURE_LIMIT))
                     .round().astype(int)) if cases else []
    failures = [cases[i] for i in keep]
    res = RunResult(
        benchmark="mitstates", model=model.meta.to_dict(),
        protocol={**META.to_dict(), "ks": list(KS), "complete_text": cfg.complete_text,
                  "reference_removed": True, "tie_rule": "expected any-hit",
                  "bootstrap": {"n_resamples": cfg.n_bootstrap, "seed": cfg.seed}},
        seed=cfg.seed, headline={"name": "recall_at_1", **metrics["recall"]["1"]},
        metrics=metrics, extra={"config": asdict(cfg), "failures": failures},
    )
    save_run(res, out_dir)
    return res


FAILURE_LIMIT = 12


def _block_failures(scores: np.ndarray, relevant: np.ndarray, block: list[tuple[int, str]],
                    start: int, refs: list[ImageRef], texts: list[str],
                    query_ids: list[str]) -> list[dict[str, Any]]:
    """Failure cases of one query block: a query fails when some image of another state
    scores at least as high as its best-scoring relevant image (any-hit R@1 below 1). The
    case's target is that best relevant image; the other relevant images are left out of
    the ranking shown (they are not wrong answers)."""
    from condsim.results.failures import collect_failures, file_ref

    has = relevant.any(axis=1)
    if not has.any():
        return []
    best = np.where(relevant, scores, -np.inf).argmax(axis=1)
    shown = scores.copy()
    others = relevant.copy()
    others[np.arange(len(block)), best] = False
    shown[others] = -np.inf
    rows = np.flatnonzero(has)
    return collect_failures(
        shown[rows], best[rows],
        query_image=lambda i: file_ref(refs[block[rows[i]][0]].path),
        condition=lambda i: texts[start + rows[i]],
        candidate_image=lambda i, j: file_ref(refs[j].path),
        query_ids=[query_ids[start + r] for r in rows], limit=FAILURE_LIMIT)


MitStatesBenchmark = register_function_benchmark("mitstates", META, evaluate_mitstates)
