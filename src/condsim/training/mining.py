"""Scene graphs -> GeneCIS training triplets, vectorised and deterministic across shards.

The rules are those of the GeneCIS reference (``datasets/cc_3m_dataset.py``:
``CCConditionalDistractor`` + ``DeterministicDatasetWithConcreteness``). The scene-graph
table has one row per (caption, relation): ``(image, subject, relation, object)``.

- **Candidate subjects**: subjects seen in at least ``min_images_per_subject`` (5) distinct
  images and with at least ``min_objects_per_subject`` (2) distinct objects.
- Each triplet draws a **subject** with probability proportional to its number of distinct
  images, then a **reference** row uniformly among the subject's rows.
- **Target**: an object drawn uniformly among the subject's *other* distinct objects, then a
  row uniformly among the (subject, object) rows; redrawn while its image is the reference's
  image, at most ``max_target_tries`` (100) times. (The reference draws among *all* objects
  and rejects the reference's one: the accepted law is the same.) So reference and target
  share the subject and differ in (relation, object). **Condition** = ``"relation object"``
  of the target row.
- **Distractor** (a hard negative for text-only retrieval): a row with the target's object,
  drawn uniformly. Unlike the reference, which drew among *all* rows with that object (so
  the "distractor" could be the target itself, or another valid target), it must have a
  different subject and an image other than the reference's and the target's; when no such
  row exists (or none is found in ``max_distractor_tries`` draws) the distractor is null
  and the triplet is kept.
- **Concreteness** (with norms): the mean of the subject and object scores of the three rows
  (6 values, 4 without distractor; unrated entity = -1) must be *strictly greater* than
  ``min_concreteness`` (4.8 in the paper), else the whole sample is redrawn, at most
  ``max_tries`` (1000) times. The reference looped forever once its ``max_tries`` was hit
  (it only printed "difficult sample"); here the triplet is dropped and counted as a
  give-up. Without norms a sample whose target search failed is redrawn the same way (the
  reference emitted it with target = reference object).

Randomness: triplet ``k`` uses only the counter-based stream ``(seed, k, try, draw)``
(:mod:`condsim.training.rng`), and shard ``i`` of ``N`` mines the contiguous triplet range
``i``, so 1 shard and 8 shards + :func:`combine_shards` give identical triplets. Rows are put
in a canonical order first (by ``caption_id``, ``relation_index``; groups sorted by name), so
the result depends on the set of graph rows and the seed only.

Everything is array work (pyarrow encodes, numpy sorts, gathers and ``searchsorted``); the
only Python loops run over rejection *rounds*, each over all still-open triplets at once.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from condsim.errors import DataError
from condsim.io import atomic_write_json, file_digest
from condsim.training._io import (
    atomic_parquet_writer,
    check_shard_args,
    find_shards,
    json_digest,
    missing_shards_message,
    read_json,
    shard_range,
    shard_stats_path,
    shard_stem,
    utc_now,
)
from condsim.training.concreteness import load_concreteness, score_entities
from condsim.training.rng import below, index_keys, stream_key, uniforms
from condsim.training.scenegraph import GRAPHS_PREFIX

logger = logging.getLogger(__name__)

TRIPLETS_PREFIX = "triplets"
#: leading underscore: parquet readers (pyarrow.dataset, pandas.read_parquet) of the triplets
#: folder skip it, as they skip the shards' ``_<stem>.json`` stats
MANIFEST_NAME = "_manifest.json"
LEGACY_MANIFEST_NAME = "manifest.json"


def manifest_path(out_dir: Path) -> Path:
    """The manifest of ``out_dir`` (``_manifest.json``; ``manifest.json`` of older runs when
    only that one exists)."""
    current, legacy = out_dir / MANIFEST_NAME, out_dir / LEGACY_MANIFEST_NAME
    return legacy if legacy.exists() and not current.exists() else current
MANIFEST_SCHEMA = "condsim.triplets/1"
SHARD_SCHEMA = "condsim.triplets-shard/1"
PAPER_NUM_SAMPLES = 1_600_000
PAPER_MIN_CONCRETENESS = 4.8
_STREAM = "genecis-triplets/v1"

TRIPLET_SCHEMA = pa.schema(
    [
        ("triplet_index", pa.int64()),
        ("reference_image", pa.string()),
        ("reference_caption_id", pa.int64()),
        ("reference_relation", pa.string()),
        ("reference_object", pa.string()),
        ("target_image", pa.string()),
        ("target_caption_id", pa.int64()),
        ("subject", pa.string()),
        ("relation", pa.string()),
        ("object", pa.string()),
        ("condition", pa.string()),
        ("distractor_image", pa.string()),
        ("distractor_caption_id", pa.int64()),
        ("distractor_subject", pa.string()),
        ("distractor_condition", pa.string()),
        ("concreteness", pa.float32()),
        ("tries", pa.int32()),
    ]
)
"""One row per triplet. ``subject``/``relation``/``object`` are the target row's (the
reference row has the same subject); ``condition = relation + " " + object``; the
``distractor_*`` columns are null when no distractor exists; ``concreteness`` is null when
mining without norms; ``tries`` counts whole-sample draws (1 = first draw accepted)."""


@dataclass(frozen=True)
class MiningConfig:
    """The mining rules' parameters (defaults = the GeneCIS reference)."""

    seed: int = 0
    num_samples: int | None = None
    """Triplets to draw (the paper: 1.6M from CC3M); ``None`` = as many as there are rows of
    candidate subjects."""
    min_images_per_subject: int = 5
    min_objects_per_subject: int = 2
    min_concreteness: float = PAPER_MIN_CONCRETENESS
    """Used only with a norms file: keep samples whose mean concreteness is > this."""
    max_tries: int = 1000
    max_target_tries: int = 100
    max_distractor_tries: int = 100
    use_lemmas: bool = False
    """Group by lemmas (``dog``/``dogs`` one subject) instead of heads (the reference)."""

    def __post_init__(self) -> None:
        for name in ("max_tries", "max_target_tries", "max_distractor_tries",
                     "min_images_per_subject", "min_objects_per_subject"):
            if getattr(self, name) < 1:
                raise DataError(f"mining: {name} must be >= 1 (got {getattr(self, name)})")
        if self.min_objects_per_subject < 2:
            raise DataError("mining: min_objects_per_subject must be >= 2 (target needs "
                            "an object other than the reference's)")
        if self.num_samples is not None and self.num_samples < 0:
            raise DataError(f"mining: num_samples must be >= 0 (got {self.num_samples})")


