"""Failure examples: a small, bounded record of queries a model got wrong, for the report.

A run may store ``RunResult.extra["failures"]``: a list of at most ``limit`` *cases*
(schema ``condsim.failures/1``, one dict per failed query)::

    {"schema": "condsim.failures/1",
     "group": "focus_attribute" | None,          # task / split the query belongs to
     "query_id": <int | str>,                    # the query's index or id in its benchmark
     "query": {"image": REF, "condition": str},
     "target": REF, "target_score": float,
     "target_rank": int,                         # 1 + number of candidates scored strictly higher
     "n_ties": int,                              # other candidates scored exactly as the target
     "gallery_size": int,
     "top": [{"image": REF, "score": float}, ...]}   # the wrong candidates ranked highest

``REF`` says where the report can load the image (absolute paths, so the report works from
any directory while the data stays in place):

* ``{"kind": "parquet", "path": str, "column": str, "row": int}``: a cell of JPEG bytes
  (or an HF ``{bytes, path}`` struct) in a parquet file, e.g. LRVS-F ``products.parquet``;
* ``{"kind": "file", "path": str, "bbox": [x, y, w, h] | None, "crop_mode": str | None}``:
  an image file, optionally the GeneCIS crop of a box.

Benchmarks call :func:`collect_failures` with their score matrix; the report resolves refs
with :class:`ImageLoader` (loaders by kind in :data:`REF_LOADERS`, no branching on kinds).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from condsim.errors import DataError

logger = logging.getLogger(__name__)

FAILURES_SCHEMA = "condsim.failures/1"
DEFAULT_LIMIT = 12
DEFAULT_TOP_N = 3

Ref = dict[str, Any]
FailureCase = dict[str, Any]


def parquet_ref(path: str | Path, column: str, row: int) -> Ref:
    """Reference to the image in ``column`` of row ``row`` of the parquet file ``path``."""
    return {"kind": "parquet", "path": str(Path(path).resolve()), "column": column,
            "row": int(row)}


def file_ref(path: str | Path, bbox: Sequence[float] | None = None,
             crop_mode: str | None = None) -> Ref:
    """Reference to an image file, optionally cropped to ``bbox`` ``[x, y, w, h]``."""
    return {"kind": "file", "path": str(Path(path).resolve()),
            "bbox": [float(v) for v in bbox] if bbox is not None else None,
            "crop_mode": crop_mode if bbox is not None else None}


def _as_lookup(values: Sequence[Any] | Callable[[int], Any]) -> Callable[[int], Any]:
    if callable(values):
        return values
    return lambda i: values[i]


def _spread(indices: np.ndarray, limit: int) -> np.ndarray:
    """``limit`` of ``indices`` evenly spaced over them (all when there are fewer): a
    deterministic sample that is neither the first block nor only the worst outliers."""
    if indices.size <= limit:
        return indices
    picks = np.unique(np.linspace(0, indices.size - 1, limit).round().astype(np.int64))
    return indices[picks]


def collect_failures(
    scores: np.ndarray,
    target_cols: Sequence[int] | np.ndarray,
    *,
    query_image: Sequence[Ref] | Callable[[int], Ref],
    condition: Sequence[str] | Callable[[int], str],
    candidate_image: Callable[[int, int], Ref],
    query_ids: Sequence[Any] | None = None,
    group: str | None = None,
    limit: int = DEFAULT_LIMIT,
    top_n: int = DEFAULT_TOP_N,
) -> list[FailureCase]:
    """Up to ``limit`` failed queries of one score matrix, as :data:`FAILURES_SCHEMA` cases.

    ``scores`` is ``(Q, G)``: query ``i``'s similarity to gallery column ``j`` (higher is
    more similar; ``-inf`` or NaN marks padding of ragged per-query galleries). Query ``i``
    *fails* when some other valid column scores ``>=`` its target ``target_cols[i]``, i.e.
    when its tie-safe expected R@1 is below 1. ``target_rank`` is ``1 + #{j: s_ij > s_it}``
    and ``n_ties`` counts the other columns with ``s_ij == s_it``. The failed queries kept
    are evenly spaced over all failures (deterministic, no RNG); ``top`` lists the
    ``top_n`` highest-scoring wrong columns (stable order).

    ``query_image(i)``/``condition(i)`` give query ``i``'s image ref and condition,
    ``candidate_image(i, j)`` the ref of column ``j`` of query ``i``'s gallery (ignore ``i``
    for a shared gallery). Only the kept cases build refs, so callables stay cheap.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(target_cols, dtype=np.int64).ravel()
    if s.ndim != 2 or t.shape[0] != s.shape[0]:
        raise ValueError(f"collect_failures: scores must be (Q, G) with Q target columns, got "
                         f"scores {s.shape} and {t.shape[0]} targets")
    if s.size == 0 or limit <= 0:
        return []
    if t.min() < 0 or t.max() >= s.shape[1]:
        raise ValueError(f"collect_failures: target columns must be in [0, {s.shape[1]})")
    valid = np.isfinite(s)
    rows = np.arange(s.shape[0])
    own = s[rows, t][:, None]
    at_least = (s >= own) & valid
    at_least[rows, t] = False
    failed = np.flatnonzero(at_least.any(axis=1))
    q_image, q_cond = _as_lookup(query_image), _as_lookup(condition)
    cases = []
    for i in _spread(failed, limit).tolist():
        row = np.where(valid[i], s[i], -np.inf)
        wrong = np.flatnonzero(valid[i])
        wrong = wrong[wrong != t[i]]
        top = wrong[np.argsort(-row[wrong], kind="stable")[:top_n]]
        cases.append({
            "schema": FAILURES_SCHEMA,
            "group": group,
            "query_id": query_ids[i] if query_ids is not None else i,
            "query": {"image": q_image(i), "condition": str(q_cond(i))},
            "target": candidate_image(i, int(t[i])),
            "target_score": float(s[i, t[i]]),
            "target_rank": int(np.count_nonzero(row > s[i, t[i]])) + 1,
            "n_ties": int(np.count_nonzero(row == s[i, t[i]])) - 1,
            "gallery_size": int(valid[i].sum()),
            "top": [{"image": candidate_image(i, int(j)), "score": float(s[i, j])}
                    for j in top.tolist()],
        })
    logger.debug("collect_failures(%s): %d failed queries of %d, kept %d", group,
                 failed.size, s.shape[0], len(cases))
    return cases


