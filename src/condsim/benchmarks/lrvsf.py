"""LRVS-Fashion: referred visual search with category or text conditions.

Protocol (``docs/protocols.md``): queries ``encode_queries(COMPLEX_IMG, condition)``,
targets ``encode_targets(SIMPLE_IMG)``, distractors ``encode_targets(jpg)``; 20 bootstrap
folds of product indices; per fold the gallery is the fold's unique targets plus ``n``
distractors drawn uniformly with replacement; recall@K weighted by query multiplicity,
reported as mean ± std (ddof=1) over folds. condsim computes every fold and distractor count
in one pass over the distractors (:mod:`condsim.search.exact`), seeds the distractor draws,
and breaks ties by expectation instead of by position.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from condsim.benchmarks.lrvsf_core import (
    fold_recalls,
    rank_metrics_from_fold_counts,
    recalls_from_fold_counts,
)
from condsim.benchmarks.protocol import (
    ConditionRuns,
    cache_repairs,
    perturbed_conditions,
    reliance_metrics,
)
from condsim.benchmarks.spec import BenchmarkSpec, Pairing, SharedOptions, option
from condsim.cache.encode import encode_cached, query_namespace
from condsim.cache.store import CachedRows, EmbeddingCache, item_keys
from condsim.data import lrvsf as data
from condsim.distributed import (
    all_gather_objects,
    all_reduce_sum,
    rank_world,
    run_agreed,
    shard_bounds,
    shared_encode,
)
from condsim.errors import CondsimError, DataError
from condsim.metrics.recall import weighted_mean_std
from condsim.models.base import require_condition_kind
from condsim.paths import default_cache_dir
from condsim.progress import ProgressFactory, no_progress
from condsim.registry import register_benchmark
from condsim.results.failures import collect_failures, parquet_ref
from condsim.results.run_result import RunResult
from condsim.results.yaml_card import lrvsf_model_index
from condsim.search.exact import (
    DistractorDraws,
    FoldCounts,
    finish_counts,
    fold_rank_counts,
)

__all__ = [
    "KS", "DIST_COUNTS", "NFOLDS", "LRVSFConfig", "evaluate",
    "fold_recalls", "load_folds", "official_folds", "seeded_draw_rows", "seeded_draws", "SPEC",
]

logger = logging.getLogger(__name__)

KS = (1, 5, 10, 20, 50)
DIST_COUNTS = (10_000, 100_000, 500_000, 1_000_000)
NFOLDS = 20
MIN_RECOMMENDED_DISTRACTORS = 1_000_000

def official_folds() -> np.ndarray:
    """The authors' 20 x 1000 bootstrap folds (``bootstrapped_indices.pt``), shipped as npy."""
    ref = resources.files("condsim") / "assets" / "lrvsf_bootstrapped_indices.npy"
    with resources.as_file(ref) as path:
        return np.load(path, allow_pickle=False).astype(np.int64)


def _read_folds_file(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"--folds {path}: no such file (use 'official', 'seeded' or a path)")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            import torch

            arr = torch.load(path, weights_only=True, map_location="cpu")
            arr = arr.numpy() if hasattr(arr, "numpy") else np.asarray(arr)
    except Exception as exc:
        raise DataError(f"{path}: cannot read folds: expected a .npy array or a torch.save'd "
                        f"tensor (.pt) ({type(exc).__name__}: {exc})") from exc
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer) or arr.size == 0:
        raise DataError(
            f"{path}: folds must be a non-empty 2-D integer array (folds, products per fold), "
            f"got shape {arr.shape} dtype {arr.dtype}"
        )
    return arr.astype(np.int64)


def _check_folds(spec: str) -> str | None:
    """The config check of ``folds``: ``official``, ``seeded`` or a readable folds file
    (read here too, so that a wrong file is refused before any model loads)."""
    if spec in ("official", "seeded"):
        return None
    try:
        _read_folds_file(Path(spec))
    except DataError as exc:
        return str(exc)
    return None


