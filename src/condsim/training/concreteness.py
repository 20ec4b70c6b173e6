"""Word concreteness norms (Brysbaert, Warriner & Kuperman, 2014) for filtering triplets.

The file is the one the norms are distributed as (``Concreteness_ratings_Brysbaert_et_al_
BRM.txt``, tab-separated) or a CSV export of it: a header row with at least the columns
``Word`` and ``Conc.M`` (mean rating, 1 = abstract ... 5 = concrete). The delimiter (tab or
comma) is read from the header line.

As in the GeneCIS reference, words are lower-cased, each word's plural gets the word's
score, and an entity (a head such as ``"dog"`` or ``"hot dog"``) is looked up as a whole
string; an entity missing from the norms scores -1. Differences from the reference: the
plural is made by English spelling rules plus a list of common irregular nouns (the
reference used the ``inflect`` package), and a plural that is itself a rated word keeps its
own rating (the reference overwrote it with the singular's).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from condsim.errors import DataError

logger = logging.getLogger(__name__)

MISSING_SCORE = -1.0
WORD_COLUMN = "Word"
SCORE_COLUMN = "Conc.M"

_IRREGULAR_PLURALS = {
    "man": "men", "woman": "women", "child": "children", "person": "people",
    "foot": "feet", "tooth": "teeth", "goose": "geese", "mouse": "mice", "ox": "oxen",
    "leaf": "leaves", "knife": "knives", "wife": "wives", "life": "lives", "wolf": "wolves",
    "shelf": "shelves", "half": "halves", "calf": "calves", "loaf": "loaves",
    "thief": "thieves", "scarf": "scarves", "elf": "elves", "self": "selves",
    "sheep": "sheep", "deer": "deer", "fish": "fish", "aircraft": "aircraft",
    "series": "series", "species": "species", "cactus": "cacti", "fungus": "fungi",
    "potato": "potatoes", "tomato": "tomatoes", "hero": "heroes", "echo": "echoes",
    "volcano": "volcanoes", "mosquito": "mosquitoes", "torpedo": "torpedoes",
}


def plural(word: str) -> str:
    """English plural of a noun (of the last word of a multi-word entry)."""
    head, sep, last = word.rpartition(" ")
    if last in _IRREGULAR_PLURALS:
        p = _IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        p = last + "es"
    elif len(last) > 1 and last.endswith("y") and last[-2] not in "aeiou":
        p = last[:-1] + "ies"
    else:
        p = last + "s"
    return head + sep + p


def load_concreteness(path: str | Path) -> dict[str, float]:
    """Read a norms file into ``{lower-cased word or plural: mean concreteness}``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: concreteness norms file not found")
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline()
    delimiter = "\t" if "\t" in header else ","
    columns = [c.strip().strip('"') for c in header.rstrip("\r\n").split(delimiter)]
    missing = [c for c in (WORD_COLUMN, SCORE_COLUMN) if c not in columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing} (found {columns}); expected Brysbaert's "
            f"concreteness norms with columns {WORD_COLUMN} and {SCORE_COLUMN}"
        )
    try:
        table = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                include_columns=[WORD_COLUMN, SCORE_COLUMN],
                column_types={WORD_COLUMN: pa.string(), SCORE_COLUMN: pa.float64()},
                # the norms rate the word "null" (the reference worked around pandas' NaN)
                strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: cannot read the concreteness norms: {exc}") from exc
    table = table.filter(pc.is_valid(table.column(SCORE_COLUMN)))
    words = pc.utf8_lower(pc.utf8_trim_whitespace(table.column(WORD_COLUMN))).to_pylist()
    scores = table.column(SCORE_COLUMN).to_numpy()
    norms: dict[str, float] = {}
    for w, s in zip(words, scores, strict=True):
        if w:
            norms[w] = float(s)
    for w, s in list(norms.items()):
        norms.setdefault(plural(w), s)
    if not norms:
        raise DataError(f"{path}: no rated words found")
    logger.info("%s: %d rated words (with plurals: %d)", path, len(words), len(norms))
    return norms


def score_entities(entities: Iterable[str], norms: dict[str, float]) -> np.ndarray:
    """Concreteness of each entity string (whole-string lookup, -1 when not rated)."""
    return np.array([norms.get(e, MISSING_SCORE) for e in entities], dtype=np.float64)
