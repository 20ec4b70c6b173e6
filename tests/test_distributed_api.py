"""``condsim.evaluate`` and the suite under a torchrun environment (``RANK``/``WORLD_SIZE``/
``MASTER_ADDR`` set, no process group started by the caller): the process group starts by
itself, the ranks share the work, results equal one process's, rank 0 alone writes."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from condsim.synthetic.cirr import write_cirr
from test_distributed_eval import RecordingEncoder, run_ranks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _suite_text(root: Path) -> str:
    return (f"- benchmark: cirr\n  root: {root}\n  n_bootstrap: 100\n"
            f"- benchmark: cirr\n  name: cirr-seed-7\n  root: {root}\n  n_bootstrap: 100\n"
            "  seed: 7\n")


def _job(kind: str, root: str, out: str, cache: str) -> dict[str, Any]:
    """One rank's (or the single process's) run, with what it encoded."""
    enc = RecordingEncoder()
    record: dict[str, Any] = {}
    if kind == "evaluate":
        import condsim

        res = condsim.evaluate(enc, "cirr", out, root=root, cache_dir=cache, n_bootstrap=100)
        record["metrics"] = json.dumps(res.metrics, sort_keys=True)
        record["world_size"] = res.extra["world_size"]
    else:
        from condsim.suite import read_suite, run_suite

        suite = Path(out + ".yaml")
        runs = read_suite(suite)
        rows = run_suite(["test/recording"], runs, out, make_model=lambda _: enc,
                         cache_dir=cache)
        record["rows"] = [{k: v for k, v in r.items() if k != "folder"} for r in rows]
    record.update(targets=enc.targets, queries=enc.queries)
    return record


def _rank(rank: int, port: int, kind: str, root: str, out: str, cache: str, report: str
          ) -> None:
    os.environ.update(OMP_NUM_THREADS="1", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        record = _job(kind, root, out, cache)
    except Exception as e:  # noqa: BLE001 - reported to the test
        record = {"error": f"{type(e).__name__}: {e}"}
    Path(report, f"{kind}-rank{rank}.json").write_text(json.dumps(record))


def _two_ranks(kind: str, root: Path, out: Path, cache: Path, tmp: Path) -> list[dict[str, Any]]:
    port = _free_port()
    run_ranks(_rank, lambda r: (r, port, kind, str(root), str(out), str(cache), str(tmp)))
    return [json.loads((tmp / f"{kind}-rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_cirr(tmp_path_factory.mktemp("cirr"), n_queries=24, n_train=0, seed=1)


def _encoded_once(one: dict[str, Any], ranks: list[dict[str, Any]]) -> None:
    for what in ("targets", "queries"):
        both = ranks[0][what] + ranks[1][what]
        assert sorted(both) == sorted(one[what]) and len(set(both)) == len(both)
    assert ranks[0]["targets"] and ranks[1]["targets"]


def test_evaluate_under_torchrun_env_shares_work_and_equals_one_process(root, tmp_path):
    """condsim.evaluate launched by torchrun (environment only): byte-identical metrics,
    world_size 2 recorded, every image encoded once across the ranks, one results.json."""
    one = _job("evaluate", str(root), str(tmp_path / "one"), str(tmp_path / "c1"))
    ranks = _two_ranks("evaluate", root, tmp_path / "two", tmp_path / "c2", tmp_path)
    for r in ranks:
        assert "error" not in r, r["error"]
        assert r["metrics"] == one["metrics"] and r["world_size"] == 2
    _encoded_once(one, ranks)
    saved = json.loads((tmp_path / "two" / "results.json").read_text())
    assert json.dumps(saved["metrics"], sort_keys=True) == one["metrics"]


def test_suite_under_torchrun_env_equals_one_process(root, tmp_path):
    """run_suite under torchrun: the ranks run every run in step (the second run of the
    suite too), the rows and each run's metrics equal a 1-process suite, encoded once."""
    for name in ("one", "two"):
        (tmp_path / f"{name}.yaml").write_text(_suite_text(root))
    one = _job("suite", str(tmp_path / "one"), str(tmp_path / "one"), str(tmp_path / "c1"))
    ranks = _two_ranks("suite", root, tmp_path / "two", tmp_path / "c2", tmp_path)
    for r in ranks:
        assert "error" not in r, r["error"]
        assert r["rows"] == one["rows"]
    assert [r["status"] for r in one["rows"]] == ["done", "done"]
    _encoded_once(one, ranks)
    for run in ("cirr", "cirr-seed-7"):
        a = json.loads((tmp_path / "one" / "test_recording" / run / "results.json").read_text())
        b = json.loads((tmp_path / "two" / "test_recording" / run / "results.json").read_text())
        assert a["metrics"] == b["metrics"] and b["extra"]["world_size"] == 2
    summary = json.loads((tmp_path / "two" / "suite.json").read_text())
    assert [r["status"] for r in summary] == ["done", "done"]
    # a second suite run keeps both runs on both ranks (rank 0 decides), encoding nothing
    again = _two_ranks("suite", root, tmp_path / "two", tmp_path / "c2", tmp_path)
    for r in again:
        assert [x["status"] for x in r["rows"]] == ["kept", "kept"]
        assert not r["targets"] and not r["queries"]


def test_collectives_use_the_gpu_under_nccl(monkeypatch):
    """NCCL has no CPU collectives: the count all-reduce (LRVS-F folds, CIR shards) and the
    training collectives put their tensors on the current GPU under NCCL, on the CPU under
    gloo (a CPU tensor under NCCL fails on every GPU run)."""
    import torch
    import torch.distributed as dist

    from condsim import distributed

    monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert distributed.collective_device() == torch.device("cuda", 3)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "gloo")
    assert distributed.collective_device() == torch.device("cpu")
