"""A benchmark refuses, before reading or encoding anything, a model that cannot take its kind
of condition (a category-only CondViT on a text-conditioned benchmark); models that take text
also take category names."""

from __future__ import annotations

from dataclasses import replace

import pytest

from condsim.benchmarks.circo import CircoConfig
from condsim.benchmarks.cirr import CirrConfig
from condsim.benchmarks.fashioniq import FashionIQConfig
from condsim.benchmarks.genecis import GenecisConfig
from condsim.benchmarks.lrvsf import LRVSFConfig
from condsim.benchmarks.mitstates import MitStatesConfig
from condsim.benchmarks.run import run_benchmark
from condsim.errors import ModelError
from condsim.models.base import require_condition_kind
from condsim.synthetic.lrvsf import write_lrvsf
from stubs import HashEncoder


class CategoryOnly(HashEncoder):
    meta = replace(HashEncoder.meta, name="test/category-only", conditions=("category",))


@pytest.mark.parametrize("run", [
    lambda m, d: run_benchmark(m, GenecisConfig(annotations=str(d))),
    lambda m, d: run_benchmark(m, CirrConfig(root=str(d))),
    lambda m, d: run_benchmark(m, CircoConfig(root=str(d))),
    lambda m, d: run_benchmark(m, FashionIQConfig(root=str(d))),
    lambda m, d: run_benchmark(m, MitStatesConfig(root=str(d))),
], ids=["genecis", "cirr", "circo", "fashioniq", "mitstates"])
def test_text_benchmarks_refuse_a_category_only_model_first(run, tmp_path):
    # the data folder is empty: the model check must come before any reading (a folder
    # that does not exist is refused earlier, by the config)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="conditions its queries with text.*category-only"):
        run(CategoryOnly(), tmp_path / "empty")


def test_lrvsf_checks_the_chosen_conditioning(tmp_path):
    root = tmp_path / "lrvsf"
    write_lrvsf(root, n_products=6, n_distractors=6, files=1, seed=0)
    cfg = LRVSFConfig(data_root=str(root), n_dists=(0,), cache_dir=str(tmp_path / "cache"),
                      conditioning="text", folds="seeded")
    with pytest.raises(ModelError, match="LRVS-F conditions its queries with text"):
        run_benchmark(CategoryOnly(), cfg)
    res = run_benchmark(CategoryOnly(), replace(cfg, conditioning="category"))
    assert res.protocol["conditioning"] == "category"


def test_text_models_take_categories_and_undeclared_models_pass():
    text_only = HashEncoder()
    text_only.meta = replace(HashEncoder.meta, conditions=("text",))
    require_condition_kind(text_only, "category", "LRVS-F")
    require_condition_kind(text_only, "text", "GeneCIS")
    with pytest.raises(ModelError, match="only takes no conditions"):
        none = HashEncoder()
        none.meta = replace(HashEncoder.meta, conditions=())
        require_condition_kind(none, "category", "LRVS-F")

    class Wrapper:  # a user's model without meta.conditions is not second-guessed
        meta = object()
    require_condition_kind(Wrapper(), "text", "GeneCIS")
