"""LRVS-F end to end on a synthetic set in the official layout: CLI, cache, compat, errors."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from condsim.benchmarks.lrvsf import LRVSFConfig, load_folds, seeded_draw_rows
from condsim.benchmarks.run import run_benchmark
from condsim.cli.main import main
from condsim.errors import DataError, EmbeddingError
from condsim.results.run_result import load_result
from condsim.results.yaml_card import human_format
from condsim.synthetic.lrvsf import write_lrvsf

N_PRODUCTS, N_DIST, N_CORRUPT = 24, 120, 2


@pytest.fixture(scope="module")
def lrvsf_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lrvsf")
    write_lrvsf(root, n_products=N_PRODUCTS, n_distractors=N_DIST, files=3, seed=0,
                corrupt_distractors=N_CORRUPT)
    return root


def _cfg(root: Path, cache: Path, **kw) -> LRVSFConfig:
    base = dict(data_root=str(root), n_dists=(50, 200), folds="seeded", seed=3,
                num_workers=0, cache_dir=str(cache), batch_size=16)
    base.update(kw)
    return LRVSFConfig(**base)


def test_cli_end_to_end(lrvsf_root, tmp_path):
    out = tmp_path / "run"
    code = main(["eval", "lrvsf", "--model", "test/tiny-clip", "--data-root", str(lrvsf_root),
                 "--n-dists", "50,200", "--folds", "seeded", "--seed", "3", "--out", str(out),
                 "--workers", "0", "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    res = load_result(out)
    assert res.seed == 3 and res.benchmark == "lrvsf"
    assert res.protocol["n_distractors_available"] == N_DIST - N_CORRUPT
    assert res.skipped["corrupt_distractors"] == N_CORRUPT
    assert len(res.metrics["recall"]["200"]["1"]["folds"]) == 20
    for per_k in res.metrics["recall"].values():
        means = [per_k[str(k)]["mean"] for k in (1, 5, 10, 20, 50)]
        assert all(0.0 <= m <= 1.0 for m in means) and means == sorted(means)
    card = yaml.safe_load((out / "model_card.yaml").read_text())
    metrics = card["model-index"][0]["results"][0]["metrics"]
    assert metrics[0]["type"] == "recall_at_1|50" and metrics[0]["name"] == "R@1 +50 Dist."
    assert all(re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", m["value"]) for m in metrics[:10])
    assert metrics[-3:] == [
        {"type": "n_dists", "name": "Available Dists.", "value": N_DIST - N_CORRUPT},
        {"type": "embedding_dim", "name": "Embedding Dimension", "value": 32},
        {"type": "conditioning", "name": "Conditioning", "value": "category"},
    ]


def _brute(q, t, d, folds, draws, ks):
    out = np.zeros((folds.shape[0], len(ks)))
    for f in range(folds.shape[0]):
        uniq, counts = np.unique(folds[f], return_counts=True)
        s = q[uniq] @ np.concatenate([t[uniq], d[draws[f]]]).T
        own = np.diag(s[:, : len(uniq)])[:, None]
        g = (s > own).sum(1)[:, None]
        e = (s == own).sum(1)[:, None] - 1
        out[f] = (counts[:, None] * np.clip((np.array(ks) - g) / (e + 1), 0, 1)).sum(0)
        out[f] /= counts.sum()
    return out


def test_numbers_equal_brute_force_and_cache_is_reused(lrvsf_root, tmp_path, tiny_clip):
    cfg = _cfg(lrvsf_root, tmp_path / "cache", conditioning="text")
    first = run_benchmark(tiny_clip, cfg, tmp_path / "a")

    # brute force from the same model, same folds and the same seeded draws
    from condsim.data.images import decode_image
    from condsim.data.lrvsf import iter_distractor_batches, read_products

    prods = read_products(lrvsf_root, "text")
    q = tiny_clip.encode_queries(prods.query_images, prods.conditions).numpy()
    t = tiny_clip.encode_targets(prods.target_images).numpy()
    good = []
    for batch in iter_distractor_batches(lrvsf_root):
        for b in batch:
            try:
                decode_image(b)
                good.append(b)
            except DataError:
                pass
    d = tiny_clip.encode_targets(good).numpy()
    folds, _ = load_folds("seeded", N_PRODUCTS, 3)
    rows = list(seeded_draw_rows(3, (50, 200), 20, len(good)))
    for li, n in enumerate((50, 200)):
        want = _brute(q, t, d, folds, np.stack(rows[li * 20:(li + 1) * 20]), [1, 5, 10])
        got = np.array([first.metrics["recall"][str(n)][str(k)]["folds"] for k in (1, 5, 10)]).T
        np.testing.assert_allclose(got, want, atol=1e-6)

    calls = {"n": 0}
    orig = tiny_clip.encode_image_pixels

    def counting(px):
        calls["n"] += 1
        return orig(px)

    tiny_clip.encode_image_pixels = counting
    try:
        second = run_benchmark(tiny_clip, cfg, tmp_path / "b")
    finally:
        del tiny_clip.encode_image_pixels
    assert calls["n"] == 0
    assert second.metrics == first.metrics


class AuthorsStyleWrapper:
    """Written against the official API, like the authors' CondViT example."""

    def __init__(self):
        from condsim.compat.lrvsf_benchmark import LRVSFModel

        class Model(LRVSFModel):
            def _feat(self, imgs):
                out = []
                for i in range(len(imgs)):
                    img = Image.open(io.BytesIO(imgs.iloc[i])).convert("RGB").resize((6, 6))
                    out.append(torch.tensor(np.asarray(img), dtype=torch.float32).flatten())
                return torch.nn.functional.normalize(torch.stack(out), dim=1)

            def encode_queries(self, imgs, conds):
                assert isinstance(conds, list) and isinstance(conds[0], str)
                return self._feat(imgs)

            def encode_targets(self, imgs):
                return self._feat(imgs)

            def topk(self, q_embs, t_embs, topk):
                return torch.topk(q_embs @ t_embs.T, topk, dim=1).indices

        self.model = Model()


