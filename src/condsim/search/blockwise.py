"""Exact, tie-safe ranking of relevant items in bounded memory (the composed-retrieval engine).

For every query ``q`` and each of its relevant gallery items ``r`` this counts, over the
gallery items that are neither relevant to ``q`` nor excluded for it (e.g. the reference
image):

    greater[q, r] = #{j : s(q, j) >  s(q, r)}        ties[q, r] = #{j : s(q, j) == s(q, r)}

which is all any cut-off metric needs under random tie-breaking (recall@K, any-hit@K,
AP@K, nDCG@K: :mod:`condsim.metrics`). Every decision is taken on the score of **one row-dot
rule**, :func:`condsim.search.exact.rowwise_dot` (float32), so a gallery item identical to a
relevant one ties with it exactly, whatever BLAS kernel ran. The gallery is read in blocks
(``np.memmap`` works) and queries in blocks: memory is ``query_block x gallery_block``
scores, never the ``Q x N`` matrix. Each block is screened with a float32 GEMM and a
certified error bound; only the pairs within that bound of a threshold are recomputed with
the row-dot rule (:func:`condsim.search.exact.screening_error_coef`).

Counts are sums over gallery blocks, so gallery shards can be scored apart and their counts
added: ``rank_relevant(..., columns=(lo, hi))`` counts (and keeps top candidates from) the
gallery columns ``[lo, hi)`` only, and over any partition of ``[0, N)`` into column ranges the
shards' ``greater``/``ties`` sum to the full call's while :func:`merge_tops` of their top
candidates gives the full call's ``top_cols``/``top_scores``.

**Top-candidate order** (:data:`TOP_ORDER`): by exact row-dot score, best first; among equal
scores the lower gallery column first (``np.lexsort((cols, -scores))``). The candidates are
certified: every gallery item that can reach the top ``T`` by exact score is re-scored with
the row-dot rule (the screen's error bound decides which), so the result does not depend on
how the gallery is cut into blocks or shards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from condsim.errors import CondsimError
from condsim.search.exact import gallery_blocks, rowwise_dot, screening_error_coef

logger = logging.getLogger(__name__)

#: pairs re-scored exactly per step (bounds the gather buffer: 16K x dim floats x 2)
_RECHECK_CHUNK = 1 << 14
#: the declared order of ``RelevantRanks.top_cols`` / ``top_scores`` (module docstring)
TOP_ORDER = ("exact row-dot score descending; equal scores: lower gallery column first "
             "(np.lexsort((cols, -scores)))")


@dataclass(frozen=True)
class RelevantRanks:
    """Per query, its relevant items' scores and counts (padded ``(Q, R)`` arrays).

    ``n_relevant[q]`` relevant items are in columns ``0..n_relevant[q]-1`` of ``cols`` (their
    gallery columns, in the order given), ``scores`` (row-dot scores; NaN padding),
    ``greater`` and ``ties`` (counts over the *other* gallery items: neither relevant to
    ``q`` nor excluded). With ``thresholds="best"`` only the best-scoring relevant item of
    each query was counted: its column is ``best[q]`` and ``greater``/``ties`` have one
    column. ``top_cols``/``top_scores`` ``(Q, T)`` hold the ``T`` highest-scoring
    non-relevant, non-excluded items (row-dot scores, best first, equal scores by lower
    column: :data:`TOP_ORDER`; ``-1``/``-inf`` when the gallery is smaller), for failure
    cases.
    """

    n_relevant: np.ndarray
    cols: np.ndarray
    scores: np.ndarray
    greater: np.ndarray
    ties: np.ndarray
    best: np.ndarray
    top_cols: np.ndarray
    top_scores: np.ndarray
    gallery_sizes: np.ndarray  # per query: gallery items not excluded

    def target_counts(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(greater, ties)`` of relevant item ``index[q]`` of each query against *every*
        other candidate, the other relevant items included (e.g. CIRCO's recall on its
        ``target_img_id`` among all ground truths). Needs ``thresholds="all"``."""
        rows = np.arange(self.scores.shape[0])
        own = self.scores[rows, index]
        valid = np.arange(self.scores.shape[1])[None, :] < self.n_relevant[:, None]
        above = ((self.scores > own[:, None]) & valid).sum(axis=1)
        tied = ((self.scores == own[:, None]) & valid).sum(axis=1) - 1
        return self.greater[rows, index] + above, self.ties[rows, index] + tied

    def best_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(G, T_n, T_r)`` of each query's best relevant score ``s*``: non-relevant items
        strictly above ``s*``, non-relevant items tied with it, relevant items at ``s*``."""
        rows = np.arange(self.scores.shape[0])
        col = 0 if self.greater.shape[1] == 1 else None
        best_r = self.best if col is None else np.zeros_like(self.best)
        s_best = self.scores[rows, self.best]
        valid = np.arange(self.scores.shape[1])[None, :] < self.n_relevant[:, None]
        t_r = ((self.scores == s_best[:, None]) & valid).sum(axis=1)
        return self.greater[rows, best_r], self.ties[rows, best_r], t_r


def _as_index_lists(name: str, lists: Sequence[Any], n_queries: int, n: int) -> list[np.ndarray]:
    if len(lists) != n_queries:
        raise CondsimError(f"{name}: {len(lists)} lists for {n_queries} queries")
    out = []
    for q, x in enumerate(lists):
        a = np.unique(np.asarray(x, dtype=np.int64).ravel())
        if a.size and (a[0] < 0 or a[-1] >= n):
            raise CondsimError(f"{name} of query {q}: column outside [0, {n})")
        out.append(a)
    return out


def rank_relevant(
    queries: np.ndarray,
    gallery: Any,
    relevant: Sequence[Sequence[int]],
    excluded: Sequence[Sequence[int]] | None = None,
    *,
    thresholds: str = "all",
    top: int = 0,
    query_block: int = 1024,
    gallery_block: int = 8192,
    device: str | torch.device | None = None,
    progress: Callable[[int], None] | None = None,
    columns: tuple[int, int] | None = None,
) -> RelevantRanks:
    """Rank every query's relevant items against the rest of the gallery (module docstring).

    ``queries`` float32 ``(Q, d)``; ``gallery`` ``(N, d)`` (ndarray, ``np.memmap`` or tensor,
    read ``gallery_block`` rows at a time); ``relevant[q]`` / ``excluded[q]`` gallery columns
    (an excluded column is neither a competitor nor retrievable, so it must not be
    relevant). ``thresholds="best"`` counts only against each query's best relevant score
    (any-hit metrics; one pass whatever the number of relevant items). ``progress`` gets the
    number of queries finished.

    ``columns=(lo, hi)`` scores one gallery shard: only the columns ``lo <= j < hi`` are
    counted in ``greater``/``ties`` and can enter ``top_cols``; the relevant items' own
    scores, ``best`` and ``gallery_sizes`` are those of the whole gallery. Summing the
    counts of shards that partition ``[0, N)`` and merging their tops (:func:`merge_tops`)
    gives exactly the result without ``columns``."""
    q_all = np.asarray(queries, dtype=np.float32)
    n_q = q_all.shape[0]
    n = int(gallery.shape[0])
    if q_all.ndim != 2 or len(gallery.shape) != 2 or gallery.shape[1] != q_all.shape[1]:
        raise CondsimError(f"queries {q_all.shape} and gallery {tuple(gallery.shape)} must be "
                           "(rows, dim) with the same dim")
    if not np.isfinite(q_all).all():
        bad = np.flatnonzero(~np.isfinite(q_all).all(axis=1))
        raise CondsimError(f"query rows {bad[:5].tolist()} hold NaN/inf embeddings")
    if thresholds not in ("all", "best"):
        raise CondsimError(f"thresholds must be 'all' or 'best', got {thresholds!r}")
    lo, hi = (0, n) if columns is None else (int(columns[0]), int(columns[1]))
    if not 0 <= lo <= hi <= n:
        raise CondsimError(f"columns {columns} outside the gallery's [0, {n}]")
    rel = _as_index_lists("relevant", relevant, n_q, n)
    exc = _as_index_lists("excluded", excluded if excluded is not None else [()] * n_q, n_q, n)
    for q in range(n_q):
        if rel[q].size == 0:
            raise CondsimError(f"query {q} has no relevant gallery item")
        if np.intersect1d(rel[q], exc[q]).size:
            raise CondsimError(f"query {q}: a relevant item is also excluded")
    dev = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    # relevant columns in the caller's order (np.unique sorted them: keep the given order)
    rel_given = [np.asarray(list(dict.fromkeys(np.asarray(x, np.int64).ravel().tolist())),
                            np.int64) for x in relevant]
    n_rel = np.array([r.size for r in rel_given], np.int64)
    r_max = int(n_rel.max()) if n_q else 0
    cols = np.full((n_q, r_max), -1, np.int64)
    scores = np.full((n_q, r_max), np.nan, np.float32)
    for q, r in enumerate(rel_given):
        cols[q, : r.size] = r
    flat_q = np.repeat(np.arange(n_q), n_rel)
    flat_c = np.concatenate(rel_given) if n_q else np.empty(0, np.int64)
    scores[flat_q, _positions(n_rel)] = _row_scores(q_all, gallery, flat_q, flat_c, dev)
    if not np.isfinite(scores[flat_q, _positions(n_rel)]).all():
        raise CondsimError("gallery rows of relevant items hold NaN/inf embeddings")
    best = np.nanargmax(np.where(np.isnan(scores), -np.inf, scores), axis=1) if n_q else \
        np.zeros(0, np.int64)
    own = (scores[np.arange(n_q), best][:, None] if thresholds == "best" else scores)
    n_thr = np.ones(n_q, np.int64) if thresholds == "best" else n_rel
    greater = np.zeros(own.shape, np.int64)
    ties = np.zeros(own.shape, np.int64)
    top_cols = np.full((n_q, top), -1, np.int64)
    top_scores = np.full((n_q, top), -np.inf, np.float32)
    masked = [np.union1d(r, e) for r, e in zip(rel, exc, strict=True)]
    # queries with more thresholds first: inside a block, rows with > r thresholds are a prefix
    order = np.argsort(-n_thr, kind="stable")
    coef = screening_error_coef(q_all.shape[1], False)
    part = gallery if (lo, hi) == (0, n) else gallery[lo:hi]
    if not isinstance(part, torch.Tensor) and _keep_resident(
            dev, (hi - lo) * q_all.shape[1] * 4, -(-n_q // query_block)):
        # several query blocks re-read the gallery: copy it to the GPU once
        part = torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32)).to(dev)
    for qs in range(0, n_q, query_block):
        rows = order[qs: qs + query_block]
        qa = torch.from_numpy(q_all[rows]).to(dev)
        own_b = torch.from_numpy(np.where(np.isnan(own[rows]), np.inf, own[rows])
                                 .astype(np.float32)).to(dev)
        prefix = [int((n_thr[rows] > r).sum()) for r in range(own.shape[1])]
        m_rows, m_cols = _mask_pairs([masked[i] for i in rows])
        g_b = torch.zeros(own_b.shape, dtype=torch.int64, device=dev)
        t_b = torch.zeros(own_b.shape, dtype=torch.int64, device=dev)
        run_c = np.full((len(rows), top), -1, np.int64)
        run_s = np.full((len(rows), top), -np.inf, np.float32)
        qnorm = torch.linalg.vector_norm(qa, dim=1)
        for start, stop, block in _column_blocks(part, lo, gallery_block, dev):
            approx = qa @ block.T
            lo_i, hi_i = np.searchsorted(m_cols, [start, stop])
            if hi_i > lo_i:
                approx[torch.from_numpy(m_rows[lo_i:hi_i]).to(dev),
                       torch.from_numpy(m_cols[lo_i:hi_i] - start).to(dev)] = -torch.inf
            delta = coef * qnorm * torch.linalg.vector_norm(block, dim=1).max() * 1.0001 + 1e-30
            for r, p in enumerate(prefix):
                if p == 0:
                    break
                _count_block(approx[:p], qa[:p], block, own_b[:p, r], delta[:p],
                             g_b[:p, r], t_b[:p, r])
            if top:
                run_c, run_s = _block_top(approx, qa, block, start, delta, run_c, run_s)
        greater[rows] = g_b.cpu().numpy()
        ties[rows] = t_b.cpu().numpy()
        if top:
            top_cols[rows] = run_c
            top_scores[rows] = run_s
        if progress is not None:
            progress(len(rows))
    sizes = n - np.array([e.size for e in exc], np.int64)
    return RelevantRanks(n_rel, cols, scores, greater, ties, best, top_cols, top_scores, sizes)


def _positions(counts: np.ndarray) -> np.ndarray:
    """``[0..c0-1, 0..c1-1, ...]``."""
    if counts.size == 0:
        return np.empty(0, np.int64)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(int(counts.sum())) - starts


def _row_scores(queries: np.ndarray, gallery: Any, q_idx: np.ndarray, g_idx: np.ndarray,
                dev: torch.device) -> np.ndarray:
    """Row-dot scores of the pairs ``(q_idx[i], g_idx[i])`` (gallery rows read once each)."""
    if q_idx.size == 0:
        return np.empty(0, np.float32)
    uniq, inverse = np.unique(g_idx, return_inverse=True)
    rows = gallery[uniq] if not isinstance(gallery, np.memmap) else np.asarray(gallery[uniq])
    g = torch.as_tensor(np.asarray(rows, dtype=np.float32)).to(dev) \
        if not isinstance(rows, torch.Tensor) else rows.to(dev, torch.float32)
    q = torch.from_numpy(np.ascontiguousarray(queries, np.float32)).to(dev)
    out = np.empty(q_idx.size, np.float32)
    for s in range(0, q_idx.size, _RECHECK_CHUNK):
        e = min(q_idx.size, s + _RECHECK_CHUNK)
        qi = torch.from_numpy(q_idx[s:e]).to(dev)
        gi = torch.from_numpy(inverse[s:e]).to(dev)
        out[s:e] = rowwise_dot(q[qi], g[gi]).cpu().numpy()
    return out


def _mask_pairs(masked: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(local row, column)`` of every masked pair of a query block, sorted by column."""
    if not masked:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    rows = np.repeat(np.arange(len(masked)), [m.size for m in masked])
    cols = np.concatenate(masked)
    order = np.argsort(cols, kind="stable")
    return rows[order], cols[order]


