"""Caption files for scene-graph parsing: CC3M's TSV or a parquet table, plus row filters.

Formats:

- ``.tsv`` (CC3M ``Train_GCC-training.tsv``): ``caption<TAB>url`` per line, no header, no
  quoting. Lines with another number of fields, lines that are not UTF-8 and lines with
  control characters are skipped and counted with their line numbers
  (:attr:`CaptionTable.skipped_lines`); blank lines are ignored.
- ``.parquet``: columns ``caption`` and ``image`` (a path or URL); other columns ignored.

``caption_id`` is the caption's 0-based row number among the rows read.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from condsim.errors import DataError

logger = logging.getLogger(__name__)

SKIP_REASONS = ("empty", "too_long", "non_english")
DEFAULT_MAX_CAPTION_CHARS = 1000

#: why a line of a TSV captions file is skipped at read time
BAD_LINE_REASONS = ("wrong_field_count", "invalid_utf8", "control_characters")
#: line numbers recorded per reason (the counts are exact)
MAX_BAD_LINES_LISTED = 100
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Function words: a Latin-script caption with several of the foreign ones and fewer English
# ones is taken as non-English. English homographs (die, on, no, as, ...) are left out.
_ENGLISH_WORDS = _wordset(
    "a an the of in on at to for with from by and or but is are was were be been being "
    "has have had this that these those its it his her their our your my into onto over "
    "under near behind between during after before while who which what as up down out "
    "off through about against along around"
)
_FOREIGN_WORDS = _wordset(
    # French
    "le la les des du un une et est dans sur avec pour pas que qui au aux ce cette sont "
    # German
    "der das und ist mit ein eine einer auf im von zu dem den nicht sich auch "
    # Spanish / Portuguese
    "el los las y en con por para una del al es un uma um os em na nas nos da das se "
    # Italian
    "il lo gli di che della delle nel nella sono "
    # Dutch
    "het een van op met voor niet zijn"
) - _ENGLISH_WORDS
_WORD_RE = re.compile(r"[^\W\d_]+", re.UNICODE)


@dataclass(frozen=True)
class CaptionTable:
    """The captions of one file: ``caption`` and ``image`` columns, plus read-time counts."""

    path: Path
    table: pa.Table
    #: lines skipped at read time (all reasons)
    malformed_rows: int
    #: reason -> ``{"count": n, "lines": [first 1-based line numbers]}`` of the skipped lines
    skipped_lines: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        """Number of rows read (``caption_id`` runs over ``range(num_rows)``)."""
        return self.table.num_rows


def read_captions(path: str | Path) -> CaptionTable:
    """Read a captions file (``.tsv`` or ``.parquet``, see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: captions file not found")
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".txt"):
        return _read_tsv(path)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path)
    raise DataError(
        f"{path}: unknown captions format {suffix!r}; use CC3M's .tsv (caption<TAB>url) "
        "or a .parquet file with columns caption, image"
    )


def _read_tsv(path: Path) -> CaptionTable:
    """Read ``caption<TAB>url`` lines; bad lines are skipped and counted by reason with their
    1-based line numbers (see :data:`BAD_LINE_REASONS`); blank lines are ignored."""
    captions: list[str] = []
    images: list[str] = []
    bad: dict[str, list[int]] = {r: [] for r in BAD_LINE_REASONS}
    counts = dict.fromkeys(BAD_LINE_REASONS, 0)

    def skip(reason: str, lineno: int) -> None:
        counts[reason] += 1
        if len(bad[reason]) < MAX_BAD_LINES_LISTED:
            bad[reason].append(lineno)

    try:
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                line = raw.rstrip(b"\r\n")
                if not line:
                    continue
                parts = line.split(b"\t")
                if len(parts) != 2:
                    skip("wrong_field_count", lineno)
                    continue
                try:
                    caption, image = parts[0].decode("utf-8"), parts[1].decode("utf-8")
                except UnicodeDecodeError:
                    skip("invalid_utf8", lineno)
                    continue
                if _CONTROL_RE.search(caption) or _CONTROL_RE.search(image):
                    skip("control_characters", lineno)
                    continue
                captions.append(caption)
                images.append(image)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the captions file ({exc.strerror or exc})") from exc
    total = sum(counts.values())
    for reason, n in counts.items():
        if n:
            logger.warning("%s: skipped %d line(s) with %s (lines %s%s)", path, n,
                           reason.replace("_", " "), ", ".join(map(str, bad[reason][:10])),
                           ", ..." if n > 10 else "")
    if not captions and total:
        raise DataError(
            f"{path}: no readable caption line ({total} bad: "
            + ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in counts.items() if n)
            + "); the file must be CC3M TSV: caption<TAB>url per line, UTF-8, no header")
    table = pa.table({"caption": pa.array(captions, pa.string()),
                      "image": pa.array(images, pa.string())})
    skipped = {r: {"count": counts[r], "lines": bad[r]} for r in BAD_LINE_REASONS if counts[r]}
    return CaptionTable(path, table, total, skipped)


def _read_parquet(path: Path) -> CaptionTable:
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from exc
    missing = [c for c in ("caption", "image") if c not in schema.names]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; a captions parquet needs columns "
            f"caption, image (found {schema.names})"
        )
    table = pq.read_table(path, columns=["caption", "image"])
    try:
        table = table.cast(pa.schema([("caption", pa.string()), ("image", pa.string())]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"{path}: columns caption and image must be strings ({exc})") from exc
    image_nulls = table.column("image").null_count
    if image_nulls:
        raise DataError(f"{path}: {image_nulls} row(s) have a null image; fill or drop them")
    table = table.set_column(0, "caption", pc.fill_null(table.column("caption"), ""))
    return CaptionTable(path, table, 0)


def skip_reason(caption: str, max_chars: int = DEFAULT_MAX_CAPTION_CHARS) -> str | None:
    """Why a caption is skipped (one of :data:`SKIP_REASONS`), or ``None`` to parse it.

    - ``empty``: nothing but whitespace;
    - ``too_long``: more than ``max_chars`` characters (CC3M captions are ~10 words; huge
      rows are scraping accidents and make the parser slow);
    - ``non_english`` (a heuristic, no language model): no letters at all, more than 30 %
      of the letters outside the Latin script, or a Latin-script caption with at least two
      common French/German/Spanish/Portuguese/Italian/Dutch function words and fewer
      English ones.
    """
    text = caption.strip()
    if not text:
        return "empty"
    if len(text) > max_chars:
        return "too_long"
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return "non_english"
    if sum(1 for c in letters if ord(c) > 0x24F) > 0.3 * len(letters):
        return "non_english"
    words = _WORD_RE.findall(text.lower())
    foreign = sum(1 for w in words if w in _FOREIGN_WORDS)
    if foreign >= 2 and foreign > sum(1 for w in words if w in _ENGLISH_WORDS):
        return "non_english"
    return None


def count_reasons(reasons: Iterable[str | None]) -> dict[str, int]:
    """Counts of each skip reason (all of :data:`SKIP_REASONS`, zeros included)."""
    counts = dict.fromkeys(SKIP_REASONS, 0)
    for r in reasons:
        if r is not None:
            counts[r] += 1
    return counts
