"""any2any: both layouts agree, oracle scores 1, brute-force pytrec_eval-style metrics,
unsupported modalities and malformed inputs refused with the file named, CLI end to end."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from condsim.benchmarks.any2any import SPEC
from condsim.benchmarks.run import run_benchmark
from condsim.cli.main import main
from condsim.errors import DataError
from condsim.synthetic.any2any import write_any2any
from condsim.types import ModelMeta
from stubs import HashEncoder


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_any2any(tmp_path_factory.mktemp("a2a"), seed=3)


def _cfg(path: Path, tmp: Path, **kw):
    return SPEC.make_config(root=str(path), cache_dir=str(tmp / "c"), n_bootstrap=50,
                            num_workers=0, **kw)


def _mteb(root: Path) -> dict[str, dict[str, list]]:
    return {n: pq.read_table(root / "mteb" / f"{n}-00000-of-00001.parquet").to_pylist()
            for n in ("corpus", "query", "qrels")}


def _pixels(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def _copy(root: Path, tmp: Path, layout: str) -> Path:
    out = tmp / layout
    shutil.copytree(root / layout, out)
    return out


def _rewrite(path: Path, edit) -> None:
    rows = pq.read_table(path).to_pylist()
    schema = pq.read_schema(path)
    rows = edit(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


class Counting(HashEncoder):
    """A HashEncoder that counts its forward calls."""

    def __init__(self) -> None:
        self.calls = 0

    def encode_targets(self, images):
        self.calls += 1
        return super().encode_targets(images)

    def encode_queries(self, images, conditions):
        self.calls += 1
        return super().encode_queries(images, conditions)


class Oracle:
    """Gallery image ``j`` embeds to one-hot(j); a query to its vector of qrels gains, so
    its score of candidate ``j`` is the gain (ideal ranking)."""

    meta = ModelMeta("test/a2a-oracle", 96, "oracle")

    def __init__(self, data: dict[str, dict[str, list]]):
        col = {r["id"]: j for j, r in enumerate(data["corpus"])}
        self.col = {_pixels(r["image"]["bytes"]).tobytes(): j
                    for j, r in enumerate(data["corpus"])}
        gains: dict[str, torch.Tensor] = {}
        for r in data["qrels"]:
            gains.setdefault(r["query-id"], torch.zeros(96))[col[r["corpus-id"]]] = r["score"]
        self.composed = {(_pixels(q["image"]["bytes"]).tobytes(), q["text"]): gains[q["id"]]
                         for q in data["query"] if q["text"] is not None}
        self.plain = {_pixels(q["image"]["bytes"]).tobytes(): gains[q["id"]]
                      for q in data["query"] if q["text"] is None}

    def encode_targets(self, images):
        out = []
        for im in images:
            key = im.tobytes()
            out.append(self.plain[key] if key in self.plain else
                       torch.nn.functional.one_hot(torch.tensor(self.col[key]), 96).float())
        return torch.stack(out)

    def encode_queries(self, images, conditions):
        return torch.stack([self.composed[(im.tobytes(), c)]
                            for im, c in zip(images, conditions, strict=True)])


def test_both_layouts_give_identical_metrics(root, tmp_path):
    a = run_benchmark(HashEncoder(), _cfg(root / "mteb", tmp_path))
    b = run_benchmark(HashEncoder(), _cfg(root / "mbeir", tmp_path))
    assert json.dumps(a.metrics, sort_keys=True) == json.dumps(b.metrics, sort_keys=True)
    assert a.protocol["layout"] == "mteb" and b.protocol["layout"] == "mbeir"
    assert a.metrics["n_composed"] > 0 and a.metrics["n_image_only"] > 0
    assert a.headline["name"] == "ndcg_at_10"


def test_mteb_config_folders_and_split_files_read_alike(root, tmp_path):
    flat = root / "mteb"
    nested = tmp_path / "nested"
    for name, dest in (("corpus", "corpus/corpus-00000-of-00001.parquet"),
                       ("query", "queries/test/0000.parquet"),
                       ("qrels", "qrels/test.parquet")):
        (nested / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(flat / f"{name}-00000-of-00001.parquet", nested / dest)
    shutil.copy(flat / "qrels-00000-of-00001.parquet", nested / "qrels" / "val.parquet")
    a = run_benchmark(HashEncoder(), _cfg(flat, tmp_path))
    b = run_benchmark(HashEncoder(), _cfg(nested, tmp_path))
    assert a.metrics == b.metrics
    assert b.protocol["files"]["qrels"] == ["qrels/test.parquet"]
    with pytest.raises(DataError, match="no split 'dev'.*--split"):
        run_benchmark(HashEncoder(), _cfg(nested, tmp_path, split="dev"))


def test_oracle_scores_one(root, tmp_path):
    res = run_benchmark(Oracle(_mteb(root)), _cfg(root / "mteb", tmp_path))
    assert res.metrics["hit_rate"]["1"]["mean"] == 1.0
    assert res.metrics["ndcg"]["10"]["mean"] == pytest.approx(1.0)
    assert res.metrics["ir_recall"]["5"]["mean"] == 1.0
    assert res.extra["failures"] == []


def _ndcg10(ranked: list[str], qrel: dict[str, float]) -> float:
    """trec_eval ndcg_cut_10: gain = qrels score, discount 1/log2(rank + 1)."""
    dcg = sum(qrel.get(d, 0) / np.log2(i + 2) for i, d in enumerate(ranked[:10])
              if qrel.get(d, 0) > 0)
    ideal = sorted((g for g in qrel.values() if g > 0), reverse=True)[:10]
    return dcg / sum(g / np.log2(i + 2) for i, g in enumerate(ideal))


def test_metrics_equal_brute_force_on_a_tie_free_encoder(root, tmp_path):
    data = _mteb(root)
    enc = HashEncoder()
    ids = [r["id"] for r in data["corpus"]]
    gallery = torch.stack([enc.vec(_pixels(r["image"]["bytes"])) for r in data["corpus"]])
    qrels: dict[str, dict[str, float]] = {}
    for r in data["qrels"]:
        qrels.setdefault(r["query-id"], {})[r["corpus-id"]] = r["score"]
    want: dict[str, list[float]] = {"ndcg": [], **{f"hit{k}": [] for k in (1, 5, 10, 50)},
                                    **{f"rec{k}": [] for k in (1, 5, 10, 50)}}
    for q in data["query"]:
        img = _pixels(q["image"]["bytes"])
        v = enc.vec(img, q["text"]) if q["text"] is not None else enc.vec(img)
        scores = (gallery.double() @ v.double()).numpy()
        assert np.unique(scores).size == scores.size  # tie-free
        ranked = [ids[j] for j in np.argsort(-scores)]
        rel = {d for d, g in qrels[q["id"]].items() if g > 0}
        want["ndcg"].append(_ndcg10(ranked, qrels[q["id"]]))
        for k in (1, 5, 10, 50):
            want[f"hit{k}"].append(float(bool(rel & set(ranked[:k]))))
            want[f"rec{k}"].append(len(rel & set(ranked[:k])) / len(rel))
    res = run_benchmark(HashEncoder(), _cfg(root / "mteb", tmp_path))
    assert res.metrics["per_query"]["ndcg_at_10"] == pytest.approx(want["ndcg"], abs=1e-12)
    assert res.metrics["ndcg"]["10"]["mean"] == pytest.approx(np.mean(want["ndcg"]))
    for k in (1, 5, 10, 50):
        assert res.metrics["hit_rate"][str(k)]["mean"] == pytest.approx(np.mean(want[f"hit{k}"]))
        assert res.metrics["ir_recall"][str(k)]["mean"] == pytest.approx(
            np.mean(want[f"rec{k}"]))


def test_pos_cand_list_without_qrels_file_gives_gain_one(root, tmp_path):
    mb = _copy(root, tmp_path, "mbeir")
    (mb / "qrels" / "test" / "mbeir_synth_task7_test_qrels.txt").unlink()
    qfile = mb / "query" / "test" / "mbeir_synth_task7_test.jsonl"
    recs = [json.loads(line) for line in qfile.read_text().splitlines()]
    recs[0]["pos_cand_list"] = [{"did": d} for d in recs[0]["pos_cand_list"]]  # both forms
    qfile.write_text("".join(json.dumps(r) + "\n" for r in recs))
    graded = run_benchmark(HashEncoder(), _cfg(root / "mbeir", tmp_path))
    plain = run_benchmark(HashEncoder(), _cfg(mb, tmp_path))
    assert plain.metrics["hit_rate"] == graded.metrics["hit_rate"]
    assert plain.metrics["ir_recall"] == graded.metrics["ir_recall"]
    assert all(g == [1.0, 1.0] for g in plain.extra["gains"])
    assert {tuple(g) for g in graded.extra["gains"]} == {(2.0, 1.0)}


def test_queries_without_relevant_candidate_skipped_and_counted(root, tmp_path):
    mt = _copy(root, tmp_path, "mteb")
    first = _mteb(root)["query"][0]["id"]
    _rewrite(mt / "qrels-00000-of-00001.parquet",
             lambda rows: [{**r, "score": 0} if r["query-id"] == first else r for r in rows])
    res = run_benchmark(HashEncoder(), _cfg(mt, tmp_path))
    assert res.skipped["no_relevant"] == 1
    assert first not in res.metrics["query_ids"]
    _rewrite(mt / "qrels-00000-of-00001.parquet",
             lambda rows: [{**r, "score": -1} for r in rows])
    with pytest.raises(DataError, match="no query has a relevant candidate"):
        run_benchmark(HashEncoder(), _cfg(mt, tmp_path))


def test_unsupported_modalities_refused_before_encoding(root, tmp_path):
    mt = _copy(root, tmp_path, "mteb")
    _rewrite(mt / "query-00000-of-00001.parquet",
             lambda rows: [{**r, "modality": "text"} if i < 3 else r
                           for i, r in enumerate(rows)])
    model = Counting()
    with pytest.raises(DataError, match=r"query-00000-of-00001\.parquet: 3 queries have "
                       r"modality 'text' \(supported: image,text and image\)"):
        run_benchmark(model, _cfg(mt, tmp_path))
    mb = _copy(root, tmp_path, "mbeir")
    pool = mb / "cand_pool" / "local" / "mbeir_synth_task7_cand_pool.jsonl"
    recs = [json.loads(line) for line in pool.read_text().splitlines()]
    for r in recs[:2]:
        r["modality"] = "text,image"
    pool.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(DataError, match="2 candidates have modality 'image,text' "
                       r"\(supported: image\)"):
        run_benchmark(model, _cfg(mb, tmp_path))
    assert model.calls == 0


def test_malformed_inputs_name_the_file(root, tmp_path):
    mt = _copy(root, tmp_path, "mteb")
    corpus = mt / "corpus-00000-of-00001.parquet"
    pq.write_table(pq.read_table(corpus).drop(["id"]), corpus)
    with pytest.raises(DataError, match=r"corpus-00000-of-00001\.parquet: missing column\(s\) "
                       "'id' or '_id'"):
        run_benchmark(HashEncoder(), _cfg(mt, tmp_path))
    shutil.copy(root / "mteb" / "corpus-00000-of-00001.parquet", corpus)
    _rewrite(mt / "qrels-00000-of-00001.parquet",
             lambda rows: rows[:4] + [{**rows[4], "corpus-id": "9:nope"}] + rows[5:])
    with pytest.raises(DataError, match=r"qrels-00000-of-00001\.parquet row 4: corpus id "
                       "'9:nope' is not in the corpus"):
        run_benchmark(HashEncoder(), _cfg(mt, tmp_path))
    _rewrite(mt / "query-00000-of-00001.parquet", lambda rows: [])
    with pytest.raises(DataError, match=r"query-00000-of-00001\.parquet: no queries"):
        run_benchmark(HashEncoder(), _cfg(mt, tmp_path))

    mb = _copy(root, tmp_path, "mbeir")
    qfile = mb / "query" / "test" / "mbeir_synth_task7_test.jsonl"
    lines = qfile.read_text().splitlines()
    qfile.write_text("\n".join(lines[:2] + ['{"qid": "9:3", oops'] + lines[3:]) + "\n")
    with pytest.raises(DataError, match=r"mbeir_synth_task7_test\.jsonl line 3: malformed JSON"):
        run_benchmark(HashEncoder(), _cfg(mb, tmp_path))
    qfile.write_text("\n".join(lines[:1] + [json.dumps({"qid": "9:2"})] + lines[2:]) + "\n")
    with pytest.raises(DataError, match=r"line 2: missing key\(s\) \['query_modality', "
                       "'pos_cand_list'\\]"):
        run_benchmark(HashEncoder(), _cfg(mb, tmp_path))
    qfile.write_text("")
    with pytest.raises(DataError, match=r"mbeir_synth_task7_test\.jsonl: no queries"):
        run_benchmark(HashEncoder(), _cfg(mb, tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither MTEB parquet files"):
        run_benchmark(HashEncoder(), _cfg(tmp_path / "empty", tmp_path))


def test_missing_image_files_follow_max_missing(root, tmp_path):
    mb = _copy(root, tmp_path, "mbeir")
    qfile = mb / "query" / "test" / "mbeir_synth_task7_test.jsonl"
    plain = [json.loads(line) for line in qfile.read_text().splitlines()
             if json.loads(line)["query_modality"] == "image"][0]
    (mb / plain["query_img_path"]).unlink()
    with pytest.raises(DataError, match="1 image file.*missing.*--max-missing"):
        run_benchmark(HashEncoder(), _cfg(mb, tmp_path))
    res = run_benchmark(HashEncoder(), _cfg(mb, tmp_path, max_missing=1))
    assert res.skipped["missing_files"] == 1 and res.skipped["queries"] == 1
    assert plain["qid"] not in res.metrics["query_ids"]


def test_cli_synth_then_eval(tiny_clip, tmp_path):
    out = tmp_path / "set"
    assert main(["synth", "any2any", "--out", str(out)]) == 0
    assert (out / "mteb" / "qrels-00000-of-00001.parquet").is_file()
    assert (out / "mbeir" / "cand_pool" / "local").is_dir()
    assert main(["eval", "any2any", "--root", str(out / "mteb"), "--model", "test/tiny-clip",
                 "--out", str(tmp_path / "run"), "--workers", "0", "--bootstrap", "50",
                 "--cache-dir", str(tmp_path / "c")]) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["headline"]["name"] == "ndcg_at_10"
    assert 0.0 <= res["headline"]["mean"] <= 1.0
    assert set(res["metrics"]) >= {"hit_rate", "ir_recall", "ndcg", "per_query"}


def test_mteb_corrupt_and_null_image_cells_follow_max_missing(root, tmp_path):
    """Lazy parquet cells: a candidate whose bytes do not decode and one whose cell is null
    count as undecodable against --max-missing, named by file and row; below it they leave
    the gallery and the run goes on."""
    mt = _copy(root, tmp_path, "mteb")
    corpus = mt / "corpus-00000-of-00001.parquet"

    def damage(rows):
        rows[1]["image"] = b"not an image" if not isinstance(rows[1]["image"], dict) else \
            {**rows[1]["image"], "bytes": b"not an image"}
        rows[2]["image"] = None
        return rows

    _rewrite(corpus, damage)
    with pytest.raises(DataError, match=r"2 image file\(s\) missing or undecodable"):
        run_benchmark(HashEncoder(), _cfg(mt, tmp_path))
    res = run_benchmark(HashEncoder(), _cfg(mt, tmp_path, max_missing=2))
    assert res.skipped["undecodable_files"] == 2
    assert {e.rsplit(" ", 2)[-2:][1] for e in res.skipped["examples"]} >= {"1", "2"}
    assert all(str(corpus) in e for e in res.skipped["examples"])