# --------------------------------------------------------------------------- graph index


@dataclass
class GraphIndex:
    """The scene-graph rows, canonically ordered and grouped for vectorised sampling.

    Row arrays have one entry per row; ``order_s`` lists rows grouped by (subject, object)
    and ``order_o`` by (object, subject); ``*_start``/``*_count`` delimit each group.
    """

    caption_id: np.ndarray
    image_code: np.ndarray
    subject: np.ndarray
    object: np.ndarray
    pair: np.ndarray
    images: pa.Array
    subjects: pa.Array
    objects: pa.Array
    relations: pa.Array
    order_s: np.ndarray
    subj_start: np.ndarray
    subj_count: np.ndarray
    subj_images: np.ndarray
    subj_first_pair: np.ndarray
    subj_npairs: np.ndarray
    pair_start: np.ndarray
    pair_count: np.ndarray
    order_o: np.ndarray
    obj_start: np.ndarray
    obj_count: np.ndarray
    pair_obj_start: np.ndarray
    candidates: np.ndarray
    candidate_cum_images: np.ndarray
    dropped_rows: int

    @property
    def num_rows(self) -> int:
        """Number of (caption, relation) rows kept."""
        return len(self.subject)

    @property
    def candidate_rows(self) -> int:
        """Rows whose subject is a candidate (the default number of triplets)."""
        return int(self.subj_count[self.candidates].sum())

    def summary(self) -> dict[str, int]:
        """Sizes recorded in the outputs."""
        return {
            "rows": self.num_rows,
            "dropped_rows": self.dropped_rows,
            "images": len(self.images),
            "subjects": len(self.subjects),
            "objects": len(self.objects),
            "candidate_subjects": len(self.candidates),
            "candidate_rows": self.candidate_rows,
        }


