"""LRVS-F distractor download from a local HTTP server: resized JPEG shards in the layout the
benchmark reads, failures kept as counted null rows, resume after deletion or interruption."""

from __future__ import annotations

import io
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from condsim.benchmarks.lrvsf import LRVSFConfig
from condsim.benchmarks.run import run_benchmark
from condsim.cli.main import main
from condsim.data.download import DownloadConfig, download_distractors, fetch_one, read_urls
from condsim.errors import DataError
from condsim.synthetic.lrvsf import write_lrvsf
from stubs import HashEncoder

SIZES = [(640, 480), (300, 900), (200, 150), (256, 256), (1000, 700), (333, 257), (90, 400),
         (512, 512)]


def _png_with_alpha() -> bytes:
    img = Image.new("RGBA", (300, 400), (0, 0, 0, 0))  # fully transparent ...
    img.paste((200, 0, 0, 255), (0, 0, 150, 400))  # ... but the left half opaque red
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _jpeg(i: int) -> bytes:
    rng = np.random.default_rng(i)
    w, h = SIZES[i % len(SIZES)]
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server():
    hits: Counter[str] = Counter()
    files = {f"/img/{i}.jpg": _jpeg(i) for i in range(len(SIZES))}
    files["/alpha.png"] = _png_with_alpha()
    files["/junk.jpg"] = b"<html>not an image</html>"
    files["/caf%C3%A9.jpg"] = _jpeg(1)  # requested as /café.jpg: percent-encoded on the way

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            hits[self.path] += 1
            if self.path == "/truncated.jpg":  # promises more bytes than it sends
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(_jpeg(0)[:50])
                self.close_connection = True
                return
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    with pytest.MonkeyPatch.context() as mp:  # a proxy in the environment must not intercept
        mp.setenv("no_proxy", "127.0.0.1")
        mp.setenv("NO_PROXY", "127.0.0.1")
        yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()


def _urls(base: str) -> list[str]:
    urls = [f"{base}/img/{i}.jpg" for i in range(len(SIZES))]
    return urls + [f"{base}/alpha.png", f"{base}/gone.jpg", f"{base}/junk.jpg"]


CFG = DownloadConfig(shard_size=4, threads=4, timeout=5, retries=1)


def test_download_resizes_keeps_failures_and_writes_stats(server, tmp_path):
    base, _ = server
    urls = _urls(base)
    stats = download_distractors(urls, tmp_path, CFG)
    assert stats["success"] == len(SIZES) + 1
    assert stats["failed"] == {"failed_to_decode": 1, "failed_to_download": 1}
    assert stats["shards"] == 3 and stats["shards_reused"] == 0
    files = sorted((tmp_path / "distractors").glob("*.parquet"))
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet",
                                      "part-00002.parquet"]
    table = pa.concat_tables([pq.read_table(f) for f in files])
    assert table.column("url").to_pylist() == urls
    assert table.column("key").to_pylist() == [f"{i:09d}" for i in range(len(urls))]
    rows = table.to_pylist()
    for row, (w, h) in zip(rows, SIZES, strict=False):
        img = Image.open(io.BytesIO(row["jpg"]))
        assert img.format == "JPEG" and img.mode == "RGB"
        assert (row["original_width"], row["original_height"]) == (w, h)
        assert min(img.size) == 256 == min(row["width"], row["height"])
        assert img.size[0] / img.size[1] == pytest.approx(w / h, rel=0.01)
    alpha = Image.open(io.BytesIO(rows[len(SIZES)]["jpg"])).convert("RGB")
    assert alpha.size == (256, 341)
    right, left = np.asarray(alpha)[170, 240], np.asarray(alpha)[170, 10]
    assert (right > 245).all() and left[0] > 180 and left[1] < 40  # white behind, red kept
    gone, junk = rows[-2], rows[-1]
    assert gone["jpg"] is None and gone["status"] == "failed_to_download"
    assert "404" in gone["error_message"]
    assert junk["jpg"] is None and junk["status"] == "failed_to_decode"
    saved = (tmp_path / "distractors" / "download_stats.json").read_text()
    assert '"success": 9' in saved


