"""``condsim compare``: paired bootstrap per group and of the GeneCIS average, pairing by
query id, the 0.2% threshold, JSON output, mismatched runs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from condsim.benchmarks.run import compare_runs as paired_comparison
from condsim.cli.main import main
from condsim.errors import DataError
from condsim.results.run_result import RunResult


def _genecis_run(name: str, per_task: dict[str, list[float]], ids=None, **protocol) -> RunResult:
    tasks = {t: {"per_query": {"1": v}, "query_ids": ids or list(range(len(v)))}
             for t, v in per_task.items()}
    return RunResult(benchmark="genecis", model={"name": name}, protocol={"crop": "official",
                     **protocol}, seed=0, headline={"name": "average_recall_at_1", "mean": 0.0},
                     metrics={"tasks": tasks})


def test_identical_runs_differ_by_nothing():
    rng = np.random.default_rng(0)
    v = {"focus_object": rng.random(40).tolist(), "change_object": rng.random(40).tolist()}
    cmp = paired_comparison(_genecis_run("a", v), _genecis_run("b", v), n_resamples=500)
    for row in [*cmp["groups"], cmp["average"]]:
        assert row["diff"] == 0 and row["ci_low"] == 0 and row["ci_high"] == 0
        assert row["p_value"] == 1.0 and not row["significant"]
        assert not row["exceeds_threshold"]


def test_diff_ci_p_value_and_average_against_a_direct_computation():
    rng = np.random.default_rng(1)
    a = {t: (rng.random(60) < 0.2).astype(float).tolist() for t in ("t1", "t2", "t3")}
    b = {t: np.clip(np.array(v) + (rng.random(60) < 0.3), 0, 1).tolist() for t, v in a.items()}
    cmp = paired_comparison(_genecis_run("a", a), _genecis_run("b", b), seed=3, n_resamples=400)
    diffs = []
    for gi, t in enumerate(("t1", "t2", "t3")):
        d = np.array(b[t]) - np.array(a[t])
        r = np.random.default_rng(3 + 101 * gi)
        means = np.array([d[r.integers(0, 60, 60)].mean() for _ in range(400)])
        diffs.append(means)
        row = cmp["groups"][gi]
        assert row["group"] == t and row["n"] == 60
        assert row["diff"] == pytest.approx(d.mean())
        assert row["ci_low"] == pytest.approx(np.quantile(means, 0.025))
        assert row["ci_high"] == pytest.approx(np.quantile(means, 0.975))
        assert row["significant"] and row["p_value"] == pytest.approx(2 / 401)
    avg = cmp["average"]
    assert avg["diff"] == pytest.approx(np.mean([np.mean(b[t]) - np.mean(a[t]) for t in a]))
    assert avg["ci_low"] == pytest.approx(np.quantile(np.mean(diffs, axis=0), 0.025))
    assert avg["exceeds_threshold"] and avg["n"] == 180


def test_pairs_by_query_id_and_reports_protocol_differences():
    a = _genecis_run("a", {"t": [0.0, 1.0, 0.0]}, ids=[5, 6, 7])
    b = _genecis_run("b", {"t": [1.0, 1.0]}, ids=[7, 5], crop="centered")  # 6 skipped in b
    cmp = paired_comparison(a, b, n_resamples=100)
    assert cmp["groups"][0]["n"] == 2 and cmp["groups"][0]["diff"] == pytest.approx(1.0)
    assert cmp["average"] is None
    assert cmp["protocol_differences"] == {"crop": ["official", "centered"]}
    with pytest.raises(DataError, match="share no query"):
        paired_comparison(a, _genecis_run("c", {"t": [1.0]}, ids=[99]))
    other = RunResult(benchmark="cirr", model={"name": "x"}, protocol={}, seed=0, headline={},
                      metrics={"per_query": {"recall_at_1": [1.0]}, "query_ids": [1]})
    with pytest.raises(DataError, match="cannot compare a genecis run with a cirr run"):
        paired_comparison(a, other)


def test_cli_threshold_verdict_and_json(tmp_path, capsys):
    a = {"t1": [0.0] * 500 + [1.0] * 500, "t2": [0.0] * 1000}
    b = {"t1": [0.0] * 499 + [1.0] * 501, "t2": [0.0] * 1000}  # +0.1% on t1, +0.05% average
    _genecis_run("base", a).save(tmp_path / "a" / "results.json")
    _genecis_run("new", b).save(tmp_path / "b" / "results.json")
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--bootstrap", "300",
                 "--out", str(tmp_path / "cmp.json")]) == 0
    out = capsys.readouterr().out
    assert "average R@1" in out and "|diff| <= 0.2%" in out
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    assert cmp["schema"] == "condsim.compare/1" and cmp["threshold"] == 0.002
    assert cmp["average"]["diff"] == pytest.approx(0.0005)
    assert not cmp["average"]["exceeds_threshold"] and not cmp["average"]["significant"]
    lrvsf = RunResult(benchmark="lrvsf", model={"name": "x"}, protocol={}, seed=0, headline={},
                      metrics={})
    lrvsf.save(tmp_path / "l" / "results.json")
    assert main(["compare", str(tmp_path / "l"), str(tmp_path / "l")]) == 2


def test_lrvsf_runs_compare_by_paired_folds(tmp_path, tiny_clip):
    from condsim import create_model
    from condsim.benchmarks.lrvsf import LRVSFConfig
    from condsim.benchmarks.run import compare_runs as paired_comparison
    from condsim.benchmarks.run import run_benchmark
    from condsim.synthetic.lrvsf import write_lrvsf

    root = write_lrvsf(tmp_path / "lr", n_products=20, n_distractors=60, files=1, seed=0)
    cfg = LRVSFConfig(data_root=str(root), n_dists=(10, 50), folds="seeded", num_workers=0,
                      cache_dir=str(tmp_path / "c"))
    a = run_benchmark(tiny_clip, cfg, tmp_path / "a")
    b = run_benchmark(create_model("combine:image-only/test/tiny-clip", device="cpu"), cfg,
                       tmp_path / "b")
    cmp = paired_comparison(a, b)
    assert len(cmp["groups"]) == 2 * 5  # 2 distractor counts x 5 Ks
    row = next(r for r in cmp["groups"] if r["group"] == "R@10 +50")
    d = np.array(b.metrics["recall"]["50"]["10"]["folds"]) - np.array(
        a.metrics["recall"]["50"]["10"]["folds"])
    assert row["diff"] == pytest.approx(d.mean()) and row["n"] == 20
    assert row["ci_high"] - row["ci_low"] == pytest.approx(2 * 1.96 * d.std(ddof=1))
    assert row["significant"] == (abs(d.mean()) > 1.96 * d.std(ddof=1))
    same = paired_comparison(a, a)["groups"][0]
    assert same["diff"] == 0 and not same["significant"] and same["p_value"] == 1.0
    other = run_benchmark(tiny_clip, dataclasses.replace(cfg, seed=1), tmp_path / "other")
    with pytest.raises(DataError, match="can only be paired"):
        paired_comparison(a, other)
    # a run with only one of the counts pairs on that count (draws of 50 do not depend on
    # the other counts); damaged draw digests are refused, naming the count
    only50 = run_benchmark(tiny_clip, dataclasses.replace(cfg, n_dists=(50,)), tmp_path / "o")
    assert {r["group"] for r in paired_comparison(a, only50)["groups"]} == {
        f"R@{k} +50" for k in (1, 5, 10, 20, 50)}
    only50.protocol["draw_digests"]["50"] = "0" * 32
    with pytest.raises(DataError, match="different galleries for 50"):
        paired_comparison(a, only50)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
