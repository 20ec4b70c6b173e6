"""Tie-safe recall@K.

Every benchmark in condsim reduces a query to two counts relative to its target:
``g`` = number of gallery candidates scoring *strictly higher* than the target, and
``t`` = number of *other* candidates scoring *exactly equal* to it. Under uniformly random
tie-breaking the target's rank is uniform on ``{g+1, ..., g+t+1}``, hence

    E[recall@k] = P(rank <= k) = clip((k - g) / (t + 1), 0, 1).

This never depends on where the target sits in the gallery (the GeneCIS reference code put
the target first and sorted unstably, so ties favoured the target).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from condsim.errors import CondsimError


def recall_from_counts(
    greater: np.ndarray, ties: np.ndarray, ks: Sequence[int]
) -> np.ndarray:
    """Expected recall@k from strictly-greater and tie counts.

    ``recall[..., j] = clip((ks[j] - greater) / (ties + 1), 0, 1)`` with ``greater`` = number
    of candidates scoring strictly above the target and ``ties`` = number of other candidates
    with exactly the target's score. Output shape: ``greater.shape + (len(ks),)``, float64.
    """
    g = np.asarray(greater, dtype=np.float64)[..., None]
    t = np.asarray(ties, dtype=np.float64)[..., None]
    k = np.asarray(ks, dtype=np.float64)
    return np.clip((k - g) / (t + 1.0), 0.0, 1.0)


def reciprocal_rank_from_counts(
    greater: np.ndarray, ties: np.ndarray, cutoff: int | None = None
) -> np.ndarray:
    """Expected reciprocal rank of the target under uniformly random tie-breaking.

    The rank ``r`` is uniform on ``{g+1, ..., g+t+1}``, so::

        E[1/r] = (1 / (t + 1)) * sum_{r=g+1}^{g+t+1} 1/r * [r <= cutoff]
               = (H(min(g+t+1, cutoff)) - H(min(g, cutoff))) / (t + 1)

    with ``H(n)`` the n-th harmonic number; ``cutoff=None`` means no cut-off. With a cut-off
    of 100 this is the CondViT authors' "P@R=1" (``1 / rank``, 0 beyond the top 100).
    Output float64 with ``greater``'s shape.
    """
    g = np.asarray(greater, dtype=np.int64)
    t = np.asarray(ties, dtype=np.int64)
    hi, lo = g + t + 1, g
    if cutoff is not None:
        hi, lo = np.minimum(hi, cutoff), np.minimum(lo, cutoff)
    return _harmonic_difference(hi, lo) / (t + 1.0)


def _harmonic_difference(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """``H(hi) - H(lo) = sum_{r=lo+1}^{hi} 1/r`` elementwise (``hi >= lo >= 0``).

    From a table of exact partial sums (up to 2**16) when ``lo < 1024``; otherwise from the
    asymptotic expansion
    ``H(n) = ln n + gamma + 1/(2n) - 1/(12 n^2) + O(n^-4)`` written as a difference
    (``log1p((hi - lo) / lo)`` etc.), so that a short sum far down the ranking (a tie at rank
    10 million) keeps full relative precision instead of cancelling two values near 16."""
    hi = np.asarray(hi, dtype=np.int64)
    lo = np.asarray(lo, dtype=np.int64)
    table = _harmonic_table()
    out = np.zeros(np.broadcast(hi, lo).shape, np.float64)
    hi, lo = np.broadcast_to(hi, out.shape), np.broadcast_to(lo, out.shape)
    far = lo >= 1024  # expansion error there: relative 1 / (30 lo^4) < 1e-13
    small = ~far & (hi < table.size)
    out[small] = table[hi[small]] - table[lo[small]]
    h, lw = hi[far].astype(np.float64), lo[far].astype(np.float64)
    out[far] = (np.log1p((h - lw) / lw) + 0.5 * (lw - h) / (h * lw)
                - (lw - h) * (lw + h) / (12 * h**2 * lw**2))
    mixed = ~small & ~far
    h = hi[mixed].astype(np.float64)
    out[mixed] = (np.log(h) + np.euler_gamma + 1 / (2 * h) - 1 / (12 * h**2)
                  - table[lo[mixed]])
    return out


@lru_cache(maxsize=1)
def _harmonic_table() -> np.ndarray:
    """``H(0..2**16 - 1)``, exact partial sums (built on first use, not at import)."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, 2**16))])


def expected_rank_from_counts(greater: np.ndarray, ties: np.ndarray) -> np.ndarray:
    """Expected 1-based rank of the target under random tie-breaking: ``g + t / 2 + 1``."""
    return np.asarray(greater, np.float64) + np.asarray(ties, np.float64) / 2.0 + 1.0


