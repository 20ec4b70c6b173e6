"""The embedding cache defends its numbers: damaged shards (real shards written by the real
cache, damaged on disk) are detected at first touch, quarantined and re-encoded bit for bit;
bad arguments and bad encoder output never reach the cache; ``cache info`` changes nothing."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from condsim.cache.encode import encode_cached
from condsim.cache.store import EmbeddingCache, file_checksum, item_keys
from condsim.cli.main import main
from condsim.errors import CacheError, CondsimError, EmbeddingError, InvalidArgumentError
from stubs import CountingHashEncoder

META = CountingHashEncoder.meta
N, CHUNK = 30, 10  # three shards of ten rows


def _pngs(n: int, start: int = 0) -> list[bytes]:
    out = []
    for i in range(start, start + n):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (i * 7 % 256, i * 13 % 256, 40)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def _tree(root: Path) -> dict[str, str]:
    """Digest of every file (and the name of every folder) under ``root``."""
    return {str(p.relative_to(root)): hashlib.blake2b(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


def _build(root: Path, images: list[bytes]) -> tuple[EmbeddingCache, list[str]]:
    """A cache of ``images`` in shards of CHUNK rows; returns it and the shard stems."""
    cache = EmbeddingCache(root, META)
    encode_cached(CountingHashEncoder(), cache, images, batch_size=4, chunk=CHUNK)
    stems = sorted(p.name[:-len(".keys.npy")] for p in cache.dir.glob("shard-*.keys.npy"))
    assert len(stems) == -(-len(images) // CHUNK)
    return cache, stems


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """Embeddings of a clean run (reference, bit for bit)."""
    images = _pngs(N)
    cache, _ = _build(tmp_path_factory.mktemp("clean"), images)
    rows = cache.lookup(item_keys(images))
    return images, cache.read(rows)


def _data_offset(path: Path) -> int:
    with open(path, "rb") as fh:
        np.lib.format.read_magic(fh)
        np.lib.format.read_array_header_1_0(fh)
        return fh.tell()


def flip_embedding_signs(path_stem: Path) -> None:
    """Flip the sign bits of 8 floats in the middle of the embedding data (size unchanged)."""
    path = path_stem.with_name(path_stem.name + ".npy")
    data = bytearray(path.read_bytes())
    off = _data_offset(path)
    mid = off + ((len(data) - off) // 8) * 4
    for j in range(8):
        data[mid + 4 * j + 3] ^= 0x80
    path.write_bytes(bytes(data))


def truncate_embeddings(path_stem: Path) -> None:
    path = path_stem.with_name(path_stem.name + ".npy")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 100])


def corrupt_keys(path_stem: Path) -> None:
    """Change one hex digit of a key in the middle of the keys file (size unchanged)."""
    path = path_stem.with_name(path_stem.name + ".keys.npy")
    data = bytearray(path.read_bytes())
    off = _data_offset(path)
    data[off + 32 * 5 + 7] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [flip_embedding_signs, truncate_embeddings, corrupt_keys])
def test_damaged_shard_is_quarantined_and_exactly_its_rows_reencoded(tmp_path, clean, caplog,
                                                                      damage):
    images, good = clean
    cache, stems = _build(tmp_path, images)
    bad = stems[1]
    damage(cache.dir / bad)
    enc = CountingHashEncoder()
    fresh = EmbeddingCache(tmp_path, META)
    with caplog.at_level(logging.WARNING, logger="condsim.cache.store"):
        rows, errors = encode_cached(enc, fresh, images, batch_size=4, chunk=CHUNK)
    assert not errors
    assert enc.images == CHUNK  # exactly the damaged shard's rows
    got = fresh.read(rows)
    assert got.tobytes() == good.tobytes()  # bit for bit
    integ = fresh.integrity
    assert integ.quarantined_shards == [bad]
    assert integ.dropped_rows == CHUNK
    assert integ.verified_shards == 2 and integ.verify_seconds > 0
    assert integ.to_dict()["quarantined_shards"] == [bad]
    json.dumps(integ.to_dict())
    assert any(bad in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    qdir = cache.dir / "quarantine"
    assert sorted(p.name for p in qdir.iterdir()) == sorted(
        f"{bad}{s}" for s in (".npy", ".keys.npy", ".check.json", ".why"))
    assert not list(cache.dir.glob(f"{bad}*"))
    # the next process finds a clean cache: nothing verified bad, nothing encoded
    again = EmbeddingCache(tmp_path, META)
    enc2 = CountingHashEncoder()
    rows2, _ = encode_cached(enc2, again, images, batch_size=4, chunk=CHUNK)
    assert enc2.calls == 0 and again.read(rows2).tobytes() == good.tobytes()
    assert again.integrity.quarantined_shards == [] and again.integrity.verified_shards == 3


def test_verification_happens_once_per_shard_and_only_for_touched_shards(tmp_path, clean):
    images, good = clean
    _build(tmp_path, images)
    cache = EmbeddingCache(tmp_path, META)
    assert cache.integrity.verified_shards == 0  # opening checks keys only
    rows = cache.lookup(item_keys(images[:3]))  # all in the first shard
    assert cache.integrity.verified_shards == 1
    cache.lookup(item_keys(images[:CHUNK]))
    cache.read(rows)
    assert cache.integrity.verified_shards == 1
    cache.read(cache.lookup(item_keys(images)))
    assert cache.integrity.verified_shards == 3
    with pytest.raises(CacheError, match="not cached rows"):
        cache.read(np.array([-1]))


@pytest.mark.parametrize("batch_size", [0, -3])
def test_bad_batch_size_is_refused_before_anything_is_touched(tmp_path, batch_size):
    images = _pngs(N)
    cache, stems = _build(tmp_path, images[:CHUNK])
    flip_embedding_signs(cache.dir / stems[0])  # a lookup would quarantine it
    before = _tree(tmp_path)
    fresh = EmbeddingCache(tmp_path, META)
    enc = CountingHashEncoder()
    with pytest.raises(InvalidArgumentError, match="batch_size must be an integer >= 1") as exc:
        encode_cached(enc, fresh, images, batch_size=batch_size)
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, CondsimError)
    assert _tree(tmp_path) == before and enc.calls == 0


@pytest.mark.parametrize("fault", ["nan", "rows", "dim"])
def test_bad_encoder_output_is_an_error_and_nothing_is_written(tmp_path, fault):
    images = _pngs(N)
    _build(tmp_path, images[:CHUNK])
    before = _tree(tmp_path)
    cache = EmbeddingCache(tmp_path, META)
    with pytest.raises(EmbeddingError, match="new images"):
        encode_cached(CountingHashEncoder(fault), cache, images, batch_size=8, what="new images")
    assert _tree(tmp_path) == before
    assert len(EmbeddingCache(tmp_path, META)) == CHUNK


def test_append_validates_rows_before_writing(tmp_path):
    cache = EmbeddingCache(tmp_path, META)
    before = _tree(tmp_path)
    keys = item_keys(_pngs(3))
    rows = np.ones((3, META.embedding_dim), np.float32)
    bad_rows = {
        "NaN/inf": np.where(np.eye(3, META.embedding_dim) > 0, np.inf, rows),
        r"shape \(2, 16\)": rows[:2],
        r"shape \(3, 15\)": rows[:, 1:],
        "not float32-convertible": np.full((3, META.embedding_dim), "x"),
    }
    for match, emb in bad_rows.items():
        with pytest.raises(EmbeddingError, match=f"gallery.*{match}"):
            cache.append(keys, emb, what="gallery")
    with pytest.raises(EmbeddingError, match="keys"):
        cache.append(np.arange(3), rows, what="gallery")
    assert _tree(tmp_path) == before and len(cache) == 0


def test_cache_info_reports_damage_and_changes_nothing(tmp_path, capsys):
    images = _pngs(N)
    cache, stems = _build(tmp_path, images)
    flip_embedding_signs(cache.dir / stems[0])
    (cache.dir / f"{stems[1]}.check.json").unlink()
    corrupt_keys(cache.dir / stems[2])
    capsys.readouterr()
    before = _tree(tmp_path)
    assert main(["cache", "info", "--cache-dir", str(tmp_path)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert _tree(tmp_path) == before
    assert f"{stems[0]}: mismatch: embedding file checksum" in out
    assert f"{stems[1]}: missing checksum" in out
    assert f"{stems[2]}: mismatch: keys file checksum" in out
    assert main(["cache", "verify", "--cache-dir", str(tmp_path), "--no-repair"]) == 1
    assert _tree(tmp_path) == before
    assert main(["cache", "verify", "--cache-dir", str(tmp_path)]) == 0
    assert len(list((cache.dir / "quarantine").glob("*.why"))) == 3
    capsys.readouterr()
    assert main(["cache", "info", "--cache-dir", str(tmp_path)]) == 0
    assert main(["cache", "prune", "--cache-dir", str(tmp_path)]) == 0
    assert "3 quarantined file" not in capsys.readouterr().out  # 3 shards = 11 files
    assert not list((cache.dir / "quarantine").iterdir())


def test_damaged_space_json_is_reported_and_rewritten_by_evaluation(tmp_path, clean, capsys,
                                                                    caplog):
    images, good = clean
    cache, _ = _build(tmp_path, images)
    info = cache.dir / "space.json"
    info.write_text(info.read_text()[:20])
    capsys.readouterr()
    assert main(["cache", "info", "--cache-dir", str(tmp_path)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert f"{info}: damaged" in out
    with pytest.raises(CacheError, match="space.json: damaged"):
        EmbeddingCache.open_space(cache.dir)
    # evaluation: the model's metadata is authoritative (the folder is its digest)
    enc = CountingHashEncoder()
    with caplog.at_level(logging.WARNING, logger="condsim.cache.store"):
        fresh = EmbeddingCache(tmp_path, META)
    assert any("space.json" in r.getMessage() for r in caplog.records)
    rows, _ = encode_cached(enc, fresh, images)
    assert enc.calls == 0 and fresh.read(rows).tobytes() == good.tobytes()
    assert json.loads(info.read_text())["cache_id"] == META.cache_id
    assert main(["cache", "info", "--cache-dir", str(tmp_path)]) == 0


def test_legacy_shards(tmp_path, clean):
    """A ``.sum`` (blake2b of the .npy, condsim before .check.json) is verified; a shard with
    no checksum at all cannot be and is quarantined."""
    images, good = clean
    cache, stems = _build(tmp_path, images)
    for stem in stems:
        (cache.dir / f"{stem}.check.json").unlink()
    (cache.dir / f"{stems[0]}.sum").write_text(file_checksum(cache.dir / f"{stems[0]}.npy"))
    (cache.dir / f"{stems[1]}.sum").write_text(file_checksum(cache.dir / f"{stems[1]}.npy"))
    flip_embedding_signs(cache.dir / stems[1])
    enc = CountingHashEncoder()
    fresh = EmbeddingCache(tmp_path, META)
    rows, _ = encode_cached(enc, fresh, images, chunk=CHUNK)
    assert fresh.read(rows).tobytes() == good.tobytes()
    assert enc.images == 2 * CHUNK
    assert sorted(fresh.integrity.quarantined_shards) == stems[1:]
    assert fresh.damage[stems[2]].startswith("missing checksum")


def _replace_with_damaged_copy(stem_path: Path) -> None:
    """Damage a shard the way a reader can survive: a new file renamed over it (condsim
    never rewrites a cache file in place; truncating a mapped file in place would SIGBUS)."""
    src = stem_path.with_name(stem_path.name + ".npy")
    copy = stem_path.with_name("damaged-copy")
    copy.with_name("damaged-copy.npy").write_bytes(src.read_bytes())
    flip_embedding_signs(copy)
    os.replace(copy.with_name("damaged-copy.npy"), src)


def test_quarantine_by_another_process_does_not_break_a_reader(tmp_path, clean):
    images, good = clean
    cache, stems = _build(tmp_path, images)
    reader = EmbeddingCache(tmp_path, META)
    rows = reader.lookup(item_keys(images[:CHUNK]))  # shard 0 verified and mapped
    late = EmbeddingCache(tmp_path, META)  # indexes everything, verifies nothing yet
    for stem in stems[:2]:
        _replace_with_damaged_copy(cache.dir / stem)
    other = EmbeddingCache(tmp_path, META)
    assert sorted(other.verify()) == stems[:2]  # quarantines both
    # the reader serves the bytes it verified, from its memory map
    assert reader.read(rows).tobytes() == good[:CHUNK].tobytes()
    # a process that had not touched them yet sees them vanish and re-encodes their rows
    enc = CountingHashEncoder()
    rows_late, _ = encode_cached(enc, late, images, chunk=CHUNK)
    assert enc.images == 2 * CHUNK
    assert late.read(rows_late).tobytes() == good.tobytes()
    assert sorted(late.integrity.vanished_shards) == stems[:2]
    assert late.integrity.dropped_rows == 2 * CHUNK


def test_rows_of_a_shard_quarantined_after_they_were_handed_out_are_refused(tmp_path, clean):
    images, _ = clean
    cache, stems = _build(tmp_path, images)
    rows = cache.lookup(item_keys(images))
    _replace_with_damaged_copy(cache.dir / stems[2])
    assert cache.verify() == [stems[2]]
    cache.read(rows[:2 * CHUNK])  # the other shards still serve
    with pytest.raises(CacheError, match="handed out before it was found bad"):
        cache.read(rows)


def test_rows_stay_valid_when_another_writer_adds_a_shard_that_sorts_first(tmp_path,
                                                                          monkeypatch):
    import condsim.cache.store as store

    keys = item_keys(_pngs(4))
    emb = np.arange(4 * META.embedding_dim, dtype=np.float32).reshape(4, -1)
    a, b = EmbeddingCache(tmp_path, META), EmbeddingCache(tmp_path, META)
    monkeypatch.setattr(store.secrets, "randbelow", lambda n: n - 1)
    a.append(keys[:1], emb[:1])
    rows = a.lookup(keys[:1])
    monkeypatch.setattr(store.secrets, "randbelow", lambda n: 0)
    b.append(keys[1:2], emb[1:2])  # same shard number, sorts before a's
    b.append(keys[2:3], emb[2:3])
    monkeypatch.setattr(store.secrets, "randbelow", lambda n: n - 1)
    a.append(keys[3:], emb[3:])  # a picks b's shards up
    assert a.read(rows).tobytes() == emb[:1].tobytes()
    assert a.read(a.lookup(keys)).tobytes() == emb.tobytes()


def test_a_shard_that_cannot_be_quarantined_is_still_not_served(tmp_path, clean, monkeypatch,
                                                                caplog):
    """E.g. a shared cache on a read-only file system: the damaged shard stays where it is,
    this process ignores it and re-encodes its rows."""
    import condsim.cache.store as store

    images, good = clean
    cache, stems = _build(tmp_path, images)
    flip_embedding_signs(cache.dir / stems[0])

    def refuse(src, dst):
        raise PermissionError(f"read-only file system: {dst}")

    monkeypatch.setattr(store.os, "replace", refuse)
    fresh = EmbeddingCache(tmp_path, META)
    with caplog.at_level(logging.WARNING, logger="condsim.cache.store"):
        rows = fresh.lookup(item_keys(images))
    assert (rows[:CHUNK] == -1).all() and (rows[CHUNK:] >= 0).all()
    assert fresh.read(rows[CHUNK:]).tobytes() == good[CHUNK:].tobytes()
    assert any("cannot be moved to quarantine" in r.getMessage() for r in caplog.records)
    assert (cache.dir / f"{stems[0]}.npy").exists()
