"""Single-pass exact bootstrap ranking (the LRVS-F engine).

The reference protocol rebuilds a gallery for every (fold, distractor count) pair and calls
``topk`` on it: 20 folds x 4 distractor counts = 80 passes over up to 1M gallery rows. Here
every query is scored against each block of distractors *once*; all folds and all distractor
counts are derived from those scores through per-fold draw multiplicities:

    greater[p, c] = sum_j mult[j, c] * [q_p . d_j >  q_p . t_p]
    ties[p, c]    = sum_j mult[j, c] * [q_p . d_j == q_p . t_p]

where ``mult[j, c]`` is how many times distractor ``j`` was drawn in column ``c`` (one column
per fold and distractor count). The products' own targets contribute the same way with a 0/1
membership. Memory is bounded by the block buffer, not by the number of distractors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from condsim.errors import CondsimError

logger = logging.getLogger(__name__)

#: float32 sums of integers are exact below 2**24.
_F32_EXACT = 2**24


@dataclass(frozen=True)
class FoldCounts:
    """Per (query, fold, draw set) rank counts of each query's own target.

    ``products`` are the product indices that appear in at least one fold (rows of the count
    arrays); ``weights[f, i]`` is how many times ``products[i]`` was drawn in fold ``f``
    (0 = not a query of that fold). ``greater``/``ties`` have shape ``(len(products), F, L)``
    for ``L`` draw sets (one per distractor count); entries where ``weights`` is 0 are
    not meaningful (that product is not a query of that fold).
    """

    products: np.ndarray
    weights: np.ndarray
    greater: np.ndarray
    ties: np.ndarray


def draw_multiplicities(rows: Iterable[np.ndarray], n_items: int) -> np.ndarray:
    """Dense ``(n_items, C)`` count matrix: ``m[j, c]`` = times item ``j`` occurs in the
    ``c``-th draw row. Uses the smallest unsigned dtype that holds the largest count."""
    cols: list[np.ndarray] = []
    for row in rows:
        cols.append(np.bincount(row, minlength=n_items).astype(np.uint32))
    if not cols:
        return np.zeros((n_items, 0), dtype=np.uint8)
    top = max(int(c.max(initial=0)) for c in cols)
    dtype = np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.uint32
    out = np.empty((n_items, len(cols)), dtype=dtype)
    for i, c in enumerate(cols):
        out[:, i] = c
    return out


@dataclass(frozen=True)
class DistractorDraws:
    """Distractor draws of ``n_sets`` distractor counts x ``n_folds`` folds, stored as
    multiplicities ``mult[j, l * n_folds + f]`` (times distractor ``j`` is drawn in fold ``f``
    of set ``l``): memory ``N x F x L`` small integers, not the draws themselves."""

    mult: np.ndarray
    n_folds: int
    n_sets: int

    @classmethod
    def from_rows(
        cls, rows: Iterable[np.ndarray], n_items: int, n_folds: int, n_sets: int
    ) -> DistractorDraws:
        """From draw rows ordered set-major (set 0 fold 0..F-1, set 1 fold 0..F-1, ...)."""
        def checked() -> Iterator[np.ndarray]:
            for r in rows:
                yield _validate_indices("dist_draws", np.asarray(r)[None], n_items)[0]

        mult = draw_multiplicities(checked(), n_items)
        if mult.shape[1] != n_folds * n_sets:
            raise CondsimError(
                f"expected {n_folds * n_sets} draw rows ({n_sets} sets x {n_folds} folds), "
                f"got {mult.shape[1]}"
            )
        return cls(mult, n_folds, n_sets)

    @classmethod
    def from_arrays(cls, draw_sets: Sequence[np.ndarray], n_items: int) -> DistractorDraws:
        """From a list of ``(F, n_l)`` index arrays, one per distractor count."""
        arrays = [_validate_indices("dist_draws", d, n_items) for d in draw_sets]
        n_folds = arrays[0].shape[0] if arrays else 0
        for d in arrays:
            if d.shape[0] != n_folds:
                raise CondsimError(f"dist_draws have {d.shape[0]} and {n_folds} fold rows")
        return cls.from_rows((r for d in arrays for r in d), n_items, n_folds, len(arrays))


def _validate_indices(name: str, idx: np.ndarray, upper: int) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.ndim != 2:
        raise CondsimError(f"{name} must be a 2-D integer array (folds, draws), got {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise CondsimError(f"{name} must hold integers, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= upper):
        raise CondsimError(
            f"{name} holds indices outside [0, {upper}): min {idx.min()}, max {idx.max()}"
        )
    return idx.astype(np.int64, copy=False)


def _check_embeddings(name: str, x: Any, dim: int | None = None) -> None:
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 2:
        raise CondsimError(f"{name} must be a 2-D (rows, dim) array, got shape {shape}")
    if dim is not None and shape[1] != dim:
        raise CondsimError(f"{name} has dimension {shape[1]}, queries have {dim}")


def score_blocks(
    queries: torch.Tensor, gallery: Any, block_size: int, device: torch.device
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield ``(start, stop, queries @ gallery[start:stop].T)`` over row blocks of ``gallery``.

    ``gallery`` is anything with ``shape`` and row slicing (ndarray, ``np.memmap``, tensor).
    Only one block is in memory at a time. NaN/inf rows raise :class:`CondsimError`.
    """
    n = int(gallery.shape[0])
    for start in range(0, n, block_size):
        stop = min(n, start + block_size)
        block = gallery[start:stop]
        block_t = (
            block.to(device, torch.float32)
            if isinstance(block, torch.Tensor)
            else torch.from_numpy(np.array(block, dtype=np.float32, order="C")).to(device)
        )
        if not torch.isfinite(block_t).all():
            bad = (~torch.isfinite(block_t).all(dim=1)).nonzero().flatten()[:5] + start
            raise CondsimError(f"gallery rows {bad.tolist()} hold NaN/inf embeddings")
        yield start, stop, queries @ block_t.T