def is_case(case: Any) -> bool:
    """Whether ``case`` is a :data:`FAILURES_SCHEMA` case (older runs stored other shapes)."""
    return isinstance(case, dict) and case.get("schema") == FAILURES_SCHEMA


# --- loading the referenced images (report side) -------------------------------------------


def _load_file(ref: Ref) -> Image.Image:
    from condsim.data.crops import ImageRef
    from condsim.data.images import decode_image

    bbox = ref.get("bbox")
    img_ref = ImageRef(ref["path"], tuple(bbox) if bbox else None,
                       ref.get("crop_mode") or "official")
    return decode_image(img_ref, ref["path"])


def _load_parquet(ref: Ref) -> Image.Image:
    """The image of a parquet ref: its row group read (:func:`~condsim.data.lazy_images.
    read_cell`), not the whole column."""
    from condsim.data.images import decode_image
    from condsim.data.lazy_images import read_cell

    path = Path(ref["path"])
    if not path.is_file():
        raise DataError(f"{path}: parquet file not found (moved since the run?)")
    row = int(ref["row"])
    value = read_cell(str(path), ref["column"], row)
    if value is None:
        raise DataError(f"{path}: no image in row {row} of column {ref['column']!r}")
    return decode_image(value, f"{path} row {row} {ref['column']}")


REF_LOADERS: dict[str, Callable[[Ref], Image.Image]] = {
    "parquet": _load_parquet,
    "file": _load_file,
}


def load_ref_image(ref: Ref) -> Image.Image:
    """Decode the image ``ref`` points to (RGB). Raises :class:`DataError` when it cannot."""
    kind = ref.get("kind") if isinstance(ref, dict) else None
    loader = REF_LOADERS.get(kind)  # type: ignore[arg-type]
    if loader is None:
        raise DataError(f"failure image ref {ref!r}: unknown kind {kind!r}; kinds: "
                        f"{', '.join(REF_LOADERS)}")
    return loader(ref)


def thumbnail(ref: Ref, size: int = 112) -> Image.Image:
    """``ref``'s image scaled to fit ``size`` x ``size`` (aspect kept)."""
    img = load_ref_image(ref).copy()
    img.thumbnail((size, size))
    return img