def test_resume_fetches_only_missing_shards_and_interruptions_leave_whole_shards(server,
                                                                                 tmp_path):
    base, hits = server
    urls = _urls(base)
    download_distractors(urls, tmp_path, CFG)
    (tmp_path / "distractors" / "part-00001.parquet").unlink()
    before = sum(hits.values())
    stats = download_distractors(urls, tmp_path, CFG)
    assert sum(hits.values()) - before == 4  # shard 1 only (4 URLs, all succeed)
    assert stats["shards_reused"] == 2 and stats["success"] == len(SIZES) + 1

    calls = {"n": 0}

    def dies_in_shard_two(url, cfg):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return fetch_one(url, cfg)

    other = tmp_path / "other"
    with pytest.raises(KeyboardInterrupt):
        download_distractors(urls, other, DownloadConfig(shard_size=4, threads=1),
                             fetch=dies_in_shard_two)
    left = sorted(p.name for p in (other / "distractors").iterdir())
    assert left == ["part-00000.parquet"]  # no partial shard, no temp file


def test_downloaded_distractors_feed_the_benchmark(server, tmp_path):
    base, _ = server
    root = tmp_path / "lrvsf"
    write_lrvsf(root, n_products=6, n_distractors=4, files=1, seed=0)
    for f in (root / "distractors").glob("*.parquet"):
        f.unlink()
    assert main(["download", "lrvsf-distractors", "--urls", str(_write_url_parquet(
        tmp_path, _urls(base))), "--data-root", str(root), "--shard-size", "5",
        "--threads", "2"]) == 0
    res = run_benchmark(HashEncoder(), LRVSFConfig(
        data_root=str(root), n_dists=(5,), folds="seeded", cache_dir=str(tmp_path / "c")))
    assert res.skipped["corrupt_distractors"] == 2  # the two failed URLs: null rows, counted
    assert res.protocol["n_distractors_available"] == len(SIZES) + 1
    shards = pa.concat_tables(pq.read_table(f) for f in sorted(
        (root / "distractors").glob("part-*.parquet")))
    n = len(_urls(base))
    assert shards.column("CATEGORY").to_pylist() == [f"c{i % 3}" for i in range(n)]
    assert shards.column("TYPE").to_pylist() == ["DISTRACTOR"] * n
    assert shards.schema.field("width").type == pa.int32()  # ours, not the URL list's


def _write_url_parquet(tmp: Path, urls: list[str]) -> Path:
    path = tmp / "distractors_urls.parquet"
    pq.write_table(pa.table({"URL": urls, "TYPE": ["DISTRACTOR"] * len(urls),
                             "CATEGORY": [f"c{i % 3}" for i in range(len(urls))],
                             "width": list(range(len(urls)))}), path)  # clashes: dropped
    return path


def test_bad_url_lists(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_urls(tmp_path / "missing.parquet")
    p = tmp_path / "u.parquet"
    pq.write_table(pa.table({"link": ["http://x/1.jpg"]}), p)
    with pytest.raises(DataError, match="no URL column"):
        read_urls(p)
    assert read_urls(p, "link") == ["http://x/1.jpg"]
    pq.write_table(pa.table({"URL": ["http://x/1.jpg", None]}), p)
    with pytest.raises(DataError, match=r"null URL in rows \[1\]"):
        read_urls(p)
    (tmp_path / "u.txt").write_text("http://a/1.jpg\n\nhttp://a/2.jpg\n")
    assert read_urls(tmp_path / "u.txt") == ["http://a/1.jpg", "http://a/2.jpg"]
    (tmp_path / "broken.parquet").write_bytes(b"nope")
    with pytest.raises(DataError, match="not a readable parquet"):
        read_urls(tmp_path / "broken.parquet")


def test_truncated_responses_and_non_ascii_urls(server, tmp_path):
    base, _ = server
    stats = download_distractors([f"{base}/truncated.jpg", f"{base}/café.jpg"], tmp_path,
                                 DownloadConfig(shard_size=10, threads=2, retries=0))
    assert stats["success"] == 1 and stats["failed"] == {"failed_to_download": 1}
    rows = pq.read_table(tmp_path / "distractors" / "part-00000.parquet").to_pylist()
    assert rows[0]["jpg"] is None and rows[1]["jpg"] is not None
    assert rows[1]["url"] == f"{base}/café.jpg"  # the URL as listed, not as encoded
