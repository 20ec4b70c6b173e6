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
A distractor drawn in no column adds nothing, so its row is never read or scored: with
N distractors and D draws in all, at most D rows are (at N = 1B and the protocol's
20 x 1.61M draws, about 3%).
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


def draw_multiplicities(
    rows: Iterable[np.ndarray], n_items: int, n_rows: int | None = None,
    window: tuple[int, int] | None = None,
) -> np.ndarray:
    """Count matrix ``m`` of shape ``(hi - lo, C)``: ``m[j, c]`` = times item ``lo + j``
    occurs in the ``c``-th draw row, for the items of ``window = (lo, hi)`` (default: all
    ``n_items``; a rank keeps only the rows of its own distractor shard). Stored column by
    column (the transpose of a C-ordered ``(C, hi - lo)`` array: each row's counts are
    written contiguously) in the smallest unsigned dtype that holds the largest count
    (widened on the fly), so memory is ``(hi - lo) x C`` bytes in the usual case; ``n_rows``
    (the number of rows, when known) avoids regrowing the matrix."""
    lo, hi = window if window is not None else (0, n_items)
    if not 0 <= lo <= hi <= n_items:
        raise CondsimError(f"window [{lo}, {hi}) is not inside [0, {n_items})")
    width = hi - lo
    out = np.zeros((n_rows or 16, width), dtype=np.uint8)
    n_cols = 0
    for row in rows:
        row = np.asarray(row)
        if window is not None:
            row = row[(row >= lo) & (row < hi)] - lo
        col = np.bincount(row, minlength=width)
        top = int(col.max(initial=0))
        if top > np.iinfo(out.dtype).max:
            out = out.astype(np.uint16 if top < 2**16 else np.uint32)
        if n_cols == out.shape[0]:
            grown = np.zeros((max(2 * n_cols, 1), width), dtype=out.dtype)
            grown[:n_cols] = out
            out = grown
        out[n_cols] = col
        n_cols += 1
    return (out if n_cols == out.shape[0] else out[:n_cols].copy()).T


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
        cls, rows: Iterable[np.ndarray], n_items: int, n_folds: int, n_sets: int,
        window: tuple[int, int] | None = None,
    ) -> DistractorDraws:
        """From draw rows ordered set-major (set 0 fold 0..F-1, set 1 fold 0..F-1, ...);
        with ``window = (lo, hi)``, the multiplicities of items ``lo..hi-1`` only (indices are
        still checked against ``n_items``)."""
        def checked() -> Iterator[np.ndarray]:
            for r in rows:
                yield _validate_indices("dist_draws", np.asarray(r)[None], n_items)[0]

        mult = draw_multiplicities(checked(), n_items, n_folds * n_sets, window)
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
    for start, stop, block in gallery_blocks(gallery, block_size, device):
        yield start, stop, queries @ block.T


def gallery_blocks(
    gallery: Any, block_size: int, device: torch.device,
    keep: Callable[[int, int], np.ndarray | None] | None = None,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield ``(start, stop, float32 rows)`` blocks of ``gallery``, checked for NaN/inf.

    With ``keep``, ``keep(start, stop)`` names the block's rows to read (offsets from
    ``start``, sorted; ``None``: all of them): only those are read and yielded, so a block
    of rows nobody needs costs nothing (an empty block is still yielded, for progress)."""
    n = int(gallery.shape[0])
    for start in range(0, n, block_size):
        stop = min(n, start + block_size)
        rows = keep(start, stop) if keep is not None else None
        if rows is None or rows.size == stop - start:
            rows, block = None, gallery[start:stop]
        else:
            block = _take_rows(gallery, rows + start)
        block_t = (
            block.to(device, torch.float32)
            if isinstance(block, torch.Tensor)
            else torch.from_numpy(np.array(block, dtype=np.float32, order="C")).to(device)
        )
        finite = torch.isfinite(block_t).all(dim=1)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten()[:5].cpu().numpy()
            bad = (bad if rows is None else rows[bad]) + start
            raise CondsimError(f"gallery rows {bad.tolist()} hold NaN/inf embeddings")
        yield start, stop, block_t


def _take_rows(gallery: Any, rows: np.ndarray) -> Any:
    """``gallery[rows]``: an ndarray/memmap or a row view indexed by an int array
    (:class:`condsim.cache.store.CachedRows`), or a tensor."""
    if isinstance(gallery, torch.Tensor):
        return gallery[torch.from_numpy(rows).to(gallery.device)]
    return gallery[rows]


def rowwise_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_i a[r, i] * b[r, i]`` per row, in float32.

    Every *decision* about a pair (strictly above / tied with the target) is taken on scores
    computed by this one function, so identical embeddings (a distractor that is a copy of
    the target image) always tie exactly, whatever BLAS kernel produced the screening scores.
    """
    return (a * b).sum(dim=1)