def rank_counts(scores: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query, ``(greater, ties)``: candidates strictly above / equal to the target's score.

    ``scores`` is ``(Q, G)``; ``target`` is ``(Q,)`` the column of the correct candidate.
    Rows may hold ``-inf`` for excluded candidates (they never count as greater or tied
    unless the target itself is ``-inf``, which is rejected).
    """
    scores = np.asarray(scores)
    target = np.asarray(target)
    if scores.ndim != 2:
        raise CondsimError(f"scores must be 2-D (queries, candidates), got shape {scores.shape}")
    if target.shape != (scores.shape[0],):
        raise CondsimError(
            f"target must have shape ({scores.shape[0]},), got {target.shape}"
        )
    if scores.shape[1] == 0:
        raise CondsimError("empty gallery: every query needs at least its target as candidate")
    if target.size and (target.min() < 0 or target.max() >= scores.shape[1]):
        raise CondsimError(f"target column out of range [0, {scores.shape[1]})")
    if np.isnan(scores).any():
        raise CondsimError("scores contain NaN; check the model's embeddings")
    ts = scores[np.arange(scores.shape[0]), target][:, None]
    if np.isneginf(ts).any():
        raise CondsimError("a target candidate was excluded (score -inf)")
    greater = (scores > ts).sum(axis=1)
    ties = (scores == ts).sum(axis=1) - 1
    return greater, ties


def expected_recall_at_k(
    scores: np.ndarray, target: np.ndarray, ks: Sequence[int]
) -> np.ndarray:
    """Expected recall@k per query under uniformly random tie-breaking.

    ``scores`` float ``(Q, G)``, ``target`` int ``(Q,)``. With ``g`` candidates strictly above
    the target and ``t`` others tied with it::

        recall@k = clip((k - g) / (t + 1), 0, 1)

    Returns ``(Q, len(ks))`` float64. A model returning constant scores gets exactly ``k / G``
    (for ``k <= G``), independent of the target's position.
    """
    greater, ties = rank_counts(scores, target)
    return recall_from_counts(greater, ties, ks)


def weighted_mean_std(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (``ddof = 1``) along ``axis``.

    ``std = sqrt(sum_i (x_i - mean)^2 / (n - 1))``; for a single value std is 0.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    mean = values.mean(axis=axis)
    std = values.std(axis=axis, ddof=1) if n > 1 else np.zeros_like(mean)
    return mean, std


def expected_any_hit_at_k(
    scores: np.ndarray, relevant: np.ndarray, ks: Sequence[int]
) -> np.ndarray:
    """Probability that at least one relevant item is in the top ``k`` (several relevant
    items per query, e.g. MIT-States), under uniformly random tie-breaking.

    With ``s*`` the best relevant score, ``G`` non-relevant items strictly above ``s*``,
    ``T_n`` non-relevant and ``T_r >= 1`` relevant items tied at ``s*``, and ``m = k - G``
    places left for the tied group::

        P(hit@k) = 0                                   if m <= 0
                 = 1 - C(T_n, m) / C(T_n + T_r, m)     if 0 < m <= T_n
                 = 1                                   if m > T_n

    ``scores`` ``(Q, N)`` (``-inf`` = excluded), ``relevant`` boolean ``(Q, N)``; a query
    without a relevant item raises. Returns ``(Q, len(ks))`` float64.
    """
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape:
        raise CondsimError(f"scores {scores.shape} and relevant {relevant.shape} differ")
    rel_scores = np.where(relevant & np.isfinite(scores), scores, -np.inf)
    best = rel_scores.max(axis=1)
    if np.isneginf(best).any():
        raise CondsimError("a query has no (retrievable) relevant item")
    b = best[:, None]
    g = ((scores > b) & ~relevant).sum(axis=1)
    tn = ((scores == b) & ~relevant).sum(axis=1)
    tr = ((scores == b) & relevant).sum(axis=1)
    return any_hit_from_counts(g, tn, tr, ks)


def any_hit_from_counts(
    greater: np.ndarray, tied_other: np.ndarray, tied_relevant: np.ndarray, ks: Sequence[int]
) -> np.ndarray:
    """``P(hit@k)`` from the counts of :func:`expected_any_hit_at_k`: ``G`` non-relevant items
    strictly above the best relevant score ``s*``, ``T_n`` non-relevant and ``T_r >= 1``
    relevant items tied at ``s*``; with ``m = k - G``::

        P(hit@k) = 0 if m <= 0;  1 if m > T_n;  else 1 - C(T_n, m) / C(T_n + T_r, m)

    (``C(T_n, m) / C(T_n + T_r, m) = prod_{i<m} (T_n - i) / (T_n + T_r - i)``).
    Returns ``(Q, len(ks))`` float64."""
    g = np.asarray(greater, np.int64)
    tn = np.asarray(tied_other, np.int64)
    tr = np.asarray(tied_relevant, np.int64)
    if (tr < 1).any():
        raise CondsimError("any-hit needs at least one relevant item per query")
    out = np.zeros((g.shape[0], len(ks)))
    for j, k in enumerate(ks):
        m = k - g
        for q in np.flatnonzero(m > 0).tolist():
            mq = int(m[q])
            if mq > tn[q]:
                out[q, j] = 1.0
                continue
            i = np.arange(mq)
            out[q, j] = 1.0 - float(np.prod((tn[q] - i) / (tn[q] + tr[q] - i)))
    return out
