"""Download LRVS-F distractors from their URL list into the benchmark's parquet layout.

The LRVS-F test set ships ``distractors_urls.parquet`` (2M image URLs) and the authors fetch
the images with img2dataset (shortest side resized to 256, aspect ratio kept, JPEG). This
module does the same with the standard library and Pillow, writing img2dataset-compatible
parquet shards that ``condsim eval lrvsf`` reads directly:

* ``DATA_ROOT/distractors/part-NNNNN.parquet``, one per ``shard_size`` URLs, columns ``key``,
  ``jpg`` (null when the download failed), ``url``, ``width``, ``height``,
  ``original_width``, ``original_height``, ``status`` (``success`` or
  ``failed_to_download`` / ``failed_to_decode``) and ``error_message``;
* every shard is written to a temporary file and renamed, so an interrupted run leaves only
  whole shards; running again downloads the missing shards only (shard ``i`` always holds
  URL rows ``[i * shard_size, (i + 1) * shard_size)``);
* ``DATA_ROOT/distractors/download_stats.json`` totals successes and failures by reason.

Resizing follows img2dataset's ``keep_ratio`` mode: the shortest side becomes ``size``
(up- or down-scaled), area-like box filtering when shrinking (img2dataset: OpenCV
``INTER_AREA``), Lanczos when enlarging; images with alpha are composited on white; JPEG
quality 95. Pixels therefore differ slightly from img2dataset's, as any re-download does
(links die, servers re-encode): report the distractor count with your numbers.
"""

from __future__ import annotations

import http.client
import io
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from condsim.errors import DataError
from condsim.io import atomic_write_json, atomic_write_parquet

logger = logging.getLogger(__name__)

URL_COLUMNS = ("URL", "url")
USER_AGENT = "condsim/distractor-downloader (+https://github.com/condsim)"
SCHEMA = pa.schema([
    ("key", pa.string()), ("jpg", pa.binary()), ("url", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()),
    ("original_width", pa.int32()), ("original_height", pa.int32()),
    ("status", pa.string()), ("error_message", pa.string()),
])


@dataclass(frozen=True)
class DownloadConfig:
    """How to fetch and store the images."""

    size: int = 256
    shard_size: int = 10_000
    threads: int = 32
    timeout: float = 10.0
    retries: int = 1
    quality: int = 95
    max_bytes: int = 50 * 2**20


def read_urls(path: str | Path, url_col: str | None = None) -> list[str]:
    """The URL column of a parquet file (``URL`` or ``url`` unless ``url_col`` is given), or
    the lines of a text file."""
    return read_url_list(path, url_col)[0]


def read_url_list(path: str | Path, url_col: str | None = None
                  ) -> tuple[list[str], pa.Table | None]:
    """``(urls, other columns)``: a parquet file's URL column (``URL`` or ``url`` unless
    ``url_col`` is given) and its remaining columns (e.g. ``CATEGORY``, carried into the
    shards beside each image; ``None`` for a text file of one URL per line)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: URL list not found")
    if p.suffix != ".parquet":
        return [line.strip() for line in p.read_text().splitlines() if line.strip()], None
    try:
        names = pq.read_schema(p).names
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{p}: not a readable parquet file ({exc})") from exc
    col = url_col or next((c for c in URL_COLUMNS if c in names), None)
    if col is None or col not in names:
        raise DataError(f"{p}: no URL column {url_col or ' / '.join(URL_COLUMNS)!r} (columns: "
                        f"{names}); pass it with --url-col")
    table = pq.read_table(p)
    urls = table.column(col).to_pylist()
    bad = [i for i, u in enumerate(urls) if not isinstance(u, str) or not u]
    if bad:
        raise DataError(f"{p}: empty or null URL in rows {bad[:10]}")
    clash = [c for c in table.column_names if c != col and c in SCHEMA.names]
    if clash:
        logger.warning("%s: columns %s clash with the shard schema and are not carried over",
                       p, clash)
    keep = [c for c in table.column_names if c != col and c not in SCHEMA.names]
    return urls, table.select(keep) if keep else None


def resize_keep_ratio(img: Image.Image, size: int) -> Image.Image:
    """RGB image whose shortest side is ``size`` (aspect ratio kept; img2dataset's
    ``keep_ratio``): box filter when shrinking, Lanczos when enlarging; alpha on white."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    if scale == 1:
        return img
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    method = Image.Resampling.BOX if scale < 1 else Image.Resampling.LANCZOS
    return img.resize(new, method)


