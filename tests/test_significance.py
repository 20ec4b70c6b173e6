"""One significance module: ``condsim compare --out`` and the report's comparison of the same
pair of runs agree exactly (GeneCIS tasks + stratified average, LRVS-F paired folds,
FashionIQ categories + average); properties of the statistics."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from condsim.cli.main import main
from condsim.errors import DataError, PairingError
from condsim.metrics import significance as sig
from condsim.registry import get_benchmark
from condsim.results import report as rep
from condsim.results.leaderboard import load_runs
from condsim.results.run_result import RunResult


def _ci(values: np.ndarray) -> dict[str, float]:
    m = float(np.mean(values))
    return {"mean": m, "ci_low": max(0.0, m - 0.05), "ci_high": min(1.0, m + 0.05)}


def _genecis(name: str, rng: np.random.Generator, p: float) -> RunResult:
    tasks = {}
    for t in ("focus_attribute", "change_attribute", "focus_object"):
        v = (rng.random(80) < p).astype(float)
        tasks[t] = {"recall": {"1": _ci(v)}, "per_query": {"1": v.tolist()},
                    "query_ids": list(range(80))}
    avg = _ci(np.array([tasks[t]["recall"]["1"]["mean"] for t in tasks]))
    return RunResult(benchmark="genecis", model={"name": name}, protocol={"crop": "official"},
                     seed=0, headline={"name": "average_recall_at_1", **avg},
                     metrics={"tasks": tasks, "average_recall_at_1": avg})


def _fashioniq(name: str, rng: np.random.Generator, p: float) -> RunResult:
    cats, cols = {}, {10: [], 50: []}
    for c in ("dress", "shirt", "toptee"):
        ids = [f"{i}:c{i}->t{i}" for i in range(60)]
        r10 = (rng.random(60) < p).astype(float)
        r50 = np.maximum(r10, rng.random(60) < p)
        cats[c] = {"recall": {"10": _ci(r10), "50": _ci(r50)},
                   "per_query": {"recall_at_10": r10.tolist(), "recall_at_50": r50.tolist()},
                   "query_ids": ids}
        cols[10].append(r10)
        cols[50].append(r50)
    metrics = {"categories": cats, **{f"average_recall_at_{k}": _ci(np.concatenate(v))
                                      for k, v in cols.items()}}
    return RunResult(benchmark="fashioniq", model={"name": name},
                     protocol={"caption_join": "and"}, seed=0,
                     headline={"name": "average_recall", "mean": 0.0}, metrics=metrics)


def _lrvsf(name: str, rng: np.random.Generator, level: float) -> RunResult:
    recall = {}
    for n in (20, 80):
        recall[str(n)] = {}
        for k in ("1", "5"):
            folds = np.clip(level + int(k) * 0.05 - n / 1000 + rng.normal(0, 0.02, 20), 0, 1)
            recall[str(n)][k] = {"mean": float(folds.mean()), "std": float(folds.std(ddof=1)),
                                 "folds": folds.tolist()}
    protocol = {"folds": "seeded", "n_folds": 20, "conditioning": "category", "ks": [1, 5],
                "n_distractors_available": 100, "n_products": 30, "n_dists": [20, 80]}
    return RunResult(benchmark="lrvsf", model={"name": name}, protocol=protocol, seed=0,
                     headline={"name": "recall_at_1", "mean": recall["80"]["1"]["mean"]},
                     metrics={"recall": recall})


PAIRS = {
    "genecis": lambda rng: (_genecis("base", rng, 0.3), _genecis("new", rng, 0.4)),
    "fashioniq": lambda rng: (_fashioniq("base", rng, 0.3), _fashioniq("new", rng, 0.35)),
    "lrvsf": lambda rng: (_lrvsf("base", rng, 0.5), _lrvsf("new", rng, 0.53)),
}


@pytest.mark.parametrize("bench", sorted(PAIRS))
def test_compare_and_report_agree_on_the_same_pair(bench, tmp_path: Path):
    a, b = PAIRS[bench](np.random.default_rng(7))
    a.save(tmp_path / "runs" / "a_base" / "results.json")
    b.save(tmp_path / "runs" / "b_new" / "results.json")
    out = tmp_path / "cmp.json"
    assert main(["compare", str(tmp_path / "runs" / "a_base"), str(tmp_path / "runs" / "b_new"),
                 "--out", str(out)]) == 0
    cli = json.loads(out.read_text())
    assert cli["schema"] == "condsim.compare/1" and cli["benchmark"] == bench
    by_group = {r["group"]: r for r in cli["groups"]}

    runs = load_runs([tmp_path / "runs"])
    table = rep.comparison_table(runs, rep.view_for(runs[0]), reference="base")
    assert table.reference.label == "base"
    (other, cells), = [(run, cells) for run, cells in table.rows if run is not table.reference]
    key = get_benchmark(bench).pairing.key
    checked = 0
    for est, row in cells:
        if est is None or est.paired is None or (key and est.paired[0] != key):
            continue
        want = cli["average"] if est.paired[1] is None else by_group[est.paired[1]]
        got = row.to_dict()
        for field in ("diff", "ci_low", "ci_high", "p_value", "significant", "n", "method"):
            assert got[field] == want[field], (bench, est.paired, field)
        checked += 1
    # every group the report shows, and the average when there is one
    assert checked >= (3 if bench == "lrvsf" else 4)
    assert table.methods <= {"paired-bootstrap", "stratified-paired-bootstrap", "paired-folds",
                             "ci-overlap"}


def test_comparison_object_and_json_keys():
    a, b = PAIRS["genecis"](np.random.default_rng(1))
    cmp = sig.compare(a, b, get_benchmark("genecis").pairing, n_resamples=300)
    assert isinstance(cmp, sig.Comparison) and len(cmp.rows) == 3
    assert cmp.headline is cmp.average and cmp.average.method == "stratified-paired-bootstrap"
    assert cmp.row("focus_object") is cmp.rows[2] and cmp.row(None) is cmp.average
    d = cmp.to_dict()
    assert set(d) == {"schema", "benchmark", "model_a", "model_b", "metric", "method",
                      "threshold", "groups", "average", "protocol_differences"}
    assert {"group", "metric", "n", "a", "b", "diff", "ci_low", "ci_high", "p_value",
            "significant", "exceeds_threshold", "n_resamples", "seed", "level"} <= set(
        d["groups"][0])
    assert [r["seed"] for r in d["groups"]] == [0, 101, 202]
    json.dumps(d)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cmp.rows[0].diff = 1.0  # type: ignore[misc]


def test_unpairable_runs_raise_pairing_error_and_report_falls_back():
    a, b = PAIRS["lrvsf"](np.random.default_rng(2))
    other = dataclasses.replace(b, seed=1)
    with pytest.raises(PairingError, match="can only be paired"):
        sig.compare(a, other, get_benchmark("lrvsf").pairing)
    assert issubclass(PairingError, DataError)
    with pytest.raises(DataError, match="cannot compare a lrvsf run with a genecis run"):
        sig.compare(a, PAIRS["genecis"](np.random.default_rng(0))[0],
                    get_benchmark("lrvsf").pairing)
    row = sig.ci_overlap((0.5, 0.45, 0.55), (0.7, 0.65, 0.75))
    assert row.method == "ci-overlap" and row.mark() == "▲†" and math.isnan(row.p_value)
    assert row.to_dict()["ci_low"] is None


# --- properties of the statistics -----------------------------------------------------------


def test_seeded_reproducibility():
    rng = np.random.default_rng(3)
    a, b = rng.random(200), rng.random(200)
    r1 = sig.paired_bootstrap(a, b, seed=5, n_resamples=500)
    assert r1 == sig.paired_bootstrap(a, b, seed=5, n_resamples=500)
    assert r1 != sig.paired_bootstrap(a, b, seed=6, n_resamples=500)
    groups = {"x": (a, b), "y": (b, a + 0.1)}
    assert (sig.stratified_paired_bootstrap(groups, seed=2, n_resamples=300)
            == sig.stratified_paired_bootstrap(groups, seed=2, n_resamples=300))


@pytest.mark.parametrize("shift", [0.25, -0.1, 0.0])
def test_constant_shift_gives_a_degenerate_ci_at_the_shift(shift):
    a = np.random.default_rng(4).random(150)
    row = sig.paired_bootstrap(a, a + shift, n_resamples=400)
    assert row.diff == pytest.approx(shift, abs=1e-12)
    assert row.ci_low == pytest.approx(shift, abs=1e-12)
    assert row.ci_high == pytest.approx(shift, abs=1e-12)
    assert row.significant == (shift != 0)
    assert row.p_value == pytest.approx(2 / 401 if shift else 1.0)
    rows, avg = sig.stratified_paired_bootstrap({"g1": (a, a + shift), "g2": (a[:50],
                                                                             a[:50] + shift)})
    assert avg.ci_low == pytest.approx(shift, abs=1e-12)
    assert avg.ci_high == pytest.approx(shift, abs=1e-12)
    folds = sig.paired_folds(a[:20], a[:20] + shift)
    assert folds.ci_low == pytest.approx(shift, abs=1e-12)
    assert folds.ci_high == pytest.approx(shift, abs=1e-12)


def test_query_order_is_irrelevant_when_ids_are_given():
    a, b = PAIRS["genecis"](np.random.default_rng(5))
    pairing = get_benchmark("genecis").pairing
    base = sig.compare(a, b, pairing, n_resamples=400)
    rng = np.random.default_rng(0)

    def shuffled(run: RunResult) -> RunResult:
        tasks = {}
        for t, m in run.metrics["tasks"].items():
            order = rng.permutation(len(m["query_ids"]))
            tasks[t] = {**m, "query_ids": [m["query_ids"][i] for i in order],
                        "per_query": {"1": [m["per_query"]["1"][i] for i in order]}}
        return dataclasses.replace(run, metrics={**run.metrics, "tasks": tasks})

    for x, y in ((shuffled(a), b), (a, shuffled(b)), (shuffled(a), shuffled(b))):
        got = sig.compare(x, y, pairing, n_resamples=400)
        for r0, r1 in zip((*base.rows, base.average), (*got.rows, got.average), strict=True):
            assert (r1.ci_low, r1.ci_high, r1.p_value, r1.significant, r1.n) == (
                r0.ci_low, r0.ci_high, r0.p_value, r0.significant, r0.n)
            assert r1.diff == pytest.approx(r0.diff, abs=1e-12)


def test_paired_folds_formula():
    a = np.array([0.40, 0.50, 0.60, 0.55])
    b = a + np.array([0.03, 0.01, 0.02, 0.02])
    row = sig.paired_folds(a, b)
    d = b - a
    assert row.diff == pytest.approx(d.mean())
    assert row.ci_high - row.ci_low == pytest.approx(2 * 1.96 * d.std(ddof=1))
    z = d.mean() / d.std(ddof=1)
    assert row.p_value == pytest.approx(1 - math.erf(z / math.sqrt(2)))
    with pytest.raises(PairingError, match="at least 2 folds"):
        sig.paired_folds([0.1], [0.2])
