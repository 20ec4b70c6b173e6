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


def pessimistic_order(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Gallery order by descending score with ties broken *against* relevant items (a lower
    bound: a constant model gets no credit from tie order)."""
    return np.lexsort((relevant.astype(np.int8), -scores))


def map_at_ks(scores: np.ndarray, relevant_sets: Sequence[np.ndarray],
              ks: Sequence[int]) -> np.ndarray:
    """Per query AP@K for each K: ``(Q, len(ks))``; ``scores`` ``(Q, N)`` with excluded items
    at ``-inf``; ``relevant_sets[q]`` the gallery columns of query ``q``'s ground truth."""
    out = np.zeros((scores.shape[0], len(ks)))
    for q in range(scores.shape[0]):
        rel = np.zeros(scores.shape[1], bool)
        rel[relevant_sets[q]] = True
        order = pessimistic_order(scores[q], rel)[: max(ks)]
        ranked = rel[order] & np.isfinite(scores[q, order])
        for j, k in enumerate(ks):
            out[q, j] = average_precision_at_k(ranked, int(rel.sum()), k)
    return out