def test_compat_runs_authors_wrapper_unchanged(tmp_path):
    from condsim.compat.lrvsf_benchmark import LRVSF

    root = tmp_path / "clean"
    write_lrvsf(root, n_products=20, n_distractors=60, files=2, seed=1)
    model = AuthorsStyleWrapper().model
    ev = LRVSF(str(root), "category", folds="seeded", n_dists=(30, 300))
    card = ev.run(model, "org/my-model", output_folder=str(tmp_path))
    written = yaml.safe_load((tmp_path / "org_my-model.yaml").read_text())
    assert written == card and written["tags"] == ["lrvsf-benchmark"]
    exact = ev.last_recalls
    ev_topk = LRVSF(str(root), "category", folds="seeded", use_model_topk=True,
                    n_dists=(30, 300))
    ev_topk.run(model, "org/my-model-topk", output_folder=str(tmp_path))
    for n in exact:
        np.testing.assert_allclose(exact[n][0], ev_topk.last_recalls[n][0], atol=1e-12)
        np.testing.assert_allclose(exact[n][1], ev_topk.last_recalls[n][1], atol=1e-12)


def test_human_format_matches_leaderboard_names():
    assert [human_format(n) for n in (10_000, 100_000, 500_000, 1_000_000, 2_000_014)] == \
        ["10K", "100K", "500K", "1M", "2M"]


# -- bad input ------------------------------------------------------------------------------

def _run(root, out, *extra):
    return main(["eval", "lrvsf", "--model", "test/tiny-clip", "--data-root", str(root),
                 "--n-dists", "10", "--folds", "seeded", "--out", str(out), "--workers", "0",
                 *extra])


