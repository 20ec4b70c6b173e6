"""Fault injection at the benchmark level: a damaged cache never changes a number.

A clean LRVS-F / CIRR run fills the cache; then a shard's bytes are flipped (size
unchanged) or the shard is truncated, and the same run is repeated: the damage is reported in
``results.json`` (``skipped.cache_repairs``), the lost rows are re-encoded, and the metrics
equal the clean run's exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from condsim.benchmarks.cirr import CirrConfig
from condsim.benchmarks.lrvsf import LRVSFConfig
from condsim.benchmarks.run import run_benchmark
from condsim.synthetic.cirr import write_cirr
from condsim.synthetic.lrvsf import write_lrvsf


def _shard_stems(cache: Path) -> list[Path]:
    return sorted(p.with_name(p.name[: -len(".keys.npy")])
                  for p in cache.rglob("shard-*.keys.npy") if "quarantine" not in p.parts)


def _flip(stem: Path) -> None:
    """Flip the sign bit of 16 floats in the middle of the shard's embeddings."""
    path = stem.with_name(stem.name + ".npy")
    data = bytearray(path.read_bytes())
    mid = len(data) // 2 // 4 * 4
    for j in range(16):
        data[mid + 4 * j + 3] ^= 0x80
    path.write_bytes(bytes(data))


def _truncate(stem: Path) -> None:
    path = stem.with_name(stem.name + ".npy")
    path.write_bytes(path.read_bytes()[:-256])


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault")
    return {"lrvsf": write_lrvsf(root / "lrvsf", n_products=16, n_distractors=48, files=2,
                                 seed=0),
            "cirr": write_cirr(root / "cirr", n_queries=12, n_train=0, seed=0)}


def _config(bench: str, root: Path, cache: Path):
    if bench == "lrvsf":
        return LRVSFConfig(data_root=str(root), n_dists=(20,), folds="seeded", num_workers=0,
                           cache_dir=str(cache), aggregate_batches=16)
    return CirrConfig(root=str(root), cache_dir=str(cache), n_bootstrap=50, num_workers=0,
                      batch_size=8)


@pytest.mark.parametrize("bench", ["lrvsf", "cirr"])
@pytest.mark.parametrize("damage", [_flip, _truncate], ids=["flip", "truncate"])
def test_damaged_shard_is_reported_reencoded_and_changes_nothing(bench, damage, sets, tmp_path,
                                                                 tiny_clip):
    cache = tmp_path / "cache"
    cfg = _config(bench, sets[bench], cache)
    clean = run_benchmark(tiny_clip, cfg, tmp_path / "clean")
    stems = _shard_stems(cache)
    assert len(stems) >= 2
    victim = stems[len(stems) // 2]
    damage(victim)
    again = run_benchmark(tiny_clip, cfg, tmp_path / "again")
    repairs = again.skipped["cache_repairs"]
    assert victim.name in repairs["quarantined_shards"]
    assert repairs["dropped_rows"] > 0
    assert json.dumps(again.metrics, sort_keys=True) == json.dumps(clean.metrics,
                                                                   sort_keys=True)
    saved = json.loads((tmp_path / "again" / "results.json").read_text())
    assert saved["skipped"]["cache_repairs"]["quarantined_shards"] == [victim.name]
    assert (victim.parent / "quarantine").is_dir()
    # a third run finds a healthy cache: nothing to repair, same numbers
    third = run_benchmark(tiny_clip, cfg)
    assert third.skipped["cache_repairs"]["quarantined_shards"] == []
    assert third.metrics == clean.metrics


def test_nonfinite_rows_never_enter_the_cache(sets, tmp_path):
    """A model returning NaN for one image fails the run before anything is cached."""
    import torch

    from condsim.errors import EmbeddingError
    from condsim.types import ModelMeta

    class NaNEncoder:
        meta = ModelMeta("test/nan", 4, "nan")

        def encode_targets(self, images):
            out = torch.ones(len(images), 4)
            out[0, 0] = float("nan")
            return out

        def encode_queries(self, images, conditions):
            return torch.ones(len(images), 4)

    cache = tmp_path / "cache"
    with pytest.raises(EmbeddingError, match="NaN"):
        run_benchmark(NaNEncoder(), _config("cirr", sets["cirr"], cache))
    assert not _shard_stems(cache)