#: Unit roundoff of bfloat16 (8-bit significand) and of float32.
_U_BF16 = 2.0**-8
_U_F32 = 2.0**-24


def screening_error_coef(dim: int, bf16: bool) -> float:
    """Certified bound ``c`` with ``|approx(q.d) - fl32(q.d)| <= c * ||q|| * ||d||``.

    For float32 GEMM vs a float32 row dot, both within ``gamma_d = d * u32`` (times
    ``sum |q_i d_i| <= ||q|| ||d||``) of the real value: ``c = 2 gamma_d``. For bfloat16 inputs
    (each rounded with relative error ``u = 2^-8``), float32 accumulation and a bfloat16
    output: ``c = 3u + u^2 + 2 gamma_d``, rounded up generously to ``4u + 2 gamma_d``.
    """
    gamma = dim * _U_F32 * 1.01
    return (4 * _U_BF16 + 2 * gamma) if bf16 else max(4 * gamma, 16 * _U_F32)


@dataclass
class ScreenStats:
    """How pairs were decided (for logs and benchmarks)."""

    pairs: int = 0
    rechecked: int = 0
    fallback_blocks: int = 0
    blocks: int = 0


#: a block's pairs are handled as a sparse list when a probe of its first 256 columns finds
#: fewer than this fraction set, and the whole block fewer than ``_SPARSE_PAIRS``
_SPARSE_PROBE = 0.002
_SPARSE_PAIRS = 0.004


