"""Aligned text tables for the terminal, like ``systemctl list-timers``: one place."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def table(
    rows: Sequence[Sequence[object]],
    headers: Sequence[str],
    *,
    indent: str = "",
    max_width: Mapping[int, int] | None = None,
) -> str:
    """An aligned table with an upper-case header; cells past ``max_width[i]`` end in …."""
    max_width = max_width or {}
    cells = [[str(v) for v in r] for r in rows]
    for row in cells:
        for i, limit in max_width.items():
            if len(row[i]) > limit:
                row[i] = row[i][: limit - 1] + "…"
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = [indent + "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += [indent + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def dict_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *, indent: str = ""
) -> str:
    """:func:`table` of dicts; the columns default to the keys in first-seen order."""
    cols = list(columns or dict.fromkeys(k for r in rows for k in r))
    return table([[r.get(c, "") for c in cols] for r in rows], cols, indent=indent)
