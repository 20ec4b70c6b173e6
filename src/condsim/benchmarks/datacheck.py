"""``condsim data check``: is a dataset on disk the benchmark as published?

Each benchmark's file holds its own facts (official files, official counts and where every
piece comes from) in a ``_check(cfg, progress) -> DataReport`` function, declared as its
spec's ``check``. This module holds what they share:

* :class:`DataReport`: counts (found vs the official count, with the count's source),
  issues (``missing`` / ``corrupt`` / ``duplicate`` / ``error``, each naming the file, the
  row or entry, the reason and where the missing piece comes from) and the verdict;
* :func:`check_images`: every image decoded in full by :func:`condsim.data.images.
  decode_image` on a thread pool, with a progress bar; missing files, truncated files and
  decompression bombs are reported with the reason; identical contents are found by digest;
* :func:`check_parquet_fragment`: a parquet file's footer and schema opened, the image
  column present and binary;
* :func:`render_report`: rich renderables for the CLI.

Exit codes (:meth:`DataReport.exit_code`):

* ``0`` complete: every file and image present and decodable, every official count met;
* ``1`` the benchmark runs, but not on the published set: an official count differs (e.g.
  fewer distractors, a synthetic set) or missing/corrupt images that the run would skip
  (within ``--max-missing``, or LRVS-F distractors);
* ``2`` the benchmark cannot run as published with this configuration: a missing or
  malformed annotation file, a duplicate the reader refuses, more missing/corrupt images
  than ``--max-missing`` allows, an unreadable parquet fragment, ...

``expect="any"`` (``--expect any``) reports count differences without letting them change
the verdict: a small but whole set (e.g. a synthetic one) then exits 0.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from condsim.errors import ConfigError, DataError
from condsim.progress import ProgressFactory

logger = logging.getLogger(__name__)

EXIT_COMPLETE = 0
EXIT_DIFFERS = 1
EXIT_CANNOT_RUN = 2
EXPECT_MODES = ("published", "any")
ISSUE_KINDS = ("error", "missing", "corrupt", "duplicate")
#: images decoded per thread-pool round (bounds the memory of in-flight bytes)
_CHUNK = 256


@dataclass
class Count:
    """One official count: what was found against what the official source publishes.

    ``expected`` is ``None`` when the count could not be verified from an official source
    (then only ``found`` is reported); ``found`` is ``None`` when the file could not be read.
    """

    name: str
    found: int | None
    expected: int | None
    source: str  # where ``expected`` comes from (URL / file), or why it is not verified
    note: str = ""

    @property
    def status(self) -> str:
        if self.found is None:
            return "unreadable"
        if self.expected is None:
            return "not verified"
        return "ok" if self.found == self.expected else "differs"


@dataclass
class Issue:
    """One problem: ``kind`` (missing | corrupt | duplicate | error), ``where`` (file, and
    the row or entry), ``reason``, ``source`` (where to get the file) and whether it stops
    the benchmark from running with this configuration (``blocking``)."""

    kind: str
    where: str
    reason: str
    source: str = ""
    blocking: bool = False


@dataclass
class DataReport:
    """What ``condsim data check <benchmark>`` found."""

    benchmark: str
    config: dict[str, Any]
    counts: list[Count] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images_checked: int = 0

    def count(self, name: str, found: int | None, expected: int | None, source: str,
              note: str = "") -> Count:
        """Add (and return) a :class:`Count`."""
        c = Count(name, found, expected, source, note)
        self.counts.append(c)
        return c

    def issue(self, kind: str, where: str, reason: str, source: str = "",
              blocking: bool = False) -> None:
        """Add an :class:`Issue`."""
        if kind not in ISSUE_KINDS:
            raise ValueError(f"issue kind must be one of {ISSUE_KINDS}, got {kind!r}")
        self.issues.append(Issue(kind, where, reason, source, blocking))

    def error(self, where: str, reason: str, source: str = "") -> None:
        """A blocking problem that is not about one image (unreadable file, bad layout)."""
        self.issue("error", where, reason, source, blocking=True)

    def of_kind(self, kind: str) -> list[Issue]:
        return [i for i in self.issues if i.kind == kind]

    def exit_code(self, expect: str = "published") -> int:
        """0 complete, 1 runs but differs from the published set, 2 cannot run (module
        docstring); ``expect="any"`` ignores count differences."""
        if expect not in EXPECT_MODES:
            raise ConfigError(f"--expect must be one of {EXPECT_MODES}, got {expect!r}")
        if any(i.blocking for i in self.issues) or any(c.status == "unreadable"
                                                        for c in self.counts):
            return EXIT_CANNOT_RUN
        if any(i.kind in ("missing", "corrupt") for i in self.issues):
            return EXIT_DIFFERS
        if expect == "published" and any(c.status == "differs" for c in self.counts):
            return EXIT_DIFFERS
        return EXIT_COMPLETE

    def verdict(self, expect: str = "published") -> str:
        code = self.exit_code(expect)
        if code == EXIT_CANNOT_RUN:
            return "cannot run as published: fix the blocking issues"
        if code == EXIT_DIFFERS:
            if any(i.kind in ("missing", "corrupt") for i in self.issues):
                return "runs, but not on the published set: some images are missing or corrupt"
            return "complete but not the published size: the counts differ from the official ones"
        if any(c.status == "differs" for c in self.counts):
            return "complete (counts differ from the official ones; --expect any)"
        if not any(c.expected is not None for c in self.counts):
            return "complete: every file and image present and decodable (no published " \
                "counts to compare)"
        return "complete: every file and image present and decodable, official counts met"

    def to_dict(self, expect: str = "published") -> dict[str, Any]:
        """The whole report as JSON-ready data."""
        return {
            "schema": "condsim.datacheck/1", "benchmark": self.benchmark,
            "config": self.config, "expect": expect, "exit_code": self.exit_code(expect),
            "verdict": self.verdict(expect), "images_checked": self.images_checked,
            "counts": [{**asdict(c), "status": c.status} for c in self.counts],
            "issues": {kind: [asdict(i) for i in self.of_kind(kind)] for kind in ISSUE_KINDS},
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------- images


@dataclass
class ImageItem:
    """One image to check: a file (``path``) or encoded bytes (``data``), named by
    ``where`` in the report (a path, or a file and row)."""

    where: str
    path: str | None = None
    data: bytes | None = None
    cell: Any = None  # a lazy cell with ``read_bytes()`` (a parquet image), read when checked


@dataclass
class ImageCheck:
    """Result of :func:`check_images`: missing items, corrupt items with the reason, and
    groups of items with identical contents."""

    checked: int
    missing: dict[str, str]  # where -> reason
    corrupt: dict[str, str]
    same_content: list[list[str]]


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _check_one(item: ImageItem) -> tuple[str, str | None, int]:
    """``(state, reason, digest)`` of one item; state ``ok`` | ``missing`` | ``corrupt``."""
    from PIL import Image

    from condsim.data.images import ImageDecodeError, decode_image

    data = item.data
    if data is None and item.cell is not None:
        try:
            data = item.cell.read_bytes()
        except DataError as exc:
            return "missing", str(exc), 0
    if data is None:
        if item.path is None:
            return "missing", "no image (null cell)", 0
        try:
            data = Path(item.path).read_bytes()
        except FileNotFoundError:
            return "missing", "no such file", 0
        except OSError as exc:
            return "corrupt", f"cannot read the file ({exc})", 0
    if not data:
        return "corrupt", "empty (0 bytes)", 0
    try:
        decode_image(data, item.where)
    except ImageDecodeError as exc:
        reason = str(exc)
        if "truncated" in reason.lower():
            reason = f"truncated file ({reason})"
        return "corrupt", reason, 0
    except Image.DecompressionBombError as exc:
        return "corrupt", f"decompression bomb ({exc})", 0
    except MemoryError:
        return "corrupt", "too large to decode (MemoryError)", 0
    return "ok", None, _digest(data)


def check_images(items: Iterable[ImageItem], *, total: int | None, progress: ProgressFactory,
                 threads: int, what: str) -> ImageCheck:
    """Decode every item in full on ``threads`` threads (one progress bar ``check <what>``
    of ``total`` items); missing and corrupt items are listed with the reason, items with
    identical bytes are grouped (by a 64-bit blake2b digest)."""
    bar = progress(f"check {what}", total)
    missing: dict[str, str] = {}
    corrupt: dict[str, str] = {}
    names: list[str] = []
    digests: list[int] = []
    checked = 0
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        chunk: list[ImageItem] = []

        def flush() -> None:
            nonlocal checked
            for item, (state, reason, dig) in zip(chunk, pool.map(_check_one, chunk),
                                                    strict=True):
                if state == "missing":
                    missing[item.where] = reason or "no such file"
                elif state == "corrupt":
                    corrupt[item.where] = reason or "cannot decode"
                else:
                    names.append(item.where)
                    digests.append(dig)
            checked += len(chunk)
            bar(len(chunk))
            chunk.clear()

        for item in items:
            chunk.append(item)
            if len(chunk) >= _CHUNK * max(1, threads):
                flush()
        if chunk:
            flush()
    return ImageCheck(checked, missing, corrupt, _same_content(names, digests))


def _same_content(names: Sequence[str], digests: Sequence[int]) -> list[list[str]]:
    """Groups (2+) of names whose digests are equal, in first-seen order."""
    if not digests:
        return []
    arr = np.asarray(digests, dtype=np.uint64)
    _, inverse, counts = np.unique(arr, return_inverse=True, return_counts=True)
    dup_groups = np.flatnonzero(counts > 1)
    if dup_groups.size == 0:
        return []
    wanted = set(dup_groups.tolist())
    groups: dict[int, list[str]] = {}
    for name, g in zip(names, inverse.tolist(), strict=True):
        if g in wanted:
            groups.setdefault(g, []).append(name)
    return list(groups.values())


def add_image_issues(report: DataReport, result: ImageCheck, *, source: str | Callable[[str],
                     str], max_bad: int | None, skip_note: str = "",
                     same_content: bool = True) -> None:
    """Record an :class:`ImageCheck` in ``report``: missing and corrupt items (blocking when
    together more than ``max_bad``; ``None``: never blocking, the run skips them) with the
    source of each file, and identical contents as non-blocking duplicates."""
    report.images_checked += result.checked
    bad = len(result.missing) + len(result.corrupt)
    blocking = max_bad is not None and bad > max_bad
    where_from = source if callable(source) else (lambda _: source)  # type: ignore[return-value]
    for name, reason in result.missing.items():
        report.issue("missing", name, reason, where_from(name), blocking)
    for name, reason in result.corrupt.items():
        report.issue("corrupt", name, reason, where_from(name), blocking)
    if blocking:
        report.notes.append(f"{bad} image(s) missing or undecodable, more than --max-missing "
                            f"{max_bad}: the run stops; restore them (or raise --max-missing "
                            "to skip their queries, which is no longer the published set)")
    elif bad and skip_note:
        report.notes.append(skip_note.format(n=bad))
    if same_content:
        for group in result.same_content:
            report.issue("duplicate", group[0], f"same bytes as {len(group) - 1} other "
                         f"image(s): {', '.join(group[1:4])}{' ...' if len(group) > 4 else ''}")


#: the note of images a run would skip (within ``--max-missing``)
SKIP_NOTE = ("{n} image(s) missing or undecodable, within --max-missing: their queries would "
             "be skipped")


def report_images(report: DataReport, items: Sequence[ImageItem], cfg: Any,
                  progress: ProgressFactory, *, what: str,
                  source: str | Callable[[str], str]) -> ImageCheck:
    """Decode every image of a composed-retrieval split (``cfg.num_workers`` threads) and add
    the missing / corrupt / duplicate ones to ``report``, blocking beyond
    ``cfg.max_missing``."""
    result = check_images(items, total=len(items), progress=progress,
                          threads=cfg.num_workers, what=what)
    add_image_issues(report, result, source=source, max_bad=cfg.max_missing,
                     skip_note=SKIP_NOTE)
    return result


def file_items(paths: Iterable[str]) -> list[ImageItem]:
    """Unique image paths, in first-seen order, as :class:`ImageItem`."""
    return [ImageItem(p, path=p) for p in dict.fromkeys(paths)]


# --------------------------------------------------------------------------- files


def require_file(report: DataReport, path: Path, what: str, source: str) -> bool:
    """``True`` when ``path`` is a file; else a blocking ``missing`` issue naming where the
    file comes from."""
    if path.is_file():
        return True
    report.issue("missing", str(path), f"no {what}", source, blocking=True)
    return False


def read_or_report(report: DataReport, where: str, source: str,
                   fn: Callable[[], Any]) -> Any:
    """``fn()``; a :class:`DataError` (a benchmark reader refusing the data) becomes a
    blocking ``error`` issue and ``None`` is returned."""
    try:
        return fn()
    except DataError as exc:
        report.error(where, str(exc), source)
        return None


def duplicate_values(values: Sequence[Any]) -> dict[Any, list[int]]:
    """Each repeated value with the positions where it occurs."""
    where: dict[Any, list[int]] = {}
    for i, v in enumerate(values):
        where.setdefault(v, []).append(i)
    return {v: pos for v, pos in where.items() if len(pos) > 1}


def json_keys_twice(path: Path) -> list[str]:
    """Keys that a JSON object file lists more than once (JSON parsers keep the last one
    silently); ``[]`` when the file is not readable JSON (the reader reports that)."""
    import json

    repeated: list[str] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                repeated.append(key)
            seen.add(key)
        return dict(pairs)

    try:
        json.loads(path.read_text(), object_pairs_hook=hook)
    except (OSError, ValueError):
        return []
    return repeated


def check_parquet_fragment(path: Path, image_column: str) -> tuple[int | None, str | None]:
    """``(rows, problem)`` of one parquet file: its footer and schema are read, and the
    image column must exist and hold binary data (``binary``, ``large_binary`` or an HF
    ``struct{bytes, path}``). ``rows`` is ``None`` when the file cannot be opened."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        return None, f"not a readable parquet file: footer/schema cannot be read ({exc})"
    if image_column not in schema.names:
        return int(meta.num_rows), (f"no image column {image_column!r} (columns: "
                                    f"{schema.names}); pass the name with --dist-img-col")
    typ = schema.field(image_column).type
    if pa.types.is_struct(typ):
        idx = typ.get_field_index("bytes")
        typ = typ.field(idx).type if idx >= 0 else typ
    if not (pa.types.is_binary(typ) or pa.types.is_large_binary(typ)
            or pa.types.is_binary_view(typ)):
        return int(meta.num_rows), (f"image column {image_column!r} has type "
                                    f"{schema.field(image_column).type}; expected binary JPEG "
                                    "bytes or a struct{bytes, path}")
    return int(meta.num_rows), None


