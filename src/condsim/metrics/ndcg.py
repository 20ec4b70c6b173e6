"""Graded-relevance metrics under random tie-breaking: nDCG@K and IR recall@K.

Both are linear in the relevant items' positions, so their expectation over uniformly random
orders of tied items needs only each relevant item's tie group (:func:`condsim.metrics.ap.
relevant_tie_groups`): an item of a group occupying positions ``a..a+n-1`` is at each of
them with probability ``1/n``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from condsim.metrics.ap import relevant_tie_groups


def _discount(i: np.ndarray) -> np.ndarray:
    return 1.0 / np.log2(i + 1.0)


def expected_ndcg_from_ranks(scores: np.ndarray, greater: np.ndarray, ties: np.ndarray,
                             gains: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """Expected nDCG@K of one query (trec_eval's ``ndcg_cut``: gain = the qrels score,
    discount ``1 / log2(i + 1)`` at 1-based position ``i``)::

        E[DCG@K] = sum_r gain_r * (1/n_r) * sum_{i=a_r}^{min(a_r+n_r-1, K)} 1 / log2(i + 1)
        IDCG@K   = sum_{i<=min(K, R)} g_(i) / log2(i + 1)    (gains sorted descending)

    ``scores``/``greater``/``ties``/``gains`` are per relevant item (counts against the
    non-relevant candidates). Items with gain <= 0 add nothing. Returns ``len(ks)`` values
    (0 when the ideal DCG is 0)."""
    gains = np.asarray(gains, np.float64)
    ks = list(ks)
    ideal_gains = np.sort(gains[gains > 0])[::-1]
    out = np.zeros(len(ks))
    groups = relevant_tie_groups(scores, greater, ties)
    for j, k in enumerate(ks):
        idcg = float((ideal_gains[:k] * _discount(np.arange(1, min(k, ideal_gains.size) + 1)))
                     .sum())
        if idcg <= 0:
            continue
        dcg = 0.0
        for a, n, _, _, members in groups:
            if a > k:
                break
            pos = np.arange(a, min(a + n - 1, k) + 1, dtype=np.float64)
            dcg += float(np.clip(gains[members], 0, None).sum()) * _discount(pos).sum() / n
        out[j] = dcg / idcg
    return out


def expected_ir_recall_from_ranks(scores: np.ndarray, greater: np.ndarray, ties: np.ndarray,
                                  ks: Sequence[int]) -> np.ndarray:
    """Expected share of the relevant items in the top K (IR recall, MTEB/pytrec_eval's
    ``recall_K``): ``(1/R) sum_r P(rank_r <= K)`` with ``P = clip((K - a_r + 1) / n_r, 0, 1)``
    for an item whose tie group occupies ``a_r..a_r+n_r-1``. Returns ``len(ks)`` values."""
    ks = list(ks)
    n_rel = scores.size
    if n_rel == 0:
        return np.zeros(len(ks))
    out = np.zeros(len(ks))
    for a, n, m, _, _ in relevant_tie_groups(scores, greater, ties):
        for j, k in enumerate(ks):
            out[j] += m * min(max((k - a + 1) / n, 0.0), 1.0)
    return out / n_rel
