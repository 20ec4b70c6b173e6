"""Embedding cache: reuse, kill -9 safety, corruption detection and rebuild, CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from condsim.cache.encode import encode_cached
from condsim.cache.store import EmbeddingCache, item_keys
from condsim.cli.main import main
from condsim.types import ModelMeta

META = ModelMeta("test/stub", 4, "none")


class CountingEncoder:
    """Embeds images (bytes) by their first bytes; counts calls."""

    meta = META

    def __init__(self) -> None:
        self.calls = 0

    def encode_targets(self, images):
        self.calls += 1
        return torch.stack([torch.tensor(np.asarray(im.resize((2, 2)).convert("L"),
                                                    np.float32).ravel()) for im in images])


def _jpegs(n: int) -> list[bytes]:
    import io

    from PIL import Image

    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (i * 7 % 256, i * 13 % 256, 40)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def test_second_run_encodes_nothing(tmp_path):
    enc = CountingEncoder()
    imgs = _jpegs(30)
    cache = EmbeddingCache(tmp_path, META)
    rows1, _ = encode_cached(enc, cache, imgs, batch_size=8)
    first = enc.calls
    rows2, _ = encode_cached(enc, EmbeddingCache(tmp_path, META), imgs, batch_size=8)
    assert first > 0 and enc.calls == first
    assert np.array_equal(cache.read(rows1), EmbeddingCache(tmp_path, META).read(rows2))


WRITER = """
import numpy as np, sys
from condsim.cache.store import EmbeddingCache
from condsim.types import ModelMeta
cache = EmbeddingCache(sys.argv[1], ModelMeta("test/stub", 4, "none"))
i = 0
while True:
    keys = np.array([f"{i:032d}".encode() for i in range(i, i + 20000)], dtype="S32")
    cache.append(keys, np.full((20000, 4), i, np.float32))
    i += 20000
    print(i, flush=True)
"""


def test_kill_9_mid_append_leaves_a_readable_cache(tmp_path):
    script = tmp_path / "w.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "c")],
                            stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # let it commit a few shards, then kill it mid-way
            proc.stdout.readline()
        time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    cache = EmbeddingCache(tmp_path / "c", META)
    assert len(cache) >= 3 * 20000 and not cache.corrupt
    keys = np.array([f"{i:032d}".encode() for i in range(len(cache))], dtype="S32")
    rows = cache.lookup(keys)
    assert (rows >= 0).all()
    vals = cache.read(rows)[:, 0]
    assert np.array_equal(vals, np.repeat(np.arange(0, len(cache), 20000), 20000)[:len(cache)])
    assert cache.verify() == []
    # a fresh temp file may belong to a running writer: kept; an old one is an orphan
    (cache.dir / ".shard-x.npy.123.tmp").write_bytes(b"partial")
    orphans = list(cache.dir.glob(".*.tmp"))
    assert cache.prune_temp() == 0 and list(cache.dir.glob(".*.tmp")) == orphans
    for p in orphans:
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    assert cache.prune_temp() == len(orphans)
    assert not list(cache.dir.glob(".*.tmp"))


def test_corrupt_shard_is_detected_and_rebuilt(tmp_path):
    enc = CountingEncoder()
    imgs = _jpegs(20)
    cache = EmbeddingCache(tmp_path, META)
    rows, _ = encode_cached(enc, cache, imgs[:10])
    encode_cached(enc, cache, imgs[10:])
    good = cache.read(cache.lookup(item_keys(imgs)))
    shard = sorted(cache.dir.glob("shard-*[0-9].npy"))[0]
    data = bytearray(shard.read_bytes())
    data[-8:] = b"\xff" * 8  # flip the last values of the first shard
    shard.write_bytes(bytes(data))
    assert main(["cache", "verify", "--cache-dir", str(tmp_path), "--no-repair"]) == 1
    assert main(["cache", "verify", "--cache-dir", str(tmp_path)]) == 0
    cache = EmbeddingCache(tmp_path, META)
    assert len(cache) == 10  # the corrupt shard's rows are gone...
    calls = enc.calls
    rows, _ = encode_cached(enc, cache, imgs)
    assert enc.calls > calls  # ...and re-encoded
    assert np.array_equal(cache.read(rows), good)
    assert main(["cache", "info", "--cache-dir", str(tmp_path)]) == 0
    assert main(["cache", "prune", "--cache-dir", str(tmp_path), "--model", "test/stub"]) == 0
    assert not list(tmp_path.glob("*/space.json"))


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_worker_pipeline_and_single_image_preprocessing_give_identical_bits(tiny_clip,
                                                                            worker_type):
    """Decode workers (threads or processes) produce uint8 pixels normalised in batch on the
    device; the in-process path normalises one image with numpy: the pixels agree bit for bit
    (the embeddings up to BLAS rounding, which depends on batch shape and thread count),
    corrupt images are skipped at the same positions, torch's thread count is restored."""
    from condsim.models.base import encode_images

    imgs = _jpegs(10)
    imgs[3] = b"\xff\xd8 not a jpeg"
    threads = torch.get_num_threads()
    piped = encode_images(tiny_clip, imgs, batch_size=4, num_workers=2,
                          worker_type=worker_type)
    assert torch.get_num_threads() == threads
    good = [im for i, im in enumerate(imgs) if i != 3]
    direct = tiny_clip.encode_targets(good).numpy()
    np.testing.assert_allclose(piped.embeddings, direct, rtol=0, atol=1e-6)
    assert piped.ok.tolist() == [i != 3 for i in range(10)]
    assert list(piped.errors) == [3]
    serial = encode_images(tiny_clip, imgs, batch_size=3, num_workers=0)
    np.testing.assert_allclose(serial.embeddings, direct, rtol=0, atol=1e-6)
    px = tiny_clip.preprocessor(imgs[0])
    batched = tiny_clip.preprocessor.normalize(
        torch.from_numpy(tiny_clip.preprocessor.to_uint8(imgs[0]).copy())[None])[0].numpy()
    assert np.array_equal(px, batched)