# ------------------------------------------------------------------------ rendering


def _short(items: list[str], limit: int) -> str:
    return "\n".join(items[:limit]) + (f"\n... and {len(items) - limit} more"
                                       if len(items) > limit else "")


def render_report(report: DataReport, *, expect: str = "published", limit: int = 10
                  ) -> list[Any]:
    """Rich renderables: the counts table, one table per issue kind (at most ``limit`` rows
    each, then a count of the rest), the notes and the verdict with its exit code."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    out: list[Any] = []
    counts = Table(title=f"condsim data check {report.benchmark}")
    for col in ("what", "found", "official", "status", "official count from"):
        counts.add_column(col, overflow="fold")
    colour = {"ok": "green", "differs": "yellow", "not verified": "dim", "unreadable": "red"}
    for c in report.counts:
        counts.add_row(
            escape(c.name), "-" if c.found is None else f"{c.found:,}",
            "?" if c.expected is None else f"{c.expected:,}",
            f"[{colour[c.status]}]{c.status}[/]",
            escape(c.source + (f" ({c.note})" if c.note else "")))
    out.append(counts)
    out.append(Text(f"images checked (opened and decoded in full): {report.images_checked:,}"))
    for kind in ISSUE_KINDS:
        issues = report.of_kind(kind)
        if not issues:
            continue
        table = Table(title=f"{kind}: {len(issues):,}", title_justify="left")
        for col in ("where", "reason", "get it from", "blocks the run"):
            table.add_column(col, overflow="fold")
        for i in issues[:limit]:
            table.add_row(escape(i.where), escape(i.reason), escape(i.source),
                          "[red]yes[/]" if i.blocking else "no")
        if len(issues) > limit:
            table.add_row(f"... and {len(issues) - limit:,} more (--out report.json lists "
                          "all)", "", "", "")
        out.append(table)
    for note in report.notes:
        out.append(Text(f"note: {note}"))
    code = report.exit_code(expect)
    style = {0: "bold green", 1: "bold yellow", 2: "bold red"}[code]
    out.append(Text(f"{report.verdict(expect)} (exit {code})", style=style))
    return out


__all__ = ["Count", "DataReport", "EXIT_CANNOT_RUN", "EXIT_COMPLETE", "EXIT_DIFFERS",
           "EXPECT_MODES", "ImageCheck", "ImageItem", "Issue", "add_image_issues",
           "check_images", "check_parquet_fragment", "duplicate_values", "file_items",
           "json_keys_twice", "read_or_report", "render_report", "require_file"]
