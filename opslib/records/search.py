"""Search over the records: each run's searchable text, its FTS5 table, the queries.

A record's text (:func:`text_of`) holds what a reviewer looks a run up by: runbook,
host, who, status, summary, parameters, every plan's and result's changes, checks
(name, status, what was seen) and table rows (a VM, its MAC and addresses...), and
the error of a failing cell. It lives in the store's sqlite index, table ``search``
(FTS5 with the trigram tokenizer: any substring of three characters or more is
looked up in the index), filled when a run finishes and by ``records reindex``;
:func:`catch_up` fills it for runs an older index lacks. The static site's search
(:mod:`opslib.records.site`) is written from the same table.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SCHEMA", "Hit", "catch_up", "put", "query_words", "search", "snippet", "text_of"]

SCHEMA = "CREATE VIRTUAL TABLE IF NOT EXISTS search USING fts5(text, tokenize='trigram');\n"
RESULT_MIME = "application/vnd.opsbook.result+json"  # opslib.records.notebook_json.RESULT_MIME
MAX_TEXT = 20_000  # characters of a record's text kept for search


def _results(nb: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            value = (out.get("data") or {}).get(RESULT_MIME)
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    continue
            if isinstance(value, dict):
                yield value


def _words(value: Any) -> str:
    if isinstance(value, Mapping):
        return " ".join(_words(v) for v in value.values())
    if isinstance(value, list | tuple):
        return " ".join(_words(v) for v in value)
    return "" if value is None else str(value)


def text_of(nb: Mapping[str, Any]) -> str:
    """The searchable text of a record notebook: one line per thing found."""
    header = (nb.get("metadata") or {}).get("opsbook") or {}
    lines = [
        " ".join(str(header.get(k) or "") for k in ("runbook", "host", "user", "status", "start")),
        str(header.get("summary") or ""),
        " ".join(f"{k}={v}" for k, v in (header.get("parameters") or {}).items()),
    ]
    for result in _results(nb):
        for c in result.get("changes") or []:
            lines.append(f"{c.get('action')} {c.get('target')}: {c.get('summary')}")
        for c in result.get("checks") or []:
            lines.append(f"check {c.get('name')}: {c.get('status')} ({c.get('seen')})")
        columns = result.get("columns") or {}
        for name, rows in (result.get("tables") or {}).items():
            order = columns.get(name) or []  # the table's own column order (records sort keys)
            for row in rows or []:
                ordered = {k: row[k] for k in order if k in row} | row
                lines.append(f"{name}: {_words(ordered)}")
        lines += [str(n) for n in result.get("notes") or []]
        if result.get("summary"):
            lines.append(str(result["summary"]))
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            if out.get("output_type") == "error":
                lines.append(f"{out.get('ename')}: {out.get('evalue')}")
    kept = [ln.strip() for ln in dict.fromkeys(lines) if ln.strip()]
    return "\n".join(kept)[:MAX_TEXT]


def put(con: sqlite3.Connection, run_id: int, text: str) -> None:
    """(Re)place run ``run_id``'s text (:func:`text_of`) in the search table."""
    con.execute("DELETE FROM search WHERE rowid = ?", (run_id,))
    con.execute("INSERT INTO search (rowid, text) VALUES (?, ?)", (run_id, text))


def catch_up(store: Any) -> int:
    """Fill the search table for runs that have no text yet (an index from before it)."""
    if not store.index_path.exists():
        return 0
    with store.db() as con:
        missing = con.execute(
            "SELECT id, path FROM runs WHERE id NOT IN (SELECT rowid FROM search)"
        ).fetchall()
        for run_id, path in missing:
            try:
                nb = json.loads((store.root / path).read_bytes())
            except (OSError, ValueError):
                nb = {}
            put(con, run_id, text_of(nb))
    return len(missing)


@dataclass(frozen=True)
class Hit:
    """A run whose text holds every word searched for."""

    id: int
    start: str
    runbook: str
    host: str
    status: str
    path: str
    snippet: str


def query_words(text: str) -> list[str]:
    return [w for w in text.lower().split() if w]


def snippet(text: str, words: list[str], width: int = 120) -> str:
    """The first line of ``text`` holding a word searched for (the most words), cut short."""
    lines = text.splitlines() or [""]
    best = max(lines, key=lambda ln: sum(w in ln.lower() for w in words))
    return best if len(best) <= width else best[: width - 1] + "…"


def search(store: Any, text: str, *, limit: int = 50) -> list[Hit]:
    """Runs whose record text holds every word of ``text`` (case-insensitive substrings),
    newest first."""
    words = query_words(text)
    if not words or not store.index_path.exists():
        return []
    catch_up(store)
    indexed = [w for w in words if len(w) >= 3]  # the trigram index needs three characters
    sql = (
        "SELECT runs.id, runs.start, runs.runbook, runs.host, runs.status, runs.path, "
        "search.text FROM search JOIN runs ON runs.id = search.rowid"
    )
    args: list[Any] = []
    if indexed:
        sql += " WHERE search MATCH ?"
        args.append(" AND ".join('"' + w.replace('"', '""') + '"' for w in indexed))
    sql += " ORDER BY runs.start DESC, runs.id DESC"
    hits: list[Hit] = []
    with store.db() as con:
        for row in con.execute(sql, args):
            body = row["text"] or ""
            low = body.lower()
            if not all(w in low for w in words):
                continue
            hits.append(
                Hit(
                    id=row["id"],
                    start=row["start"],
                    runbook=row["runbook"],
                    host=row["host"],
                    status=row["status"],
                    path=row["path"],
                    snippet=snippet(body, words),
                )
            )
            if limit and len(hits) >= limit:
                break
    return hits
