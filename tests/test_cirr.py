"""CIRR: reference removal and R_subset against a brute-force loop, oracle/constant encoders,
CLI end to end (val + test submission), bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from condsim.benchmarks.cirr import CirrConfig
from condsim.benchmarks.run import run_benchmark
from condsim.cli.main import main
from condsim.data.cirr import read_cirr
from condsim.errors import DataError
from condsim.synthetic.cirr import write_cirr
from stubs import ConstantEncoder, HashEncoder


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_cirr(tmp_path_factory.mktemp("cirr"), n_queries=30, seed=0)


def _cfg(root: Path, tmp: Path) -> CirrConfig:
    return CirrConfig(root=str(root), cache_dir=str(tmp / "c"), n_bootstrap=100)


def test_matches_brute_force_loop(root, tmp_path):
    res = run_benchmark(HashEncoder(), _cfg(root, tmp_path))
    queries, gallery = read_cirr(root, "val")
    enc = HashEncoder()
    names = list(gallery)
    g = {n: enc.encode_targets([gallery[n].load_image().convert("RGB")])[0].numpy()
         for n in names}
    hits = {k: [] for k in (1, 5, 10, 50)}
    sub = {k: [] for k in (1, 2, 3)}
    for q in queries:
        qv = enc.encode_queries([gallery[q.reference].load_image().convert("RGB")],
                                [q.caption])[0].numpy()
        ranked = sorted((n for n in names if n != q.reference), key=lambda n: -float(qv @ g[n]))
        for k in hits:
            hits[k].append(q.target in ranked[:k])
        members = sorted((m for m in q.members if m != q.reference),
                         key=lambda n: -float(qv @ g[n]))
        for k in sub:
            sub[k].append(q.target in members[:k])
    for k, v in hits.items():
        assert res.metrics["recall"][str(k)]["mean"] == pytest.approx(np.mean(v))
    for k, v in sub.items():
        assert res.metrics["recall_subset"][str(k)]["mean"] == pytest.approx(np.mean(v))


def test_constant_encoder_gets_exact_chance(root, tmp_path):
    res = run_benchmark(ConstantEncoder(), _cfg(root, tmp_path))
    n = res.metrics["gallery_size"] - 1  # the reference is removed
    for k in (1, 5, 10):
        assert res.metrics["recall"][str(k)]["mean"] == pytest.approx(k / n)
    for k in (1, 2, 3):
        assert res.metrics["recall_subset"][str(k)]["mean"] == pytest.approx(k / 5)


def test_cli_val_and_test_submission(root, tmp_path):
    common = ["--model", "test/tiny-clip", "--root", str(root), "--workers", "0",
              "--cache-dir", str(tmp_path / "c"), "--bootstrap", "100"]
    assert main(["eval", "cirr", *common, "--out", str(tmp_path / "val")]) == 0
    assert (tmp_path / "val" / "results.json").is_file()
    assert main(["eval", "cirr", *common, "--split", "test1", "--out", str(tmp_path / "t")]) == 0
    sub = json.loads((tmp_path / "t" / "cirr_test1_recall.json").read_text())
    queries, _ = read_cirr(root, "test1")
    assert sub["version"] == "rc2" and sub["metric"] == "recall"
    for q in queries:
        assert len(sub[str(q.pairid)]) == 47 and q.reference not in sub[str(q.pairid)]
    s3 = json.loads((tmp_path / "t" / "cirr_test1_recall_subset.json").read_text())
    assert all(len(s3[str(q.pairid)]) == 3 for q in queries)


def test_bad_input(root, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    cap = bad / "captions" / "cap.rc2.val.json"
    data = json.loads(cap.read_text())
    data[4]["img_set"]["members"][0] = "no-such-image"
    cap.write_text(json.dumps(data))
    with pytest.raises(DataError, match="entry 4: image 'no-such-image'"):
        run_benchmark(ConstantEncoder(), _cfg(bad, tmp_path))
    cap.write_text("{broken")
    with pytest.raises(DataError, match="malformed JSON"):
        run_benchmark(ConstantEncoder(), _cfg(bad, tmp_path))


def test_failures_are_recorded_for_the_report(root, tmp_path):
    res = run_benchmark(HashEncoder(), _cfg(root, tmp_path))
    fails = res.extra["failures"]
    assert fails and len(fails) <= 12
    r1 = dict(zip(res.metrics["query_ids"], res.metrics["per_query"]["recall_at_1"],
                  strict=True))
    for f in fails:
        assert f["schema"] == "condsim.failures/1" and r1[f["query_id"]] < 1.0
        assert Path(f["query"]["image"]["path"]).is_file()
