"""Lazy parquet image cells: streamed digests are the cache keys of the bytes, cells are read
one row group at a time with a bounded cache, and a changed or missing file is noticed."""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from condsim.cache.store import item_keys
from condsim.data import lazy_images as pc
from condsim.errors import DataError


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (i * 20 % 256, 3 * i % 256, 7)).save(buf, "JPEG")
    return buf.getvalue()


def _write(path, values, struct: bool = False, row_group_size: int = 3) -> None:
    if struct:
        col = pa.array([None if v is None else {"bytes": v, "path": f"{i}.jpg"}
                        for i, v in enumerate(values)],
                       pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    else:
        col = pa.array(values, pa.binary())
    pq.write_table(pa.table({"id": [str(i) for i in range(len(values))], "image": col}),
                   path, row_group_size=row_group_size)


@pytest.mark.parametrize("struct", [False, True])
def test_stream_and_read_cells_across_row_groups(tmp_path, struct):
    values = [_jpeg(i) for i in range(11)]
    values[4] = None
    path = str(tmp_path / "c.parquet")
    _write(path, values, struct)
    cells = list(pc.stream_cells(path, "image"))
    assert cells[4] is None and [c.row for c in cells if c] == [i for i in range(11) if i != 4]
    lazy = [c for c in cells if c is not None]
    raw = [v for v in values if v is not None]
    # the digest is the image's cache key: a lazy cell and its bytes share the cache entry
    assert (item_keys(lazy) == item_keys(raw)).all()
    assert (item_keys(lazy, ["red"] * len(lazy)) == item_keys(raw, ["red"] * len(raw))).all()
    for i in reversed(range(11)):  # backwards: every group read again
        assert pc.read_cell(path, "image", i) == values[i]
    assert len(pc._groups) <= pc.MAX_GROUPS
    img = lazy[0].load_image()
    assert img.mode == "RGB" and img.size == (8, 8)


def test_changed_missing_and_bad_requests(tmp_path):
    path = str(tmp_path / "c.parquet")
    _write(path, [_jpeg(i) for i in range(5)])
    assert pc.read_cell(path, "image", 2) == _jpeg(2)
    _write(path, [_jpeg(i + 50) for i in range(5)])
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later modification
    assert pc.read_cell(path, "image", 2) == _jpeg(52)  # not the cached old group
    with pytest.raises(DataError, match="no row 5"):
        pc.read_cell(path, "image", 5)
    with pytest.raises(DataError, match="cannot read column 'img'"):
        pc.read_cell(path, "img", 0)
    with pytest.raises(DataError, match="cannot read column 'img'"):
        list(pc.stream_cells(path, "img"))
    os.remove(path)
    with pytest.raises(DataError, match="parquet file not found"):
        pc.read_cell(path, "image", 0)


def test_any2any_mteb_corpus_holds_references_not_bytes(tmp_path):
    """The MTEB layout's candidates and queries are lazy cells (digest + row), so reading a
    corpus does not keep its image bytes; decoding reads them back."""
    from condsim.benchmarks.any2any import Any2AnyConfig, read_split
    from condsim.synthetic.any2any import write_any2any

    root = write_any2any(tmp_path / "a2a", seed=1)
    split, info = read_split(Any2AnyConfig(root=str(root / "mteb")))
    assert info["layout"] == "mteb"
    assert all(isinstance(x, pc.ParquetImage) for x in split.gallery)
    first = split.gallery[0]
    assert np.asarray(first.load_image()).shape[2] == 3
    assert pc.content_digest(first.read_bytes()) == first.digest


def test_a_cell_rewritten_after_listing_is_refused(tmp_path):
    """The digest taken when the file was listed is the image's cache key: bytes that no
    longer match it (the file rewritten mid-run) are an error, not a silently wrong cache
    entry."""
    path = str(tmp_path / "c.parquet")
    _write(path, [_jpeg(i) for i in range(4)])
    cells = list(pc.stream_cells(path, "image"))
    assert cells[1].read_bytes() == _jpeg(1)
    _write(path, [_jpeg(i + 9) for i in range(4)])
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DataError, match="changed since the file was read"):
        cells[1].read_bytes()
    with pytest.raises(DataError, match="changed since the file was read"):
        cells[1].load_image()
