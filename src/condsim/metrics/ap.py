"""Average precision at K (CIRCO)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def average_precision_at_k(ranked_relevance: np.ndarray, n_relevant: int, k: int) -> float:
    """``AP@K = (1 / min(n_relevant, K)) * sum_{i <= K} P@i * rel_i`` where ``rel_i`` is 1
    when the item at rank ``i`` is a ground-truth item and ``P@i`` the precision of the first
    ``i`` items (CIRCO's definition; predictions are unique). 0 when ``n_relevant`` is 0."""
    if n_relevant <= 0:
        return 0.0
    rel = np.asarray(ranked_relevance[:k], dtype=np.float64)
    if rel.size == 0:
        return 0.0
    precision = np.cumsum(rel) / np.arange(1, rel.size + 1)
    return float((precision * rel).sum() / min(n_relevant, k))


def expected_ap_at_ks(scores: np.ndarray, relevant: np.ndarray, n_relevant: int,
                      ks: Sequence[int]) -> np.ndarray:
    """Expected AP@K of one query under uniformly random tie-breaking, exactly.

    Sort the finite scores in descending order; a tie group occupies positions ``a..b``
    (``n = b - a + 1`` items, ``m`` of them relevant) after ``r`` relevant items of higher
    score. Inside the group the order is a uniform permutation, so at position ``i``::

        E[rel_i * R_i] = (m / n) * (r + 1 + (i - a) (m - 1) / (n - 1))

    with ``R_i`` the relevant items among the first ``i`` (``P@i = R_i / i``), and

        E[AP@K] = (1 / min(n_relevant, K)) * sum_{i <= K} E[rel_i * R_i] / i

    by linearity. Without ties this is :func:`average_precision_at_k` of the sorted order.
    ``-inf`` items are not candidates. Returns ``len(ks)`` values."""
    if n_relevant <= 0:
        return np.zeros(len(ks))
    valid = np.isfinite(scores)
    s, rel = scores[valid], relevant[valid].astype(np.float64)
    order = np.argsort(-s, kind="stable")
    s, rel = s[order], rel[order]
    if s.size == 0:
        return np.zeros(len(ks))
    starts_mask = np.r_[True, s[1:] != s[:-1]]
    group = np.cumsum(starts_mask) - 1
    starts = np.flatnonzero(starts_mask)
    sizes = np.diff(np.r_[starts, s.size])
    m = np.bincount(group, weights=rel)
    before = np.cumsum(m) - m
    pos = np.arange(1, s.size + 1, dtype=np.float64)
    n, mg, a = sizes[group].astype(np.float64), m[group], starts[group] + 1.0
    within = np.where(n > 1, (pos - a) * (mg - 1) / np.maximum(n - 1, 1), 0.0)
    cum = np.cumsum((mg / n) * (before[group] + 1 + within) / pos)
    return np.array([cum[min(k, s.size) - 1] / min(n_relevant, k) for k in ks])


def map_at_ks(scores: np.ndarray, relevant_sets: Sequence[np.ndarray],
              ks: Sequence[int]) -> np.ndarray:
    """Per query expected AP@K for each K under random tie-breaking
    (:func:`expected_ap_at_ks`): ``(Q, len(ks))``; ``scores`` ``(Q, N)`` with excluded items
    at ``-inf``; ``relevant_sets[q]`` the gallery columns of query ``q``'s ground truth (an
    excluded ground-truth item still counts in ``min(#gt, K)``, as in CIRCO)."""
    out = np.zeros((scores.shape[0], len(ks)))
    for q in range(scores.shape[0]):
        rel = np.zeros(scores.shape[1], bool)
        rel[relevant_sets[q]] = True
        out[q] = expected_ap_at_ks(scores[q], rel, int(rel.sum()), ks)
    return out


def relevant_tie_groups(scores: np.ndarray, greater: np.ndarray, ties: np.ndarray
                        ) -> list[tuple[int, int, int, int, np.ndarray]]:
    """The tie groups holding one query's relevant items, best first, from their scores and
    their counts against the *non-relevant* candidates (:class:`condsim.search.blockwise.
    RelevantRanks`): ``(a, n, m, r, members)`` = first 1-based position of the group, its
    size (``ties + m``), its relevant items, the relevant items above it, and the indices of
    its members in ``scores``. Inside a group the order is a uniform random permutation."""
    order = np.argsort(-scores, kind="stable")
    out = []
    i, above = 0, 0
    while i < order.size:
        j = i
        while j + 1 < order.size and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        members = order[i:j + 1]
        m = members.size
        g, t = int(greater[members[0]]), int(ties[members[0]])
        out.append((g + above + 1, t + m, m, above, members))
        above += m
        i = j + 1
    return out


def expected_ap_from_ranks(scores: np.ndarray, greater: np.ndarray, ties: np.ndarray,
                           n_relevant: int, ks: Sequence[int]) -> np.ndarray:
    """Expected AP@K of one query under random tie-breaking, from its relevant items' scores
    and their ``greater``/``ties`` counts against the non-relevant candidates (so the whole
    ranking is never needed). For a tie group at positions ``a..a+n-1`` holding ``m``
    relevant items after ``r`` relevant ones (:func:`relevant_tie_groups`)::

        E[rel_i * R_i] = (m / n) * (r + 1 + (i - a) (m - 1) / (n - 1))

        E[AP@K] = (1 / min(n_relevant, K)) * sum_{i <= K} E[rel_i * R_i] / i

    equal to :func:`expected_ap_at_ks` on the full ranking. ``n_relevant`` is the
    normaliser's ground-truth count (it may include unretrievable items)."""
    ks = list(ks)
    if n_relevant <= 0 or scores.size == 0:
        return np.zeros(len(ks))
    k_max = max(ks)
    contrib = np.zeros(k_max + 1)  # contrib[i] = E[rel_i R_i] / i at position i (1-based)
    for a, n, m, r, _ in relevant_tie_groups(scores, greater, ties):
        if a > k_max:
            break
        pos = np.arange(a, min(a + n - 1, k_max) + 1, dtype=np.float64)
        within = (pos - a) * (m - 1) / (n - 1) if n > 1 else np.zeros_like(pos)
        contrib[pos.astype(np.int64)] += (m / n) * (r + 1 + within) / pos
    cum = np.cumsum(contrib)
    return np.array([cum[k] / min(n_relevant, k) for k in ks])