def _fetch(url: str, cfg: DownloadConfig) -> bytes:
    # non-ASCII characters (common in shop URLs) percent-encoded; existing escapes kept
    url = urllib.parse.quote(url, safe=":/?#[]@!$&'()*+,;=%~")
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(req, timeout=cfg.timeout) as resp:  # noqa: S310 (user's URLs)
        data = resp.read(cfg.max_bytes + 1)
        expected = resp.headers.get("Content-Length")
    if len(data) > cfg.max_bytes:
        raise ValueError(f"larger than {cfg.max_bytes} bytes")
    if expected and expected.isdigit() and len(data) < int(expected):
        raise ValueError(f"connection closed after {len(data)} of {expected} bytes")
    return data


def fetch_one(url: str, cfg: DownloadConfig) -> dict[str, Any]:
    """One row of a shard: the resized JPEG or the reason it could not be had."""
    row: dict[str, Any] = {"url": url, "jpg": None, "width": None, "height": None,
                           "original_width": None, "original_height": None,
                           "status": "success", "error_message": None}
    data = b""
    for attempt in range(cfg.retries + 1):
        try:
            data = _fetch(url, cfg)
            break
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            if attempt == cfg.retries:
                row.update(status="failed_to_download", error_message=str(exc)[:300])
                return row
            time.sleep(0.2 * (attempt + 1))
    try:
        with Image.open(io.BytesIO(data)) as img:
            row["original_width"], row["original_height"] = img.size
            out = resize_keep_ratio(img, cfg.size)
        buf = io.BytesIO()
        out.save(buf, "JPEG", quality=cfg.quality)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        row.update(status="failed_to_decode", error_message=str(exc)[:300])
        return row
    row.update(jpg=buf.getvalue(), width=out.size[0], height=out.size[1])
    return row


def shard_path(folder: Path, index: int) -> Path:
    return folder / f"part-{index:05d}.parquet"


def _write_shard(path: Path, rows: Sequence[dict[str, Any]], first_key: int,
                 extra: pa.Table | None = None) -> None:
    cols = {name: [r.get(name) for r in rows] for name in SCHEMA.names if name != "key"}
    cols["key"] = [f"{first_key + i:09d}" for i in range(len(rows))]
    table = pa.table({name: cols[name] for name in SCHEMA.names}, schema=SCHEMA)
    if extra is not None:
        for name in extra.column_names:
            table = table.append_column(extra.field(name), extra.column(name))
    atomic_write_parquet(path, table, compression="zstd")


def _shard_stats(path: Path) -> Counter[str]:
    return Counter(pq.read_table(path, columns=["status"]).column(0).to_pylist())


def download_distractors(
    urls: Sequence[str], data_root: str | Path, cfg: DownloadConfig = DownloadConfig(), *,
    progress: Callable[[int], None] | None = None,
    fetch: Callable[[str, DownloadConfig], dict[str, Any]] = fetch_one,
    extra: pa.Table | None = None,
) -> dict[str, Any]:
    """Fetch ``urls`` into ``data_root/distractors/`` (see the module docstring); shards that
    already exist are kept. ``extra`` (one row per URL) adds its columns to the shards.
    Returns (and writes to ``download_stats.json``) the totals."""
    if extra is not None and extra.num_rows != len(urls):
        raise DataError(f"{extra.num_rows} rows of extra columns for {len(urls)} URLs")
    if cfg.shard_size < 1 or cfg.threads < 1 or cfg.size < 1:
        raise DataError("shard size, threads and size must be >= 1")
    folder = Path(data_root) / "distractors"
    folder.mkdir(parents=True, exist_ok=True)
    n_shards = (len(urls) + cfg.shard_size - 1) // cfg.shard_size
    totals: Counter[str] = Counter()
    reused = 0
    with ThreadPoolExecutor(cfg.threads) as pool:
        for s in range(n_shards):
            path = shard_path(folder, s)
            lo, hi = s * cfg.shard_size, min(len(urls), (s + 1) * cfg.shard_size)
            if path.is_file():
                try:
                    totals.update(_shard_stats(path))
                    reused += 1
                    if progress is not None:
                        progress(hi - lo)
                    continue
                except (pa.ArrowInvalid, OSError) as exc:
                    logger.warning("%s is unreadable (%s); downloading it again", path, exc)
            rows = []
            for row in pool.map(lambda u: fetch(u, cfg), urls[lo:hi]):
                rows.append(row)
                if progress is not None:
                    progress(1)
            _write_shard(path, rows, lo, None if extra is None else extra.slice(lo, hi - lo))
            counts = Counter(r["status"] for r in rows)
            totals.update(counts)
            logger.info("%s: %d ok, %d failed", path.name, counts["success"],
                        hi - lo - counts["success"])
    stats = {"urls": len(urls), "shards": n_shards, "shards_reused": reused,
             "success": totals["success"],
             "failed": {k: v for k, v in sorted(totals.items()) if k != "success"},
             "size": cfg.size, "shard_size": cfg.shard_size}
    atomic_write_json(folder / "download_stats.json", stats, indent=1)
    return stats