def fold_rank_counts(
    queries: np.ndarray,
    targets: np.ndarray,
    distractors: Any,
    folds: np.ndarray,
    draws: DistractorDraws | Sequence[np.ndarray],
    *,
    block_size: int = 16384,
    device: str | torch.device | None = None,
    progress: Callable[[int], None] | None = None,
) -> FoldCounts:
    """Count, for every product query, the fold gallery items above / tied with its target.

    ``queries``/``targets`` float32 ``(P, d)`` (row ``i`` of both = product ``i``);
    ``distractors`` float32 ``(N, d)`` (ndarray or ``np.memmap``, read one block at a time);
    ``folds`` int ``(F, B)`` product indices with repetition (a fold's gallery holds each
    unique target once); ``draws`` the distractor draws (:class:`DistractorDraws`, or a list
    of int ``(F, n_l)`` index arrays with repetition: each occurrence is one gallery
    item). Scores are inner products.
    ``progress`` is called with the number of distractor rows done after each block.
    """
    q = np.asarray(queries)
    t = np.asarray(targets)
    _check_embeddings("queries", q)
    dim = q.shape[1]
    _check_embeddings("targets", t, dim)
    _check_embeddings("distractors", distractors, dim)
    if t.shape[0] != q.shape[0]:
        raise CondsimError(
            f"queries ({q.shape[0]} rows) and targets ({t.shape[0]} rows) must be aligned"
        )
    for name, arr in (("queries", q), ("targets", t)):
        if not np.isfinite(arr).all():
            rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
            raise CondsimError(f"{name} rows {rows[:5].tolist()} hold NaN/inf embeddings")
    n_products = q.shape[0]
    n_dist = int(distractors.shape[0])
    folds = _validate_indices("folds", folds, n_products)
    if not isinstance(draws, DistractorDraws):
        if n_dist == 0 and any(np.asarray(d).size for d in draws):
            raise CondsimError("distractor draws requested but there are no distractors")
        draws = DistractorDraws.from_arrays(draws, max(n_dist, 1))
    n_folds = folds.shape[0]
    if draws.n_folds != n_folds:
        raise CondsimError(
            f"dist_draws have {draws.n_folds} fold rows but there are {n_folds} folds"
        )
    if n_dist and draws.mult.shape[0] != n_dist:
        raise CondsimError(
            f"draws are over {draws.mult.shape[0]} distractors but {n_dist} are given"
        )
    n_sets = draws.n_sets
    dev = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu"
    )

    counts = np.zeros((n_folds, n_products), dtype=np.int64)
    for f in range(n_folds):
        counts[f] = np.bincount(folds[f], minlength=n_products)
    products = np.flatnonzero(counts.sum(axis=0))
    weights = counts[:, products]
    member = torch.from_numpy((counts > 0).astype(np.float32)).to(dev)  # (F, P)

    qa = torch.from_numpy(np.ascontiguousarray(q[products], dtype=np.float32)).to(dev)
    tt = torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32)).to(dev)
    s_pp = qa @ tt.T  # (Pa, P)
    own = s_pp[torch.arange(len(products), device=dev), torch.from_numpy(products).to(dev)]
    own_col = own[:, None]
    g_prod = ((s_pp > own_col).float() @ member.T).double()  # (Pa, F)
    # the query's own target is always in its fold's gallery and always "ties" itself
    t_prod = ((s_pp == own_col).float() @ member.T).double() - 1.0
    del s_pp

    n_cols = n_folds * n_sets
    g_dist = torch.zeros((len(products), n_cols), dtype=torch.float64, device=dev)
    t_dist = torch.zeros((len(products), n_cols), dtype=torch.float64, device=dev)
    if n_cols and n_dist:
        mult = draws.mult
        max_mult = int(mult.max(initial=0))
        exact_f32 = block_size * max(max_mult, 1) < _F32_EXACT
        mm_dtype = torch.float32 if exact_f32 else torch.float64
        for start, stop, scores in score_blocks(qa, distractors, block_size, dev):
            m_block = torch.from_numpy(mult[start:stop].astype(np.float32)).to(dev, mm_dtype)
            above = scores > own_col
            g_dist += (above.to(mm_dtype) @ m_block).double()
            rows, cols = (scores == own_col).nonzero(as_tuple=True)
            if rows.numel():
                t_dist.index_add_(0, rows, m_block[cols].double())
            if progress is not None:
                progress(stop - start)

    greater = g_prod.cpu().numpy()[:, :, None] + g_dist.cpu().numpy().reshape(
        len(products), n_sets, n_folds
    ).transpose(0, 2, 1)
    ties = t_prod.cpu().numpy()[:, :, None] + t_dist.cpu().numpy().reshape(
        len(products), n_sets, n_folds
    ).transpose(0, 2, 1)
    return FoldCounts(
        products=products,
        weights=weights,
        greater=np.rint(greater).astype(np.int64),
        # rows of products absent from a fold are meaningless (weight 0): keep them finite
        ties=np.maximum(np.rint(ties).astype(np.int64), 0),
    )
