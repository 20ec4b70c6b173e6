"""Markdown helpers shared by the report summary and the leaderboard (GitHub-flavoured
pipe tables, safe cell text)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def md_cell(value: Any) -> str:
    """Cell text: ``None`` -> empty, pipes escaped, newlines flattened."""
    if value is None:
        return ""
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
             align: Sequence[str] | None = None) -> str:
    """A pipe table; ``align`` per column is ``"l"``, ``"r"`` or ``"c"`` (default left)."""
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    align = list(align or ["l"] * len(headers))
    lines = ["| " + " | ".join(md_cell(h) for h in headers) + " |",
             "|" + "|".join(marks.get(a, "---") for a in align) + "|"]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"markdown row has {len(row)} cells, header has {len(headers)}")
        lines.append("| " + " | ".join(md_cell(c) for c in row) + " |")
    return "\n".join(lines) + "\n"
