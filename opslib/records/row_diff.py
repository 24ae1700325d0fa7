"""Rows of two runs' result tables matched by identity: added, removed, changed, renamed.

A result table declares its key columns (what identifies a row from one run to the next:
vm + ip + mac + family + source for find-vm-ip's addresses, the network's name for the
inventory) and its volatile columns (what changes on its own: neighbour state, timings);
``Result.add_table`` stores both in the record. Records written before that carry no
declaration: their key is the shortest run of leading columns that tells the rows of both
runs apart, the whole row if none does (what ``records diff`` compared before).

Pure: plain JSON rows in, :class:`RowChange` entries (or text lines) out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["RowChange", "compare", "identity", "render", "shape", "text"]

Row = Mapping[str, Any]
Kind = Literal["added", "removed", "changed", "renamed"]


@dataclass(frozen=True)
class Field:
    """One column of a row that differs between the runs."""

    column: str
    old: Any
    new: Any
    volatile: bool = False


@dataclass(frozen=True)
class RowChange:
    """A row of the second run against the first.

    ``row`` is the second run's row (the first run's for ``removed``); ``fields`` the
    columns that differ: for ``renamed``, the one key column whose value changed.
    ``whole``: other rows have the same key, so this one was compared whole.
    """

    kind: Kind
    row: Row
    fields: tuple[Field, ...] = ()
    before: Row = field(default_factory=dict)
    whole: bool = False

    @property
    def firm(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if not f.volatile)


def text(value: Any) -> str:
    """A cell as a diff line shows it: a word bare, other strings and values as JSON."""
    if isinstance(value, str) and value and not any(c in value for c in ' ;,()"→'):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _ident(row: Row, key: Sequence[str]) -> tuple[str, ...]:
    return tuple(_canon(row.get(k)) for k in key)


def _columns(rows: Iterable[Row]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def _unique(rows: Sequence[Row], key: Sequence[str]) -> bool:
    return len({_ident(r, key) for r in rows}) == len(rows)


def shape(a: Mapping[str, Any], b: Mapping[str, Any], name: str) -> tuple[list[str], list[str]]:
    """(key, volatile) of table ``name`` in two results: as declared in the records (the
    second run's declaration first), else the fallback for records without one."""
    for result in (b, a):
        key = (result.get("keys") or {}).get(name)
        if key:
            vol = set((a.get("volatile") or {}).get(name) or ())
            vol |= set((b.get("volatile") or {}).get(name) or ())
            return list(key), sorted(vol - set(key))
    rows_a = (a.get("tables") or {}).get(name) or []
    rows_b = (b.get("tables") or {}).get(name) or []
    columns = (b.get("columns") or {}).get(name) or (a.get("columns") or {}).get(name)
    columns = list(columns or _columns([*rows_b, *rows_a]))
    for n in range(1, len(columns) + 1):
        if _unique(rows_a, columns[:n]) and _unique(rows_b, columns[:n]):
            return columns[:n], []
    return columns, []


def identity(a: Mapping[str, Any], b: Mapping[str, Any], name: str) -> list[str]:
    """The identity columns of table ``name`` (what matches a row whose key changed), as
    the second run declares them, else the first; none in records made before them."""
    for result in (b, a):
        columns = (result.get("identity") or {}).get(name)
        if columns:
            return list(columns)
    return []


def _unmatched(rows: Sequence[Row], others: Sequence[Row]) -> list[Row]:
    """The rows with no equal row (whole, one for one) among ``others``."""
    left = [_canon(r) for r in others]
    out = []
    for r in rows:
        if _canon(r) in left:
            left.remove(_canon(r))
        else:
            out.append(r)
    return out


def _renames(
    removed: list[Row], added: list[Row], key: Sequence[str], compared: Sequence[str]
) -> list[tuple[Row, Row, str]]:
    """Removed and added rows that are one row whose key changed in one column, all else
    equal, where that pairing is the only one either row has: (before, after, column)."""

    def sig(row: Row, skip: str) -> tuple[str, ...]:
        return tuple(_canon(row.get(c)) for c in (*key, *compared) if c != skip)

    found: dict[int, list[tuple[int, str]]] = {}
    back: dict[int, list[int]] = {}
    for col in key:
        by_sig: dict[tuple[str, ...], list[int]] = {}
        for j, row in enumerate(added):
            by_sig.setdefault(sig(row, col), []).append(j)
        for i, row in enumerate(removed):
            for j in by_sig.get(sig(row, col), ()):
                found.setdefault(i, []).append((j, col))
                back.setdefault(j, []).append(i)
    pairs = []
    for i, matches in sorted(found.items()):
        if len(matches) == 1 and len(back[matches[0][0]]) == 1:
            j, col = matches[0]
            pairs.append((removed[i], added[j], col))
    return pairs


def _same_identity(
    removed: Sequence[Row], added: Sequence[Row], identity: Sequence[str]
) -> list[tuple[Row, Row]]:
    """Removed and added rows that are one row whose key changed, told by an identity
    column (tried in order) holding the same value in exactly one row on each side."""
    pairs: list[tuple[Row, Row]] = []
    left_a, left_b = list(removed), list(added)
    for col in identity:
        by_a: dict[str, list[Row]] = {}
        by_b: dict[str, list[Row]] = {}
        for rows, by in ((left_a, by_a), (left_b, by_b)):
            for row in rows:
                if row.get(col) not in ("", None):
                    by.setdefault(_canon(row.get(col)), []).append(row)
        for value, xs in by_a.items():
            ys = by_b.get(value, [])
            if len(xs) == 1 and len(ys) == 1:
                pairs.append((xs[0], ys[0]))
                left_a.remove(xs[0])
                left_b.remove(ys[0])
    return pairs


def compare(
    rows_a: Sequence[Row],
    rows_b: Sequence[Row],
    key: Sequence[str],
    volatile: Iterable[str] = (),
    identity: Sequence[str] = (),
) -> list[RowChange]:
    """Every difference between two runs' rows of one table, volatile ones included.

    A removed and an added row are one row renamed when only a key column differs, or
    when an ``identity`` column says so; then every other column that changed is listed."""
    volatile = set(volatile)
    common = set(_columns(rows_a)) & set(_columns(rows_b))
    compared = [c for c in _columns([*rows_b, *rows_a]) if c in common and c not in key]
    groups_a: dict[tuple[str, ...], list[Row]] = {}
    groups_b: dict[tuple[str, ...], list[Row]] = {}
    for row in rows_a:
        groups_a.setdefault(_ident(row, key), []).append(row)
    for row in rows_b:
        groups_b.setdefault(_ident(row, key), []).append(row)
    out: list[RowChange] = []
    removed: list[Row] = []
    added: list[Row] = []
    whole: set[int] = set()  # ids of rows whose key others share
    for ident in dict.fromkeys([*groups_a, *groups_b]):
        xs, ys = groups_a.get(ident, []), groups_b.get(ident, [])
        if len(xs) == 1 and len(ys) == 1:
            x, y = xs[0], ys[0]
            fields = tuple(
                Field(c, x.get(c), y.get(c), c in volatile)
                for c in compared
                if _canon(x.get(c)) != _canon(y.get(c))
            )
            if fields:
                out.append(RowChange("changed", y, fields, x))
            continue
        # No rows, or a key that does not tell rows apart: compare those rows whole.
        if len(xs) > 1 or len(ys) > 1:
            whole |= {id(r) for r in (*xs, *ys)}
        removed += _unmatched(xs, ys)
        added += _unmatched(ys, xs)
    renamed = _renames(removed, added, key, compared)
    for before, after, col in renamed:
        out.append(
            RowChange("renamed", after, (Field(col, before.get(col), after.get(col)),), before)
        )
    paired_a = {id(p[0]) for p in renamed}
    paired_b = {id(p[1]) for p in renamed}
    for before, after in _same_identity(
        [r for r in removed if id(r) not in paired_a],
        [r for r in added if id(r) not in paired_b],
        identity,
    ):
        fields = tuple(
            Field(c, before.get(c), after.get(c), c in volatile)
            for c in (*key, *compared)
            if _canon(before.get(c)) != _canon(after.get(c))
        )
        out.append(RowChange("renamed", after, fields, before))
        paired_a.add(id(before))
        paired_b.add(id(after))
    out += [RowChange("removed", r, whole=id(r) in whole) for r in removed if id(r) not in paired_a]
    out += [RowChange("added", r, whole=id(r) in whole) for r in added if id(r) not in paired_b]
    return out


# -- text --------------------------------------------------------------------------------


def _who(row: Row, key: Sequence[str], *, verb: str = "", skip: str = "") -> str:
    """A row's identity: "vm-nat2 gained 2001:db8::2 (mac 52:54:…, source neighbour)"."""
    vals = [(k, text(row.get(k))) for k in key if k != skip and row.get(k) not in ("", None)]
    if not vals:
        return '""'
    subject, rest = vals[0][1], vals[1:]
    if not rest:
        return f"{subject} {verb}" if verb else subject
    more = ", ".join(f"{k} {v}" for k, v in rest[1:])
    return f"{subject} {verb + ' ' if verb else ''}{rest[0][1]}" + (f" ({more})" if more else "")


def _fields(fields: Sequence[Field]) -> str:
    return "; ".join(
        f"{f.column} {text(f.old)} → {text(f.new)}" + (" (volatile)" if f.volatile else "")
        for f in fields
    )


def render(
    name: str, changes: Sequence[RowChange], key: Sequence[str], *, volatile: bool = False
) -> list[str]:
    """Diff lines (``-``, ``+``, ``~``) of one table; volatile-only changes with ``volatile``.

    The same change in several rows (a renamed network in each address's row) is one line,
    before the others; a change of volatile fields is one line per row.
    """
    single = len(key) == 1
    lines: list[tuple[bool, tuple[str, ...], str]] = []  # (one row?, its key, line)
    alike: dict[tuple[str, tuple[Field, ...]], list[RowChange]] = {}
    for c in changes:
        if c.kind in ("removed", "added"):
            verb = {"removed": ("removed", "lost"), "added": ("added", "gained")}[c.kind]
            sign = "-" if c.kind == "removed" else "+"
            who = _who(c.row, key, verb=verb[0] if single else verb[1])
            if c.whole:  # its key alone does not say which row it is
                rest = [f"{k} {text(v)}" for k, v in c.row.items() if k not in key]
                who += f" ({', '.join(rest)})" if rest else ""
            lines.append((True, _ident(c.row, key), f"{sign} {name}: {who}"))
            continue
        if c.kind == "renamed":  # the key's change, then what else changed with it
            fields = c.fields if volatile else c.firm
            alike.setdefault((c.kind, tuple(fields)), []).append(c)
            continue
        fields = c.fields if volatile else c.firm
        if any(f.volatile for f in fields):  # each on its own line: which address, which run
            line = f"~ {name}: {_who(c.row, key)}: {_fields(fields)}"
            lines.append((True, _ident(c.row, key), line))
        elif fields:
            alike.setdefault((c.kind, tuple(fields)), []).append(c)
    for (kind, fields), rows in alike.items():
        order = _ident(rows[0].row, key)
        n = f" ({len(rows)} rows)" if len(rows) > 1 else ""
        if kind == "renamed" and fields[0].column == key[0]:
            line = f"~ {name}: {text(fields[0].old)} renamed to {text(fields[0].new)}{n}"
            line += f": {_fields(fields[1:])}" if len(fields) > 1 else ""
        elif len(rows) == 1:
            skip = fields[0].column if kind == "renamed" else ""
            line = f"~ {name}: {_who(rows[0].row, key, skip=skip)}: {_fields(fields)}"
        else:
            subjects = ", ".join(dict.fromkeys(text(r.row.get(key[0])) for r in rows))
            line = f"~ {name}: {_fields(fields)} in {len(rows)} rows ({subjects})"
        lines.append((len(rows) == 1, order, line))
    # What changed in many rows first (a rename), then row by row in key order.
    return [line for *_, line in sorted(lines, key=lambda t: t[:2])]
