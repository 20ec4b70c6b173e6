"""LRVS-Fashion test-set reader (``products.parquet`` + ``distractors/*.parquet``).

Products are small (2,000 rows): only the needed columns are read, with pyarrow. Distractors
(2M images) are streamed with ``pyarrow.dataset`` in bounded batches exactly like the official
harness: ``to_batches(columns=[dist_img_col], fragment_readahead=..., batch_size=5000)``,
fused until ``aggregate_batches`` rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from condsim.errors import DataError

logger = logging.getLogger(__name__)

CATEGORIES = (
    "Bags", "Feet", "Hands", "Head", "Lower Body",
    "Neck", "Outwear", "Upper Body", "Waist", "Whole Body",
)
CONDITION_COLUMNS = {"category": "CATEGORY", "text": "blip2_caption1"}
QUERY_COL = "COMPLEX_IMG"
TARGET_COL = "SIMPLE_IMG"
READ_BATCH = 5000


@dataclass(frozen=True)
class Products:
    """The benchmark's products: row ``i`` of every field is product ``i``."""

    query_images: list[bytes]
    target_images: list[bytes]
    conditions: list[str]
    categories: list[str]

    def __len__(self) -> int:
        return len(self.conditions)


def binary_values(column: pa.ChunkedArray | pa.Array, where: str) -> list[bytes | None]:
    """Image bytes from a ``binary``/``large_binary`` column or an HF ``struct{bytes,path}``."""
    typ = column.type
    if pa.types.is_struct(typ):
        if typ.get_field_index("bytes") < 0:
            raise DataError(f"{where}: struct image column has no 'bytes' field ({typ})")
        if isinstance(column, pa.ChunkedArray):
            column = pa.chunked_array(
                [c.field("bytes") for c in column.chunks], type=typ.field("bytes").type
            )
        else:
            column = column.field("bytes")
        typ = column.type
    if not (pa.types.is_binary(typ) or pa.types.is_large_binary(typ)
            or pa.types.is_binary_view(typ)):
        raise DataError(
            f"{where}: image column has type {typ}; expected binary JPEG bytes or a "
            "struct{bytes, path}"
        )
    return column.to_pylist()


def _is_image_column_type(typ: pa.DataType) -> bool:
    """Binary image bytes, or an HF ``struct{bytes, path}`` with binary ``bytes``."""
    if pa.types.is_struct(typ):
        i = typ.get_field_index("bytes")
        return i >= 0 and _is_image_column_type(typ.field(i).type)
    return pa.types.is_binary(typ) or pa.types.is_large_binary(typ) or \
        pa.types.is_binary_view(typ)


#: (path, size, mtime_ns) -> schema of the distractor files already checked in this process
_CHECKED: dict[tuple[str, int, int], pa.Schema] = {}


def check_distractor_files(data_root: str | Path, dist_img_col: str | None = None
                           ) -> list[Path]:
    """The distractor parquet files, each checked before anything is encoded: its footer
    reads (a truncated file, a failed download or another format named ``.parquet`` is a
    :class:`DataError` naming the file) and, with ``dist_img_col``, it has that column with
    image bytes (binary or ``struct{bytes, path}``). Only footers are read (cached per file
    size and modification time), no image."""
    folder = Path(data_root) / "distractors"
    files = sorted(p for p in folder.rglob("*.parquet") if p.is_file())
    for path in files:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        schema = _CHECKED.get(key)
        if schema is None:
            try:
                schema = pq.ParquetFile(path).schema_arrow
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(
                    f"{path}: not a readable parquet file ({exc}); download it again (condsim "
                    "download lrvsf-distractors keeps finished shards) or remove it"
                ) from exc
            _CHECKED[key] = schema
        if dist_img_col is None:
            continue
        if dist_img_col not in schema.names:
            raise DataError(
                f"{path}: no column {dist_img_col!r} (found {schema.names}); pass the image "
                "column name with --dist-img-col, or remove the file if it is not a distractor "
                "shard"
            )
        typ = schema.field(dist_img_col).type
        if not _is_image_column_type(typ):
            raise DataError(
                f"{path}: column {dist_img_col!r} has type {typ}; expected binary image bytes "
                "or a struct{bytes, path}"
            )
    return files


def check_data_root(data_root: str | Path, *, fragments: bool = True) -> Path:
    """``data_root`` as an LRVS-F test set: ``products.parquet`` and ``distractors/`` exist and
    (with ``fragments``) every distractor file is a readable parquet file
    (:func:`check_distractor_files`)."""
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"LRVS-F data root {root} does not exist or is not a directory")
    if not (root / "products.parquet").is_file():
        raise DataError(
            f"{root} has no products.parquet: download the LRVS-F test set "
            "(products.parquet + distractors/) or write a synthetic one with `condsim synth lrvsf`"
        )
    if not (root / "distractors").is_dir():
        raise DataError(f"{root} has no distractors/ folder (expected distractors/*.parquet)")
    if fragments:
        check_distractor_files(root)
    return root


