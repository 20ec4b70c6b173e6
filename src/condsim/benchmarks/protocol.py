"""The composed-retrieval protocol, shared by every CIR benchmark.

A benchmark's file reads its split into a :class:`CIRSplit` (query reference images,
conditions, ids, gallery, relevant sets, excluded items) and turns the resulting
:class:`~condsim.search.blockwise.RelevantRanks` into its own metrics. Everything else
happens here, once:

1. **missing / undecodable policy**: gallery files that are missing or cannot be decoded
   (together at most ``max_missing``) leave the gallery, and the queries that need them are
   skipped and counted; more is an error naming the first files;
2. **encode once, through the cache**: each unique image (and each unique
   (image, condition) query) is encoded at most once and only when not cached
   (under ``torchrun`` each rank encodes a share into the shared cache first);
3. **blockwise tie-safe scoring** in bounded memory (:func:`condsim.search.blockwise.
   rank_relevant`: one row-dot rule, float32, query blocks x gallery blocks; under
   ``torchrun`` one gallery shard per rank, counts all-reduced: :func:`rank_split`);
4. **bootstrap CIs** of every per-query metric (:func:`summarize`), the **failure gallery**
   (:func:`failure_cases`), and the **headline** taken from the spec's main score
   (:func:`headline_of`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from condsim.benchmarks.retrieval import FileDigests, encode_unique, ref_keys, summarize_recalls
from condsim.cache.encode import encode_cached, query_namespace
from condsim.cache.store import KEY_DTYPE, EmbeddingCache, item_keys
from condsim.data.crops import ImageRef
from condsim.data.lazy_images import LazyImage, ParquetImage
from condsim.errors import DataError
from condsim.paths import default_cache_dir
from condsim.progress import ProgressFactory
from condsim.results.failures import FAILURES_SCHEMA, file_ref
from condsim.results.run_result import RunResult
from condsim.search.blockwise import RelevantRanks, merge_tops, rank_relevant

logger = logging.getLogger(__name__)

#: An item of a split: an image file (optionally a crop), a parquet cell read when needed,
#: or encoded image bytes.
Item = ImageRef | ParquetImage | bytes


@dataclass
class CIRSplit:
    """One composed-retrieval split as its benchmark reads it.

    Query ``i`` is the image ``queries[i]`` with condition ``conditions[i]`` (``None``: an
    image-only query, encoded as a target); ``relevant[i]`` are the gallery columns it must
    retrieve (``gains[i]`` their graded relevance, default 1), ``excluded[i]`` the columns
    removed from its ranking (e.g. its own reference image), ``needs[i]`` further columns it
    cannot be scored without (e.g. CIRR's subset members). ``gallery_ref``/``query_ref`` give
    failure-gallery image references (default: the file of an :class:`ImageRef`).
    """

    label: str
    gallery: list[Item]
    queries: list[Item]
    conditions: list[str | None]
    query_ids: list[Any]
    relevant: list[list[int]]
    excluded: list[list[int]] | None = None
    needs: list[list[int]] | None = None
    gains: list[list[float]] | None = None
    gallery_ref: Callable[[int], dict[str, Any]] | None = None
    query_ref: Callable[[int], dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_q = len(self.queries)
        for name in ("conditions", "query_ids", "relevant", "excluded", "needs", "gains"):
            value = getattr(self, name)
            if value is not None and len(value) != n_q:
                raise DataError(f"{self.label}: {len(value)} {name} for {n_q} queries")
        if not n_q:
            raise DataError(f"{self.label}: no queries")
        if not self.gallery:
            raise DataError(f"{self.label}: empty gallery")

    def select(self, keep: Sequence[int]) -> CIRSplit:
        """The split restricted to the queries ``keep`` (gallery unchanged)."""
        def pick(x: list[Any] | None) -> list[Any] | None:
            return None if x is None else [x[i] for i in keep]

        return replace(self, queries=pick(self.queries), conditions=pick(self.conditions),
                       query_ids=pick(self.query_ids), relevant=pick(self.relevant),
                       excluded=pick(self.excluded), needs=pick(self.needs),
                       gains=pick(self.gains), query_ref=_compose(self.query_ref, keep))

    def ref_of_gallery(self, j: int) -> dict[str, Any]:
        return self.gallery_ref(j) if self.gallery_ref else _item_ref(self.gallery[j])

    def ref_of_query(self, i: int) -> dict[str, Any]:
        return self.query_ref(i) if self.query_ref else _item_ref(self.queries[i])


def _compose(fn: Callable[[int], Any] | None, keep: Sequence[int]) -> Callable[[int], Any] | None:
    if fn is None:
        return None
    index = list(keep)
    return lambda i: fn(index[i])


def _item_ref(item: Item) -> dict[str, Any]:
    if isinstance(item, ImageRef):
        return file_ref(item.path, item.bbox, item.crop_mode if item.bbox else None)
    return {"kind": "none"}


@dataclass
class MissingBudget:
    """Missing + undecodable gallery files of one run, against ``max_missing``."""

    max_missing: int
    missing: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)

    def add(self, label: str, missing: Sequence[str], undecodable: Sequence[str], *,
            first_error: str = "") -> None:
        """Count more missing / undecodable files; over ``max_missing`` in all, a
        :class:`DataError` naming the first ones (and ``first_error``, the first decode
        error's message, when given)."""
        self.missing += list(missing)
        self.undecodable += list(undecodable)
        total = len(self.missing) + len(self.undecodable)
        if total > self.max_missing:
            first = (self.missing + self.undecodable)[:3]
            reason = f"; first error: {first_error}" if first_error else ""
            raise DataError(
                f"{label}: {total} image file(s) missing or undecodable ({len(self.missing)} "
                f"missing, {len(self.undecodable)} undecodable; allowed: {self.max_missing}), "
                f"e.g. {first}{reason}; check the image folders or raise --max-missing")
        if missing or undecodable:
            logger.warning("%s: %d missing and %d undecodable image(s) skipped with their "
                           "queries: %s", label, len(missing), len(undecodable),
                           list(missing)[:3] + list(undecodable)[:3])

    def counts(self) -> dict[str, Any]:
        return {"missing_files": len(self.missing), "undecodable_files": len(self.undecodable),
                "examples": (self.missing + self.undecodable)[:10]}


@dataclass
class EncodedSplit:
    """A split after the missing/undecodable policy, with its embeddings."""

    split: CIRSplit
    queries: np.ndarray  # (Q, d) float32
    gallery: np.ndarray  # (N, d) float32
    skipped_queries: int
    n_unusable: int = 0  # gallery items missing or undecodable (left out of every ranking)

    @property
    def gallery_size(self) -> int:
        """Gallery items that can be ranked."""
        return len(self.split.gallery) - self.n_unusable


def open_cache(model: Any, cfg: Any) -> EmbeddingCache:
    """The run's embedding cache (``cfg.cache_dir`` or the default)."""
    return EmbeddingCache(cfg.cache_dir or default_cache_dir(), model.meta)


def _encode_items(model: Any, cache: EmbeddingCache, items: Sequence[Item],
                  conditions: Sequence[str] | None, digests: FileDigests, cfg: Any,
                  progress: Callable[[int], None], what: str
                  ) -> tuple[np.ndarray, dict[int, str]]:
    """Embeddings of files (:class:`ImageRef`) or image bytes, each unique one encoded once;
    undecodable rows are NaN and listed."""
    enc = {"batch_size": cfg.batch_size, "num_workers": cfg.num_workers}
    if all(isinstance(x, ImageRef) for x in items):
        emb, errors, _ = encode_unique(model, cache, list(items), digests, conditions,
                                       progress=progress, what=what, **enc)
        return emb, errors
    rows, errors = encode_cached(model, cache, list(items), conditions, progress=progress,
                                 what=what, **enc)
    emb = np.full((len(items), model.meta.embedding_dim), np.nan, np.float32)
    ok = rows >= 0
    emb[ok] = cache.read(rows[ok])
    return emb, errors


def _name(item: Item, i: int) -> str:
    if isinstance(item, ImageRef):
        return item.path
    return item.where if isinstance(item, LazyImage) else f"item {i}"


def _item_keys(model: Any, items: Sequence[Item], conditions: Sequence[str] | None,
               digests: FileDigests) -> np.ndarray:
    """The cache key of each item (a file: :func:`ref_keys`; bytes: :func:`item_keys`), as
    :func:`_encode_items` computes them."""
    ns = query_namespace(model)
    keys = np.empty(len(items), KEY_DTYPE)
    for i, x in enumerate(items):
        cond = None if conditions is None else [conditions[i]]
        keys[i] = (ref_keys([x], digests, cond, namespace=ns) if isinstance(x, ImageRef)
                   else item_keys([x], cond, namespace=ns))[0]
    return keys


def _share_split(model: Any, cache: EmbeddingCache, split: CIRSplit, present: Sequence[int],
                 cfg: Any, digests: FileDigests, what: str | None = None) -> None:
    """Under ``torchrun``: the split's ``present`` gallery images and existing query images
    encoded across the ranks into the shared cache (:func:`condsim.distributed.shared_encode`),
    each unique item once across the job, so that the single-process pass that follows reads
    them all from the cache. With no gallery images (``present`` empty) it shares only the
    queries, e.g. those of the condition test's perturbed conditions."""
    from condsim.distributed import rank_world, shared_encode

    if rank_world()[1] == 1:
        return
    exists = [i for i, q in enumerate(split.queries)
              if not (isinstance(q, ImageRef) and not Path(q.path).is_file())]
    plain = [i for i in exists if split.conditions[i] is None]
    composed = [i for i in exists if split.conditions[i] is not None]
    targets = [split.gallery[j] for j in present] + [split.queries[i] for i in plain]
    queries = [split.queries[i] for i in composed]
    conds = [str(split.conditions[i]) for i in composed]
    shared_encode(model, cache, targets, _item_keys(model, targets, None, digests), queries,
                  conds, _item_keys(model, queries, conds, digests),
                  _item_keys(model, queries, None, digests), batch_size=cfg.batch_size,
                  num_workers=cfg.num_workers, what=what or split.label)


def encode_split(model: Any, cache: EmbeddingCache, split: CIRSplit, cfg: Any,
                 budget: MissingBudget, progress: ProgressFactory) -> EncodedSplit:
    """Apply the missing/undecodable policy and encode the gallery and the queries. Under
    ``torchrun`` the ranks first encode disjoint shards of the split into the shared cache;
    then every rank reads the whole split and applies the policy alike (same errors)."""
    digests = FileDigests()
    gallery = split.gallery
    missing = {j for j, x in enumerate(gallery)
               if isinstance(x, ImageRef) and not Path(x.path).is_file()}
    present = [j for j in range(len(gallery)) if j not in missing]
    _share_split(model, cache, split, present, cfg, digests)
    g_emb = np.full((len(gallery), model.meta.embedding_dim), np.nan, np.float32)
    if present:
        emb, errors = _encode_items(model, cache, [gallery[j] for j in present], None, digests,
                                    cfg, progress(f"encode {split.label} gallery", len(present)),
                                    f"{split.label} gallery")
        g_emb[present] = emb
        bad_gallery = {present[i] for i in errors}
        first_error = next(iter(errors.values()), "")
    else:
        bad_gallery, first_error = set(), ""
    budget.add(split.label, sorted({_name(gallery[j], j) for j in missing}),
               sorted({_name(gallery[j], j) for j in bad_gallery}), first_error=first_error)
    unusable = missing | bad_gallery
    # query image files that are not gallery items (e.g. image-only queries) count too
    counted = {_name(gallery[j], j) for j in missing}
    budget.add(f"{split.label} queries", sorted(
        {q.path for q in split.queries if isinstance(q, ImageRef)
         and not Path(q.path).is_file()} - counted), [])
    keep = [i for i in range(len(split.queries))
            if not unusable.intersection(split.relevant[i])
            and not (split.needs and unusable.intersection(split.needs[i]))
            and not (isinstance(split.queries[i], ImageRef)
                     and not Path(split.queries[i].path).is_file())]
    n_skipped = len(split.queries) - len(keep)
    if not keep:
        raise DataError(f"{split.label}: every query needs a missing or undecodable image")
    split = split.select(keep) if n_skipped else split
    q_emb = _encode_queries(model, cache, split, cfg, digests, progress)
    bad_q = np.flatnonzero(~np.isfinite(q_emb).all(axis=1))
    if bad_q.size:
        names = sorted({_name(split.queries[i], i) for i in bad_q.tolist()})
        budget.add(f"{split.label} queries", [], names)
        keep2 = [i for i in range(len(split.queries)) if i not in set(bad_q.tolist())]
        if not keep2:
            raise DataError(f"{split.label}: every query image is undecodable")
        q_emb = q_emb[keep2]
        split = split.select(keep2)
        n_skipped += bad_q.size
    if unusable:  # excluded columns of unusable items: they leave every ranking
        split = replace(split, excluded=[sorted(set(e) | unusable) for e in
                                         (split.excluded or [[]] * len(split.queries))])
        g_emb[sorted(unusable)] = 0.0
    return EncodedSplit(split, q_emb, g_emb, n_skipped, len(unusable))


def _encode_queries(model: Any, cache: EmbeddingCache, split: CIRSplit, cfg: Any,
                    digests: FileDigests, progress: ProgressFactory) -> np.ndarray:
    """Query embeddings: composed (image, condition) queries, and image-only ones (``None``
    condition) encoded as targets."""
    out = np.full((len(split.queries), model.meta.embedding_dim), np.nan, np.float32)
    composed = [i for i, c in enumerate(split.conditions) if c is not None]
    plain = [i for i, c in enumerate(split.conditions) if c is None]
    if composed:
        emb, _ = _encode_items(model, cache, [split.queries[i] for i in composed],
                               [str(split.conditions[i]) for i in composed], digests, cfg,
                               progress(f"encode {split.label} queries", len(composed)),
                               f"{split.label} queries")
        out[composed] = emb
    if plain:
        emb, _ = _encode_items(model, cache, [split.queries[i] for i in plain], None, digests,
                               cfg, progress(f"encode {split.label} image queries", len(plain)),
                               f"{split.label} image queries")
        out[plain] = emb
    return out


def rank_split(encoded: EncodedSplit, cfg: Any, *, thresholds: str = "all", top: int = 3,
               progress: ProgressFactory | None = None) -> RelevantRanks:
    """Blockwise tie-safe ranks of every query's relevant items (bounded memory).

    Under ``torchrun`` the gallery is scored in shards: rank ``r`` counts only its contiguous
    columns ``[lo_r, hi_r)`` (:func:`condsim.distributed.shard_bounds`, ``rank_relevant(...,
    columns=...)``), one int64 ``all_reduce`` (sum) of ``greater``/``ties`` adds the shards'
    counts, and the shards' top candidates, gathered on every rank, are merged by the
    declared order (:func:`condsim.search.blockwise.merge_tops`: exact score, then lower
    column) and cut to ``top``. Every rank returns the 1-process :class:`RelevantRanks`; an
    error on any rank is the same :class:`DataError` on every rank."""
    from condsim.distributed import (
        all_gather_arrays,
        all_reduce_sum,
        rank_world,
        run_agreed,
        shard_bounds,
    )

    split = encoded.split
    bar = progress(f"score {split.label}", len(split.queries)) if progress else None
    kwargs: dict[str, Any] = {
        "thresholds": thresholds, "top": top, "device": cfg.device, "progress": bar,
        "query_block": getattr(cfg, "query_block", 1024),
        "gallery_block": getattr(cfg, "gallery_block", 8192)}
    rank, world = rank_world()
    if world == 1:
        return rank_relevant(encoded.queries, encoded.gallery, split.relevant, split.excluded,
                             **kwargs)
    n = int(encoded.gallery.shape[0])
    lo, hi = shard_bounds(n, rank, world)
    logger.debug("scoring %s: rank %d of %d, gallery columns [%d, %d) of %d", split.label,
                 rank, world, lo, hi, n)
    part = run_agreed(lambda: rank_relevant(
        encoded.queries, encoded.gallery, split.relevant, split.excluded, columns=(lo, hi),
        **kwargs), f"scoring {split.label}")
    greater, ties = all_reduce_sum([part.greater, part.ties])
    top_cols, top_scores = merge_tops(all_gather_arrays([part.top_cols, part.top_scores]), top)
    return replace(part, greater=greater, ties=ties, top_cols=top_cols,
                   top_scores=top_scores)


def top_candidates(encoded: EncodedSplit, cfg: Any, k: int, *, include_relevant: bool,
                   progress: ProgressFactory | None = None) -> list[list[int]]:
    """Each query's ``k`` best gallery columns, best first (ties: lower column first), the
    excluded columns left out, for submission files; with ``include_relevant`` the query's
    ``relevant`` columns compete too (a test split's stand-in relevant item, e.g. a kept
    reference image)."""
    ranks = rank_split(encoded, cfg, top=k, progress=progress)
    out = []
    for i in range(len(encoded.split.queries)):
        pairs = [(float(s), int(c)) for c, s in zip(ranks.top_cols[i], ranks.top_scores[i],
                                                    strict=True) if c >= 0]
        if include_relevant:
            n = int(ranks.n_relevant[i])
            pairs += [(float(ranks.scores[i, r]), int(ranks.cols[i, r])) for r in range(n)]
        pairs.sort(key=lambda p: (-p[0], p[1]))
        out.append([c for _, c in pairs[:k]])
    return out


def summarize(per_query: dict[str, tuple[np.ndarray, Sequence[int]]], *, seed: int,
              n_resamples: int, offsets: dict[str, int] | None = None
              ) -> dict[str, dict[str, dict[str, float]]]:
    """``{metric: {k: {mean, ci_low, ci_high}}}`` from per-query ``(Q, len(ks))`` arrays,
    each column's CI from :func:`condsim.metrics.bootstrap.bootstrap_ci` over queries; the
    metrics are seeded apart: ``seed + offsets[name]``, by default ``seed + 5 m`` for the
    ``m``-th metric (column ``j`` adds ``j``)."""
    offsets = offsets or {}
    return {name: summarize_recalls(values, ks, seed=seed + offsets.get(name, 5 * m),
                                    n_resamples=n_resamples)
            for m, (name, (values, ks)) in enumerate(per_query.items())}


def per_query_block(per_query: dict[str, tuple[np.ndarray, Sequence[int]]], query_ids: list[Any]
                    ) -> dict[str, Any]:
    """The per-query values kept in ``results.json`` for paired comparisons:
    ``{"per_query": {"<metric>_at_<k>": [...]}, "query_ids": [...]}``."""
    return {"per_query": {f"{name}_at_{k}": values[:, j].tolist()
                          for name, (values, ks) in per_query.items()
                          for j, k in enumerate(ks)},
            "query_ids": list(query_ids)}


def failure_cases(split: CIRSplit, ranks: RelevantRanks, *, group: str | None = None,
                  limit: int = 12) -> list[dict[str, Any]]:
    """Failure cases (schema ``condsim.failures/1``) of the queries whose best relevant item
    does not come strictly first, evenly spread over them: the case's target is that best
    relevant item, ``top`` the best-scoring non-relevant candidates (other relevant items are
    not wrong answers and are not shown)."""
    from condsim.results.failures import _spread

    rows = np.arange(len(split.queries))
    if ranks.greater.shape[1] == 1:
        g, t = ranks.greater[:, 0], ranks.ties[:, 0]
    else:
        g, t = ranks.greater[rows, ranks.best], ranks.ties[rows, ranks.best]
    failed = np.flatnonzero((g + t) > 0)
    cases = []
    for i in _spread(failed, limit).tolist():
        col = int(ranks.cols[i, ranks.best[i]])
        top = [{"image": split.ref_of_gallery(int(c)), "score": float(s)}
               for c, s in zip(ranks.top_cols[i], ranks.top_scores[i], strict=True) if c >= 0]
        cases.append({
            "schema": FAILURES_SCHEMA, "group": group, "query_id": split.query_ids[i],
            "query": {"image": split.ref_of_query(i),
                      "condition": "" if split.conditions[i] is None else
                      str(split.conditions[i])},
            "target": split.ref_of_gallery(col),
            "target_score": float(ranks.scores[i, ranks.best[i]]),
            "target_rank": int(g[i]) + 1, "n_ties": int(t[i]),
            "gallery_size": int(ranks.gallery_sizes[i]), "top": top[:3],
        })
    return cases


def headline_of(spec: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline cell named by ``spec.main_score``: ``"<metric>_at_<k>"`` is
    ``metrics[<metric>][<k>]``; any other name is a top-level cell of ``metrics``."""
    name = spec.main_score
    metric, _, k = name.rpartition("_at_")
    cell = metrics.get(metric, {}).get(k) if metric and isinstance(metrics.get(metric),
                                                                    dict) else None
    if cell is None:
        cell = metrics.get(name)
    if not isinstance(cell, dict) or "mean" not in cell:
        raise DataError(f"{spec.name}: main score {name!r} is not among the metrics")
    return {"name": name, **{k: v for k, v in cell.items() if k in ("mean", "ci_low",
                                                                     "ci_high", "std")}}


def make_result(spec: Any, model: Any, cfg: Any, metrics: dict[str, Any], *,
                protocol: dict[str, Any], skipped: dict[str, Any],
                failures: list[dict[str, Any]], cache: EmbeddingCache | None = None,
                extra: dict[str, Any] | None = None) -> RunResult:
    """The run's :class:`RunResult`: the spec's metadata, the variant fields and the
    bootstrap settings in ``protocol``; the config and the number of processes that ran it
    (``world_size``: the metrics do not depend on it) in ``extra``; cache repairs counted."""
    from condsim.distributed import rank_world

    proto = {**spec.meta(), **{v: getattr(cfg, v) for v in spec.variants}, **protocol,
             "bootstrap": {"n_resamples": cfg.n_bootstrap, "seed": cfg.seed, "level": 0.95,
                           "unit": "query"}}
    for key, value in list(proto.items()):
        if isinstance(value, tuple):
            proto[key] = list(value)
    if cache is not None:
        skipped = {**skipped, "cache_repairs": cache_repairs(cache)}
    return RunResult(benchmark=spec.name, model=model.meta.to_dict(), protocol=proto,
                     seed=cfg.seed, headline=headline_of(spec, metrics), metrics=metrics,
                     skipped=skipped, extra={"config": cfg.to_dict(), "failures": failures,
                                             "world_size": rank_world()[1], **(extra or {})})


def _as_dict(x: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    if hasattr(x, "to_dict"):
        return x.to_dict()
    return asdict(x) if is_dataclass(x) else x


def cache_repairs(cache: Any) -> dict[str, Any]:
    """What the cache found damaged and re-encoded during the run (``skipped.cache_repairs``
    of ``results.json``): quarantined shards, dropped rows, verification time."""
    integrity = getattr(cache, "integrity", None)
    return _as_dict(integrity) if integrity is not None else {}


# --- condition reliance (``--condition-test``) ---------------------------------------------

#: schema of ``metrics["condition_reliance"]``
RELIANCE_SCHEMA = "condsim.condition_reliance/1"
#: second word of the derangement generator's seed: ``default_rng([seed, 14, stream])``
RELIANCE_SEED_TAG = 14
#: bootstrap seeds of the drops: ``seed + RELIANCE_BOOT_OFFSET[perturbation]`` (apart from
#: every main-metric seed, so the main CIs are untouched)
RELIANCE_BOOT_OFFSET = {"shuffled": 9001, "empty": 9002}
PERTURBATIONS = ("shuffled", "empty")
DERANGEMENT_RULE = ("per group (stream = group index): numpy.random.default_rng([seed, 14, "
                    "stream]).permutation(n) = p, query p[j] takes the condition of query "
                    "p[(j+1) % n] (a uniformly random single cycle: no fixed point)")


def grouped_derangement(groups: Sequence[Any], seed: int, stream: int = 0) -> np.ndarray:
    """A seeded permutation ``pi`` of the queries with ``pi[i] != i`` and ``groups[pi[i]] ==
    groups[i]`` for every query whose group has two members or more (a lone member maps to
    itself). Query ``i`` is given the condition of query ``pi[i]``.

    Groups are taken in order of first appearance, group ``g`` (members ``m`` ascending, ``n =
    |m|``) draws ``p = default_rng([seed, 14, stream + g]).permutation(n)`` and sets
    ``pi[m[p_j]] = m[p_{(j+1) mod n}]``: a uniformly random ``n``-cycle, so no fixed point.
    """
    order: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        order.setdefault(g, []).append(i)
    perm = np.arange(len(groups), dtype=np.int64)
    for gi, members in enumerate(order.values()):
        if len(members) < 2:
            continue
        m = np.asarray(members, np.int64)
        p = np.random.default_rng([seed, RELIANCE_SEED_TAG, stream + gi]).permutation(m.size)
        perm[m[p]] = m[np.roll(p, -1)]
    return perm


def perturbed_conditions(conditions: Sequence[str | None], kind: str, seed: int,
                         stream: int = 0, groups: Sequence[Any] | None = None
                         ) -> tuple[list[str | None], dict[str, int]]:
    """The conditions under perturbation ``kind`` and its counts: ``"shuffled"``: the composed
    queries' conditions permuted by :func:`grouped_derangement` (image-only ``None`` queries
    stay out); ``"empty"``: every condition ``""``. Counts: ``unshuffled`` (alone in their
    group), ``same_text`` (given another query's identical condition text)."""
    composed = [i for i, c in enumerate(conditions) if c is not None]
    out = list(conditions)
    counts = {"unshuffled": 0, "same_text": 0}
    if kind == "empty":
        for i in composed:
            out[i] = ""
        return out, counts
    if kind != "shuffled":
        raise ValueError(f"unknown perturbation {kind!r}; use one of {PERTURBATIONS}")
    grp = [groups[i] if groups is not None else 0 for i in composed]
    perm = grouped_derangement(grp, seed, stream)
    for j, i in enumerate(composed):
        out[i] = conditions[composed[int(perm[j])]]
        counts["unshuffled"] += int(perm[j] == j)
        counts["same_text"] += int(perm[j] != j and out[i] == conditions[i])
    return out, counts


@dataclass
class ConditionRuns:
    """One group's per-query (or per-fold) headline values with the true conditions and under
    each perturbation, and whether each query's top-1 changed."""

    original: np.ndarray
    perturbed: dict[str, np.ndarray]
    top1_changed: dict[str, np.ndarray]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def top1_of_ranks(ranks: RelevantRanks) -> np.ndarray:
    """Each query's best gallery column among its relevant items and its best non-relevant,
    non-excluded one (``ranks.top_cols[:, 0]``); ties go to the lower column."""
    n_q, n_r = ranks.scores.shape
    valid = np.arange(n_r)[None, :] < ranks.n_relevant[:, None]
    rel = np.where(valid & ~np.isnan(ranks.scores), ranks.scores, -np.inf)
    top = ranks.top_scores[:, :1] if ranks.top_scores.shape[1] else np.full((n_q, 1), -np.inf)
    top_c = ranks.top_cols[:, :1] if ranks.top_cols.shape[1] else np.full((n_q, 1), -1)
    scores = np.concatenate([rel, top], axis=1)
    cols = np.concatenate([np.where(valid, ranks.cols, -1), top_c], axis=1)
    best = scores.max(axis=1, keepdims=True)
    big = np.iinfo(np.int64).max
    return np.where((scores == best) & (cols >= 0), cols, big).min(axis=1)


def top1_of_scores(scores: np.ndarray) -> np.ndarray:
    """Each row's best position of a padded ``(Q, C)`` score matrix (``-inf`` padding;
    ties: the lower position), as :func:`condsim.search.blockwise.rank_candidates` gives it."""
    return np.argmax(scores, axis=1)


def condition_runs_split(model: Any, cache: EmbeddingCache, encoded: EncodedSplit,
                         ranks: RelevantRanks, cfg: Any, progress: ProgressFactory,
                         per_query: Callable[[RelevantRanks], np.ndarray], *,
                         stream: int = 0, thresholds: str = "all") -> ConditionRuns:
    """The condition test of one encoded split: its queries re-encoded (through the cache,
    keyed by their condition; the gallery embeddings reused) with the perturbed conditions of
    :func:`perturbed_conditions`, ranked with the same rule, scored by the benchmark's
    ``per_query`` headline metric (``ranks -> (Q,)``); ``ranks`` are the original run's. Under
    ``torchrun`` the perturbed queries are encoded across the ranks, each once
    (:func:`_share_split`), and ranked in gallery shards (:func:`rank_split`)."""
    split = encoded.split
    original = np.asarray(per_query(ranks), np.float64)
    top0 = top1_of_ranks(ranks)
    runs = ConditionRuns(original, {}, {})
    digests = FileDigests()
    for kind in PERTURBATIONS:
        conds, counts = perturbed_conditions(split.conditions, kind, cfg.seed, stream)
        moved = replace(split, conditions=conds)
        _share_split(model, cache, moved, [], cfg, digests,
                     f"{split.label} {kind} conditions")
        q = _encode_queries(model, cache, moved, cfg, digests, progress)
        if not np.isfinite(q).all():
            raise DataError(f"{split.label}: a query with a {kind} condition has a non-finite "
                            "embedding")
        enc = replace(encoded, split=moved, queries=q)
        r = rank_split(enc, cfg, thresholds=thresholds, top=1)
        runs.perturbed[kind] = np.asarray(per_query(r), np.float64)
        runs.top1_changed[kind] = top1_of_ranks(r) != top0
        runs.counts[kind] = counts
    return runs


def reliance_metrics(runs: dict[str, ConditionRuns], cfg: Any, *, metric: str,
                     unit: str = "query", skipped: dict[str, str] | None = None,
                     top1: str = "") -> dict[str, Any]:
    """``metrics["condition_reliance"]`` (schema :data:`RELIANCE_SCHEMA`) from each group's
    :class:`ConditionRuns` (one group ``""`` without groups).

    For perturbation ``p``, the drop of the headline is ``drop = h(original) - h(p)`` with
    ``h`` the benchmark's headline (the mean of per-query values; with groups, the average of
    the group means). Its 95% CI is a paired bootstrap over queries (``unit="query"``:
    :func:`condsim.metrics.significance.stratified_paired_bootstrap`, groups resampled apart,
    seed ``cfg.seed + RELIANCE_BOOT_OFFSET[p]``) or paired folds (``unit="fold"``:
    ``mean(d) ± 1.96 sd(d)``, :func:`~condsim.metrics.significance.paired_folds`).
    ``top1_changed`` is the share of all queries whose best candidate differs. A perturbation
    named in ``skipped`` is reported as ``{"skipped": reason}``.
    """
    from condsim.metrics.significance import paired_folds, stratified_paired_bootstrap

    out: dict[str, Any] = {
        "schema": RELIANCE_SCHEMA, "metric": metric, "unit": unit,
        "n": int(sum(r.original.size for r in runs.values())), "seed": cfg.seed,
        "original": {"mean": float(np.mean([r.original.mean() for r in runs.values()]))},
    }
    for kind in PERTURBATIONS:
        if skipped and kind in skipped:
            out[kind] = {"skipped": skipped[kind]}
            continue
        pairs = {g or "all": (r.perturbed[kind], r.original) for g, r in runs.items()}
        if unit == "fold":
            (g, (a, b)), = pairs.items()
            row = paired_folds(a, b, group=g, metric=metric)
            groups_rows = [row]
        else:
            groups_rows, avg = stratified_paired_bootstrap(
                pairs, metric=metric, seed=cfg.seed + RELIANCE_BOOT_OFFSET[kind],
                n_resamples=cfg.n_bootstrap)
            row = avg or groups_rows[0]
        changed = np.concatenate([np.asarray(r.top1_changed[kind], bool)
                                  for r in runs.values()])
        counts = {k: int(sum(r.counts.get(kind, {}).get(k, 0) for r in runs.values()))
                  for k in ("unshuffled", "same_text")}
        out[kind] = {
            "value": {"mean": float(row.a)},
            "drop": {"mean": float(row.diff), "ci_low": float(row.ci_low),
                     "ci_high": float(row.ci_high), "p_value": float(row.p_value),
                     "significant": bool(row.significant)},
            "top1_changed": float(changed.mean()) if changed.size else 0.0,
            **({"groups": {r.group: {"drop": float(r.diff), "ci_low": float(r.ci_low),
                                     "ci_high": float(r.ci_high)} for r in groups_rows}}
               if len(groups_rows) > 1 else {}),
            **({"counts": counts} if kind == "shuffled" else {}),
        }
    out["method"] = {
        "shuffled": "conditions deranged among the queries" + (
            " within each group" if len(runs) > 1 else "") + "; " + DERANGEMENT_RULE,
        "empty": 'every condition replaced by ""',
        "drop": "original - perturbed headline",
        "ci": "paired folds: mean(d) ± 1.96 sd(d)" if unit == "fold" else
        f"paired bootstrap over queries ({cfg.n_bootstrap} resamples, seed = seed + "
        f"{RELIANCE_BOOT_OFFSET['shuffled']} shuffled / {RELIANCE_BOOT_OFFSET['empty']} "
        "empty" + (", stratified by group" if len(runs) > 1 else "") + ")",
        "top1": top1 or "share of queries whose best candidate (ties: lower index) changes",

    }
    return out
