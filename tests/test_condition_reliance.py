"""Condition reliance (``--condition-test``): image-only models show exactly zero drop, a
condition-reading oracle a significant one; the derangement is seeded, fixed-point free and
stays within groups; the main metrics do not move; CLI end to end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from condsim.benchmarks.cirr import CirrConfig
from condsim.benchmarks.genecis import GenecisConfig
from condsim.benchmarks.protocol import grouped_derangement, perturbed_conditions
from condsim.benchmarks.run import run_benchmark
from condsim.cli.main import main
from condsim.data.cirr import read_cirr
from condsim.data.genecis import TASKS, ImageLocator, read_task
from condsim.registry import create_model, get_benchmark, list_benchmarks
from condsim.results.run_result import load_result
from condsim.synthetic.cirr import write_cirr
from condsim.synthetic.genecis import write_genecis
from condsim.types import ModelMeta
from stubs import HashEncoder


def _vec(img: Image.Image, salt: str = "", dim: int = 32) -> torch.Tensor:
    """A pseudo-random unit vector of the pixels (+ ``salt``)."""
    seed = int.from_bytes(hashlib.blake2b(img.tobytes() + salt.encode(), digest_size=8)
                          .digest(), "little")
    g = torch.Generator().manual_seed(seed % (2**63))
    return torch.nn.functional.normalize(torch.randn(dim, generator=g), dim=0)


class ConditionOracle:
    """Reads the condition: with a query's true condition its embedding *is* the target's;
    with any other condition it is a pseudo-random vector of (image, condition)."""

    def __init__(self, pairs: list[tuple[Image.Image, str, Image.Image]]) -> None:
        self.answer = {(_vec(r).numpy().tobytes(), c): _vec(t) for r, c, t in pairs}
        self.meta = ModelMeta("test/condition-oracle", 32, "oracle")
        self.query_images = 0

    def encode_targets(self, images):
        return torch.stack([_vec(im) for im in images])

    def encode_queries(self, images, conditions):
        self.query_images += len(images)
        return torch.stack([self.answer.get((_vec(im).numpy().tobytes(), c), _vec(im, "q" + c))
                            for im, c in zip(images, conditions, strict=True)])


@pytest.fixture(scope="module")
def cirr_root(tmp_path_factory) -> Path:
    return write_cirr(tmp_path_factory.mktemp("cirr"), n_queries=40, n_train=0, seed=0)


@pytest.fixture(scope="module")
def gen_root(tmp_path_factory) -> Path:
    return write_genecis(tmp_path_factory.mktemp("genecis"), n_per_task=12, seed=0)


def _cirr_cfg(root: Path, tmp: Path, **kw) -> CirrConfig:
    return CirrConfig(root=str(root), cache_dir=str(tmp / "c"), n_bootstrap=300,
                      num_workers=0, **kw)


def _gen_cfg(root: Path, tmp: Path, **kw) -> GenecisConfig:
    return GenecisConfig(annotations=str(root / "annotations"),
                         coco_root=str(root / "coco" / "val2017"),
                         vg_roots=(str(root / "vg" / "VG_100K"), str(root / "vg" / "VG_100K_2")),
                         cache_dir=str(tmp / "c"), n_bootstrap=300, num_workers=0, **kw)


def _cirr_oracle(root: Path) -> ConditionOracle:
    queries, gallery = read_cirr(root, "val")
    return ConditionOracle([(gallery[q.reference].load_image().convert("RGB"), q.caption,
                             gallery[q.target].load_image().convert("RGB")) for q in queries])


def _gen_oracle(root: Path) -> ConditionOracle:
    loc = ImageLocator(root / "coco" / "val2017", [root / "vg" / "VG_100K",
                                                   root / "vg" / "VG_100K_2"])
    return ConditionOracle([(q.reference.load_image().convert("RGB"), q.condition,
                             q.target.load_image().convert("RGB"))
                            for t in TASKS for q in read_task(root / "annotations" / f"{t}.json",
                                                              t, loc)])


# -- the derangement -------------------------------------------------------------------------

def test_derangement_seeded_fixed_point_free_within_groups():
    groups = ["a"] * 7 + ["b"] * 2 + ["c"] * 11 + ["d"]
    p = grouped_derangement(groups, seed=3)
    assert sorted(p.tolist()) == list(range(len(groups)))  # a permutation
    assert all(groups[int(j)] == g for g, j in zip(groups, p, strict=True))
    lone = groups.index("d")
    assert p[lone] == lone and all(p[i] != i for i in range(len(groups)) if i != lone)
    assert np.array_equal(p, grouped_derangement(groups, seed=3))
    assert not np.array_equal(p, grouped_derangement(groups, seed=4))
    for seed in range(50):  # never a fixed point, whatever the seed and the size
        for n in (2, 3, 5):
            q = grouped_derangement([0] * n, seed)
            assert (q != np.arange(n)).all()
    conds = ["x", None, "y", "z", "x"]
    out, counts = perturbed_conditions(conds, "shuffled", seed=0)
    assert out[1] is None and sorted(c for c in out if c) == ["x", "x", "y", "z"]
    assert counts["unshuffled"] == 0
    assert perturbed_conditions(conds, "empty", seed=0)[0] == ["", None, "", "", ""]


# -- image-only: exactly zero ----------------------------------------------------------------

def test_image_only_shows_exactly_zero_drop(cirr_root, gen_root, tmp_path):
    model = create_model("combine:image-only/test/tiny-clip", device="cpu")
    for res in (run_benchmark(model, _cirr_cfg(cirr_root, tmp_path, condition_test=True)),
                run_benchmark(model, _gen_cfg(gen_root, tmp_path, condition_test=True))):
        rel = res.metrics["condition_reliance"]
        for kind in ("shuffled", "empty"):
            assert rel[kind]["drop"] == {**rel[kind]["drop"], "mean": 0.0, "ci_low": 0.0,
                                         "ci_high": 0.0, "significant": False}
            assert rel[kind]["top1_changed"] == 0.0
            assert rel[kind]["value"]["mean"] == rel["original"]["mean"]
        assert rel["original"]["mean"] == pytest.approx(res.headline["mean"])


# -- a condition reader: significant drop ----------------------------------------------------

def test_condition_reader_drops_significantly_on_cirr(cirr_root, tmp_path):
    oracle = _cirr_oracle(cirr_root)
    res = run_benchmark(oracle, _cirr_cfg(cirr_root, tmp_path, condition_test=True))
    assert res.headline["mean"] == 1.0
    rel = res.metrics["condition_reliance"]
    assert rel["schema"] == "condsim.condition_reliance/1" and rel["unit"] == "query"
    assert rel["metric"] == "recall_at_1" and rel["seed"] == 0 and rel["n"] == 40
    for kind in ("shuffled", "empty"):
        drop = rel[kind]["drop"]
        assert drop["significant"] and drop["ci_low"] > 0
        assert drop["mean"] == pytest.approx(1.0 - rel[kind]["value"]["mean"])
        assert rel[kind]["top1_changed"] > 0.5
    # every perturbed query went through the cache: a second run encodes nothing
    again = _cirr_oracle(cirr_root)
    res2 = run_benchmark(again, _cirr_cfg(cirr_root, tmp_path, condition_test=True))
    assert again.query_images == 0
    assert res2.metrics["condition_reliance"] == rel


def test_condition_reader_drops_significantly_on_genecis(gen_root, tmp_path):
    res = run_benchmark(_gen_oracle(gen_root), _gen_cfg(gen_root, tmp_path,
                                                         condition_test=True))
    assert res.headline["mean"] == 1.0
    rel = res.metrics["condition_reliance"]
    shuffled = rel["shuffled"]
    assert shuffled["drop"]["significant"] and shuffled["drop"]["ci_low"] > 0
    assert set(shuffled["groups"]) == set(TASKS)  # deranged within each task
    assert shuffled["counts"]["unshuffled"] == 0
    assert rel["empty"]["drop"]["ci_low"] > 0


# -- the main metrics do not move ------------------------------------------------------------

def _without(metrics: dict) -> str:
    return json.dumps({k: v for k, v in metrics.items() if k != "condition_reliance"},
                      sort_keys=True)


@pytest.mark.parametrize("name", [spec.name for spec in list_benchmarks()])
def test_condition_test_leaves_main_metrics_identical(name, tmp_path):
    """Every registered benchmark takes --condition-test, and it changes no main metric."""
    spec = get_benchmark(name)
    fields = spec.synthetic(tmp_path / "data", 0)
    base = dict(fields, n_bootstrap=100, num_workers=0, cache_dir=str(tmp_path / "c"))
    plain = run_benchmark(HashEncoder(), spec.make_config(**base))
    tested = run_benchmark(HashEncoder(), spec.make_config(**base, condition_test=True))
    assert "condition_reliance" not in plain.metrics
    assert _without(tested.metrics) == _without(plain.metrics)
    assert tested.headline == plain.headline
    rel = tested.metrics["condition_reliance"]
    headline = plain.headline["mean"]
    assert rel["original"]["mean"] == pytest.approx(headline)
    assert rel["unit"] == ("fold" if spec.pairing.kind == "folds" else "query")
    assert set(rel) >= {"shuffled", "empty", "seed", "method", "original", "metric"}


# -- CLI -------------------------------------------------------------------------------------

def test_cli_end_to_end(cirr_root, tmp_path, capsys):
    common = ["--root", str(cirr_root), "--workers", "0", "--bootstrap", "200",
              "--cache-dir", str(tmp_path / "c")]
    assert main(["eval", "cirr", "--model", "combine:image-only/test/tiny-clip",
                 "--out", str(tmp_path / "a"), "--condition-test", *common]) == 0
    assert main(["eval", "cirr", "--model", "test/tiny-clip", "--out", str(tmp_path / "b"),
                 "--condition-test", *common]) == 0
    assert "condition test, shuffled conditions: drop +0.00" in capsys.readouterr().out
    res = load_result(tmp_path / "a")
    card = (tmp_path / "a" / "model_card.yaml").read_text()
    assert "condition_reliance" not in card and "drop" not in card
    assert res.metrics["condition_reliance"]["shuffled"]["drop"]["mean"] == 0.0
    assert res.extra["config"]["condition_test"] is True
    capsys.readouterr()
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                 str(tmp_path / "r" / "report.html")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Does it read the condition?" in md
    assert "Does it read the condition?" in (tmp_path / "r" / "report.html").read_text()
    panel = md.split("Does it read the condition?")[1]
    line = next(x for x in panel.splitlines() if x.startswith("| combine:image-only"))
    assert "+0.00 [+0.00, +0.00]" in line and "0.0 / 0.0" in line
