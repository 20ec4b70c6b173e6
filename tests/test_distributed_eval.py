"""Evaluation under torch.distributed: 2 gloo processes give the metrics of 1 process, encode
every image once across the ranks, score only their own gallery shard (CIR benchmarks), and
stop together on a bad image (no hang)."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import pytest

from condsim.benchmarks.cirr import CirrConfig
from condsim.benchmarks.run import run_benchmark
from condsim.data.cirr import read_cirr
from condsim.synthetic.cirr import write_cirr
from stubs import HashEncoder

TIMEOUT = 60  # seconds for a 2-process run, startup included


class RecordingEncoder(HashEncoder):
    """:class:`HashEncoder` that records a digest of every image (and condition) it encodes;
    ``fail_on_rank`` makes it raise on that rank."""

    def __init__(self, fail_on_rank: int | None = None) -> None:
        self.targets: list[str] = []
        self.queries: list[str] = []
        self.fail_on_rank = fail_on_rank

    def _check(self) -> None:
        import torch.distributed as dist

        if self.fail_on_rank is not None and dist.is_initialized() \
                and dist.get_rank() == self.fail_on_rank:
            raise OSError("disk on fire")

    def encode_targets(self, images):
        self._check()
        self.targets += [hashlib.md5(im.tobytes()).hexdigest() for im in images]
        return super().encode_targets(images)

    def encode_queries(self, images, conditions):
        self._check()
        self.queries += [hashlib.md5(im.tobytes() + c.encode()).hexdigest()
                         for im, c in zip(images, conditions, strict=True)]
        return super().encode_queries(images, conditions)


def _config(kind: str, root: str, cache: str) -> Any:
    if kind == "lrvsf":
        from condsim.benchmarks.lrvsf import LRVSFConfig

        # small blocks and aggregated batches: several of each per rank; "status" stands in
        # for a distractor category column (same-category recall), plus the condition test
        return LRVSFConfig(data_root=root, n_dists=(50, 200), folds="seeded", seed=3,
                           cache_dir=cache, batch_size=16, block_size=16,
                           aggregate_batches=20, fragments_readahead=0,
                           dist_category_col="status", condition_test=True)
    if kind == "circo":
        from condsim.benchmarks.circo import CircoConfig

        # small blocks: several query and gallery blocks per rank's shard
        return CircoConfig(root=root, cache_dir=cache, n_bootstrap=100, condition_test=True,
                           query_block=8, gallery_block=16)
    if kind == "genecis":
        from condsim.benchmarks.genecis import GenecisConfig

        r = Path(root)
        return GenecisConfig(annotations=str(r / "annotations"),
                             coco_root=str(r / "coco" / "val2017"),
                             vg_roots=(str(r / "vg" / "VG_100K"), str(r / "vg" / "VG_100K_2")),
                             cache_dir=cache, n_bootstrap=100, condition_test=True)
    return CirrConfig(root=root, cache_dir=cache, n_bootstrap=100)


class ScoredShards(logging.Handler):
    """Records the gallery shard each :func:`condsim.benchmarks.protocol.rank_split` call of
    this rank scored (its debug record: label, rank, world, lo, hi, gallery size)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.shards: list[list[Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("scoring ") and "gallery columns" in record.msg:
            self.shards.append(list(record.args))


def _run(root: str, cache: str, out: str | None, fail_on_rank: int | None,
         kind: str = "cirr") -> dict[str, Any]:
    enc = RecordingEncoder(fail_on_rank)
    cfg = _config(kind, root, cache)
    record: dict[str, Any] = {}
    log = logging.getLogger("condsim.benchmarks.protocol")
    scored, level = ScoredShards(), log.level
    log.addHandler(scored)
    log.setLevel(logging.DEBUG)
    try:
        res = run_benchmark(enc, cfg, out)
        record["metrics"] = json.dumps(res.metrics, sort_keys=True)
        record["world_size"] = res.extra["world_size"]
        record["skipped"] = json.dumps(res.skipped, sort_keys=True)
        record["failures"] = json.dumps(res.extra["failures"], sort_keys=True)
    except Exception as e:  # noqa: BLE001 - reported to the test
        record["error"] = f"{type(e).__name__}: {e}"
    finally:
        log.removeHandler(scored)
        log.setLevel(level)
    record.update(targets=enc.targets, queries=enc.queries, scored=scored.shards)
    return record


def _worker(rank: int, init: str, root: str, cache: str, out: str, fail_on_rank: int | None,
            report: str, kind: str) -> None:
    import torch.distributed as dist

    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    record = _run(root, cache, out, fail_on_rank, kind)
    Path(report, f"rank{rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


def _two_ranks(tmp: Path, root: Path, fail_on_rank: int | None = None, kind: str = "cirr"
               ) -> list[dict[str, Any]]:
    init = f"file://{tmp / 'pg'}"
    run_ranks(_worker, lambda r: (r, init, str(root), str(tmp / "c2"), str(tmp / "out2"),
                                  fail_on_rank, str(tmp), kind))
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]


def run_ranks(target: Any, args_of: Any, world: int = 2) -> None:
    """Run ``target(*args_of(rank))`` in ``world`` spawned processes; a rank still running
    after :data:`TIMEOUT` is killed and fails the test ("a rank hung")."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=args_of(r)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(TIMEOUT)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a rank hung"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_cirr(tmp_path_factory.mktemp("cirr"), n_queries=30, n_train=0, seed=0)


def _check_equal_and_once(one: dict[str, Any], ranks: list[dict[str, Any]]) -> None:
    assert "error" not in one and one["world_size"] == 1
    for r in ranks:
        assert "error" not in r, r["error"]
        assert r["metrics"] == one["metrics"] and r["world_size"] == 2
        if "failures" in one:  # the failure gallery too (merged top candidates)
            assert r["failures"] == one["failures"]
    # every image and every query encoded exactly once across the ranks
    targets = ranks[0]["targets"] + ranks[1]["targets"]
    queries = ranks[0]["queries"] + ranks[1]["queries"]
    assert sorted(targets) == sorted(one["targets"]) and len(set(targets)) == len(targets)
    assert sorted(queries) == sorted(one["queries"]) and len(set(queries)) == len(queries)
    assert ranks[0]["targets"] and ranks[1]["targets"]  # both ranks did work


def _check_scored_shards(one: dict[str, Any], ranks: list[dict[str, Any]], n_calls: int
                         ) -> None:
    """Each rank scored only its contiguous half of the gallery in every ``rank_split`` call
    (``n_calls`` of them), 1 process no shard."""
    assert one["scored"] == []
    for rank, r in enumerate(ranks):
        assert len(r["scored"]) == n_calls
        for _label, at, world, lo, hi, n in r["scored"]:
            assert (at, world) == (rank, 2) and n > 2
            assert (lo, hi) == ((0, n // 2) if rank == 0 else (n // 2, n))


def test_cirr_two_ranks_equal_one_and_encode_once(root, tmp_path):
    one = _run(str(root), str(tmp_path / "c1"), str(tmp_path / "out1"), None)
    ranks = _two_ranks(tmp_path, root)
    _check_equal_and_once(one, ranks)
    _check_scored_shards(one, ranks, 1)
    # rank 0 alone wrote results.json, with the same metrics
    saved = json.loads((tmp_path / "out2" / "results.json").read_text())
    assert json.dumps(saved["metrics"], sort_keys=True) == one["metrics"]
    assert saved["extra"]["world_size"] == 2


def test_corrupt_image_stops_both_ranks(root, tmp_path):
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(root, bad)
    _, gallery = read_cirr(bad, "val")
    last = Path(list(gallery.values())[-1].path)  # in rank 1's shard
    last.write_bytes(b"not an image")
    ranks = _two_ranks(tmp_path, bad)
    errors = [r.get("error", "") for r in ranks]
    assert errors[0] == errors[1] and "DataError" in errors[0] and last.name in errors[0]


def test_exception_on_rank_1_stops_both_ranks(root, tmp_path):
    ranks = _two_ranks(tmp_path, root, fail_on_rank=1)
    errors = [r.get("error", "") for r in ranks]
    assert errors[0] == errors[1] and "rank 1" in errors[0] and "disk on fire" in errors[0]


def test_circo_condition_test_two_ranks_equal_one_and_encode_once(tmp_path):
    """CIRCO (several ground truths per query: mAP@K) with the condition test: the same
    metrics (condition reliance included) and failure gallery, every image and every query
    (perturbed conditions included) encoded once across the ranks, and each rank scoring its
    gallery half in the main run and in both perturbed runs."""
    from condsim.synthetic.circo import write_circo

    root = write_circo(tmp_path / "circo", n_queries=24, seed=0)
    one = _run(str(root), str(tmp_path / "c1"), None, None, "circo")
    assert "condition_reliance" in json.loads(one["metrics"])
    assert json.loads(one["failures"])  # a failure gallery to compare
    ranks = _two_ranks(tmp_path, root, kind="circo")
    _check_equal_and_once(one, ranks)
    _check_scored_shards(one, ranks, 3)
    # perturbed queries too: 1 process encodes originals + shuffled + empty, 2 ranks share
    assert len(one["queries"]) > 24 and ranks[0]["queries"] and ranks[1]["queries"]


def test_genecis_two_ranks_equal_one_and_encode_once(tmp_path):
    from condsim.synthetic.genecis import write_genecis

    root = write_genecis(tmp_path / "g", n_per_task=8, seed=0)
    one = _run(str(root), str(tmp_path / "c1"), None, None, "genecis")
    _check_equal_and_once(one, _two_ranks(tmp_path, root, kind="genecis"))


@pytest.fixture(scope="module")
def lrvsf_root(tmp_path_factory) -> Path:
    from condsim.synthetic.lrvsf import write_lrvsf

    return write_lrvsf(tmp_path_factory.mktemp("lrvsf"), n_products=16, n_distractors=90,
                       files=3, seed=0, corrupt_distractors=4)


def test_lrvsf_two_ranks_equal_one_and_encode_once(lrvsf_root, tmp_path):
    one = _run(str(lrvsf_root), str(tmp_path / "c1"), str(tmp_path / "out1"), None, "lrvsf")
    ranks = _two_ranks(tmp_path, lrvsf_root, kind="lrvsf")
    _check_equal_and_once(one, ranks)
    # the corrupt distractors are skipped and counted as by 1 process (same rows named; the
    # decoder's messages hold object addresses)
    def corrupt(record: dict[str, Any]) -> tuple[int, list[str]]:
        skipped = json.loads(record["skipped"])
        return skipped["corrupt_distractors"], [e.split(":")[0] for e in skipped["examples"]]

    assert corrupt(one)[0] == 4
    assert all(corrupt(r) == corrupt(one) for r in ranks)
    saved = json.loads((tmp_path / "out2" / "results.json").read_text())
    assert json.dumps(saved["metrics"], sort_keys=True) == one["metrics"]
    assert saved["extra"]["world_size"] == 2


def test_lrvsf_corrupt_product_stops_both_ranks(lrvsf_root, tmp_path):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "bad"
    shutil.copytree(lrvsf_root, bad)
    table = pq.read_table(bad / "products.parquet")
    col = table.column("SIMPLE_IMG").to_pylist()
    col[-1] = b"not an image"  # the last product: in rank 1's shard
    i = table.schema.get_field_index("SIMPLE_IMG")
    table = table.set_column(i, "SIMPLE_IMG", pa.array(col, table.schema.field(i).type))
    pq.write_table(table, bad / "products.parquet")
    ranks = _two_ranks(tmp_path, bad, kind="lrvsf")
    errors = [r.get("error", "") for r in ranks]
    assert errors[0] == errors[1] and "DataError" in errors[0]
    assert "products.parquet" in errors[0] and "cannot be decoded" in errors[0]


def test_lrvsf_exception_on_rank_1_stops_both_ranks(lrvsf_root, tmp_path):
    ranks = _two_ranks(tmp_path, lrvsf_root, fail_on_rank=1, kind="lrvsf")
    errors = [r.get("error", "") for r in ranks]
    assert errors[0] == errors[1] and "rank 1" in errors[0] and "disk on fire" in errors[0]


def _tie_world(bad_row: int | None = None) -> Any:
    """An :class:`EncodedSplit` with coarse embeddings (exact ties, duplicate gallery rows on
    both sides of the shard cut), several relevant and excluded items per query; a NaN in
    gallery row ``bad_row`` when given."""
    import numpy as np

    from condsim.benchmarks.protocol import CIRSplit, EncodedSplit

    rng = np.random.default_rng(4)
    n_q, n = 17, 41
    q = rng.integers(-2, 3, (n_q, 5)).astype(np.float32) / 4
    g = rng.integers(-2, 3, (n, 5)).astype(np.float32) / 4
    g[25:31] = g[:6]
    if bad_row is not None:
        g[bad_row] = np.nan
    rel, exc = [], []
    for _ in range(n_q):
        cols = rng.permutation(n)
        k = int(rng.integers(1, 4))
        rel.append(cols[:k].tolist())
        exc.append(cols[k:k + 2].tolist())
    split = CIRSplit("ties", [b"g"] * n, [b"q"] * n_q, ["c"] * n_q, list(range(n_q)), rel,
                     excluded=exc)
    return EncodedSplit(split, q, g, 0)


def _rank_split_arrays(bad_row: int | None = None) -> dict[str, Any]:
    from types import SimpleNamespace

    from condsim.benchmarks.protocol import rank_split

    cfg = SimpleNamespace(device="cpu", query_block=4, gallery_block=6)
    try:
        out = {}
        for thresholds in ("all", "best"):
            r = rank_split(_tie_world(bad_row), cfg, thresholds=thresholds, top=25)
            out[thresholds] = {k: v.tolist() for k, v in vars(r).items()}
        return out
    except Exception as e:  # noqa: BLE001 - reported to the test
        return {"error": f"{type(e).__name__}: {e}"}


def _split_worker(rank: int, init: str, report: str) -> None:
    import torch.distributed as dist

    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    record = {"good": _rank_split_arrays(), "bad": _rank_split_arrays(bad_row=39)}
    Path(report, f"rank{rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


def test_rank_split_shards_with_ties_and_agreed_errors(tmp_path):
    """``rank_split`` on 2 gloo ranks (a gallery shard each) returns the 1-process
    :class:`RelevantRanks` on both ranks, exact ties, duplicates and a top larger than a shard
    included; a NaN gallery row in rank 1's shard is the same error on both ranks (no hang)."""
    run_ranks(_split_worker, lambda r: (r, f"file://{tmp_path / 'pg'}", str(tmp_path)))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    one = _rank_split_arrays()
    assert "error" not in one
    want = json.dumps(one, sort_keys=True)  # NaN padding: compare the JSON text
    assert all(json.dumps(r["good"], sort_keys=True) == want for r in ranks)
    errors = [r["bad"].get("error", "") for r in ranks]
    assert errors[0] == errors[1] and "DataError" in errors[0] and "rank 1" in errors[0]
    assert "NaN" in errors[0]


def _submission(kind: str, root: str, cache: str, out: str) -> dict[str, Any]:
    """Write ``kind``'s submission files (CIRR test1, CIRCO test) with :class:`HashEncoder`;
    returns the paths returned and the paths this process wrote."""
    import importlib

    from condsim.benchmarks.circo import CircoConfig
    from condsim.registry import get_benchmark

    module = importlib.import_module(f"condsim.benchmarks.{kind}")
    written: list[str] = []
    real = module.atomic_write_text

    def recording(path: Any, text: str) -> Path:
        written.append(str(path))
        return real(path, text)

    module.atomic_write_text = recording
    cfg = (CirrConfig(root=root, split="test1", cache_dir=cache) if kind == "cirr"
           else CircoConfig(root=root, split="test", cache_dir=cache))
    files = get_benchmark(kind).submit(HashEncoder(), cfg, out)
    paths = files.values() if isinstance(files, dict) else [files]
    return {"paths": sorted(str(p) for p in paths), "written": sorted(written)}


def _submission_worker(rank: int, init: str, kind: str, root: str, cache: str, out: str,
                       report: str) -> None:
    import torch.distributed as dist

    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    record = _submission(kind, root, cache, out)
    Path(report, f"submit{rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["cirr", "circo"])
def test_submission_files_written_by_rank_0_only(kind, root, tmp_path):
    """Under torchrun every rank ranks the test split, rank 0 alone writes the server files
    (the same bytes as one process) and every rank returns their paths."""
    if kind == "circo":
        from condsim.synthetic.circo import write_circo

        root = write_circo(tmp_path / "circo", n_queries=10, seed=0)
    one = _submission(kind, str(root), str(tmp_path / "c1"), str(tmp_path / "out1"))
    assert one["written"] == one["paths"] and one["paths"]
    run_ranks(_submission_worker, lambda r: (r, f"file://{tmp_path / 'pg'}", kind, str(root),
                                             str(tmp_path / "c2"), str(tmp_path / "out2"),
                                             str(tmp_path)))
    ranks = [json.loads((tmp_path / f"submit{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["written"] == ranks[0]["paths"] and ranks[1]["written"] == []
    assert ranks[1]["paths"] == ranks[0]["paths"]
    for path in one["paths"]:
        name = Path(path).name
        assert (tmp_path / "out2" / name).read_bytes() == Path(path).read_bytes()