def read_products(data_root: str | Path, conditioning: str) -> Products:
    """Read queries, targets and conditions from ``products.parquet``."""
    if conditioning not in CONDITION_COLUMNS:
        raise DataError(
            f"conditioning must be one of {sorted(CONDITION_COLUMNS)}, got {conditioning!r}"
        )
    path = check_data_root(data_root) / "products.parquet"
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from exc
    needed = [QUERY_COL, TARGET_COL, CONDITION_COLUMNS[conditioning], "CATEGORY"]
    missing = [c for c in dict.fromkeys(needed) if c not in schema.names]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; found {schema.names}. The official file has "
            "SIMPLE_IMG, COMPLEX_IMG, CATEGORY and blip2_caption1"
        )
    table = pq.read_table(path, columns=list(dict.fromkeys(needed)))
    if table.num_rows == 0:
        raise DataError(f"{path}: no products")
    conds = table.column(CONDITION_COLUMNS[conditioning]).to_pylist()
    bad = [i for i, c in enumerate(conds) if not isinstance(c, str) or not c.strip()]
    if bad:
        raise DataError(
            f"{path}: empty/null {CONDITION_COLUMNS[conditioning]} in rows {bad[:10]}"
        )
    queries = binary_values(table.column(QUERY_COL), f"{path} column {QUERY_COL}")
    targets = binary_values(table.column(TARGET_COL), f"{path} column {TARGET_COL}")
    for name, values in ((QUERY_COL, queries), (TARGET_COL, targets)):
        nulls = [i for i, v in enumerate(values) if v is None]
        if nulls:
            raise DataError(f"{path}: null {name} in rows {nulls[:10]}")
    return Products(
        query_images=queries,  # type: ignore[arg-type]
        target_images=targets,  # type: ignore[arg-type]
        conditions=[str(c) for c in conds],
        categories=[str(c) for c in table.column("CATEGORY").to_pylist()],
    )


def distractor_dataset(data_root: str | Path, dist_img_col: str = "jpg") -> pds.Dataset:
    """The ``distractors/*.parquet`` dataset; every file is checked first (footer, image
    column, see :func:`check_distractor_files`)."""
    folder = check_data_root(data_root) / "distractors"
    files = check_distractor_files(data_root, dist_img_col)
    if not files:
        raise DataError(f"{folder} holds no .parquet files: the benchmark needs distractors")
    try:
        ds = pds.dataset([str(p) for p in files], format="parquet")
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{folder}: cannot open distractor parquet files ({exc})") from exc
    if dist_img_col not in ds.schema.names:
        raise DataError(
            f"{folder}: distractor files have no column {dist_img_col!r} (found "
            f"{ds.schema.names}); pass the image column name with --dist-img-col"
        )
    return ds


def read_distractor_column(data_root: str | Path, column: str,
                           dist_img_col: str = "jpg") -> list[Any]:
    """One metadata column of every distractor row, in the order images are read."""
    ds = distractor_dataset(data_root, dist_img_col)
    if column not in ds.schema.names:
        raise DataError(f"{Path(data_root) / 'distractors'}: no column {column!r} (found "
                        f"{ds.schema.names}); --dist-category-col names the category column")
    return ds.to_table(columns=[column]).column(0).to_pylist()


def count_distractors(data_root: str | Path, dist_img_col: str = "jpg") -> int:
    """Number of distractor rows, from parquet metadata (no image is read); checks every
    distractor file first (:func:`check_distractor_files`), so call it before encoding."""
    return int(distractor_dataset(data_root, dist_img_col).count_rows())


def iter_distractor_batches(
    data_root: str | Path,
    dist_img_col: str = "jpg",
    aggregate_batches: int = 100_000,
    fragments_readahead: int = 2,
    dev_run: bool = False,
    rows: tuple[int, int] | None = None,
) -> Iterator[list[bytes | None]]:
    """Yield lists of distractor image bytes, ``>= aggregate_batches`` rows each (but the last).

    Memory is bounded by ``aggregate_batches`` images plus pyarrow's readahead. With
    ``dev_run`` only the first aggregated batch is produced, as in the official harness.
    ``rows = (start, stop)`` yields only the rows ``start <= i < stop`` of the file order
    (a rank's shard): only the files that overlap the range are opened, and rows of the
    first such file before ``start`` are read and dropped.
    """
    if rows is None:
        ds = distractor_dataset(data_root, dist_img_col)
        skip, left = 0, -1
    else:
        start, stop = rows
        files = check_distractor_files(data_root, dist_img_col)
        chosen: list[str] = []
        skip, left, offset = 0, max(0, stop - start), 0
        for path in files:
            n = int(pq.ParquetFile(path).metadata.num_rows)
            if offset + n > start and offset < stop:
                if not chosen:
                    skip = start - offset
                chosen.append(str(path))
            offset += n
        if not chosen or left == 0:
            return
        ds = pds.dataset(chosen, format="parquet")
    batches = ds.to_batches(
        columns=[dist_img_col], fragment_readahead=fragments_readahead, batch_size=READ_BATCH
    )
    pending: list[bytes | None] = []
    for batch in batches:
        values = binary_values(batch.column(0), f"distractor column {dist_img_col}")
        if skip:
            dropped = min(skip, len(values))
            values, skip = values[dropped:], skip - dropped
        if left >= 0:
            values = values[:left]
            left -= len(values)
        pending.extend(values)
        if len(pending) >= aggregate_batches or (left == 0 and pending):
            yield pending
            pending = []
            if dev_run or left == 0:
                return
    if pending:
        yield pending