def _codes(values: pa.ChunkedArray, sort: bool = True) -> tuple[np.ndarray, pa.Array]:
    """Codes into the distinct values, sorted when ids must not depend on row order."""
    uniq = pc.unique(values)
    if sort:
        uniq = uniq.take(pc.sort_indices(uniq))
    codes = pc.index_in(values, value_set=uniq)
    return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int64), uniq


def _group_bounds(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each run of equal values in a sorted array."""
    if len(sorted_keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return starts, np.diff(np.r_[starts, len(sorted_keys)])


def _exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts), np.int64)
    np.cumsum(counts[:-1], out=out[1:])
    return out


def build_index(table: pa.Table, config: MiningConfig) -> GraphIndex:
    """Group a scene-graph table (columns of :data:`~condsim.training.scenegraph.
    GRAPH_SCHEMA`) for mining; subject/relation/object are lower-cased and trimmed."""
    suffix = "_lemma" if config.use_lemmas else ""
    names = {"subject": "subject" + suffix, "relation": "relation" + suffix,
             "object": "object" + suffix}
    needed = ["caption_id", "relation_index", "image", *names.values()]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise DataError(f"scene graphs: missing column(s) {missing}; write them with "
                        "`condsim parse`")
    cols = {k: pc.utf8_lower(pc.utf8_trim_whitespace(table.column(v)))
            for k, v in names.items()}
    valid = pc.and_(
        pc.and_(pc.greater(pc.utf8_length(cols["subject"]), 0),
                pc.greater(pc.utf8_length(cols["object"]), 0)),
        pc.and_(pc.greater(pc.utf8_length(cols["relation"]), 0),
                pc.is_valid(table.column("image"))),
    )
    valid = pc.fill_null(valid, False)
    dropped = table.num_rows - pc.sum(valid).as_py() if table.num_rows else 0

    caption_id = np.asarray(table.column("caption_id").to_numpy(), np.int64)
    rel_idx = np.asarray(table.column("relation_index").to_numpy(), np.int64)
    keep = np.flatnonzero(np.asarray(valid.to_numpy(zero_copy_only=False), bool))
    canon = keep[np.lexsort((rel_idx[keep], caption_id[keep]))]
    take = pa.array(canon, pa.int64())
    subj_vals = cols["subject"].take(take)
    obj_vals = cols["object"].take(take)
    rel_vals = cols["relation"].take(take).combine_chunks()
    img_vals = table.column("image").take(take)

    subject, subjects = _codes(subj_vals)
    obj, objects = _codes(obj_vals)
    image_code, images = _codes(img_vals, sort=False)  # only compared for equality
    n_subj, n_obj, n_img = len(subjects), len(objects), len(images)

    # subject-major grouping: rows by (subject, object), canonical order inside a group
    key_s = subject * n_obj + obj
    order_s = np.argsort(key_s, kind="stable")
    pair_start, pair_count = _group_bounds(key_s[order_s])
    pair_key = key_s[order_s][pair_start]
    pair_subject, pair_object = pair_key // max(n_obj, 1), pair_key % max(n_obj, 1)
    pair = np.empty(len(order_s), np.int64)
    pair[order_s] = np.repeat(np.arange(len(pair_start)), pair_count)
    subj_count = np.bincount(subject, minlength=n_subj)
    subj_start = _exclusive_cumsum(subj_count)
    subj_npairs = np.bincount(pair_subject, minlength=n_subj)
    subj_first_pair = _exclusive_cumsum(subj_npairs)
    subj_img = np.sort(subject * n_img + image_code)  # sort + diff: 5x faster than unique
    subj_img = subj_img[np.r_[True, subj_img[1:] != subj_img[:-1]]] if len(subj_img) else subj_img
    subj_images = np.bincount(subj_img // max(n_img, 1), minlength=n_subj)

    # object-major grouping: rows by (object, subject); where each pair's block starts
    key_o = obj * n_subj + subject
    order_o = np.argsort(key_o, kind="stable")
    obj_count = np.bincount(obj, minlength=n_obj)
    obj_start = _exclusive_cumsum(obj_count)
    pair_rank = np.argsort(pair_object * n_subj + pair_subject, kind="stable")
    pair_obj_start = np.empty(len(pair_start), np.int64)
    pair_obj_start[pair_rank] = _exclusive_cumsum(pair_count[pair_rank])

    candidates = np.flatnonzero(
        (subj_images >= config.min_images_per_subject)
        & (subj_npairs >= config.min_objects_per_subject)
    )
    return GraphIndex(
        caption_id=caption_id[canon], image_code=image_code, subject=subject, object=obj,
        pair=pair, images=images, subjects=subjects, objects=objects, relations=rel_vals,
        order_s=order_s, subj_start=subj_start, subj_count=subj_count,
        subj_images=subj_images, subj_first_pair=subj_first_pair, subj_npairs=subj_npairs,
        pair_start=pair_start, pair_count=pair_count, order_o=order_o, obj_start=obj_start,
        obj_count=obj_count, pair_obj_start=pair_obj_start, candidates=candidates,
        candidate_cum_images=np.cumsum(subj_images[candidates]), dropped_rows=int(dropped),
    )


# --------------------------------------------------------------------------- sampling


@dataclass
class MinedRows:
    """Accepted triplets as row indices into a :class:`GraphIndex` (distractor -1 = none)."""

    triplet_index: np.ndarray
    reference: np.ndarray
    target: np.ndarray
    distractor: np.ndarray
    concreteness: np.ndarray
    tries: np.ndarray
    counts: dict[str, int]


def sample_triplets(
    index: GraphIndex,
    triplet_ids: np.ndarray,
    config: MiningConfig,
    row_scores: tuple[np.ndarray, np.ndarray] | None = None,
) -> MinedRows:
    """Mine the triplets numbered ``triplet_ids`` (see the module docstring for the rules).

    ``row_scores`` = per-row (subject, object) concreteness, or ``None`` for no filter.
    Returns the accepted triplets in ``triplet_ids`` order and the counts: ``attempts``
    (whole-sample draws), ``target_exhausted`` (draws whose target search hit
    ``max_target_tries``), ``concreteness_rejected`` (draws below the threshold),
    ``give_ups`` (triplets with no accepted draw in ``max_tries``), ``without_distractor``.
    """
    triplet_ids = np.asarray(triplet_ids, np.int64)
    n = len(triplet_ids)
    ref_out = np.full(n, -1, np.int64)
    tgt_out = np.full(n, -1, np.int64)
    dis_out = np.full(n, -1, np.int64)
    conc_out = np.full(n, np.nan)
    tries_out = np.zeros(n, np.int32)
    counts = {"attempts": 0, "target_exhausted": 0, "concreteness_rejected": 0}
    if n and len(index.candidates) == 0:
        raise DataError(
            f"scene graphs: no subject has >= {config.min_images_per_subject} images and "
            f">= {config.min_objects_per_subject} distinct objects ({index.num_rows} rows); "
            "there is nothing to mine"
        )
    keys_all = index_keys(stream_key(config.seed, _STREAM), triplet_ids)
    pending = np.arange(n)
    total_images = int(index.candidate_cum_images[-1]) if n else 0
    for t in range(config.max_tries):
        if len(pending) == 0:
            break
        keys = keys_all[pending]
        counts["attempts"] += len(pending)
        r = below(uniforms(keys, t, 0, 0), total_images)
        subj = index.candidates[np.searchsorted(index.candidate_cum_images, r, side="right")]
        ref = index.order_s[index.subj_start[subj]
                            + below(uniforms(keys, t, 0, 1), index.subj_count[subj])]
        tgt = _draw_targets(index, keys, subj, ref, t, config.max_target_tries)
        found = tgt >= 0
        counts["target_exhausted"] += int((~found).sum())
        dis = np.full(len(pending), -1, np.int64)
        dis[found] = _draw_distractors(index, keys[found], ref[found], tgt[found], t,
                                       config.max_distractor_tries)
        accept = found
        conc = np.full(len(pending), np.nan)
        if row_scores is not None:
            conc[found] = _mean_concreteness(row_scores, ref[found], tgt[found], dis[found])
            passes = np.zeros(len(pending), bool)
            passes[found] = conc[found] > config.min_concreteness
            counts["concreteness_rejected"] += int((found & ~passes).sum())
            accept = found & passes
        done = pending[accept]
        ref_out[done], tgt_out[done], dis_out[done] = ref[accept], tgt[accept], dis[accept]
        conc_out[done], tries_out[done] = conc[accept], t + 1
        pending = pending[~accept]
    ok = tgt_out >= 0
    counts["give_ups"] = int((~ok).sum())
    counts["triplets"] = int(ok.sum())
    counts["without_distractor"] = int((dis_out[ok] < 0).sum())
    if counts["give_ups"]:
        logger.warning("gave up on %d of %d triplets after %d tries each",
                       counts["give_ups"], n, config.max_tries)
    return MinedRows(triplet_ids[ok], ref_out[ok], tgt_out[ok], dis_out[ok], conc_out[ok],
                     tries_out[ok], counts)


def _draw_targets(index: GraphIndex, keys: np.ndarray, subj: np.ndarray, ref: np.ndarray,
                  t: int, max_tries: int) -> np.ndarray:
    """Target rows (-1 where none found): another object of the subject, another image."""
    tgt = np.full(len(keys), -1, np.int64)
    ref_pos = index.pair[ref] - index.subj_first_pair[subj]
    open_ = np.arange(len(keys))
    for a in range(max_tries):
        if len(open_) == 0:
            break
        k, s = keys[open_], subj[open_]
        j = below(uniforms(k, t, 1, a, 0), index.subj_npairs[s] - 1)
        j += j >= ref_pos[open_]
        p = index.subj_first_pair[s] + j
        rows = index.order_s[index.pair_start[p] + below(uniforms(k, t, 1, a, 1),
                                                         index.pair_count[p])]
        ok = index.image_code[rows] != index.image_code[ref[open_]]
        tgt[open_[ok]] = rows[ok]
        open_ = open_[~ok]
    return tgt


def _draw_distractors(index: GraphIndex, keys: np.ndarray, ref: np.ndarray, tgt: np.ndarray,
                      t: int, max_tries: int) -> np.ndarray:
    """Distractor rows (-1 where none): the target's object, another subject and image."""
    dis = np.full(len(keys), -1, np.int64)
    o, p = index.object[tgt], index.pair[tgt]
    avail = index.obj_count[o] - index.pair_count[p]
    offset = index.pair_obj_start[p] - index.obj_start[o]
    open_ = np.flatnonzero(avail > 0)
    for b in range(max_tries):
        if len(open_) == 0:
            break
        j = below(uniforms(keys[open_], t, 2, b, 0), avail[open_])
        j += np.where(j >= offset[open_], index.pair_count[p[open_]], 0)
        rows = index.order_o[index.obj_start[o[open_]] + j]
        img = index.image_code[rows]
        ok = (img != index.image_code[tgt[open_]]) & (img != index.image_code[ref[open_]])
        dis[open_[ok]] = rows[ok]
        open_ = open_[~ok]
    return dis


def _mean_concreteness(row_scores: tuple[np.ndarray, np.ndarray], ref: np.ndarray,
                       tgt: np.ndarray, dis: np.ndarray) -> np.ndarray:
    """Mean subject+object score over reference, target and (if any) distractor rows."""
    subj_score, obj_score = row_scores
    total = subj_score[ref] + obj_score[ref] + subj_score[tgt] + obj_score[tgt]
    has = dis >= 0
    d = np.where(has, dis, 0)
    total = total + np.where(has, subj_score[d] + obj_score[d], 0.0)
    return total / np.where(has, 6.0, 4.0)


def row_concreteness(index: GraphIndex, norms: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (subject, object) concreteness: one dictionary lookup per distinct name."""
    subj = score_entities(index.subjects.to_pylist(), norms)
    obj = score_entities(index.objects.to_pylist(), norms)
    return subj[index.subject], obj[index.object]


def check_concreteness_reachable(index: GraphIndex, row_scores: tuple[np.ndarray, np.ndarray],
                                 threshold: float) -> None:
    """Fail fast when no triplet can pass the concreteness filter (else every triplet
    would burn all its tries)."""
    cand_rows = np.isin(index.subject, index.candidates)
    best = max(float(row_scores[0][cand_rows].max(initial=-np.inf)),
               float(row_scores[1].max(initial=-np.inf)),
               float(row_scores[0].max(initial=-np.inf)))
    if best <= threshold:
        raise DataError(
            f"no triplet can have mean concreteness > {threshold}: the most concrete "
            f"subject/object scores {best}; check the norms file (columns Word, Conc.M) or "
            "lower --min-concreteness"
        )


def triplet_table(index: GraphIndex, rows: MinedRows, with_concreteness: bool) -> pa.Table:
    """The output table (:data:`TRIPLET_SCHEMA`) of mined row indices."""
    ref = pa.array(rows.reference, pa.int64())
    tgt = pa.array(rows.target, pa.int64())
    dis = pa.array(rows.distractor, pa.int64(), mask=rows.distractor < 0)

    def strings(values: pa.Array, codes: np.ndarray, rows_: pa.Array) -> pa.Array:
        return values.take(pa.array(codes, pa.int64()).take(rows_))

    relation, obj = index.relations.take(tgt), strings(index.objects, index.object, tgt)
    dis_relation = index.relations.take(dis)
    dis_object = strings(index.objects, index.object, dis)
    caption = pa.array(index.caption_id, pa.int64())
    columns = {
        "triplet_index": pa.array(rows.triplet_index, pa.int64()),
        "reference_image": strings(index.images, index.image_code, ref),
        "reference_caption_id": caption.take(ref),
        "reference_relation": index.relations.take(ref),
        "reference_object": strings(index.objects, index.object, ref),
        "target_image": strings(index.images, index.image_code, tgt),
        "target_caption_id": caption.take(tgt),
        "subject": strings(index.subjects, index.subject, tgt),
        "relation": relation,
        "object": obj,
        "condition": pc.binary_join_element_wise(relation, obj, " "),
        "distractor_image": strings(index.images, index.image_code, dis),
        "distractor_caption_id": caption.take(dis),
        "distractor_subject": strings(index.subjects, index.subject, dis),
        "distractor_condition": pc.binary_join_element_wise(dis_relation, dis_object, " "),
        "concreteness": pa.array(rows.concreteness.astype(np.float32),
                                 mask=np.full(len(rows.tries), not with_concreteness)),
        "tries": pa.array(rows.tries, pa.int32()),
    }
    return pa.table(columns, schema=TRIPLET_SCHEMA)


# --------------------------------------------------------------------------- files


GRAPH_COLUMNS = ("caption_id", "relation_index", "image", "subject", "relation", "object")


def read_graphs(graphs_dir: str | Path, use_lemmas: bool = False) -> tuple[pa.Table, dict]:
    """All finished graph shards of ``graphs_dir`` (all must be there) and a fingerprint
    of them (file names, sizes, row counts)."""
    graphs_dir = Path(graphs_dir)
    count, found = find_shards(graphs_dir, GRAPHS_PREFIX)
    if len(found) < count:
        raise DataError(missing_shards_message(graphs_dir, GRAPHS_PREFIX, count, found))
    columns = list(GRAPH_COLUMNS)
    if use_lemmas:
        columns = [c if c in ("caption_id", "relation_index", "image") else c + "_lemma"
                   for c in columns]
    tables, files = [], []
    for i in range(count):
        path = found[i]
        try:
            t = pq.read_table(path, columns=columns)
        except (pa.ArrowInvalid, KeyError, OSError) as exc:
            raise DataError(f"{path}: cannot read scene graphs ({exc}); needs columns "
                            f"{columns}; rerun `condsim parse` for this shard") from exc
        tables.append(t)
        files.append([path.name, path.stat().st_size, t.num_rows])
    table = pa.concat_tables(tables)
    return table, {"dir": str(graphs_dir), "shards": count, "digest": json_digest(files)}


@dataclass(frozen=True)
class MineShardResult:
    """One mined shard: its files, counts, and whether it was already done."""

    parquet: Path
    stats_path: Path
    stats: dict[str, Any]
    skipped_existing: bool


def triplet_shard_paths(out_dir: str | Path, shard_index: int, num_shards: int
                        ) -> tuple[Path, Path]:
    """``(parquet, json)`` paths of a triplets shard."""
    parquet = (Path(out_dir) / shard_stem(TRIPLETS_PREFIX, shard_index, num_shards)
               ).with_suffix(".parquet")
    return parquet, shard_stats_path(parquet)


class TripletMiner:
    """Loads the graphs (and norms) once, then mines any shard of the triplet range.

    A shard is mined in blocks of ``block_size`` triplets written as parquet row groups, so
    memory beyond the graph index does not grow with the shard size (the counter-based
    draws make the blocking invisible in the output).
    """

    def __init__(self, graphs_dir: str | Path, config: MiningConfig,
                 concreteness_path: str | Path | None = None,
                 block_size: int = 1 << 20) -> None:
        self.config = config
        self.block_size = max(1, int(block_size))
        table, graphs_info = read_graphs(graphs_dir, config.use_lemmas)
        self.index = build_index(table, config)
        del table
        if len(self.index.candidates) == 0:
            raise DataError(
                f"{graphs_dir}: no subject has >= {config.min_images_per_subject} images and "
                f">= {config.min_objects_per_subject} distinct objects "
                f"({self.index.num_rows} relation rows); there is nothing to mine"
            )
        self.row_scores = None
        concreteness_info: dict[str, Any] | None = None
        if concreteness_path is not None:
            norms = load_concreteness(concreteness_path)
            self.row_scores = row_concreteness(self.index, norms)
            check_concreteness_reachable(self.index, self.row_scores, config.min_concreteness)
            concreteness_info = {"path": str(concreteness_path),
                                 "sha256": file_digest(concreteness_path,
                                                       algorithm="sha256"),
                                 "min_concreteness": config.min_concreteness}
        else:
            logger.warning("mining without concreteness norms; the paper filtered triplets "
                           "with Brysbaert's norms at %s (--concreteness FILE)",
                           PAPER_MIN_CONCRETENESS)
        self.num_samples = (self.index.candidate_rows if config.num_samples is None
                            else config.num_samples)
        self.settings = {
            "config": asdict(self.config),
            "num_samples": self.num_samples,
            "graphs": graphs_info,
            "concreteness": concreteness_info,
            "stream": _STREAM,
        }
        self.settings_digest = json_digest(self.settings)
        logger.info("graphs %s: %s; mining %d triplets", graphs_info["dir"],
                    self.index.summary(), self.num_samples)

    def mine_shard(self, out_dir: str | Path, num_shards: int = 1, shard_index: int = 0
                   ) -> MineShardResult:
        """Mine shard ``shard_index`` of ``num_shards`` (skipped if already done)."""
        check_shard_args(num_shards, shard_index)
        parquet_path, stats_path = triplet_shard_paths(out_dir, shard_index, num_shards)
        if parquet_path.exists() and stats_path.exists():
            done = read_json(stats_path)
            if done.get("settings_digest") != self.settings_digest:
                raise DataError(
                    f"{stats_path}: this shard was mined with other settings (seed, rules, "
                    "graphs or norms); use another --out directory or delete the old shards"
                )
            logger.info("%s is already done, skipping", parquet_path)
            return MineShardResult(parquet_path, stats_path, done, True)
        start, end = shard_range(self.num_samples, num_shards, shard_index)
        counts: dict[str, int] = {}
        with atomic_parquet_writer(parquet_path, TRIPLET_SCHEMA) as writer:
            for a in range(start, max(end, start + 1), self.block_size):
                ids = np.arange(a, min(a + self.block_size, end), dtype=np.int64)
                rows = sample_triplets(self.index, ids, self.config, self.row_scores)
                writer.write_table(triplet_table(self.index, rows, self.row_scores is not None))
                for k, v in rows.counts.items():
                    counts[k] = counts.get(k, 0) + v
        stats = {
            "schema": SHARD_SCHEMA,
            "shard_index": shard_index,
            "num_shards": num_shards,
            "triplet_range": [start, end],
            "counts": counts,
            "index": self.index.summary(),
            "seed": self.config.seed,
            "settings": self.settings,
            "settings_digest": self.settings_digest,
            "created": utc_now(),
        }
        atomic_write_json(stats_path, stats)
        logger.info("wrote %s: %d triplets (%d give-ups)", parquet_path,
                    counts["triplets"], counts["give_ups"])
        return MineShardResult(parquet_path, stats_path, stats, False)


def mine(
    graphs_dir: str | Path,
    out_dir: str | Path,
    config: MiningConfig,
    num_shards: int = 1,
    shard_index: int | None = None,
    concreteness_path: str | Path | None = None,
) -> list[MineShardResult]:
    """Mine one shard, or with ``shard_index=None`` all shards and then combine them."""
    check_shard_args(num_shards, shard_index)
    miner = TripletMiner(graphs_dir, config, concreteness_path)
    indices = range(num_shards) if shard_index is None else [shard_index]
    results = [miner.mine_shard(out_dir, num_shards, i) for i in indices]
    if shard_index is None or num_shards == 1:
        combine_shards(out_dir)
    return results


def combine_shards(out_dir: str | Path) -> dict[str, Any]:
    """Check that all triplet shards of ``out_dir`` exist and agree; write the manifest.

    The manifest (``_manifest.json``) lists the shards in order with their row counts, the
    seed and settings, and the summed counts. Raises :class:`DataError` naming missing
    shards or shards mined with other settings.
    """
    out_dir = Path(out_dir)
    count, found = find_shards(out_dir, TRIPLETS_PREFIX)
    if len(found) < count:
        raise DataError(missing_shards_message(out_dir, TRIPLETS_PREFIX, count, found))
    shard_stats = [read_json(shard_stats_path(found[i])) for i in range(count)]
    first = shard_stats[0]
    totals: dict[str, int] = {}
    shards = []
    for i, stats in enumerate(shard_stats):
        if stats.get("settings_digest") != first.get("settings_digest"):
            raise DataError(
                f"{shard_stats_path(found[i])}: mined with other settings than "
                f"{shard_stats_path(found[0])} (seed, rules, graphs or norms differ); "
                "remine it with the same arguments"
            )
        rows = pq.read_metadata(found[i]).num_rows
        if rows != stats["counts"]["triplets"]:
            raise DataError(f"{found[i]}: {rows} rows but its JSON says "
                            f"{stats['counts']['triplets']}; delete both and remine the shard")
        for k, v in stats["counts"].items():
            totals[k] = totals.get(k, 0) + int(v)
        shards.append({"file": found[i].name, "rows": rows,
                       "triplet_range": stats["triplet_range"]})
    from condsim import __version__

    manifest = {
        "schema": MANIFEST_SCHEMA,
        "condsim_version": __version__,
        "seed": first["seed"],
        "num_samples": first["settings"]["num_samples"],
        "counts": totals,
        "index": first["index"],
        "settings": first["settings"],
        "settings_digest": first["settings_digest"],
        "columns": TRIPLET_SCHEMA.names,
        "num_shards": count,
        "shards": shards,
        "created": utc_now(),
    }
    atomic_write_json(out_dir / MANIFEST_NAME, manifest)
    (out_dir / LEGACY_MANIFEST_NAME).unlink(missing_ok=True)
    logger.info("%s: %d triplets in %d shard(s)", out_dir / MANIFEST_NAME,
                totals.get("triplets", 0), count)
    return manifest


def read_triplets(out_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    """All triplets of a combined output directory, in ``triplet_index`` order."""
    out_dir = Path(out_dir)
    found_manifest = manifest_path(out_dir)
    if not found_manifest.exists():
        raise DataError(f"{found_manifest}: not found; run `condsim mine --combine --out "
                        f"{out_dir}` once all shards are mined")
    manifest = read_json(found_manifest)
    tables = []
    for shard in manifest["shards"]:
        path = out_dir / shard["file"]
        if not path.exists():
            raise DataError(f"{path}: triplet shard listed in {found_manifest} is missing")
        tables.append(pq.read_table(path, columns=columns))
    return pa.concat_tables(tables)
