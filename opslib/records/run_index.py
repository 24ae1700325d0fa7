"""The index's ``runs`` table: its schema, the columns a run is written with
(:data:`FIELDS`, each value as :func:`sql_value` stores it) and a row read back as
:class:`Row` (:func:`index_values`). Beside it in ``index.sqlite``: the search table
(:mod:`.search`) and the plans table (:mod:`.plan_index`)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Row:
    """One run in the index."""

    id: int
    runbook: str
    host: str
    status: str
    exit_code: int | None
    changed: bool | None
    start: str
    end: str | None
    user: str | None
    summary: str
    parameters: dict[str, Any]
    opslib_version: str | None
    revision: str | None
    mode: str | None
    pid: int | None
    path: str  # relative to the store's root
    sha256: str | None

    @property
    def seconds(self) -> float | None:
        if not self.end:
            return None
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        delta = datetime.strptime(self.end, fmt) - datetime.strptime(self.start, fmt)
        return delta.total_seconds()

    @classmethod
    def from_sql(cls, r: sqlite3.Row) -> Row:
        return cls(**index_values(r, [f.name for f in dataclasses.fields(cls)]))


# How an index column that is not stored as the value it stands for is read back.
_FROM_SQL: dict[str, Callable[[Any], Any]] = {
    "changed": lambda v: None if v is None else bool(v),
    "summary": lambda v: v or "",
    "parameters": lambda v: json.loads(v or "{}"),
}


def index_values(r: sqlite3.Row, names: Iterable[str]) -> dict[str, Any]:
    """The columns ``names`` of an index row, as :class:`Row` holds them."""
    return {n: _FROM_SQL.get(n, lambda v: v)(r[n]) for n in names}


def sql_value(key: str, value: Any) -> Any:
    if key == "parameters":
        return json.dumps(value or {}, sort_keys=True)
    if key == "changed":
        return None if value is None else int(bool(value))
    return value


SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    runbook TEXT NOT NULL,
    host TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    changed INTEGER,
    start TEXT NOT NULL,
    end TEXT,
    user TEXT,
    summary TEXT,
    parameters TEXT,
    opslib_version TEXT,
    revision TEXT,
    mode TEXT,
    pid INTEGER,
    path TEXT NOT NULL UNIQUE,
    sha256 TEXT
);
CREATE INDEX IF NOT EXISTS runs_start ON runs(start);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, start);
CREATE INDEX IF NOT EXISTS runs_runbook ON runs(runbook, start);
"""


FIELDS = (
    "runbook",
    "host",
    "status",
    "exit_code",
    "changed",
    "start",
    "end",
    "user",
    "summary",
    "parameters",
    "opslib_version",
    "revision",
    "mode",
    "pid",
    "path",
    "sha256",
)