def test_missing_products_and_columns(tmp_path, capsys):
    (tmp_path / "empty" / "distractors").mkdir(parents=True)
    assert _run(tmp_path / "empty", tmp_path / "o1") == 2
    assert "products.parquet" in capsys.readouterr().err
    root = tmp_path / "nocol"
    (root / "distractors").mkdir(parents=True)
    pq.write_table(pa.table({"SIMPLE_IMG": [b"x"], "COMPLEX_IMG": [b"y"],
                             "CATEGORY": ["Bags"]}), root / "products.parquet")
    assert _run(root, tmp_path / "o2", "--conditioning", "text") == 2
    assert "blip2_caption1" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "results.json").exists()


def test_empty_distractor_folder_and_bad_folds_file(lrvsf_root, tmp_path, capsys):
    root = tmp_path / "nodist"
    (root / "distractors").mkdir(parents=True)
    (root / "products.parquet").write_bytes((lrvsf_root / "products.parquet").read_bytes())
    assert _run(root, tmp_path / "o") == 2
    assert "no .parquet files" in capsys.readouterr().err
    np.save(tmp_path / "folds.npy", np.zeros((3,), np.int64))
    code = main(["eval", "lrvsf", "--model", "test/tiny-clip", "--data-root", str(lrvsf_root),
                 "--folds", str(tmp_path / "folds.npy"), "--out", str(tmp_path / "o3"),
                 "--workers", "0"])
    assert code == 2 and "2-D" in capsys.readouterr().err


def test_nan_model_fails_without_partial_results(lrvsf_root, tmp_path, tiny_clip):
    orig = tiny_clip.encode_image_pixels
    tiny_clip.encode_image_pixels = lambda px: orig(px) * float("nan")
    try:
        with pytest.raises(EmbeddingError, match="NaN"):
            run_benchmark(tiny_clip, _cfg(lrvsf_root, tmp_path / "c"), tmp_path / "out")
    finally:
        del tiny_clip.encode_image_pixels
    assert not (tmp_path / "out" / "results.json").exists()


def test_results_json_is_strict_json(lrvsf_root, tmp_path, tiny_clip):
    run_benchmark(tiny_clip, _cfg(lrvsf_root, tmp_path / "c2"), tmp_path / "o")
    data = json.loads((tmp_path / "o" / "results.json").read_text())
    assert data["schema"] == "condsim.run/1" and data["model"]["name"] == "test/tiny-clip"


def test_same_category_recall_from_a_distractor_category_column(tmp_path, tiny_clip):
    """--dist-category-col: galleries restricted to the query's category can only make the
    target easier to find, fold by fold; a missing column is named."""
    from condsim.data.lrvsf import CATEGORIES

    root = tmp_path / "lr"
    write_lrvsf(root, n_products=16, n_distractors=80, files=2, seed=3)
    for i, f in enumerate(sorted((root / "distractors").glob("*.parquet"))):
        table = pq.read_table(f)
        cats = [CATEGORIES[(i * 7 + j) % 3] for j in range(table.num_rows)]
        pq.write_table(table.append_column("CATEGORY", pa.array(cats)), f)
    cfg = LRVSFConfig(data_root=str(root), n_dists=(20, 80), folds="seeded", num_workers=0,
                      cache_dir=str(tmp_path / "c"), dist_category_col="CATEGORY")
    res = run_benchmark(tiny_clip, cfg)
    same, plain = res.metrics["recall_same_category"], res.metrics["recall"]
    for n in ("20", "80"):
        for k in ("1", "10"):
            assert all(s >= p - 1e-12 for s, p in zip(same[n][k]["folds"], plain[n][k]["folds"],
                                                      strict=True))
    assert any(same[n][k]["mean"] > plain[n][k]["mean"] for n in same for k in same[n])
    assert res.protocol["dist_category_col"] == "CATEGORY"
    with pytest.raises(DataError, match="no column 'CAT'"):
        run_benchmark(tiny_clip, LRVSFConfig(**{**cfg.__dict__, "dist_category_col": "CAT"}))