def load_folds(spec: str, n_products: int, seed: int) -> tuple[np.ndarray, str]:
    """Folds for ``spec``: ``official``, ``seeded`` (20 x P/2 draws from ``seed``) or a path."""
    if spec == "official":
        folds, source = official_folds(), "official"
    elif spec == "seeded":
        rng = np.random.default_rng([seed, 0x5EED])
        folds = rng.integers(0, n_products, size=(NFOLDS, max(1, n_products // 2)))
        source = f"seeded:{seed}"
    else:
        folds, source = _read_folds_file(Path(spec)), str(spec)
    if folds.min() < 0 or folds.max() >= n_products:
        raise DataError(
            f"folds ({source}) index products up to {folds.max()}, but the data has "
            f"{n_products} products; the official folds need the official 2,000-product test "
            "set: use --folds seeded for other data"
        )
    return folds, source


def seeded_draw_rows(
    seed: int, n_dists: Sequence[int], n_folds: int, n_items: int
) -> Iterator[np.ndarray]:
    """Distractor draws with replacement. The draws of count ``n`` come from their own
    generator ``numpy.random.default_rng([seed, n])``: fold ``f`` is its ``f``-th
    ``integers(0, n_items, n)`` call. They depend on ``(seed, n, n_items)`` alone, never on
    the other counts or their order, so two runs sharing a count share its galleries."""
    if len(set(n_dists)) != len(n_dists):
        raise CondsimError(f"distractor counts repeat: {list(n_dists)}; give each once")
    for n in n_dists:
        rng = np.random.default_rng([seed, int(n)])
        for _ in range(n_folds):
            yield rng.integers(0, n_items, size=n)


def _hashing(rows: Iterator[np.ndarray], n_dists: Sequence[int], n_folds: int, n_items: int,
             out: dict[str, str]) -> Iterator[np.ndarray]:
    """``rows`` passed through, each count's blake2b-128 digest (``n_items``, then its fold
    rows in order as int64 bytes) stored in ``out[str(n)]`` once its rows are done."""
    import hashlib

    for n in n_dists:
        h = hashlib.blake2b(f"{n_items}|".encode(), digest_size=16)
        for _ in range(n_folds):
            row = next(rows)
            h.update(np.ascontiguousarray(row, np.int64).tobytes())
            yield row
        out[str(n)] = h.hexdigest()


def draw_digests(seed: int, n_dists: Sequence[int], n_folds: int, n_items: int
                 ) -> dict[str, str]:
    """blake2b-128 digest of each count's draws (fold rows in order, int64 bytes): recorded
    in ``results.json`` so that ``condsim compare`` pairs only runs with the same galleries.
    A run gets them from :func:`seeded_draws` (``digests=``), without drawing twice."""
    out: dict[str, str] = {}
    for _ in _hashing(seeded_draw_rows(seed, n_dists, n_folds, n_items), n_dists, n_folds,
                      n_items, out):
        pass
    return out


def seeded_draws(seed: int, n_dists: Sequence[int], n_folds: int, n_items: int, *,
                 digests: dict[str, str] | None = None,
                 window: tuple[int, int] | None = None) -> DistractorDraws:
    """:func:`seeded_draw_rows` as multiplicities (the draws themselves are not kept); with
    ``digests``, each count's :func:`draw_digests` entry is filled in the same pass; with
    ``window = (lo, hi)``, only the multiplicities of items ``lo..hi-1`` are kept (a rank's
    own distractors: every rank makes the same draws, none holds the job's whole matrix)."""
    rows = seeded_draw_rows(seed, n_dists, n_folds, n_items)
    if digests is not None:
        rows = _hashing(rows, n_dists, n_folds, n_items, digests)
    return DistractorDraws.from_rows(rows, n_items, n_folds, len(n_dists), window)


def folds_digest(folds: np.ndarray) -> str:
    """blake2b-128 digest of the folds (shape + int64 bytes)."""
    import hashlib

    h = hashlib.blake2b(str(folds.shape).encode(), digest_size=16)
    h.update(np.ascontiguousarray(folds, np.int64).tobytes())
    return h.hexdigest()


def _check_data_root(path: str) -> str | None:
    """The layout check of the config (the fragments are checked when a run starts, and
    reported by ``condsim data check``)."""
    try:
        data.check_data_root(path, fragments=False)
    except DataError as exc:
        return str(exc)
    return None


@dataclass(frozen=True, kw_only=True)
class LRVSFConfig(SharedOptions):
    """Everything that defines one LRVS-F run (recorded in ``results.json``)."""

    data_root: str = option(path=True, check=_check_data_root,
                            help="Folder with products.parquet and distractors/*.parquet.")
    conditioning: str = option("category", choices=tuple(data.CONDITION_COLUMNS),
                               help="category | text")
    n_dists: tuple[int, ...] = option(DIST_COUNTS, ge=0, nonempty=True, distinct=True,
                                      help="Distractor counts per gallery (drawn with "
                                      "replacement), e.g. 10K,100K,1M.")
    ks: tuple[int, ...] = option(KS, ge=1, nonempty=True, distinct=True,
                                 help="Recall cut-offs K.")
    folds: str = option("official", check=_check_folds,
                        help="official (authors' 20x1000 folds) | seeded | PATH (.pt or .npy).")
    dist_img_col: str = option("jpg", help="Image column of the distractor files.")
    dist_category_col: str | None = option(
        None, help="Category column of the distractor files: also report same-category recall "
        "(each gallery restricted to the query's category; the CondViT authors' filtered "
        "recall).")
    aggregate_batches: int = option(100_000, ge=1, help="Distractor rows per encode call.")
    fragments_readahead: int = option(2, ge=0, help="Parquet files read ahead.")
    dev_run: bool = option(False, help="Only the first aggregated distractor batch.")
    block_size: int = option(16384, ge=1, help="Distractor rows scored at a time.")


def evaluate(model: Any, cfg: LRVSFConfig, *, progress: ProgressFactory = no_progress
             ) -> RunResult:
    """Run LRVS-F (module docstring)."""
    return _Run(cfg).run(model, progress=progress)


class _Run:
    def __init__(self, cfg: LRVSFConfig) -> None:
        self.cfg = cfg

    def run(self, model: Any, *, progress: ProgressFactory = no_progress) -> RunResult:
        cfg = self.cfg
        require_condition_kind(model, cfg.conditioning, "LRVS-F")
        cache = EmbeddingCache(cfg.cache_dir or default_cache_dir(), model.meta)
        data.check_distractor_files(cfg.data_root, cfg.dist_img_col)  # before any encoding
        products = data.read_products(cfg.data_root, cfg.conditioning)
        n_products = len(products)
        folds, folds_source = load_folds(cfg.folds, n_products, cfg.seed)

        enc = {"batch_size": cfg.batch_size, "num_workers": cfg.num_workers}
        rank, world = rank_world()
        _share_products(model, cache, products.target_images, products.query_images,
                        products.conditions, cfg)

        def encode_products() -> tuple[np.ndarray, np.ndarray]:
            q_rows, q_err = encode_cached(
                model, cache, products.query_images, products.conditions,
                progress=progress("encode queries", n_products),
                what="products.parquet COMPLEX_IMG", **enc,
            )
            t_rows, t_err = encode_cached(
                model, cache, products.target_images, None,
                progress=progress("encode targets", n_products),
                what="products.parquet SIMPLE_IMG", **enc,
            )
            if q_err or t_err:
                rows = sorted(set(q_err) | set(t_err))
                first = (q_err | t_err)[rows[0]]
                raise DataError(
                    f"products.parquet: {len(rows)} product image(s) cannot be decoded (rows "
                    f"{rows[:10]}; first: {first}); products define the benchmark and cannot "
                    "be skipped"
                )
            return cache.read(q_rows), cache.read(t_rows)

        queries, targets = run_agreed(encode_products, "products.parquet")
        failures = product_failures(queries, targets, products.conditions, cfg.data_root)

        n_total = data.count_distractors(cfg.data_root, cfg.dist_img_col)
        # rank r encodes and scores the contiguous rows [start, stop) of the file order; the
        # usable rows of the ranks, concatenated in rank order, are the 1-process order
        if world == 1:
            start, stop = 0, n_total
        elif cfg.dev_run:  # the first aggregated batch only: rank 0 takes it whole
            start, stop = 0, n_total if rank == 0 else 0
        else:
            start, stop = shard_bounds(n_total, rank, world)
        bar = progress("encode distractors", stop - start)

        def encode_distractors() -> tuple[np.ndarray, np.ndarray, int, list[str], int]:
            dist_rows: list[np.ndarray] = []
            dist_kept: list[np.ndarray] = []  # positions of the usable distractors in the files
            corrupt, examples, seen = 0, [], start
            if stop > start:
                for batch in data.iter_distractor_batches(
                    cfg.data_root, cfg.dist_img_col, cfg.aggregate_batches,
                    cfg.fragments_readahead, cfg.dev_run,
                    rows=None if world == 1 else (start, stop),
                ):
                    nulls = [i for i, b in enumerate(batch) if b is None]
                    images = [b if b is not None else b"" for b in batch]
                    rows, errors = encode_cached(
                        model, cache, images, None, progress=bar, what="distractors", **enc
                    )
                    corrupt += len(errors)
                    examples += [f"row {seen + i}: {m}" for i, m in
                                 list(errors.items())[: max(0, 5 - len(examples))]]
                    if nulls:
                        logger.warning("distractors: %d null images skipped", len(nulls))
                    dist_rows.append(rows[rows >= 0])
                    dist_kept.append(np.flatnonzero(rows >= 0) + seen)
                    seen += len(batch)
            empty = np.empty(0, np.int64)
            return (np.concatenate(dist_rows) if dist_rows else empty,
                    np.concatenate(dist_kept) if dist_kept else empty,
                    corrupt, examples, seen - start)

        local_rows, kept, corrupt, corrupt_examples, seen = run_agreed(
            encode_distractors, "distractors")
        # the job's totals: (usable, corrupt, read, examples) of every rank, in rank order
        shares = all_gather_objects((int(local_rows.size), corrupt, seen, corrupt_examples))
        usable = [u for u, _, _, _ in shares]
        offset, n_avail = sum(usable[:rank]), sum(usable)
        corrupt, seen = sum(c for _, c, _, _ in shares), sum(n for _, _, n, _ in shares)
        corrupt_examples = [e for _, _, _, ex in shares for e in ex][:5]
        if corrupt:
            logger.warning("distractors: %d undecodable images skipped (of %d)", corrupt, seen)
        distractors = CachedRows(cache, local_rows)
        if n_avail == 0 and max(cfg.n_dists) > 0:
            raise DataError("no decodable distractors: cannot draw distractor galleries")
        if n_avail < MIN_RECOMMENDED_DISTRACTORS:
            logger.warning(
                "Only %d distractors available; the benchmark is intended for at least 1M", n_avail
            )

        # the same draws on every rank (they depend on (seed, n, n_avail) alone); each rank
        # keeps the multiplicity rows of its own usable distractors
        digests: dict[str, str] = {}
        draws = seeded_draws(cfg.seed, cfg.n_dists, folds.shape[0], max(n_avail, 1),
                             digests=digests,
                             window=None if world == 1 else (offset, offset + local_rows.size))
        bar = progress("score distractors", len(distractors))
        counts = shared_fold_counts(
            queries, targets, distractors, folds, draws,
            block_size=cfg.block_size, device=cfg.device, progress=bar,
        )
        rec = recalls_from_fold_counts(counts, cfg.ks)  # (F, L, K)
        same_category = None
        if cfg.dist_category_col:
            dist_cats = data.read_distractor_column(cfg.data_root, cfg.dist_category_col,
                                                    cfg.dist_img_col)
            same_category = same_category_recalls(
                queries, targets, distractors, products.categories,
                [dist_cats[i] for i in kept.tolist()], folds, draws, cfg,
                progress("score same-category galleries", len(distractors)))

        reliance = self.condition_test(model, cache, products, queries, targets, distractors,
                                       folds, draws, rec, progress) if cfg.condition_test \
            else None
        recall = _fold_cells(rec, cfg)
        ranks = {name: {str(n): _fold_cell(per_fold[:, li]) for li, n in enumerate(cfg.n_dists)}
                 for name, per_fold in rank_metrics_from_fold_counts(counts).items()}
        n_top = str(cfg.n_dists[-1])
        k_head = str(cfg.ks[0])
        protocol = {
            **SPEC.meta(),
            "conditioning": cfg.conditioning,
            "folds": folds_source,
            "n_folds": int(folds.shape[0]),
            "fold_size": int(folds.shape[1]),
            "n_dists": list(cfg.n_dists),
            "ks": list(cfg.ks),
            "distractor_sampling": "with replacement; for each n, numpy.random."
            "default_rng([seed, n]).integers(0, N, n) once per fold",
            "draw_digests": digests,  # filled while drawing
            "folds_digest": folds_digest(folds),
            "tie_rule": "expected recall under uniformly random tie-breaking",
            "n_products": n_products,
            "n_distractors_total": n_total,
            "n_distractors_available": n_avail,
            "dist_img_col": cfg.dist_img_col,
            "dist_category_col": cfg.dist_category_col,
            "dev_run": cfg.dev_run,
        }
        return RunResult(
            benchmark=SPEC.name,
            model=model.meta.to_dict(),
            protocol=protocol,
            seed=cfg.seed,
            headline={"name": f"recall_at_{k_head}|{n_top}",
                      **{key: recall[n_top][k_head][key]
                         for key in ("mean", "ci_low", "ci_high", "std")}},
            metrics={"recall": recall, **ranks,
                     **({"recall_same_category": _fold_cells(same_category, cfg)}
                        if same_category is not None else {}),
                     **({"condition_reliance": reliance} if reliance is not None else {})},
            skipped={"corrupt_distractors": corrupt, "examples": corrupt_examples,
                     "cache_repairs": cache_repairs(cache)},
            extra={"config": cfg.to_dict(),
                   "failures": failures, "world_size": world},
        )


    def condition_test(self, model: Any, cache: EmbeddingCache, products: Any,
                       queries: np.ndarray, targets: np.ndarray, distractors: Any,
                       folds: np.ndarray, draws: Any, rec: np.ndarray,
                       progress: ProgressFactory) -> dict[str, Any]:
        """``metrics.condition_reliance`` of LRVS-F: the product queries re-encoded (through
        the cache) with the conditions deranged among the products (another product's
        category or caption) and, for captions, with empty ones; scored on the same folds
        and distractor draws. The unit is the fold: the drop of the headline (R@K1 at the
        largest n) is paired over folds (``mean(d) ± 1.96 sd(d)``). Top-1 is taken among
        the product targets (distractors left out): ``argmax_p q_i . t_p``."""
        cfg = self.cfg

        def head(r: np.ndarray) -> np.ndarray:
            return r[:, -1, 0]

        def top1(q: np.ndarray) -> np.ndarray:
            return np.argmax(q @ targets.T, axis=1)

        runs = ConditionRuns(head(rec), {}, {})
        top0 = top1(queries)
        skipped = {"empty": "a category model has no empty category"} \
            if cfg.conditioning == "category" else {}
        for kind in ("shuffled", "empty"):
            if kind in skipped:
                continue
            conds, counts = perturbed_conditions(products.conditions, kind, cfg.seed)
            _share_products(model, cache, [], products.query_images, conds, cfg)
            rows, errors = encode_cached(
                model, cache, products.query_images, conds,
                progress=progress(f"encode {kind}-condition queries", len(conds)),
                what=f"products.parquet COMPLEX_IMG ({kind} conditions)",
                batch_size=cfg.batch_size, num_workers=cfg.num_workers)
            if errors:
                raise DataError(f"products.parquet: {len(errors)} {kind}-condition queries "
                                "failed to encode")
            q = cache.read(rows)
            counts_p = shared_fold_counts(
                q, targets, distractors, folds, draws, block_size=cfg.block_size,
                device=cfg.device, progress=progress(f"score {kind} conditions",
                                                     len(distractors)))
            runs.perturbed[kind] = head(recalls_from_fold_counts(counts_p, cfg.ks))
            runs.top1_changed[kind] = top1(q) != top0
            runs.counts[kind] = counts
        return reliance_metrics(
            {"": runs}, cfg, metric=f"recall_at_{cfg.ks[0]}|{cfg.n_dists[-1]}", unit="fold",
            skipped=skipped, top1="share of products whose best product target changes "
            "(distractors left out; ties: lower index)")


def shared_fold_counts(queries: np.ndarray, targets: np.ndarray, distractors: Any,
                       folds: np.ndarray, draws: DistractorDraws, **kwargs: Any) -> FoldCounts:
    """:func:`~condsim.search.exact.fold_rank_counts` over the job's distractors, each rank
    passing its own shard ``D_r`` and the rows of ``draws.mult`` of those distractors: the
    counts are additive, ``greater[p, f, l] = [targets above] + sum_r sum_{j in D_r}
    mult[j, c] [q_p . d_j > q_p . t_p]`` (the same for ties), so rank 0 alone adds the product
    targets, every rank counts its shard and one ``all_reduce`` (sum) of the int64
    ``(P, F, L)`` arrays gives every rank the 1-process counts. An error on any rank is the
    same :class:`DataError` on every rank. Without a process group: ``fold_rank_counts``."""
    rank, world = rank_world()
    if world == 1:
        return fold_rank_counts(queries, targets, distractors, folds, draws, **kwargs)
    part = run_agreed(lambda: fold_rank_counts(
        queries, targets, distractors, folds, draws, include_targets=rank == 0, partial=True,
        **kwargs), "scoring distractors")
    greater, ties = all_reduce_sum([part.greater, part.ties])
    return finish_counts(FoldCounts(products=part.products, weights=part.weights,
                                    greater=greater, ties=ties))


def _share_products(model: Any, cache: EmbeddingCache, targets: Sequence[bytes],
                    images: Sequence[bytes], conditions: Sequence[str], cfg: LRVSFConfig
                    ) -> None:
    """Under ``torchrun``: the product images (targets) and the composed queries
    (``images`` with ``conditions``) encoded across the ranks into the shared cache
    (:func:`condsim.distributed.shared_encode`), so that the single-process pass that follows
    reads them from the cache; undecodable ones are found again by that pass on every rank.
    Without a process group, nothing."""
    if rank_world()[1] == 1:
        return
    shared_encode(model, cache, targets, item_keys(targets), images, conditions,
                  item_keys(images, conditions, namespace=query_namespace(model)),
                  item_keys(images), batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                  what="LRVS-F products")


def _fold_cell(per_fold: np.ndarray) -> dict[str, Any]:
    """``{mean, ci_low, ci_high, std, folds}`` of one metric's per-fold values: the cell
    shape of every benchmark (``mean``, 95% interval) plus the fold statistics. The folds are
    bootstrap replicates of the test set, so the interval is their 2.5 / 97.5 percentiles
    (``numpy.quantile``, linear); ``std`` uses ``ddof = 1`` (the published ``mean ± std``)."""
    mean, std = weighted_mean_std(per_fold[:, None], axis=0)
    low, high = np.quantile(per_fold, [0.025, 0.975]) if per_fold.size else (np.nan, np.nan)
    return {"mean": float(mean[0]), "ci_low": float(low), "ci_high": float(high),
            "std": float(std[0]), "folds": per_fold.tolist()}


def _fold_cells(rec: np.ndarray, cfg: LRVSFConfig) -> dict[str, dict[str, dict[str, Any]]]:
    """``{n: {k: {mean, ci_low, ci_high, std, folds}}}`` of an ``(F, L, K)`` recall array."""
    return {str(n): {str(k): _fold_cell(rec[:, li, j]) for j, k in enumerate(cfg.ks)}
            for li, n in enumerate(cfg.n_dists)}


#: score given to a gallery item of another category than the query's (never above a target)
_OTHER_CATEGORY = 1e30


def same_category_recalls(
    queries: np.ndarray, targets: np.ndarray, distractors: Any, product_categories: list[str],
    distractor_categories: list[Any], folds: np.ndarray, draws: Any, cfg: LRVSFConfig,
    progress: Any = None,
) -> np.ndarray:
    """Recall ``(F, L, K)`` with every fold gallery restricted to the query's category: its
    fold's targets of that category and the drawn distractors of that category (the CondViT
    authors' "filtered" recall). Distractors without a category belong to none.

    One exact float32 pass over the distractors: every embedding gets one extra column per
    category, ``[e, onehot(c)]`` for gallery items and ``[q, -1e30 (1 - onehot(c))]`` for
    queries, so a same-category score is the plain dot product (the extra terms are exact
    zeros) and any other category scores -1e30, below every target."""
    vocab = sorted(set(product_categories) | {str(c) for c in distractor_categories
                                              if c is not None and c != ""})
    index = {c: i for i, c in enumerate(vocab)}
    none = len(vocab)  # a last column for "no category": no query has it, so it loses

    def onehot(cats: list[Any]) -> np.ndarray:
        out = np.zeros((len(cats), len(vocab) + 1), np.float32)
        for row, c in enumerate(cats):
            out[row, index.get(str(c), none) if c is not None and c != "" else none] = 1.0
        return out

    prod = onehot(product_categories)
    q_aug = np.hstack([queries, (prod - 1.0) * _OTHER_CATEGORY]).astype(np.float32)
    t_aug = np.hstack([targets, prod]).astype(np.float32)
    d_aug = _WithColumns(distractors, onehot(distractor_categories))
    counts = shared_fold_counts(q_aug, t_aug, d_aug, folds, draws, block_size=cfg.block_size,
                                device=cfg.device, progress=progress, screen="fp32")
    return recalls_from_fold_counts(counts, cfg.ks)


class _WithColumns:
    """``base`` (sliceable ``(N, d)`` rows) with ``extra`` ``(N, e)`` columns appended."""

    def __init__(self, base: Any, extra: np.ndarray) -> None:
        if extra.shape[0] != base.shape[0]:
            raise DataError(f"{extra.shape[0]} distractor categories for {base.shape[0]} "
                            "distractors")
        self.base, self.extra = base, extra
        self.shape = (int(base.shape[0]), int(base.shape[1]) + extra.shape[1])
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, item: slice) -> np.ndarray:
        return np.hstack([np.asarray(self.base[item], np.float32), self.extra[item]])


def product_failures(
    queries: np.ndarray, targets: np.ndarray, conditions: Sequence[str],
    data_root: str | Path, limit: int = 12,
) -> list[dict[str, Any]]:
    """Failure cases for the report (:func:`condsim.results.failures.collect_failures`):
    queries whose own target is not strictly first among *all products' targets* (no
    distractors), up to ``limit`` spread over the products, each with its 3 highest wrong
    targets; images are rows of ``products.parquet`` (query = COMPLEX_IMG, others =
    SIMPLE_IMG)."""
    products = Path(data_root) / "products.parquet"
    return collect_failures(
        queries @ targets.T, np.arange(len(conditions)),
        query_image=lambda i: parquet_ref(products, data.QUERY_COL, i),
        condition=conditions,
        candidate_image=lambda i, j: parquet_ref(products, data.TARGET_COL, j),
        limit=limit,
    )


def model_card(result: RunResult, model_name: str | None = None) -> dict[str, Any]:
    """The leaderboard YAML (``model-index``) of an LRVS-F ``RunResult``."""
    ks = result.protocol["ks"]
    recalls = {
        int(n): ([per_k[str(k)]["mean"] for k in ks], [per_k[str(k)]["std"] for k in ks])
        for n, per_k in result.metrics["recall"].items()
    }
    return lrvsf_model_index(
        model_name or result.model["name"], recalls, ks,
        result.protocol["n_distractors_available"], result.model["embedding_dim"],
        result.protocol["conditioning"],
    )


# Official sizes of the test set: the dataset card https://huggingface.co/datasets/Slep/
# LAION-RVS-Fashion (README.md, "Split | Products | Distractors": Test 2,000 | 2,000,014).
# The official harness (https://github.com/Simon-Lepage/LRVSF-Benchmark, commit 46e5e94,
# lrvsf_benchmark/lrvsf.py) warns below 1M distractors.
OFFICIAL_PRODUCTS = 2000
OFFICIAL_DISTRACTORS = 2_000_014
_COUNT_SOURCE = "huggingface.co/datasets/Slep/LAION-RVS-Fashion dataset card (Test split)"
_PRODUCTS_SOURCE = ("LRVS-F test set, https://zenodo.org/doi/10.5281/zenodo.11189942 "
                    "(products.parquet; LRVSF-Benchmark README, 'Dataset Preparation')")
_DISTRACTORS_SOURCE = ("distractors_urls.parquet of https://zenodo.org/doi/10.5281/"
                       "zenodo.11189942, fetched into distractors/ with `condsim download "
                       "lrvsf-distractors` (or img2dataset)")


def _distractor_items(report: Any, files: list[Path], cfg: LRVSFConfig) -> Iterator[Any]:
    """Every distractor cell as an ``ImageItem`` named ``<file> row <i>``; a fragment that
    fails while its rows are read is reported as corrupt (blocking) and left."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from condsim.benchmarks.datacheck import ImageItem

    for path in files:
        row = 0
        try:
            for batch in pq.ParquetFile(path).iter_batches(columns=[cfg.dist_img_col],
                                                           batch_size=data.READ_BATCH):
                for value in data.binary_values(batch.column(0), f"{path}"):
                    yield ImageItem(f"{path} row {row}", data=value)
                    row += 1
        except (pa.ArrowException, OSError, DataError) as exc:
            report.issue("corrupt", f"{path} (from row {row})", f"cannot read the rows: {exc}",
                         _DISTRACTORS_SOURCE, blocking=True)


def _check(cfg: LRVSFConfig, progress: ProgressFactory = no_progress) -> Any:
    """products.parquet (the 2,000 products, every query and target image decoded), every
    distractor parquet fragment (footer, schema, image column) and every distractor image
    (``condsim data check lrvsf``)."""
    from condsim.benchmarks.datacheck import (
        DataReport,
        ImageItem,
        add_image_issues,
        check_images,
        check_parquet_fragment,
        read_or_report,
    )

    report = DataReport("lrvsf", cfg.to_dict())
    root = Path(cfg.data_root)
    products_path = root / "products.parquet"
    products = read_or_report(report, str(products_path), _PRODUCTS_SOURCE,
                              lambda: data.read_products(cfg.data_root, cfg.conditioning))
    report.count("products", None if products is None else len(products), OFFICIAL_PRODUCTS,
                 _COUNT_SOURCE)
    if products is not None:
        items = [ImageItem(f"{products_path} row {i} {col}", data=b)
                 for col, values in ((data.QUERY_COL, products.query_images),
                                     (data.TARGET_COL, products.target_images))
                 for i, b in enumerate(values)]
        result = check_images(items, total=len(items), progress=progress,
                              threads=cfg.num_workers, what="LRVS-F product images")
        add_image_issues(report, result, source=_PRODUCTS_SOURCE, max_bad=0)
        if cfg.folds != "seeded":
            read_or_report(report, f"--folds {cfg.folds}", "",
                           lambda: load_folds(cfg.folds, len(products), cfg.seed))
    folder = root / "distractors"
    files = sorted(p for p in folder.rglob("*.parquet") if p.is_file()) \
        if folder.is_dir() else []
    if not files:
        report.error(str(folder), "no distractor .parquet files", _DISTRACTORS_SOURCE)
    good: list[Path] = []
    rows = 0
    for path in files:
        n, problem = check_parquet_fragment(path, cfg.dist_img_col)
        if problem is not None:
            report.issue("corrupt", str(path), problem, _DISTRACTORS_SOURCE, blocking=True)
            continue
        if cfg.dist_category_col:
            import pyarrow.parquet as pq

            if cfg.dist_category_col not in pq.read_schema(path).names:
                report.error(str(path), f"no column {cfg.dist_category_col!r} "
                             "(--dist-category-col)")
                continue
        good.append(path)
        rows += int(n or 0)
    report.count("distractors (parquet rows)", rows if files else None, OFFICIAL_DISTRACTORS,
                 _COUNT_SOURCE, note=f"{len(good)} of {len(files)} fragment(s) readable")
    if good:
        result = check_images(_distractor_items(report, good, cfg), total=rows,
                              progress=progress, threads=cfg.num_workers,
                              what="LRVS-F distractors")
        add_image_issues(report, result, source=_DISTRACTORS_SOURCE, max_bad=None,
                         skip_note="{n} distractor(s) null or undecodable: the run skips them")
        usable = rows - len(result.missing) - len(result.corrupt)
        if usable < MIN_RECOMMENDED_DISTRACTORS:
            report.notes.append(f"{usable:,} usable distractors: the official harness warns "
                                f"below {MIN_RECOMMENDED_DISTRACTORS:,}")
    return report


def _synthetic(out: Path, seed: int) -> dict[str, Any]:
    from condsim.synthetic.lrvsf import write_lrvsf

    root = write_lrvsf(out, n_products=60, n_distractors=200, files=2, seed=seed)
    return {"data_root": str(root), "n_dists": [100], "folds": "seeded"}


def _render(result: RunResult) -> list[Any]:
    from condsim.results.tables import lrvsf_table

    return [lrvsf_table(result)]


def _chance(result: RunResult) -> float:
    """Headline R@K of a constant model: every item of fold ``f``'s gallery (its ``U_f``
    unique targets plus ``n`` drawn distractors) ties, so a query's recall is
    ``min(K, G_f) / G_f`` with ``G_f = U_f + n``; mean over folds (queries weighted by their
    multiplicity within a fold do not change a fold's value)."""
    cfg = result.extra["config"]
    folds, _ = load_folds(cfg["folds"], result.protocol["n_products"], result.seed)
    n, k = result.protocol["n_dists"][-1], result.protocol["ks"][0]
    return float(np.mean([min(k, len(set(f.tolist())) + n) / (len(set(f.tolist())) + n)
                          for f in folds]))


SPEC = register_benchmark(BenchmarkSpec(
    name="lrvsf",
    description="LAION-RVS-Fashion test set: 2,000 products, up to 2M distractors, "
    "20 bootstrap folds",
    main_score="recall_at_1", split="test", protocol_version="2",
    reference="https://github.com/Simon-Lepage/LRVSF-Benchmark",
    dataset_type="Slep/LAION-RVS-Fashion", dataset_name="LAION - Referred Visual Search - "
    "Fashion",
    config=LRVSFConfig, evaluate=evaluate, synthetic=_synthetic,
    pairing=Pairing("folds", "recall (paired folds)", must_agree=(
        "folds", "folds_digest", "seed", "conditioning", "n_distractors_available",
        "n_products", "protocol_version"), per_group_agree="draw_digests"),
    variants=("conditioning",), model_card=model_card, render=_render, chance=_chance,
    check=_check,
))