def _count_block(approx: torch.Tensor, qa: torch.Tensor, block: torch.Tensor,
                 own: torch.Tensor, delta: torch.Tensor, greater: torch.Tensor,
                 ties: torch.Tensor) -> None:
    """``greater += #{j: s_j > own}``, ``ties += #{j: s_j == own}`` over one block, exact for
    the row-dot rule: clear cases from the GEMM screen, the band re-scored."""
    lo, hi = (own - delta)[:, None], (own + delta)[:, None]
    above = approx > hi
    greater += above.sum(dim=1)
    band = (approx >= lo) & ~above
    rows, cols = band.nonzero(as_tuple=True)
    for s in range(0, rows.numel(), _RECHECK_CHUNK):
        r, c = rows[s:s + _RECHECK_CHUNK], cols[s:s + _RECHECK_CHUNK]
        exact = rowwise_dot(qa[r], block[c])
        greater.index_add_(0, r, (exact > own[r]).to(greater.dtype))
        ties.index_add_(0, r, (exact == own[r]).to(ties.dtype))


def _column_blocks(part: Any, lo: int, block_size: int, dev: torch.device
                   ) -> Iterator[tuple[int, int, torch.Tensor]]:
    """:func:`~condsim.search.exact.gallery_blocks` of ``part``, the gallery columns
    ``[lo, lo + len(part))``, with whole-gallery ``(start, stop)``."""
    for start, stop, block in gallery_blocks(part, block_size, dev):
        yield start + lo, stop + lo, block


