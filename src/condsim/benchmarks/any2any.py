"""any2any: any composed-retrieval set in the layouts the ecosystem publishes (MTEB, M-BEIR).

Two layouts, auto-detected under ``--root`` (``layout`` forces one):

- **MTEB / HF hub parquet** (e.g. ``MRBench/mbeir_cirr_task7``, read by MTEB's retrieval
  loader): configs ``corpus``, ``query`` (or ``queries``) and ``qrels``, each as flat files
  ``<config>-*.parquet`` or a folder ``<config>/`` holding split subfolders
  (``qrels/test/0000.parquet``) or split-named files (``qrels/test.parquet``,
  ``qrels/test-00000-of-00001.parquet``). Corpus and query columns ``id`` (or ``_id``),
  ``modality`` (optional: inferred from the non-empty ``image``/``text`` cells), ``text``,
  ``image`` (binary, or the HF ``{bytes, path}`` struct); qrels ``query-id``/``corpus-id``
  (or ``query_id``/``corpus_id``) and ``score``.
- **M-BEIR JSONL** (TIGER-AI-Lab/UniIR): ``query/<split>/mbeir_<task>_<split>.jsonl``
  (``qid``, ``query_txt``, ``query_img_path``, ``query_modality``, ``pos_cand_list`` of ids or
  of ``{"did": ...}``), the candidate pool ``cand_pool/local/mbeir_<task>[_<split>]
  _cand_pool.jsonl`` (``did``, ``txt``, ``img_path``, ``modality``), image paths relative to
  the root, and optionally ``qrels/<split>/mbeir_<task>_<split>_qrels.txt`` (``qid 0 did
  score [task_id]``): when present it gives the graded relevance, else every
  ``pos_cand_list`` item has gain 1.

Queries are ``image,text`` (composed: image + condition text; ``text,image`` too) or
``image`` (image-only, encoded as a target); candidates are images. Any other modality is
refused before anything is encoded. Qrels scores are gains; a score ``<= 0`` is not
relevant; a query without a relevant candidate is skipped and counted
(``skipped.no_relevant``). Missing or undecodable images follow ``max_missing``.

Metrics, each the expected value over random orders of tied scores, with bootstrap CIs over
queries: hit rate@{1,5,10,50} (CIR "Recall@K": any relevant item in the top K), IR
recall@{1,5,10,50} (share of the relevant items in the top K, MTEB/pytrec_eval
``recall_K``) and nDCG@10 (trec_eval ``ndcg_cut_10``, gain = qrels score, MTEB's main
score).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from condsim.benchmarks.protocol import (
    CIRSplit,
    Item,
    MissingBudget,
    condition_runs_split,
    encode_split,
    failure_cases,
    make_result,
    open_cache,
    per_query_block,
    rank_split,
    reliance_metrics,
    summarize,
)
from condsim.benchmarks.spec import BenchmarkSpec, Pairing, SharedOptions, option
from condsim.data.crops import ImageRef
from condsim.data.lazy_images import LazyImage, ParquetImage, content_digest, stream_cells
from condsim.errors import DataError
from condsim.metrics.ndcg import expected_ir_recall_from_ranks, expected_ndcg_from_ranks
from condsim.metrics.recall import any_hit_from_counts
from condsim.models.base import require_condition_kind
from condsim.progress import ProgressFactory, no_progress
from condsim.registry import register_benchmark
from condsim.results.failures import parquet_ref
from condsim.results.run_result import RunResult

logger = logging.getLogger(__name__)

KS = (1, 5, 10, 50)
NDCG_KS = (10,)
LAYOUTS = ("auto", "mteb", "mbeir")
#: normalised modalities (comma-separated tokens, sorted) a query may have
QUERY_MODALITIES = {"image,text": "composed", "image": "image-only"}
CANDIDATE_MODALITY = "image"
_MTEB_CONFIGS = {"corpus": ("corpus",), "query": ("query", "queries"), "qrels": ("qrels",)}
_SHARD = re.compile(r"-\d{5}-of-\d{5}$")


@dataclass(frozen=True, kw_only=True)
class Any2AnyConfig(SharedOptions):
    root: str = option(path=True, help="Folder of the set: MTEB parquet (corpus/query/qrels) "
                       "or M-BEIR JSONL (query/<split>/, cand_pool/).")
    layout: str = option("auto", choices=LAYOUTS,
                         help="auto (detected from the files) | mteb | mbeir.")
    split: str = option("test", help="Split to evaluate when several exist (the only one "
                        "otherwise).")
    task: str | None = option(None, help="M-BEIR task name, e.g. cirr_task7 (needed when "
                              "query/<split>/ holds several files).")
    cand_pool: str | None = option(None, path=True,
                                   help="M-BEIR candidate pool JSONL (relative to --root; "
                                   "default: cand_pool/local/mbeir_<task>_cand_pool.jsonl).")
    query_block: int = option(1024, ge=1, help="Queries scored together.")
    gallery_block: int = option(8192, ge=1, help="Gallery rows read at a time.")


@dataclass
class _Set:
    """A set as read from either layout: candidates, queries and graded qrels by id."""

    label: str
    gallery: list[Item]
    gallery_ids: list[str]
    queries: list[Item]
    conditions: list[str | None]
    query_ids: list[str]
    qrels: dict[str, dict[str, float]]
    gallery_ref: Callable[[int], dict[str, Any]] | None = None
    query_ref: Callable[[int], dict[str, Any]] | None = None
    info: dict[str, Any] = field(default_factory=dict)


# --- shared checks ----------------------------------------------------------------------------

def _modality(value: Any) -> str:
    """``"Text, Image"`` -> ``"image,text"`` (tokens lower-cased, sorted, deduplicated)."""
    return ",".join(sorted({t.strip().lower() for t in str(value).split(",") if t.strip()}))


def _inferred(has_image: bool, has_text: bool) -> str:
    return ",".join(m for m, ok in (("image", has_image), ("text", has_text)) if ok)


def _refuse_modalities(where: str, what: str, modalities: list[str],
                       supported: tuple[str, ...]) -> None:
    """:class:`DataError` naming each unsupported modality and its count."""
    counts: dict[str, int] = {}
    for m in modalities:
        if m not in supported:
            counts[m or "none"] = counts.get(m or "none", 0) + 1
    if counts:
        parts = "; ".join(f"{n} {what} have modality {m!r}" for m, n in sorted(counts.items()))
        raise DataError(f"any2any: {where}: {parts} (supported: {' and '.join(supported)}); "
                        f"any2any evaluates image and image+text queries against image "
                        "candidates")


def _unique(where: str, ids: list[str], what: str) -> None:
    seen: set[str] = set()
    for i, x in enumerate(ids):
        if x in seen:
            raise DataError(f"{where} row {i}: duplicate {what} {x!r}; ids must be unique")
        seen.add(x)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _pick_split(where: str, groups: dict[str, list[Path]], split: str) -> tuple[str, list[Path]]:
    """The requested split, or the only one there is; else an error listing them."""
    if split in groups:
        return split, groups[split]
    if len(groups) == 1:
        (name, files), = groups.items()
        if name:
            logger.warning("%s: no split %r; using the only split, %r", where, split, name)
        return name or split, files
    raise DataError(f"{where}: no split {split!r} among {sorted(groups)}; pass --split NAME")


# --- MTEB / HF parquet ------------------------------------------------------------------------

def _mteb_groups(root: Path, names: tuple[str, ...]) -> tuple[str, dict[str, list[Path]]]:
    """``(config name, {split: files})`` of the first of ``names`` holding parquet files:
    flat ``<name>-*.parquet`` files (split unknown: ``""``) and ``<name>/`` folders (split =
    subfolder, or file name without its shard suffix)."""
    for name in names:
        groups: dict[str, list[Path]] = {}
        flat = sorted(root.glob(f"{name}-*.parquet")) + \
            ([root / f"{name}.parquet"] if (root / f"{name}.parquet").is_file() else [])
        if flat:
            groups[""] = flat
        folder = root / name
        if folder.is_dir():
            for p in sorted(folder.rglob("*.parquet")):
                rel = p.relative_to(folder)
                split = rel.parts[0] if len(rel.parts) > 1 else _SHARD.sub("", p.stem)
                groups.setdefault(split, []).append(p)
        if groups:
            return name, groups
    return names[0], {}


def _has_mteb(root: Path) -> bool:
    return any(_mteb_groups(root, names)[1] for names in _MTEB_CONFIGS.values())


def _read_parquet(path: Path, need: list[tuple[str, ...]], optional: tuple[str, ...] = ()
                  ) -> dict[str, list[Any]]:
    """The columns of ``path`` named by ``need`` (each a tuple of accepted spellings, the first
    one is the key) and the ``optional`` ones that exist; images (binary or HF struct) as
    bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from condsim.data.lrvsf import binary_values

    try:
        names = set(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read parquet ({exc})") from exc
    picked: dict[str, str] = {}
    missing = []
    for spellings in need:
        found = next((s for s in spellings if s in names), None)
        if found is None:
            missing.append(" or ".join(repr(s) for s in spellings))
        else:
            picked[spellings[0]] = found
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (columns: "
                        f"{sorted(names)})")
    picked.update({c: c for c in optional if c in names})
    try:
        table = pq.read_table(path, columns=sorted(set(picked.values())))
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read parquet ({exc})") from exc
    out: dict[str, list[Any]] = {}
    for key, col in picked.items():
        if key == "image":
            out[key] = binary_values(table.column(col), f"{path} column {col!r}")
        else:
            out[key] = table.column(col).to_pylist()
    return out


def _has_column(path: Path, name: str) -> bool:
    import pyarrow.parquet as pq

    return name in pq.read_schema(path).names


def _read_mteb_items(files: list[Path], what: str
                     ) -> tuple[list[str], list[ParquetImage | None], list[str | None],
                                list[str], list[tuple[Path, int]]]:
    """``(ids, images, texts, modalities, (file, row))`` of corpus or query files. The
    images are :class:`~condsim.data.lazy_images.ParquetImage` references (the column is
    streamed once for the digests; the bytes are read again only to decode), so memory does
    not grow with the corpus's image bytes."""
    ids: list[str] = []
    images: list[ParquetImage | None] = []
    texts: list[str | None] = []
    modalities: list[str] = []
    locs: list[tuple[Path, int]] = []
    for path in files:
        cols = _read_parquet(path, [("id", "_id")], ("text", "modality"))
        n = len(cols["id"])
        for i, x in enumerate(cols["id"]):
            if x is None:
                raise DataError(f"{path} row {i}: empty {what} id")
        img: list[ParquetImage | None] = (list(stream_cells(str(path), "image"))
                                          if _has_column(path, "image") else [None] * n)
        txt = [_text(t) for t in cols.get("text", [None] * n)]
        if "modality" in cols:
            mods = [_modality(m) for m in cols["modality"]]
        else:
            mods = [_inferred(b is not None, t is not None) for b, t in zip(img, txt, strict=True)]
        ids += [str(x) for x in cols["id"]]
        images += img
        texts += txt
        modalities += mods
        locs += [(path, i) for i in range(n)]
    return ids, images, texts, modalities, locs


def _read_mteb_qrels(files: list[Path]) -> Iterator[tuple[Path, int, str, str, float]]:
    for path in files:
        cols = _read_parquet(path, [("query-id", "query_id"), ("corpus-id", "corpus_id"),
                                    ("score",)])
        for i, (q, c, s) in enumerate(zip(cols["query-id"], cols["corpus-id"], cols["score"],
                                          strict=True)):
            if q is None or c is None or s is None:
                raise DataError(f"{path} row {i}: empty query-id, corpus-id or score")
            try:
                score = float(s)
            except (TypeError, ValueError):
                raise DataError(f"{path} row {i}: score {s!r} is not a number") from None
            yield path, i, str(q), str(c), score


def _named(images: list[ParquetImage | None], locs: list[tuple[Path, int]]
           ) -> list[ParquetImage]:
    """``images`` with each null cell as an empty one of its file and row (undecodable,
    counted against --max-missing and named by file and row like any other)."""
    empty = content_digest(b"")
    return [x if x is not None else ParquetImage(str(path), "image", row, empty)
            for x, (path, row) in zip(images, locs, strict=True)]


def read_mteb(cfg: Any) -> _Set:
    """The MTEB / HF parquet layout (module docstring)."""
    root = Path(cfg.root)
    files: dict[str, list[Path]] = {}
    used: dict[str, str] = {}
    for config, names in _MTEB_CONFIGS.items():
        name, groups = _mteb_groups(root, names)
        if not groups:
            raise DataError(f"{root}: no {config} parquet files (expected {names[0]}-*.parquet "
                            f"or {names[0]}/[<split>/]*.parquet; MTEB / HF hub layout)")
        used[config], files[config] = _pick_split(f"{root}/{name}", groups, cfg.split)
    where_c, where_q = str(files["corpus"][0]), str(files["query"][0])
    c_ids, c_img, _, c_mod, c_loc = _read_mteb_items(files["corpus"], "corpus")
    q_ids, q_img, q_txt, q_mod, q_loc = _read_mteb_items(files["query"], "query")
    if not q_ids:
        raise DataError(f"{where_q}: no queries")
    if not c_ids:
        raise DataError(f"{where_c}: empty corpus")
    _refuse_modalities(where_q, "queries", q_mod, tuple(QUERY_MODALITIES))
    _refuse_modalities(where_c, "candidates", c_mod, (CANDIDATE_MODALITY,))
    _unique(where_c, c_ids, "corpus id")
    _unique(where_q, q_ids, "query id")
    conditions = _conditions(where_q, q_mod, q_txt, q_ids)
    qrels = _collect_qrels(_read_mteb_qrels(files["qrels"]), set(q_ids), set(c_ids))
    return _Set(
        label=f"any2any {root.name} {used['query']}",
        gallery=_named(c_img, c_loc), gallery_ids=c_ids,
        queries=_named(q_img, q_loc), conditions=conditions,
        query_ids=q_ids, qrels=qrels,
        gallery_ref=lambda j: parquet_ref(c_loc[j][0], "image", c_loc[j][1]),
        query_ref=lambda i: parquet_ref(q_loc[i][0], "image", q_loc[i][1]),
        info={"layout": "mteb", "split": used["query"],
              "files": {k: [str(p.relative_to(root)) for p in v] for k, v in files.items()}})


def _conditions(where: str, modalities: list[str], texts: list[str | None], ids: list[str]
                ) -> list[str | None]:
    """Condition text of composed queries, ``None`` for image-only ones."""
    out: list[str | None] = []
    for i, (m, t) in enumerate(zip(modalities, texts, strict=True)):
        if m == "image,text" and t is None:
            raise DataError(f"{where} row {i} (query {ids[i]!r}): modality 'image,text' but "
                            "the text is empty")
        out.append(t if m == "image,text" else None)
    return out


def _collect_qrels(rows: Any, query_ids: set[str], corpus_ids: set[str]
                   ) -> dict[str, dict[str, float]]:
    """``{query id: {corpus id: score}}`` of ``(file, row, qid, did, score)`` rows, every id
    checked against the queries and the corpus."""
    qrels: dict[str, dict[str, float]] = {}
    for path, i, q, c, score in rows:
        if q not in query_ids:
            raise DataError(f"{path} row {i}: query id {q!r} is not in the query file(s)")
        if c not in corpus_ids:
            raise DataError(f"{path} row {i}: corpus id {c!r} is not in the corpus / candidate "
                            "pool; fix the qrels or point --root at the matching corpus")
        if c in qrels.setdefault(q, {}):
            raise DataError(f"{path} row {i}: duplicate judgement of ({q!r}, {c!r})")
        qrels[q][c] = score
    return qrels


# --- M-BEIR JSONL -----------------------------------------------------------------------------

def _has_mbeir(root: Path) -> bool:
    return (root / "cand_pool").is_dir() or any((root / "query").glob("*/*.jsonl"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file (blank lines skipped); errors name the file and line."""
    out = []
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path} line {n}: malformed JSON ({exc.msg})") from None
                if not isinstance(rec, dict):
                    raise DataError(f"{path} line {n}: expected a JSON object")
                rec["_line"] = n
                out.append(rec)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    return out


def _mbeir_files(cfg: Any) -> tuple[str, str, Path, Path, Path | None]:
    """``(split, task, query file, candidate pool, qrels file or None)``."""
    root = Path(cfg.root)
    qdir = root / "query"
    groups = {d.name: sorted(d.glob("*.jsonl")) for d in sorted(qdir.glob("*"))
              if d.is_dir() and any(d.glob("*.jsonl"))} if qdir.is_dir() else {}
    if not groups:
        raise DataError(f"{root}: no query/<split>/*.jsonl files (M-BEIR layout)")
    split, files = _pick_split(str(qdir), groups, cfg.split)
    if cfg.task:
        exact = qdir / split / f"mbeir_{cfg.task}_{split}.jsonl"
        files = [exact] if exact.is_file() else [f for f in files if cfg.task in f.stem]
        if len(files) != 1:
            raise DataError(f"{qdir / split}: {len(files)} query files match task {cfg.task!r}"
                            f" ({[f.name for f in files]}); expected mbeir_<task>_{split}.jsonl")
    elif len(files) > 1:
        raise DataError(f"{qdir / split}: {len(files)} query files "
                        f"({[f.name for f in files][:5]}); pass --task NAME (e.g. "
                        f"{_task_of(files[0], split)})")
    query_file = files[0]
    task = cfg.task or _task_of(query_file, split)
    if cfg.cand_pool:
        pool = root / cfg.cand_pool
        if not pool.is_file():
            raise DataError(f"{pool}: no such candidate pool file (--cand-pool)")
    else:
        local = root / "cand_pool" / "local"
        tried = [local / f"mbeir_{task}_{split}_cand_pool.jsonl",
                 local / f"mbeir_{task}_cand_pool.jsonl"]
        found = [p for p in tried if p.is_file()]
        every = sorted((root / "cand_pool").rglob("*.jsonl"))
        if found:
            pool = found[0]
        elif len(every) == 1:
            pool = every[0]
        else:
            raise DataError(f"{root / 'cand_pool'}: no candidate pool for task {task!r} "
                            f"(looked for {[p.name for p in tried]}; found "
                            f"{[str(p.relative_to(root)) for p in every][:5]}); pass "
                            "--cand-pool PATH")
    qrels = root / "qrels" / split / f"mbeir_{task}_{split}_qrels.txt"
    return split, task, query_file, pool, qrels if qrels.is_file() else None


def _task_of(query_file: Path, split: str) -> str:
    m = re.fullmatch(rf"mbeir_(.+)_{re.escape(split)}", query_file.stem)
    return m.group(1) if m else query_file.stem


def _did(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("did")
    return None if value is None or isinstance(value, (list, dict)) else str(value)


def _read_trec_qrels(path: Path) -> Iterator[tuple[Path, int, str, str, float]]:
    """``qid 0 did score [task_id]`` lines (UniIR's qrels files)."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 4:
                raise DataError(f"{path} line {n}: expected 'qid 0 did score [task_id]'")
            try:
                score = float(parts[3])
            except ValueError:
                raise DataError(f"{path} line {n}: score {parts[3]!r} is not a number") \
                    from None
            yield path, n, parts[0], parts[2], score


def read_mbeir(cfg: Any) -> _Set:
    """The M-BEIR JSONL layout (module docstring)."""
    root = Path(cfg.root)
    split, task, query_file, pool_file, qrels_file = _mbeir_files(cfg)
    pool = read_jsonl(pool_file)
    queries = read_jsonl(query_file)
    if not queries:
        raise DataError(f"{query_file}: no queries")
    if not pool:
        raise DataError(f"{pool_file}: empty candidate pool")
    for where, recs, keys in ((pool_file, pool, ("did", "modality")),
                              (query_file, queries, ("qid", "query_modality", "pos_cand_list"))):
        for r in recs:
            missing = [k for k in keys if k not in r]
            if missing:
                raise DataError(f"{where} line {r['_line']}: missing key(s) {missing}")
    q_mod = [_modality(r["query_modality"]) for r in queries]
    c_mod = [_modality(r["modality"]) for r in pool]
    _refuse_modalities(str(query_file), "queries", q_mod, tuple(QUERY_MODALITIES))
    _refuse_modalities(str(pool_file), "candidates", c_mod, (CANDIDATE_MODALITY,))
    for where, recs, key in ((pool_file, pool, "img_path"), (query_file, queries,
                                                             "query_img_path")):
        for r in recs:
            if not isinstance(r.get(key), str) or not r[key]:
                raise DataError(f"{where} line {r['_line']}: {key} must be an image path "
                                "relative to the root")
    c_ids = [str(r["did"]) for r in pool]
    q_ids = [str(r["qid"]) for r in queries]
    _unique(str(pool_file), c_ids, "did")
    _unique(str(query_file), q_ids, "qid")
    conditions = _conditions(str(query_file), q_mod, [_text(r.get("query_txt"))
                                                      for r in queries], q_ids)
    if qrels_file is not None:
        qrels = _collect_qrels(_read_trec_qrels(qrels_file), set(q_ids), set(c_ids))
    else:
        rows = []
        for r in queries:
            cands = r["pos_cand_list"]
            if not isinstance(cands, list):
                raise DataError(f"{query_file} line {r['_line']}: pos_cand_list must be a list")
            for c in cands:
                did = _did(c)
                if did is None:
                    raise DataError(f"{query_file} line {r['_line']}: pos_cand_list entries "
                                    "are ids or {\"did\": id}")
                rows.append((query_file, r["_line"], str(r["qid"]), did, 1.0))
        qrels = _collect_qrels(rows, set(q_ids), set(c_ids))
    files = {"query": [query_file], "cand_pool": [pool_file],
             "qrels": [qrels_file] if qrels_file else []}
    return _Set(
        label=f"any2any {task} {split}",
        gallery=[ImageRef(str(root / r["img_path"])) for r in pool], gallery_ids=c_ids,
        queries=[ImageRef(str(root / r["query_img_path"])) for r in queries],
        conditions=conditions, query_ids=q_ids, qrels=qrels,
        info={"layout": "mbeir", "split": split, "task": task,
              "files": {k: [str(p.relative_to(root)) for p in v] for k, v in files.items()}})


# --- evaluation -------------------------------------------------------------------------------

def detect_layout(cfg: Any) -> str:
    """``cfg.layout``, or the layout found under ``cfg.root`` (an error when both or none)."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (--root)")
    if cfg.layout != "auto":
        return str(cfg.layout)
    found = [name for name, has in (("mteb", _has_mteb(root)), ("mbeir", _has_mbeir(root)))
             if has]
    if len(found) == 1:
        return found[0]
    if found:
        raise DataError(f"{root}: holds both MTEB parquet and M-BEIR JSONL files; pass "
                        "--layout mteb or --layout mbeir")
    raise DataError(f"{root}: neither MTEB parquet files (corpus-*.parquet, query-*.parquet, "
                    "qrels-*.parquet or corpus/, query/, qrels/ folders) nor the M-BEIR "
                    "layout (query/<split>/*.jsonl, cand_pool/)")


def read_split(cfg: Any) -> tuple[CIRSplit, dict[str, Any]]:
    """The set as a :class:`CIRSplit` (relevant = qrels score > 0, best gain first, gains =
    the scores) and what was read: layout, split, files, queries without a relevant item."""
    data = read_mteb(cfg) if detect_layout(cfg) == "mteb" else read_mbeir(cfg)
    col = {c: j for j, c in enumerate(data.gallery_ids)}
    keep, relevant, gains = [], [], []
    for i, qid in enumerate(data.query_ids):
        rel = sorted(((s, col[c]) for c, s in data.qrels.get(qid, {}).items() if s > 0),
                     key=lambda p: (-p[0], p[1]))
        if rel:
            keep.append(i)
            relevant.append([c for _, c in rel])
            gains.append([s for s, _ in rel])
    n_skipped = len(data.query_ids) - len(keep)
    if not keep:
        raise DataError(f"{data.label}: no query has a relevant candidate (qrels score > 0)")
    if n_skipped:
        logger.warning("%s: %d queries without a relevant candidate (score > 0) skipped",
                       data.label, n_skipped)
    query_ref = data.query_ref
    split = CIRSplit(
        label=data.label, gallery=data.gallery,
        queries=[data.queries[i] for i in keep],
        conditions=[data.conditions[i] for i in keep],
        query_ids=[data.query_ids[i] for i in keep], relevant=relevant, gains=gains,
        gallery_ref=data.gallery_ref,
        query_ref=None if query_ref is None else (lambda i: query_ref(keep[i])))
    return split, {**data.info, "no_relevant": n_skipped}


def query_metrics(ranks: Any, gains: list[list[float]]) -> dict[str, tuple[np.ndarray, tuple]]:
    """Per-query ``hit_rate``, ``ir_recall`` and ``ndcg`` from the tie-safe ranks, each the
    expectation over random orders of tied scores. With ``R`` relevant items of gains
    ``g_r > 0``::

        hit@K    = P(min_r rank_r <= K)          (best relevant item's counts:
                                                  :func:`~condsim.metrics.recall.any_hit_from_counts`)
        recall@K = (1/R) sum_r P(rank_r <= K)    (MTEB / pytrec_eval ``recall_K``)
        nDCG@10  = E[sum_r g_r / log2(rank_r + 1) [rank_r <= 10]] / IDCG@10
        IDCG@10  = sum_{i <= min(10, R)} g_(i) / log2(i + 1)   (gains sorted descending)

    IR recall and nDCG come from every relevant item's tie group
    (:mod:`condsim.metrics.ndcg`). Returns ``{name: ((Q, len(ks)) values, ks)}``."""
    n_q = len(gains)
    hit = any_hit_from_counts(*ranks.best_counts(), KS)
    ir = np.zeros((n_q, len(KS)))
    ndcg = np.zeros((n_q, len(NDCG_KS)))
    for q in range(n_q):
        n = int(ranks.n_relevant[q])
        s, g, t = ranks.scores[q, :n], ranks.greater[q, :n], ranks.ties[q, :n]
        ir[q] = expected_ir_recall_from_ranks(s, g, t, KS)
        ndcg[q] = expected_ndcg_from_ranks(s, g, t, np.asarray(gains[q]), NDCG_KS)
    return {"hit_rate": (hit, KS), "ir_recall": (ir, KS), "ndcg": (ndcg, NDCG_KS)}


def evaluate(model: Any, cfg: Any, *, progress: ProgressFactory = no_progress) -> RunResult:
    """Score the set under ``cfg.root`` (module docstring)."""
    split, info = read_split(cfg)
    if any(c is not None for c in split.conditions):
        require_condition_kind(model, "text", "any2any")
    cache = open_cache(model, cfg)
    budget = MissingBudget(cfg.max_missing)
    enc = encode_split(model, cache, split, cfg, budget, progress)
    split = enc.split
    ranks = rank_split(enc, cfg, progress=progress)
    gains = split.gains or [[1.0] * len(r) for r in split.relevant]
    per_query = query_metrics(ranks, gains)
    n_composed = sum(c is not None for c in split.conditions)
    metrics: dict[str, Any] = {
        **summarize(per_query, seed=cfg.seed, n_resamples=cfg.n_bootstrap),
        "n_queries": len(split.queries), "n_composed": n_composed,
        "n_image_only": len(split.queries) - n_composed, "gallery_size": enc.gallery_size,
        **per_query_block({"ndcg": per_query["ndcg"]}, split.query_ids),
    }
    if cfg.condition_test and n_composed:  # the headline's per-query values: nDCG@10
        metrics["condition_reliance"] = reliance_metrics({"": condition_runs_split(
            model, cache, enc, ranks, cfg, progress,
            lambda r: query_metrics(r, gains)["ndcg"][0][:, 0])}, cfg, metric=SPEC.main_score)
    elif cfg.condition_test:
        metrics["condition_reliance"] = {"skipped": "every query is image-only: no condition "
                                         "to perturb"}
    return make_result(
        SPEC, model, cfg, metrics,
        protocol={"ks": list(KS), "ndcg_ks": list(NDCG_KS), "layout": info["layout"],
                  "split": info["split"], "task": info.get("task"), "files": info["files"],
                  "gain": "qrels score (score <= 0: not relevant)",
                  "tie_rule": "expected value over random orders of tied scores"},
        skipped={**budget.counts(), "queries": enc.skipped_queries,
                 "no_relevant": info["no_relevant"]},
        failures=failure_cases(split, ranks), cache=cache,
        extra={"gains": [list(map(float, g)) for g in gains]})


def _synthetic(out: Path, seed: int) -> dict[str, Any]:
    from condsim.synthetic.any2any import write_any2any

    return {"root": str(write_any2any(out, seed=seed) / "mteb")}


def _chance(result: RunResult) -> float:
    """nDCG@10 of a constant model, averaged over queries. Every one of the ``n`` candidates
    ties, so each is at each position with probability ``1/n``; with gains ``g_r``::

        E[DCG@10] = sum_r g_r * (1/n) * sum_{i <= min(10, n)} 1 / log2(i + 1)
        IDCG@10   = sum_{i <= min(10, R)} g_(i) / log2(i + 1)    (gains sorted descending)
    """
    n = int(result.metrics["gallery_size"])
    disc = [1.0 / np.log2(i + 1.0) for i in range(1, 11)]
    values = []
    for gains in result.extra["gains"]:
        ideal = sorted((g for g in gains if g > 0), reverse=True)[:10]
        idcg = sum(g * d for g, d in zip(ideal, disc, strict=False))
        dcg = sum(g for g in gains if g > 0) / n * sum(disc[:min(10, n)])
        values.append(dcg / idcg)
    return float(np.mean(values))


def _check(cfg: Any2AnyConfig, progress: ProgressFactory = no_progress) -> Any:
    """``condsim data check any2any``: the layout and files as the reader sees them (columns,
    ids, qrels, modalities), the counts found (any2any sets have no official counts), and
    every query and candidate image decoded."""
    from condsim.benchmarks.datacheck import (
        DataReport,
        ImageItem,
        read_or_report,
        report_images,
    )
    from condsim.data.crops import ImageRef

    report = DataReport("any2any", cfg.to_dict())
    source = "the dataset's own distribution (MTEB / HF hub repo, or M-BEIR)"
    read = read_or_report(report, str(cfg.root), source, lambda: read_split(cfg))
    if read is None:
        return report
    split, info = read
    report.count("queries with a relevant candidate", len(split.queries), None,
                 f"not verified: {info.get('layout', '?')} layout, no official count")
    report.count("candidates", len(split.gallery), None, "not verified: no official count")
    if info.get("no_relevant"):
        report.notes.append(f"{info['no_relevant']} queries have no relevant candidate "
                            "(qrels score > 0) and would be skipped")

    def item(x: Any, where: str) -> ImageItem:
        if isinstance(x, ImageRef):
            return ImageItem(x.path, path=x.path)
        if isinstance(x, LazyImage):
            return ImageItem(x.where, cell=x)
        return ImageItem(where, data=x)

    items = [item(x, f"candidate {j}") for j, x in enumerate(split.gallery)]
    items += [item(x, f"query {split.query_ids[i]}") for i, x in enumerate(split.queries)]
    seen: dict[str, ImageItem] = {it.where: it for it in items}
    report_images(report, list(seen.values()), cfg, progress, what="any2any images",
                  source=source)
    return report


SPEC = register_benchmark(BenchmarkSpec(
    name="any2any",
    description="Any composed-retrieval set in the MTEB parquet or M-BEIR JSONL layout: "
    "nDCG@10, hit rate@K, IR recall@K",
    main_score="ndcg_at_10", split="test", protocol_version="1",
    reference="https://github.com/embeddings-benchmark/mteb",
    dataset_type="any2any", dataset_name="any2any (MTEB / M-BEIR layout)",
    config=Any2AnyConfig, evaluate=evaluate, synthetic=_synthetic,
    pairing=Pairing("queries", "nDCG@10", "ndcg_at_10"), chance=_chance, check=_check,
))
