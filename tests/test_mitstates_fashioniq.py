"""MIT-States and FashionIQ: any-hit recall formula, chance, filtering, CLI, join rules."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from condsim.benchmarks.fashioniq import FashionIQConfig
from condsim.benchmarks.mitstates import MitStatesConfig, read_test_images
from condsim.benchmarks.run import run_benchmark
from condsim.cli.main import main
from condsim.errors import DataError
from condsim.metrics.recall import expected_any_hit_at_k
from condsim.synthetic.fashioniq import write_fashioniq
from condsim.synthetic.mitstates import write_mitstates
from stubs import ConstantEncoder


def test_any_hit_matches_enumeration_of_tie_orders():
    scores = np.array([[0.9, 0.5, 0.5, 0.5, 0.5, 0.1]])
    relevant = np.array([[False, True, False, True, False, True]])
    got = expected_any_hit_at_k(scores, relevant, [1, 2, 3, 4, 6])
    tied = [1, 2, 3, 4]
    hits = np.zeros(5)
    perms = list(itertools.permutations(tied))
    for p in perms:
        order = [0, *p, 5]
        for j, k in enumerate([1, 2, 3, 4, 6]):
            hits[j] += any(relevant[0, i] for i in order[:k])
    np.testing.assert_allclose(got[0], hits / len(perms))



def test_mitstates_split_and_chance(tmp_path):
    root = write_mitstates(tmp_path / "ms", per_class=3)
    items = read_test_images(root)
    assert {n for _, n, _ in items} == {"clock", "table", "glass", "window"}
    assert all(a != "adj" for a, _, _ in items)
    res = run_benchmark(ConstantEncoder(), MitStatesConfig(root=str(root), cache_dir=str(
        tmp_path / "c"), n_bootstrap=100))
    # constant scores: 3 relevant among N - 1 candidates, all tied
    n = len(items) - 1
    want = 1 - np.prod([(n - 3 - i) / (n - i) for i in range(1)])
    assert res.metrics["recall"]["1"]["mean"] == pytest.approx(want)
    assert main(["eval", "mitstates", "--model", "test/tiny-clip", "--root", str(root),
                 "--workers", "0", "--bootstrap", "100", "--cache-dir", str(tmp_path / "c"),
                 "--out", str(tmp_path / "run")]) == 0


def test_fashioniq_join_rules_and_cli(tmp_path):
    root = write_fashioniq(tmp_path / "fiq", n_pairs=10)
    res = run_benchmark(ConstantEncoder(), FashionIQConfig(root=str(root), cache_dir=str(
        tmp_path / "c"), n_bootstrap=100))
    for m in res.metrics["categories"].values():
        assert m["recall"]["10"]["mean"] == pytest.approx(10 / m["gallery_size"])
    assert res.protocol["caption_join"] == "and"
    for join in ("and", "dot", "first"):
        assert main(["eval", "fashioniq", "--model", "test/tiny-clip", "--root", str(root),
                     "--join", join, "--workers", "0", "--bootstrap", "50", "--cache-dir",
                     str(tmp_path / "c"), "--out", str(tmp_path / join)]) == 0
    a = json.loads((tmp_path / "and" / "results.json").read_text())
    f = json.loads((tmp_path / "first" / "results.json").read_text())
    assert a["protocol"]["caption_join"] == "and" and f["protocol"]["caption_join"] == "first"
    cap = root / "captions" / "cap.shirt.val.json"
    data = json.loads(cap.read_text())
    data[3]["target"] = "BNOPE"
    cap.write_text(json.dumps(data))
    with pytest.raises(DataError, match="entry 3: 'BNOPE'"):
        run_benchmark(ConstantEncoder(), FashionIQConfig(root=str(root)))


def test_mitstates_records_failures_with_the_best_relevant_image_as_target(tmp_path, tiny_clip):
    """A query fails when an image of another state scores at least as high as every
    image of the asked state; the case shows its best relevant image as the target and only
    wrong images above it."""
    from pathlib import Path

    from condsim.results.failures import is_case

    root = write_mitstates(tmp_path / "mit", per_class=3, seed=0)
    res = run_benchmark(tiny_clip, MitStatesConfig(root=str(root), n_bootstrap=20,
                                                        cache_dir=str(tmp_path / "c"),
                                                        query_block=7))
    cases = res.extra["failures"]
    n_failed = sum(r < 1 for r in res.metrics["per_query"]["recall_at_1"])
    assert 0 < len(cases) <= min(12, n_failed)
    per_query = dict(zip(res.metrics["query_ids"], res.metrics["per_query"]["recall_at_1"],
                         strict=True))
    for case in cases:
        assert is_case(case) and per_query[case["query_id"]] < 1
        ref_folder, asked = case["query_id"].split("/")[0], case["query_id"].split("->")[1]
        noun = ref_folder.split(" ", 1)[1]
        label = f"{asked} {noun}"
        assert case["query"]["condition"] == asked
        assert Path(case["target"]["path"]).parent.name == label
        assert all(Path(t["image"]["path"]).parent.name != label for t in case["top"])
        assert case["top"][0]["score"] >= case["target_score"]