class _BlockRanker:
    """Adds, per block of gallery rows, the multiplicity-weighted counts of rows scoring
    strictly above / equal to each query's own target score.

    Screening: approximate scores ``A`` (bfloat16 GEMM on CPUs with fast bf16, else float32
    GEMM) with a certified error bound ``delta_p = c ||q_p|| max_j ||d_j||``. Pairs with
    ``A > own + delta`` are above, ``A < own - delta`` below, and the narrow band in between is
    recomputed exactly with :func:`rowwise_dot`. A block whose band is too wide falls back to
    float32 GEMM screening. The counts are therefore exactly those of float32 row dots.
    """

    def __init__(self, qa: torch.Tensor, own: torch.Tensor, use_bf16: bool) -> None:
        self.qa = qa
        self.own = own
        self.use_bf16 = use_bf16
        self.qa_bf = qa.to(torch.bfloat16) if use_bf16 else None
        self.qnorm = torch.linalg.vector_norm(qa, dim=1)
        dim = qa.shape[1]
        self.coef = {b: screening_error_coef(dim, b) for b in (True, False)}
        self.stats = ScreenStats()
        self.max_band = 0.02

    def _bounds(self, block: torch.Tensor, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dmax = torch.linalg.vector_norm(block, dim=1).max()
        delta = self.coef[bf16] * self.qnorm * dmax * 1.0001 + 1e-30
        lo, hi = (self.own - delta)[:, None], (self.own + delta)[:, None]
        if bf16:  # compare in bf16: round the thresholds outwards
            lo = (lo - lo.abs() * 2**-7).to(torch.bfloat16)
            hi = (hi + hi.abs() * 2**-7).to(torch.bfloat16)
        return lo, hi

    def add(
        self, block: torch.Tensor, mult: torch.Tensor, greater: torch.Tensor, ties: torch.Tensor
    ) -> None:
        """``greater[p] += sum_j mult[j] [s_pj > own_p]``; same for ``==`` into ``ties``.

        One dense pass finds the pairs ``A >= lo`` (above or in the band). When they are
        sparse (a query's target ranks high, the usual case) only those few pairs are
        classified and counted, without the dense ``above``/``band`` matrices: the
        elementwise passes over the ``P x B`` block, not the GEMM, bound a rank's speed
        once the GEMM runs in bfloat16, and they share the memory bus with the other ranks.
        """
        self.stats.blocks += 1
        self.stats.pairs += self.qa.shape[0] * block.shape[0]
        above: torch.Tensor | None = None
        hits: tuple[torch.Tensor, torch.Tensor] | None = None
        for bf16 in ((True, False) if self.use_bf16 else (False,)):
            approx = (self.qa_bf @ block.to(torch.bfloat16).T) if bf16 else self.qa @ block.T
            lo, hi = self._bounds(block, bf16)
            near = approx >= lo
            probe = near[:, : min(near.shape[1], 256)]
            pairs = None
            if probe.numel() and float(probe.float().mean()) < _SPARSE_PROBE:
                r_near, c_near = near.nonzero(as_tuple=True)
                if r_near.numel() < _SPARSE_PAIRS * near.numel():
                    pairs = (r_near, c_near)
            if pairs is not None:
                is_above = approx[pairs] > hi[pairs[0], 0]
                hits = (pairs[0][is_above], pairs[1][is_above])
                rows, cols = pairs[0][~is_above], pairs[1][~is_above]
                above = None
            else:
                above = approx > hi
                rows, cols = (near & ~above).nonzero(as_tuple=True)
                hits = None
            if rows.numel() <= self.max_band * near.numel() or not bf16:
                break
            self.stats.fallback_blocks += 1
        del approx, near
        if hits is not None:
            _index_add_chunks(greater, hits[0], hits[1], mult)
        elif above is not None:
            self._count(above, mult, greater)
        self.stats.rechecked += int(rows.numel())
        for start in range(0, rows.numel(), 1 << 20):
            r, c = rows[start:start + (1 << 20)], cols[start:start + (1 << 20)]
            exact = rowwise_dot(self.qa[r], block[c])
            gt = exact > self.own[r]
            eq = exact == self.own[r]
            if bool(gt.any()):
                greater.index_add_(0, r[gt], mult[c[gt]].to(greater.dtype))
            if bool(eq.any()):
                ties.index_add_(0, r[eq], mult[c[eq]].to(ties.dtype))

    @staticmethod
    def _count(above: torch.Tensor, mult: torch.Tensor, out: torch.Tensor) -> None:
        """``out += above @ mult`` (dense GEMM, or gather-add when ``above`` is sparse)."""
        probe = above[:, : min(above.shape[1], 256)]
        if probe.numel() and float(probe.float().mean()) < _SPARSE_PROBE:
            rows, cols = above.nonzero(as_tuple=True)
            if rows.numel() < _SPARSE_PAIRS * above.numel():
                _index_add_chunks(out, rows, cols, mult)
                return
        out += (above.to(mult.dtype) @ mult).to(out.dtype)


def _index_add_chunks(out: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                      mult: torch.Tensor) -> None:
    """``out[rows[i]] += mult[cols[i]]`` for every pair, 1M pairs at a time."""
    for start in range(0, rows.numel(), 1 << 20):
        r, c = rows[start:start + (1 << 20)], cols[start:start + (1 << 20)]
        out.index_add_(0, r, mult[c].to(out.dtype))


def _fast_bf16_matmul(device: torch.device) -> bool:
    """bfloat16 screening pays off on CPUs with native bf16 dot products (AVX512-BF16/AMX)."""
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read(1 << 16)
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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
    screen: str = "auto",
    include_targets: bool = True,
    partial: bool = False,
) -> FoldCounts:
    """Count, for every product query, the fold gallery items above / tied with its target.

    ``queries``/``targets`` float32 ``(P, d)`` (row ``i`` of both = product ``i``);
    ``distractors`` float32 ``(N, d)`` (ndarray or ``np.memmap``, read one block at a time);
    ``folds`` int ``(F, B)`` product indices with repetition (a fold's gallery holds each
    unique target once); ``draws`` the distractor draws (:class:`DistractorDraws`, or a list
    of int ``(F, n_l)`` index arrays with repetition: each occurrence is one gallery
    item). Scores are float32 inner products; ``screen`` = ``auto`` (bfloat16 screening with a
    certified error bound where bf16 GEMM is fast, see :class:`_BlockRanker`), ``bf16`` or
    ``fp32``: the counts are identical, only the speed differs.
    ``progress`` is called with the number of distractor rows done after each block.

    The counts are additive over distractor shards (``greater = sum_r greater_r``, the same
    for ``ties``), which is how ranks share the work: rank ``r`` passes its shard ``D_r`` with
    the matching rows of ``draws.mult``, ``include_targets`` only on one rank (the products'
    own targets are counted once) and ``partial=True`` on every rank (``ties`` not clamped
    at 0, so that the shards' arrays add up to the single-process ones before
    :func:`finish_counts` clamps them).
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
    if screen not in ("auto", "bf16", "fp32"):
        raise CondsimError(f"screen must be auto, bf16 or fp32, got {screen!r}")
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
    use_bf16 = screen == "bf16" or (screen == "auto" and _fast_bf16_matmul(dev))

    counts = np.zeros((n_folds, n_products), dtype=np.int64)
    for f in range(n_folds):
        counts[f] = np.bincount(folds[f], minlength=n_products)
    products = np.flatnonzero(counts.sum(axis=0))
    weights = counts[:, products]
    pa = len(products)

    qa = torch.from_numpy(np.ascontiguousarray(q[products], dtype=np.float32)).to(dev)
    tt = torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32)).to(dev)
    own = rowwise_dot(qa, tt[torch.from_numpy(products).to(dev)])
    ranker = _BlockRanker(qa, own, use_bf16)

    # the products' own targets: 0/1 membership per fold; the query's target ties itself
    member = torch.from_numpy((counts > 0).astype(np.float32).T.copy()).to(dev)  # (P, F)
    g_prod = torch.zeros((pa, n_folds), dtype=torch.float64, device=dev)
    t_prod = torch.zeros((pa, n_folds), dtype=torch.float64, device=dev)
    if include_targets:
        for start, stop, block in gallery_blocks(tt, block_size, dev):
            ranker.add(block, member[start:stop], g_prod, t_prod)
        t_prod -= 1.0

    n_cols = n_folds * n_sets
    g_dist = torch.zeros((pa, n_cols), dtype=torch.float64, device=dev)
    t_dist = torch.zeros((pa, n_cols), dtype=torch.float64, device=dev)
    if n_cols and n_dist:
        mult = draws.mult
        exact_f32 = block_size * max(int(mult.max(initial=0)), 1) < _F32_EXACT
        mm_dtype = torch.float32 if exact_f32 else torch.float64
        drawn_rows: dict[int, np.ndarray] = {}

        def drawn(start: int, stop: int) -> np.ndarray | None:
            """The block's distractors drawn at least once (the others add nothing), kept
            for the multiplicity rows of the same block."""
            used = np.flatnonzero(mult[start:stop].any(axis=1))
            if used.size == stop - start:
                return None
            drawn_rows[start] = used
            return used

        for start, stop, block in gallery_blocks(distractors, block_size, dev, keep=drawn):
            used = drawn_rows.pop(start, None)
            m_np = mult[start:stop] if used is None else mult[start:stop][used]
            if block.shape[0]:
                m_block = torch.from_numpy(m_np.astype(np.float32)).to(dev, mm_dtype)
                ranker.add(block, m_block, g_dist, t_dist)
            if progress is not None:
                progress(stop - start)
    st = ranker.stats
    logger.debug(
        "screening: %d pairs, %d rechecked exactly, %d/%d blocks fell back to float32",
        st.pairs, st.rechecked, st.fallback_blocks, st.blocks,
    )

    def per_set(x: torch.Tensor) -> np.ndarray:
        return x.cpu().numpy().reshape(pa, n_sets, n_folds).transpose(0, 2, 1)

    greater = g_prod.cpu().numpy()[:, :, None] + per_set(g_dist)
    ties = t_prod.cpu().numpy()[:, :, None] + per_set(t_dist)
    counts_out = FoldCounts(products=products, weights=weights,
                            greater=np.rint(greater).astype(np.int64),
                            ties=np.rint(ties).astype(np.int64))
    return counts_out if partial else finish_counts(counts_out)


def finish_counts(counts: FoldCounts) -> FoldCounts:
    """``counts`` with ``ties = max(ties, 0)``: the rows of products absent from a fold
    (weight 0, meaningless) hold ``-1 + distractor ties`` before this; keep them finite and
    non-negative. Apply once, to the sum of the shards' ``partial`` counts."""
    return FoldCounts(products=counts.products, weights=counts.weights,
                      greater=counts.greater, ties=np.maximum(counts.ties, 0))
