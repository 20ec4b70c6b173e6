"""condsim.io: atomic writes (mode, all-or-nothing, temp names) and file digests."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from condsim.io import (
    atomic_directory,
    atomic_path,
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    file_digest,
    remove_stale_temps,
)


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write_with_path(path: Path) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(b"x")
    return path


WRITERS: dict[str, Callable[[Path], Path]] = {
    "bytes": lambda p: atomic_write_bytes(p, b"\x00\x01"),
    "text": lambda p: atomic_write_text(p, "héllo"),
    "json": lambda p: atomic_write_json(p, {"a": [1, 2.5, None]}),
    "parquet": lambda p: atomic_write_parquet(p, pa.table({"x": [1, 2]})),
    "npy": lambda p: atomic_save_npy(p, np.arange(3, dtype=np.float32)),
    "path": _write_with_path,
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_file_mode_is_what_open_gives_and_parents_are_created(tmp_path: Path, umask: int,
                                                              writer: str) -> None:
    target = tmp_path / "a" / "b" / "out.bin"
    assert WRITERS[writer](target) == target
    assert _mode(target) == 0o666 & ~umask
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert _mode(target) == _mode(plain)
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_overwrite_replaces_content_and_leaves_no_temp(tmp_path: Path, writer: str) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old content")
    WRITERS[writer](target)
    assert target.read_bytes() != b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_contents_round_trip(tmp_path: Path) -> None:
    assert atomic_write_text(tmp_path / "t", "héllo").read_bytes() == "héllo".encode()
    data = json.loads(atomic_write_json(tmp_path / "j", {"a": [1, None]}).read_text())
    assert data == {"a": [1, None]}
    assert (tmp_path / "j").read_text().endswith("\n")
    compact = atomic_write_json(tmp_path / "c", [1, 2], indent=None).read_text()
    assert compact == "[1, 2]\n"
    table = pa.table({"x": [1, 2], "s": ["a", "b"]})
    assert pq.read_table(atomic_write_parquet(tmp_path / "p", table,
                                              compression="zstd")).equals(table)
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = atomic_save_npy(tmp_path / "arr.bin", arr)  # exactly this name, no .npy appended
    assert path == tmp_path / "arr.bin"
    np.testing.assert_array_equal(np.load(path), arr)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_json_refuses_nan_and_infinity(tmp_path: Path, bad: float) -> None:
    target = tmp_path / "r.json"
    target.write_text("{}")
    with pytest.raises(ValueError):
        atomic_write_json(target, {"value": bad})
    assert target.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def _fail_parquet(p: Path) -> None:
    atomic_write_parquet(p, pa.table({"x": [1]}), compression="no-such-codec")


def _fail_npy(p: Path) -> None:
    atomic_save_npy(p, np.array([{"a": 1}], dtype=object))  # header written, then refused


def _fail_in_block(p: Path) -> None:
    with atomic_path(p) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("killed")


@pytest.mark.parametrize("fail", [_fail_parquet, _fail_npy, _fail_in_block],
                         ids=["parquet", "npy", "path"])
def test_failure_mid_write_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, fail: Callable[[Path], None]
) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old content")
    with pytest.raises(Exception):  # noqa: B017 (each writer fails its own way)
        fail(target)
    assert target.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_failed_rename_removes_the_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")

    def no_replace(src: object, dst: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_temp_is_a_hidden_sibling_fsynced_before_rename(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace",
                        lambda a, b: (events.append(f"replace {Path(a).name}"),
                                      real_replace(a, b))[1])
    target = tmp_path / "sub" / "plot.png"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.name.startswith(".plot.png.") and tmp.name.endswith(".tmp")
        assert tmp.exists() and not target.exists()
        tmp.write_bytes(b"png")
    assert events == ["fsync", f"replace {tmp.name}"]
    events.clear()
    atomic_write_bytes(target, b"again")
    assert events[0] == "fsync" and events[1].startswith("replace .plot.png.")


def test_directory_is_all_or_nothing(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "model"
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("killed before the weights")
    assert list(tmp_path.iterdir()) == []

    with atomic_directory(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".model.")
        (tmp / "config.json").write_text("{}")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"w")
        assert not target.exists()
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "config.json", "sub", "sub/w.bin"]
    assert _mode(target) == 0o777 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_directory_refuses_an_existing_target_unless_replace(tmp_path: Path) -> None:
    target = tmp_path / "last"
    target.mkdir()
    (target / "v").write_text("1")
    with pytest.raises(FileExistsError), atomic_directory(target):
        pytest.fail("the block must not run")
    assert (target / "v").read_text() == "1"

    with pytest.raises(RuntimeError), atomic_directory(target, replace=True) as tmp:
        (tmp / "v").write_text("2")
        raise RuntimeError("killed")
    assert (target / "v").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["last"]

    with atomic_directory(target, replace=True) as tmp:
        (tmp / "v").write_text("3")
    assert [p.name for p in target.iterdir()] == ["v"]
    assert (target / "v").read_text() == "3"
    assert [p.name for p in tmp_path.iterdir()] == ["last"]


def test_directory_refuses_a_target_that_appears_meanwhile(tmp_path: Path) -> None:
    target = tmp_path / "d"
    with pytest.raises(FileExistsError), atomic_directory(target) as tmp:
        (tmp / "mine").write_text("x")
        target.mkdir()
        (target / "theirs").write_text("y")
    assert [p.name for p in target.iterdir()] == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_remove_stale_temps_removes_only_the_targets_orphans(tmp_path: Path) -> None:
    target = tmp_path / "last"
    (tmp_path / ".last.0123abcd.tmp").mkdir()
    (tmp_path / ".last.89ef.old").mkdir()
    (tmp_path / ".last.x.tmp").write_text("")
    keep = [tmp_path / ".best.0123.tmp", tmp_path / "last.tmp", tmp_path / ".lastx.1.tmp"]
    for p in keep:
        p.write_text("")
    removed = remove_stale_temps(target)
    assert sorted(p.name for p in removed) == [".last.0123abcd.tmp", ".last.89ef.old",
                                               ".last.x.tmp"]
    assert sorted(tmp_path.iterdir()) == sorted(keep)
    assert remove_stale_temps(tmp_path / "missing" / "x") == []


def test_file_digest_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom((1 << 20) * 2 + 12345)  # several read chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_digest(path) == hashlib.blake2b(data, digest_size=16).hexdigest()
    assert len(file_digest(path)) == 32
    assert file_digest(path, 32) == hashlib.blake2b(data, digest_size=32).hexdigest()
    assert file_digest(str(path), algorithm="sha256") == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert file_digest(empty) == hashlib.blake2b(b"", digest_size=16).hexdigest()
    with pytest.raises(ValueError):
        file_digest(path, 8, algorithm="sha256")
