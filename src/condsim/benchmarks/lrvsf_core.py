"""LRVS-Fashion bootstrap recall from fold rank counts (pure numpy, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from condsim.metrics.recall import (
    expected_rank_from_counts,
    recall_from_counts,
    reciprocal_rank_from_counts,
)
from condsim.search.exact import FoldCounts, fold_rank_counts


def recalls_from_fold_counts(fc: FoldCounts, ks: Sequence[int]) -> np.ndarray:
    """Weighted recall per fold, draw set and K: ``(F, L, len(ks))`` float64 in [0, 1].

    For fold ``f`` with query multiplicities ``w_p`` (sum ``B``)::

        R@k(f) = (1 / B) * sum_p w_p * clip((k - g_p) / (t_p + 1), 0, 1)

    with ``g_p``/``t_p`` the fold-gallery items strictly above / tied with ``p``'s target.
    Without ties this is exactly the official "target among the model's top k" share.
    """
    rec = recall_from_counts(fc.greater, fc.ties, ks)  # (Pa, F, L, K)
    w = fc.weights.astype(np.float64)  # (F, Pa)
    total = w.sum(axis=1)  # (F,)
    return np.einsum("fp,pflk->flk", w, rec) / total[:, None, None]


def rank_metrics_from_fold_counts(fc: FoldCounts, cutoff: int = 100) -> dict[str, np.ndarray]:
    """Per fold and draw set ``(F, L)``, weighting each query by its multiplicity ``w_p``:

    * ``mrr_at_100``: ``(1 / B) * sum_p w_p * E[1/r_p * [r_p <= cutoff]]``, the expected
      reciprocal rank with 0 beyond the top ``cutoff`` (the CondViT authors' "P@R=1");
    * ``median_rank``: the weighted median of the expected 1-based rank
      ``E[r_p] = g_p + t_p / 2 + 1`` (the smallest value whose cumulative weight reaches B/2).

    Ranks are uniform over tied positions (see :mod:`condsim.metrics.recall`).
    """
    rr = reciprocal_rank_from_counts(fc.greater, fc.ties, cutoff)  # (Pa, F, L)
    w = fc.weights.astype(np.float64)  # (F, Pa)
    mrr = np.einsum("fp,pfl->fl", w, rr) / w.sum(axis=1)[:, None]
    rank = expected_rank_from_counts(fc.greater, fc.ties)
    median = np.empty_like(mrr)
    for f in range(w.shape[0]):
        for li in range(rank.shape[2]):
            order = np.argsort(rank[:, f, li], kind="stable")
            cum = np.cumsum(w[f, order])
            median[f, li] = rank[order[np.searchsorted(cum, cum[-1] / 2)], f, li]
    return {f"mrr_at_{cutoff}": mrr, "median_rank": median}


def fold_recalls(
    queries: np.ndarray,
    targets: np.ndarray,
    distractors: Any,
    folds: np.ndarray,
    dist_draws: np.ndarray,
    ks: Sequence[int],
    *,
    block_size: int = 16384,
    device: str | None = None,
    screen: str = "auto",
) -> np.ndarray:
    """Exact bootstrap recall@K of LRVS-F for one distractor count, in a single pass.

    Arguments as in the official protocol: ``queries``/``targets`` float32 ``(P, d)`` (row ``i``
    of both = product ``i``); ``distractors`` float32 ``(N, d)`` (may be a ``np.memmap`` bigger
    than RAM: read one block at a time); ``folds`` int ``(F, B)`` product indices with
    repetition (a query counts with its multiplicity; the fold's gallery holds each unique
    target once); ``dist_draws`` int ``(F, n)`` distractor indices with repetition (each
    occurrence is a gallery item). Score = inner product. Ties: expected recall under uniformly
    random tie-breaking, ``clip((k - g) / (t + 1), 0, 1)``.

    ``screen`` picks the screening precision (``auto``/``bf16``/``fp32``); results are the
    same, see :func:`condsim.search.exact.fold_rank_counts`.

    Returns ``(F, len(ks))`` float64 fractions in [0, 1].
    """
    fc = fold_rank_counts(
        queries, targets, distractors, folds, [np.asarray(dist_draws)],
        block_size=block_size, device=device, screen=screen,
    )
    return recalls_from_fold_counts(fc, ks)[:, 0, :]
