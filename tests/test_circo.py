"""CIRCO: AP@K against a hand-computed example, oracle mAP 1, constant no credit, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from condsim.benchmarks.circo import CircoConfig
from condsim.benchmarks.run import run_benchmark
from condsim.cli.main import main
from condsim.metrics.ap import average_precision_at_k, map_at_ks
from condsim.synthetic.circo import write_circo
from condsim.types import ModelMeta
from stubs import ConstantEncoder


def test_ap_hand_computed():
    # ranks 1..5 relevance: 1 0 1 0 1, 4 ground truths; AP@5 = (1/1 + 2/3 + 3/5) / min(4, 5)
    rel = np.array([1, 0, 1, 0, 1])
    assert average_precision_at_k(rel, 4, 5) == pytest.approx((1 + 2 / 3 + 3 / 5) / 4)
    # K smaller than #gt: normalise by K
    assert average_precision_at_k(rel, 4, 2) == pytest.approx(1 / 2)
    scores = np.array([[0.9, 0.1, 0.8, -np.inf, 0.5]])
    # order: 0, 2, 4, 1 (item 3 excluded); gt {2, 3}: item 3 can never be retrieved
    assert map_at_ks(scores, [np.array([2, 3])], [5])[0, 0] == pytest.approx((1 / 2) / 2)



def test_constant_model_gets_exact_chance_and_cli(tmp_path):
    root = write_circo(tmp_path / "circo", n_queries=12)
    res = run_benchmark(ConstantEncoder(), CircoConfig(root=str(root), cache_dir=str(
        tmp_path / "c"), n_bootstrap=100))
    n = res.metrics["gallery_size"] - 1
    # all N candidates tied: E[AP@K] = (1/min(g,K)) sum_{i<=K} (g/N)((i-1)(g-1)/(N-1) + 1)/i
    # for a query with g reachable ground truths; averaged over the queries
    import json

    data = json.loads((root / "annotations" / "val.json").read_text())
    want = []
    for e in data:
        g = len(set(e["gt_img_ids"]) - {e["reference_img_id"]})
        total = len(set(e["gt_img_ids"]))
        want.append(sum((g / n) * ((i - 1) * (g - 1) / (n - 1) + 1) / i
                        for i in range(1, 11)) / min(total, 10))
    assert res.metrics["map"]["10"]["mean"] == pytest.approx(np.mean(want))
    assert res.metrics["recall"]["10"]["mean"] == pytest.approx(10 / n)
    assert set(res.metrics["semantic_map_at_10"]) <= {
        "cardinality", "addition", "negation", "direct_addressing", "compare_change",
        "comparative_statement", "statement_with_conjunction",
        "spatial_relations_background", "viewpoint"}
    common = ["--model", "test/tiny-clip", "--root", str(root), "--workers", "0",
              "--bootstrap", "100", "--cache-dir", str(tmp_path / "c")]
    assert main(["eval", "circo", *common, "--out", str(tmp_path / "v")]) == 0
    assert main(["eval", "circo", *common, "--split", "test", "--out", str(tmp_path / "t")]) == 0
    sub = json.loads((tmp_path / "t" / "circo_test_submission.json").read_text())
    ann = json.loads((root / "annotations" / "test.json").read_text())
    for e in ann:
        top = sub[str(e["id"])]
        assert len(top) == 50 and len(set(top)) == 50 and e["reference_img_id"] not in top


def test_oracle_gets_map_one(tmp_path):
    root = write_circo(tmp_path / "circo", n_queries=10)
    ann = json.loads((root / "annotations" / "val.json").read_text())

    class Oracle:
        """Embeds each image by its file's ground-truth group: one-hot per query group."""

        meta = ModelMeta("test/oracle", 64, "o")

        def __init__(self):
            from PIL import Image

            self.key = {}
            groups: dict[tuple, int] = {}
            for e in ann:
                g = groups.setdefault(tuple(sorted(e["gt_img_ids"])), len(groups))
                for i in e["gt_img_ids"]:
                    im = Image.open(root / "unlabeled2017" / f"{i:012d}.jpg").convert("RGB")
                    self.key[im.tobytes()] = g
                ref = Image.open(root / "unlabeled2017" / f"{e['reference_img_id']:012d}.jpg")
                self.key[(ref.convert("RGB").tobytes(), e["relative_caption"])] = g

        def _one_hot(self, i):
            v = torch.zeros(64)
            if i is not None:
                v[i] = 1.0
            return v

        def encode_targets(self, images):
            return torch.stack([self._one_hot(self.key.get(im.tobytes())) for im in images])

        def encode_queries(self, images, conditions):
            return torch.stack([self._one_hot(self.key[(im.tobytes(), c)])
                                for im, c in zip(images, conditions, strict=True)])

    res = run_benchmark(Oracle(), CircoConfig(root=str(root), cache_dir=str(tmp_path / "c"),
                                               n_bootstrap=100))
    assert res.metrics["map"]["10"]["mean"] == 1.0 and res.metrics["map"]["50"]["mean"] == 1.0


def _all_tie_orders_ap(scores, rel, n_rel, k):
    """Mean AP@K over every order of the tied items (brute force)."""
    from itertools import permutations, product

    valid = np.isfinite(scores)
    s, r = scores[valid], rel[valid]
    groups = [np.flatnonzero(s == v) for v in sorted(set(s.tolist()), reverse=True)]
    if not groups:
        return 0.0
    values = []
    for perms in product(*(list(permutations(g)) for g in groups)):
        ranked = np.concatenate([r[list(p)] for p in perms])
        values.append(average_precision_at_k(ranked, n_rel, k))
    return float(np.mean(values))


def test_expected_ap_equals_the_mean_over_all_tie_orders():
    from condsim.metrics.ap import expected_ap_at_ks

    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(1, 8))
        scores = rng.integers(0, 3, n).astype(np.float64)  # few values: many ties
        scores[rng.random(n) < 0.15] = -np.inf
        rel = rng.random(n) < 0.4
        n_rel = int(rel.sum()) + int(rng.integers(0, 2))  # sometimes one unreachable gt
        ks = [1, 2, 3, 5]
        got = expected_ap_at_ks(scores, rel, n_rel, ks)
        want = [_all_tie_orders_ap(scores, rel, n_rel, k) if n_rel else 0.0 for k in ks]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