def _keep_resident(dev: torch.device, nbytes: int, passes: int) -> bool:
    """Whether to copy the gallery (shard) of ``nbytes`` float32 bytes to the GPU once
    instead of block by block in each of ``passes`` query blocks: on CUDA, with more than
    one pass, when it takes at most half of the device's free memory (the rest is the
    block buffers')."""
    if dev.type != "cuda" or passes <= 1:
        return False
    free, _ = torch.cuda.mem_get_info(dev)
    return nbytes <= free // 2


def _block_top(approx: torch.Tensor, qa: torch.Tensor, block: torch.Tensor, start: int,
               delta: torch.Tensor, run_c: np.ndarray, run_s: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """The running top ``(cols, exact scores)`` of a query block updated with one gallery
    block (``approx``: screened scores, ``-inf`` at masked pairs; ``|approx - exact| <=
    delta``). Candidates are certified: a block item in the exact top ``T`` has an exact
    score at least the block's ``T``-th screened score ``a_T`` minus ``delta`` (``T`` items
    screen at ``a_T`` or more) and at least the running ``T``-th exact score ``s_T`` (ties
    included), so its screened score is at least ``max(a_T - 2 delta, s_T - delta)``; the
    thresholds below take one ``delta`` more, which also covers float32 rounding of the
    subtraction (``delta >= 16 u |approx|``). Those are re-scored with the row-dot rule and
    merged by :data:`TOP_ORDER`. Blocks come in ascending column order, so once a row's top
    is full a candidate that only ties with ``s_T`` (a higher column) cannot enter: only
    exact scores above ``s_T`` are merged (every one while the top is not full: ``s_T =
    -inf``)."""
    top = run_c.shape[1]
    kk = min(top, approx.shape[1])
    a_t = approx.topk(kk, dim=1).values[:, -1]
    s_t = torch.from_numpy(run_s[:, -1].copy()).to(approx.device)
    thr = torch.maximum(a_t - 3 * delta, s_t - 2 * delta)
    cand = (approx >= thr[:, None]) & (approx > -torch.inf)
    r, c = cand.nonzero(as_tuple=True)
    found_r, found_c, found_s = [], [], []
    for s in range(0, r.numel(), _RECHECK_CHUNK):
        rr, cc = r[s:s + _RECHECK_CHUNK], c[s:s + _RECHECK_CHUNK]
        exact = rowwise_dot(qa[rr], block[cc])
        enter = exact > s_t[rr]
        found_r.append(rr[enter].cpu().numpy())
        found_c.append(cc[enter].cpu().numpy() + start)
        found_s.append(exact[enter].cpu().numpy())
    held = run_c >= 0
    rows = np.concatenate([np.nonzero(held)[0], *found_r])
    cols = np.concatenate([run_c[held], *found_c])
    scores = np.concatenate([run_s[held], *found_s])
    return _top_by_rule(rows, cols, scores, run_c.shape[0], top)


def _top_by_rule(rows: np.ndarray, cols: np.ndarray, scores: np.ndarray, n_rows: int,
                 top: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``top`` best of the entries ``(rows[i], cols[i], scores[i])`` by
    :data:`TOP_ORDER`, as padded ``(n_rows, top)`` ``(cols, scores)`` (``-1``/``-inf``)."""
    out_c = np.full((n_rows, top), -1, np.int64)
    out_s = np.full((n_rows, top), -np.inf, np.float32)
    if rows.size == 0 or top == 0:
        return out_c, out_s
    order = np.lexsort((cols, -scores, rows))
    rows, cols, scores = rows[order], cols[order], scores[order]
    pos = np.arange(rows.size) - np.searchsorted(rows, rows, side="left")
    keep = pos < top
    out_c[rows[keep], pos[keep]] = cols[keep]
    out_s[rows[keep], pos[keep]] = scores[keep]
    return out_c, out_s


def merge_tops(parts: Sequence[Sequence[np.ndarray]], top: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` best ``(cols, scores)`` per query of gallery shards' ``(top_cols,
    top_scores)`` (padded ``(Q, T_i)`` arrays, disjoint columns), by :data:`TOP_ORDER`:
    merging the tops of shards that partition the gallery gives the whole gallery's top."""
    if not parts:
        raise CondsimError("merge_tops: no parts")
    n_q = parts[0][0].shape[0]
    rows, cols, scores = [], [], []
    for c, s in parts:
        c, s = np.asarray(c, np.int64), np.asarray(s, np.float32)
        if c.shape != s.shape or c.shape[0] != n_q:
            raise CondsimError(f"merge_tops: parts of shapes {c.shape}/{s.shape} for {n_q} "
                               "queries")
        held = c >= 0
        rows.append(np.nonzero(held)[0])
        cols.append(c[held])
        scores.append(s[held])
    return _top_by_rule(np.concatenate(rows), np.concatenate(cols), np.concatenate(scores),
                        n_q, top)


def rank_candidates(
    queries: np.ndarray, candidates: np.ndarray, lists: Sequence[Sequence[int]],
    relevant: Sequence[Sequence[int]], *, device: str | torch.device | None = None,
) -> tuple[np.ndarray, RelevantRanks]:
    """Per-query galleries (GeneCIS): query ``q`` ranks the candidate rows ``lists[q]``;
    ``relevant[q]`` are positions *in its list*. Every score is a row dot. Returns the padded
    ``(Q, C)`` score matrix (``-inf`` padding) and the :class:`RelevantRanks` (positions in
    the list as columns)."""
    q_all = np.asarray(queries, np.float32)
    n_q = q_all.shape[0]
    width = max((len(x) for x in lists), default=0)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    sizes = np.array([len(x) for x in lists], np.int64)
    flat_q = np.repeat(np.arange(n_q), sizes)
    flat_c = np.concatenate([np.asarray(x, np.int64) for x in lists]) if n_q else \
        np.empty(0, np.int64)
    s = np.full((n_q, width), -np.inf, np.float32)
    s[flat_q, _positions(sizes)] = _row_scores(q_all, candidates, flat_q, flat_c, dev)
    rel = [np.asarray(r, np.int64) for r in relevant]
    n_rel = np.array([r.size for r in rel], np.int64)
    r_max = int(n_rel.max()) if n_q else 0
    cols = np.full((n_q, r_max), -1, np.int64)
    scores = np.full((n_q, r_max), np.nan, np.float32)
    greater = np.zeros((n_q, r_max), np.int64)
    ties = np.zeros((n_q, r_max), np.int64)
    for q, r in enumerate(rel):
        cols[q, : r.size] = r
        scores[q, : r.size] = s[q, r]
        others = np.delete(s[q, : sizes[q]], r)
        greater[q, : r.size] = (others[None, :] > s[q, r][:, None]).sum(axis=1)
        ties[q, : r.size] = (others[None, :] == s[q, r][:, None]).sum(axis=1)
    best = np.nanargmax(np.where(np.isnan(scores), -np.inf, scores), axis=1) if n_q else \
        np.zeros(0, np.int64)
    empty = np.zeros((n_q, 0))
    return s, RelevantRanks(n_rel, cols, scores, greater, ties, best, empty.astype(np.int64),
                            empty.astype(np.float32), sizes)
