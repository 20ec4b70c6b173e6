"""Scene-graph parsing and GeneCIS triplet mining (condsim parse / condsim mine)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from condsim.cli.cmd_training import register
from condsim.errors import CondsimError, DataError
from condsim.io import atomic_write_json, atomic_write_parquet
from condsim.training import MiningConfig, combine_shards, mine, parse_shard, read_triplets
from condsim.training.captions import read_captions, skip_reason
from condsim.training.concreteness import load_concreteness, plural
from condsim.training.mining import (
    TripletMiner,
    build_index,
    sample_triplets,
    triplet_shard_paths,
)
from condsim.training.rng import index_keys, stream_key, uniforms
from condsim.training.scenegraph import (
    GRAPH_SCHEMA,
    INSTALL_HINT,
    ParserUnavailableError,
    graph_shard_paths,
    resolve_spacy_model,
)


def _spacy_model_or_skip() -> str:
    try:
        return resolve_spacy_model()
    except ParserUnavailableError as exc:
        pytest.skip(f"parse extra not installed: {exc}")


def graph_table(rows: list[tuple[int, str, str, str, str]]) -> pa.Table:
    """``(caption_id, image, subject, relation, object)`` rows -> a graphs table."""
    cols: dict[str, list] = {k: [] for k in GRAPH_SCHEMA.names}
    rel_idx: Counter[int] = Counter()
    for cid, image, sub, rel, obj in rows:
        cols["caption_id"].append(cid)
        cols["image"].append(image)
        cols["caption"].append(f"{sub} {rel} {obj}")
        cols["relation_index"].append(rel_idx[cid])
        rel_idx[cid] += 1
        for k, v in (("subject", sub), ("relation", rel), ("object", obj)):
            cols[k].append(v)
            cols[k + "_lemma"].append(v.rstrip("s"))
        cols["subject_attributes"].append([])
        cols["object_attributes"].append([])
    return pa.table(cols, schema=GRAPH_SCHEMA)


def write_graphs(directory: Path, table: pa.Table, shards: int = 1) -> Path:
    """Write ``table`` as ``shards`` graph shards (contiguous slices) with sidecars."""
    bounds = np.linspace(0, table.num_rows, shards + 1).astype(int)
    for i in range(shards):
        parquet, sidecar = graph_shard_paths(directory, i, shards)
        atomic_write_parquet(parquet, table.slice(bounds[i], bounds[i + 1] - bounds[i]),
                             compression="zstd")
        atomic_write_json(sidecar, {"shard_index": i})
    return directory


# A subject "dog" in 5 images: 4 x "on grass" (img1-4) and 1 x "with ball" (img5), so every
# triplet is forced up to the choice of the grass row. "boy with ball" and "cow on grass"
# are the only distractor rows. "cat" (4 images) and "man" (one object) are not candidates.
HAND_ROWS = [
    (1, "img1", "dog", "on", "grass"),
    (2, "img2", "dog", "on", "grass"),
    (3, "img3", "dog", "on", "grass"),
    (4, "img4", "dog", "on", "grass"),
    (5, "img5", "dog", "with", "ball"),
    (6, "img6", "boy", "with", "ball"),
    (7, "img7", "cow", "on", "grass"),
    *[(10 + i, f"c{i}", "cat", "on", obj) for i, obj in enumerate(["mat", "bed", "sofa", "mat"])],
    *[(20 + i, f"m{i}", "man", "on", "horse") for i in range(6)],
]
# (reference image, target image, condition, distractor image), worked out by hand
HAND_EXPECTED = {("img5", f"img{i}", "on grass", "img7") for i in range(1, 5)} | {
    (f"img{i}", "img5", "with ball", "img6") for i in range(1, 5)
}


def test_hand_made_graph_gives_the_hand_computed_triplets(tmp_path: Path) -> None:
    write_graphs(tmp_path / "g", graph_table(HAND_ROWS))
    mine(tmp_path / "g", tmp_path / "t", MiningConfig(seed=1, num_samples=2000))
    t = read_triplets(tmp_path / "t")
    got = list(zip(*(t.column(c).to_pylist() for c in
                     ("reference_image", "target_image", "condition", "distractor_image")),
                   strict=True))
    assert set(got) == HAND_EXPECTED
    assert set(t.column("subject").to_pylist()) == {"dog"}
    assert t.column("triplet_index").to_pylist() == list(range(2000))
    # reference row uniform among dog's 5 rows: 4/5 of references are "on grass"
    grass_refs = sum(1 for g in got if g[2] == "with ball") / len(got)
    assert abs(grass_refs - 0.8) < 0.04
    manifest = (tmp_path / "t" / "_manifest.json").read_text()
    assert '"seed": 1' in manifest and '"candidate_subjects": 1' in manifest


def test_default_num_samples_is_candidate_rows(tmp_path: Path) -> None:
    write_graphs(tmp_path / "g", graph_table(HAND_ROWS))
    miner = TripletMiner(tmp_path / "g", MiningConfig(seed=0))
    assert miner.num_samples == 5  # dog's rows


def _random_rows(seed: int, n_captions: int) -> list[tuple[int, str, str, str, str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_captions):
        for _ in range(int(rng.integers(1, 4))):
            rows.append((c, f"im{c}.jpg", f"s{min(int(rng.zipf(1.6)), 40)}",
                         ["on", "in", "with"][int(rng.integers(3))],
                         f"o{min(int(rng.zipf(1.4)), 60)}"))
    return rows


def test_same_triplets_for_any_shard_count_and_graph_order(tmp_path: Path) -> None:
    table = graph_table(_random_rows(0, 3000))
    write_graphs(tmp_path / "g1", table)
    shuffled = table.take(np.random.default_rng(5).permutation(table.num_rows))
    write_graphs(tmp_path / "g3", shuffled, shards=3)
    cfg = MiningConfig(seed=42)
    mine(tmp_path / "g1", tmp_path / "one", cfg)
    for i in range(8):  # as 8 separate jobs would, then combine
        mine(tmp_path / "g3", tmp_path / "eight", cfg, num_shards=8, shard_index=i)
    assert not (tmp_path / "eight" / "_manifest.json").exists()
    combine_shards(tmp_path / "eight")
    one, eight = read_triplets(tmp_path / "one"), read_triplets(tmp_path / "eight")
    assert one.num_rows > 1000
    assert one.equals(eight)
    TripletMiner(tmp_path / "g1", cfg, block_size=97).mine_shard(tmp_path / "blocks")
    combine_shards(tmp_path / "blocks")
    assert read_triplets(tmp_path / "blocks").equals(one)
    assert pq.ParquetFile(tmp_path / "blocks" / "triplets-00000-of-00001.parquet"
                          ).metadata.num_row_groups > 10
    mine(tmp_path / "g1", tmp_path / "seed7", MiningConfig(seed=7))
    other = read_triplets(tmp_path / "seed7")
    assert not other.column("target_image").equals(one.column("target_image"))


def test_rerun_skips_finished_shards_and_refuses_other_settings(tmp_path: Path) -> None:
    write_graphs(tmp_path / "g", graph_table(_random_rows(1, 400)))
    first = mine(tmp_path / "g", tmp_path / "t", MiningConfig(seed=3), num_shards=2)
    again = mine(tmp_path / "g", tmp_path / "t", MiningConfig(seed=3), num_shards=2)
    assert not any(r.skipped_existing for r in first)
    assert all(r.skipped_existing for r in again)
    with pytest.raises(DataError, match="other settings"):
        mine(tmp_path / "g", tmp_path / "t", MiningConfig(seed=4), num_shards=2, shard_index=0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), data_seed=st.integers(0, 1000))
def test_every_triplet_follows_the_rules(seed: int, data_seed: int) -> None:
    table = graph_table(_random_rows(data_seed, 150))
    cfg = MiningConfig(seed=seed)
    index = build_index(table, cfg)
    if len(index.candidates) == 0:
        return
    mined = sample_triplets(index, np.arange(300), cfg)
    ref, tgt, dis = mined.reference, mined.target, mined.distractor
    assert mined.counts["triplets"] + mined.counts["give_ups"] == 300
    assert np.all(index.subject[ref] == index.subject[tgt])
    assert np.all(np.isin(index.subject[ref], index.candidates))
    assert np.all(index.object[ref] != index.object[tgt])
    assert np.all(index.image_code[ref] != index.image_code[tgt])
    has = dis >= 0
    d = dis[has]
    assert np.all(index.object[d] == index.object[tgt[has]])
    assert np.all(index.subject[d] != index.subject[tgt[has]])
    assert np.all(index.image_code[d] != index.image_code[tgt[has]])
    assert np.all(index.image_code[d] != index.image_code[ref[has]])


def test_candidate_subject_rules() -> None:
    rows = [(i, f"a{i}", "dog", "on", "grass") for i in range(4)]  # 4 images only
    rows += [(9, "a9", "dog", "with", "ball")]  # 5th image -> candidate
    rows += [(20 + i, "same", "cat", "on", ["mat", "bed"][i % 2]) for i in range(8)]  # 1 image
    index = build_index(graph_table(rows), MiningConfig())
    assert index.subjects.take(pa.array(index.candidates)).to_pylist() == ["dog"]
    assert build_index(graph_table(rows[:4] + rows[5:]), MiningConfig()).candidates.size == 0


def write_norms(path: Path, words: dict[str, float], delimiter: str = ",") -> Path:
    lines = [delimiter.join(["Word", "Bigram", "Conc.M", "Conc.SD"])]
    lines += [delimiter.join([w, "0", str(s), "1.0"]) for w, s in words.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


NORMS = {"dog": 4.9, "grass": 4.9, "ball": 5.0, "boy": 4.8, "cow": 5.0, "idea": 1.5,
         "truth": 1.6, "mat": 4.9}


def test_concreteness_norms_file(tmp_path: Path) -> None:
    csv = load_concreteness(write_norms(tmp_path / "n.csv", NORMS))
    tsv = load_concreteness(write_norms(tmp_path / "n.txt", NORMS, delimiter="\t"))
    assert csv == tsv
    assert csv["dogs"] == csv["dog"] == 4.9 and csv["ideas"] == 1.5
    assert [plural(w) for w in ("box", "berry", "day", "man", "hot dog")] == [
        "boxes", "berries", "days", "men", "hot dogs"]
    (tmp_path / "bad.csv").write_text("word,concreteness\ndog,5\n")
    with pytest.raises(DataError, match=r"Conc\.M"):
        load_concreteness(tmp_path / "bad.csv")


def test_concreteness_filter(tmp_path: Path) -> None:
    # "idea" shares dog's images budget but its triplets are abstract: filtered out
    rows = list(HAND_ROWS)
    rows += [(40 + i, f"i{i}", "idea", "of", ["truth", "mat"][i % 2]) for i in range(6)]
    write_graphs(tmp_path / "g", graph_table(rows))
    norms = write_norms(tmp_path / "norms.csv", NORMS)
    cfg = MiningConfig(seed=0, num_samples=500, min_concreteness=4.8)
    mine(tmp_path / "g", tmp_path / "t", cfg, concreteness_path=norms)
    t = read_triplets(tmp_path / "t")
    assert set(t.column("subject").to_pylist()) == {"dog"}
    conc = t.column("concreteness").to_numpy()
    assert np.all(conc > 4.8)
    # dog(4.9) grass(4.9) + dog ball(5.0) + boy(4.8) ball / cow(5.0) grass, mean of 6 values
    expected = {round((4.9 * 3 + 5.0 * 2 + 4.8) / 6, 4), round((4.9 * 4 + 5.0 * 2) / 6, 4)}
    assert {round(float(c), 4) for c in conc} <= expected
    text = (tmp_path / "t" / "_manifest.json").read_text()
    assert '"concreteness_rejected"' in text and '"sha256"' in text
    unfiltered = mine(tmp_path / "g", tmp_path / "u", MiningConfig(seed=0, num_samples=500))
    assert unfiltered[0].stats["counts"]["concreteness_rejected"] == 0
    assert "idea" in set(read_triplets(tmp_path / "u").column("subject").to_pylist())


def test_unreachable_concreteness_fails_fast(tmp_path: Path) -> None:
    write_graphs(tmp_path / "g", graph_table(HAND_ROWS))
    norms = write_norms(tmp_path / "n.csv", {"dog": 2.0, "grass": 3.0})
    with pytest.raises(DataError, match="min-concreteness"):
        TripletMiner(tmp_path / "g", MiningConfig(min_concreteness=4.8), norms)


def test_give_ups_are_bounded_and_counted() -> None:
    # dog on grass in img1..img5 and dog with ball only in img1: a reference "grass@img1"
    # has no target in another image -> its draw fails after max_target_tries.
    rows = [(i, f"img{i}", "dog", "on", "grass") for i in range(1, 6)]
    rows.append((1, "img1", "dog", "with", "ball"))
    index = build_index(graph_table(rows), MiningConfig())
    once = MiningConfig(seed=0, max_tries=1, max_target_tries=5)
    mined = sample_triplets(index, np.arange(3000), once)
    c = mined.counts
    assert c["give_ups"] == c["target_exhausted"] and c["triplets"] + c["give_ups"] == 3000
    assert abs(c["give_ups"] / 3000 - 1 / 6) < 0.03
    retried = sample_triplets(index, np.arange(3000), MiningConfig(seed=0))
    assert retried.counts["give_ups"] == 0 and retried.counts["triplets"] == 3000
    # threshold reachable word by word but by no triplet: every triplet gives up
    scores = (np.full(index.num_rows, 5.0),
              np.where(index.object == index.objects.index("ball").as_py(), 1.0, 5.0))
    hopeless = MiningConfig(seed=0, min_concreteness=4.9, max_tries=20)
    gave_up = sample_triplets(index, np.arange(200), hopeless, scores).counts
    assert gave_up["give_ups"] == 200 and gave_up["triplets"] == 0
    assert gave_up["attempts"] == 200 * 20


def test_counter_based_draws_do_not_depend_on_the_batch() -> None:
    key = stream_key(0, "x")
    all_keys = index_keys(key, np.arange(1000))
    part = index_keys(key, np.arange(500, 510))
    assert np.array_equal(uniforms(all_keys, 3, 1)[500:510], uniforms(part, 3, 1))
    u = uniforms(all_keys, 0)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.03
    assert not np.array_equal(u, uniforms(all_keys, 1))


def test_combine_names_the_missing_shard(tmp_path: Path) -> None:
    write_graphs(tmp_path / "g", graph_table(_random_rows(2, 300)))
    for i in (0, 1, 2, 4, 5, 6, 7):
        mine(tmp_path / "g", tmp_path / "t", MiningConfig(seed=0), num_shards=8, shard_index=i)
    with pytest.raises(DataError, match=r"triplets-00003-of-00008\.parquet"):
        combine_shards(tmp_path / "t")
    # a shard whose sidecar is missing was killed mid-way: also reported
    triplet_shard_paths(tmp_path / "t", 5, 8)[1].unlink()
    with pytest.raises(DataError, match=r"00003-of-00008\.parquet, triplets-00005-of-00008"):
        combine_shards(tmp_path / "t")


def test_missing_graph_shard_is_named(tmp_path: Path) -> None:
    write_graphs(tmp_path / "g", graph_table(HAND_ROWS), shards=3)
    graph_shard_paths(tmp_path / "g", 1, 3)[0].unlink()
    with pytest.raises(DataError, match=r"graphs-00001-of-00003\.parquet"):
        mine(tmp_path / "g", tmp_path / "t", MiningConfig())


# --------------------------------------------------------------------------- captions


def test_skip_reasons() -> None:
    assert skip_reason("a dog on the grass") is None
    assert skip_reason("actor attends the premiere of the film") is None
    assert skip_reason("Dia de los Muertos parade in the city") is None
    assert skip_reason("   ") == "empty"
    assert skip_reason("word " * 300) == "too_long"
    assert skip_reason("un chien sur la plage avec une balle") == "non_english"
    assert skip_reason("ein Hund mit einem Ball auf der Wiese") == "non_english"
    assert skip_reason("一只狗在海滩上") == "non_english"
    assert skip_reason("12345 !!!") == "non_english"


CAPTIONS = [
    "a dog on the grass", "a dog with a ball", "a dog on the sofa", "a dog in the car",
    "a dog on the beach", "a dog with a stick", "a cat on the table", "a cat on the bed",
    "a boy with a ball", "a woman is playing the piano in the room",
]


def write_tsv(path: Path) -> Path:
    lines = [f"{c}\thttp://img/{i}.jpg" for i, c in enumerate(CAPTIONS)]
    lines += ["\thttp://img/empty.jpg", "  \thttp://img/blank.jpg",
              "un chien sur la plage avec une balle\thttp://img/fr.jpg",
              ("a dog " * 400) + "\thttp://img/huge.jpg",
              "no tab on this line"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_captions_formats(tmp_path: Path) -> None:
    tsv = read_captions(write_tsv(tmp_path / "c.tsv"))
    assert tsv.num_rows == len(CAPTIONS) + 4 and tsv.malformed_rows == 1
    pq.write_table(pa.table({"caption": ["a", None], "image": ["x", "y"], "extra": [1, 2]}),
                   tmp_path / "c.parquet")
    assert read_captions(tmp_path / "c.parquet").table.column("caption").to_pylist() == ["a", ""]
    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="caption, image"):
        read_captions(tmp_path / "bad.parquet")
    (tmp_path / "c.json").write_text("[]")
    with pytest.raises(DataError, match="unknown captions format"):
        read_captions(tmp_path / "c.json")


def test_parse_captions_counts_skips_and_resumes(tmp_path: Path) -> None:
    _spacy_model_or_skip()
    tsv = write_tsv(tmp_path / "c.tsv")
    r0 = parse_shard(tsv, tmp_path / "g", num_shards=2, shard_index=0)
    r1 = parse_shard(tsv, tmp_path / "g", num_shards=2, shard_index=1)
    counts = Counter(r0.stats["counts"]) + Counter(r1.stats["counts"])
    assert counts["captions"] == len(CAPTIONS) + 4
    assert counts["empty"] == 2 and counts["non_english"] == 1 and counts["too_long"] == 1
    assert counts["parsed"] == len(CAPTIONS)
    assert r0.stats["captions_file_malformed_rows"] == 1
    graphs = pa.concat_tables([pq.read_table(r0.parquet), pq.read_table(r1.parquet)])
    triples = set(zip(*(graphs.column(c).to_pylist() for c in ("subject", "relation", "object")),
                      strict=True))
    assert {("dog", "on", "grass"), ("dog", "with", "ball"), ("woman", "playing", "piano"),
            ("woman", "in", "room")} <= triples
    assert graphs.column("caption_id").to_pylist() == sorted(graphs.column("caption_id")
                                                             .to_pylist())
    mtime = r0.parquet.stat().st_mtime_ns
    again = parse_shard(tsv, tmp_path / "g", num_shards=2, shard_index=0)
    assert again.skipped_existing and r0.parquet.stat().st_mtime_ns == mtime
    # parquet input, one shard: same rows as the two TSV shards
    pq.write_table(read_captions(tsv).table, tmp_path / "c.parquet")
    whole = parse_shard(tmp_path / "c.parquet", tmp_path / "gp")
    assert pq.read_table(whole.parquet).equals(graphs)


def test_parse_with_two_worker_processes_gives_the_same_rows(tmp_path: Path) -> None:
    _spacy_model_or_skip()
    tsv = write_tsv(tmp_path / "c.tsv")
    one = parse_shard(tsv, tmp_path / "one", workers=1)
    two = parse_shard(tsv, tmp_path / "two", workers=2, chunk_size=3)
    assert pq.read_table(two.parquet).equals(pq.read_table(one.parquet))
    assert two.stats["counts"] == one.stats["counts"]


def test_missing_parser_pieces_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ParserUnavailableError, match="pip install"):
        resolve_spacy_model("en_no_such_model_xyz")
    monkeypatch.setitem(sys.modules, "sng_parser", None)  # makes the import fail
    with pytest.raises(ParserUnavailableError) as info:
        resolve_spacy_model()
    assert INSTALL_HINT in str(info.value) and "scenegraphparser" in str(info.value)


# --------------------------------------------------------------------------- CLI


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app, typer.Typer(), typer.Typer())
    return app


def _invoke(args: list[str]) -> object:
    return CliRunner().invoke(_app(), args, catch_exceptions=True)


def test_cli_parse_then_mine_then_combine(tmp_path: Path) -> None:
    _spacy_model_or_skip()
    tsv = write_tsv(tmp_path / "c.tsv")
    res = _invoke(["parse", "--captions", str(tsv), "--out", str(tmp_path / "g"),
                   "--shards", "2"])
    assert res.exit_code == 0, res.output
    for i in range(3):
        res = _invoke(["mine", "--graphs", str(tmp_path / "g"), "--out", str(tmp_path / "t"),
                       "--seed", "5", "--num-samples", "40", "--shards", "3",
                       "--shard-index", str(i)])
        assert res.exit_code == 0, res.output
    assert _invoke(["mine", "--combine", "--out", str(tmp_path / "t")]).exit_code == 0
    t = read_triplets(tmp_path / "t")
    assert t.num_rows == 40 and set(t.column("subject").to_pylist()) == {"dog"}
    assert all(c.split(" ")[-1] in {"grass", "ball", "sofa", "car", "beach", "stick"}
               for c in t.column("condition").to_pylist())


def test_cli_user_errors_are_condsim_errors(tmp_path: Path) -> None:
    res = _invoke(["mine", "--out", str(tmp_path / "t")])
    assert isinstance(res.exception, CondsimError) and "--graphs" in str(res.exception)
    res = _invoke(["parse", "--captions", str(write_tsv(tmp_path / "c.tsv")),
                   "--out", str(tmp_path / "g"), "--spacy-model", "en_no_such_model_xyz"])
    assert isinstance(res.exception, ParserUnavailableError)
    assert "pip install" in str(res.exception)
    res = _invoke(["mine", "--combine", "--out", str(tmp_path / "nothing")])
    assert isinstance(res.exception, DataError)


def test_lemmas_merge_singular_and_plural_subjects(tmp_path: Path) -> None:
    rows = [(i, f"a{i}", "dogs" if i % 2 else "dog", "on", ["grass", "sofa"][i % 3 == 0])
            for i in range(6)]
    write_graphs(tmp_path / "g", graph_table(rows))
    with pytest.raises(DataError, match="nothing to mine"):
        TripletMiner(tmp_path / "g", MiningConfig())  # heads: 3 images each
    miner = TripletMiner(tmp_path / "g", MiningConfig(use_lemmas=True))
    assert miner.index.subjects.to_pylist() == ["dog"] and miner.num_samples == 6


def test_no_relations_at_all_is_a_clear_error(tmp_path: Path) -> None:
    write_graphs(tmp_path / "g", graph_table([]))
    with pytest.raises(DataError, match="nothing to mine"):
        mine(tmp_path / "g", tmp_path / "t", MiningConfig())


def test_parquet_readers_read_the_triplets_folder(tmp_path: Path) -> None:
    """The manifest and the shards' stats start with '_', so pyarrow.dataset and
    pandas.read_parquet read the triplets folder as the triplets table (a manifest.json
    beside the shards made them fail)."""
    import pandas as pd
    import pyarrow.dataset as ds

    write_graphs(tmp_path / "g", graph_table(HAND_ROWS))
    mine(tmp_path / "g", tmp_path / "t", MiningConfig(seed=1, num_samples=500), num_shards=2)
    table = read_triplets(tmp_path / "t")
    assert table.num_rows == 500
    assert ds.dataset(tmp_path / "t").to_table().num_rows == 500
    assert len(pd.read_parquet(tmp_path / "t")) == 500
