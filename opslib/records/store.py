"""The record store: executed notebooks under ``records/`` and their sqlite index.

Layout: ``ROOT/HOST/YYYY/MM/DD/HHMMSSZ-RUNBOOK.ipynb`` plus ``ROOT/index.sqlite``.
Each record carries its own header in ``metadata.opsbook`` (runbook, host,
parameters with secrets redacted, user, times, status...) and its structured
results as outputs of MIME type :data:`RESULT_MIME`, so the index is a cache:
``reindex`` rebuilds it from the notebooks alone.

A run first inserts a ``running`` row and writes a placeholder record; the
executing notebook is saved beside it as a hidden ``.NAME.partial.ipynb`` after
every cell, and finalised into place at the end. When the runner dies (SIGKILL,
crash), :meth:`Store.mark_stale` later promotes the partial notebook into place
and marks the run ``killed``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opslib.core import files
from opslib.records import plan_index
from opslib.records import search
from opslib.core import secrets
from opslib.core.errors import InputError


def default_root() -> Path:
    return Path(os.environ.get("OPSBOOK_RECORDS") or "records")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def atomic_write(path: Path, data: bytes) -> None:
    """Write a record or page whole (a reader never sees a torn one)."""
    files.atomic_write(path, data)


def dump_notebook(nb: Mapping[str, Any]) -> bytes:
    return (json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n").encode()


def results_of(nb: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every structured result (plans, results, reports) the notebook displayed, in order."""
    found = []
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            data = out.get("data") or {}
            if RESULT_MIME in data:
                value = data[RESULT_MIME]
                if isinstance(value, str):  # some writers keep JSON MIME data as text
                    with contextlib.suppress(ValueError):
                        value = json.loads(value)
                if isinstance(value, dict):
                    found.append(value)
    return found


def final_result(results: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The result that speaks for the run: the last result, else the last plan."""
    for kind in ("result", "plan"):
        for r in reversed(results):
            if r.get("kind") == kind:
                return r
    return None


def cell_error(nb: Mapping[str, Any]) -> str:
    """'Ename: evalue' of the first failing cell, or ''."""
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            if out.get("output_type") == "error":
                return f"{out.get('ename')}: {out.get('evalue')}".strip()
    return ""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_SINCE = re.compile(r"(\d+)\s*([mhdw])")


def parse_since(text: str, *, now: datetime | None = None) -> str:
    """An ISO UTC bound from '2024-05-01', '2024-05-01T10:00', '90m', '12h', '3d', '2w'."""
    now = now or utcnow()
    m = _SINCE.fullmatch(text.strip())
    if m:
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m[2]]
        return iso(now - timedelta(**{unit: int(m[1])}))
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"--since {text!r}: use a date (2024-05-01), a time (2024-05-01T10:00) or 3d/12h/90m"
        ) from None
    return iso(t if t.tzinfo else t.replace(tzinfo=UTC))


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


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial.ipynb")


class Store:
    """A records directory and its index."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    def check_root(self) -> None:
        """Refuse a root that is, or lies under, a file: before anything reads or writes."""
        for path in (self.root, *self.root.parents):
            if path.exists():
                if not path.is_dir():
                    what = "it is a file" if path == self.root else f"{path} is a file"
                    raise InputError(
                        f"record store {self.root}: not a directory ({what}); "
                        "give --records (or $OPSBOOK_RECORDS) a directory"
                    )
                return

    @contextlib.contextmanager
    def db(self, path: Path | None = None) -> Iterator[sqlite3.Connection]:
        self.check_root()
        self.root.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path or self.index_path, timeout=30)
        con.row_factory = sqlite3.Row
        try:
            con.executescript(_SCHEMA + search.SCHEMA + plan_index.SCHEMA)
            with con:
                yield con
        except sqlite3.DatabaseError as exc:
            # DatabaseError itself (not its subclasses: locked, constraint...): the file is
            # not an sqlite database, or a damaged one. The records hold all it held.
            if type(exc) is not sqlite3.DatabaseError:
                raise
            raise InputError(
                f"the record index {path or self.index_path} is damaged ({exc}); "
                "`opsbook records reindex` rebuilds it from the records"
            ) from exc
        finally:
            con.close()

    # -- writing ---------------------------------------------------------------------------

    def new_path(self, host: str, runbook: str, start: datetime) -> Path:
        day = self.root / host / start.strftime("%Y/%m/%d")
        stem = f"{start.strftime('%H%M%S')}Z-{runbook}"
        path, n = day / f"{stem}.ipynb", 1
        while path.exists() or partial_path(path).exists():
            n += 1
            path = day / f"{stem}-{n}.ipynb"
        return path

    def begin(self, header: Mapping[str, Any], notebook: Mapping[str, Any]) -> tuple[int, Path]:
        """Insert a ``running`` row and write ``notebook`` as its placeholder record."""
        start = datetime.strptime(header["start"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        with self.db() as con:
            path = self.new_path(header["host"], header["runbook"], start)
            row = {**header, "status": "running", "path": self.rel(path)}
            cur = con.execute(
                f"INSERT INTO runs ({', '.join(_FIELDS)}) VALUES ({', '.join('?' * len(_FIELDS))})",
                [_sql_value(k, row.get(k)) for k in _FIELDS],
            )
            run_id = int(cur.lastrowid or 0)
            # Reserve the name before releasing the database lock.
            placeholder = with_header(notebook, {**row, "id": run_id})
            atomic_write(path, dump_notebook(placeholder))
        return run_id, path

    def finish(self, run_id: int, path: Path, header: Mapping[str, Any]) -> None:
        """Update the row from the header of the finished record at ``path``."""
        data = path.read_bytes()
        row = {**header, "path": self.rel(path), "sha256": hashlib.sha256(data).hexdigest()}
        sets = ", ".join(f"{k} = ?" for k in _FIELDS)
        with self.db() as con:
            con.execute(
                f"UPDATE runs SET {sets} WHERE id = ?",
                [*(_sql_value(k, row.get(k)) for k in _FIELDS), run_id],
            )
            with contextlib.suppress(ValueError):  # the run is indexed; its text when readable
                search.put(con, run_id, search.text_of(json.loads(data)))
            plan_index.put(con, run_id, header)  # a saved plan (opsbook plan): its state

    def add(self, header: Mapping[str, Any], notebook: Mapping[str, Any]) -> tuple[int, Path]:
        """File a finished record in one go (interactive applies)."""
        run_id, path = self.begin(header, notebook)
        final = with_header(notebook, {**header, "id": run_id})
        atomic_write(path, dump_notebook(final))
        self.finish(run_id, path, header)
        return run_id, path

    def rel(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)

    def abspath(self, row: Row) -> Path:
        return self.root / row.path

    # -- reading ---------------------------------------------------------------------------

    def list(
        self,
        *,
        runbook: str | None = None,
        host: str | None = None,
        status: str | None = None,
        since: str | None = None,
        limit: int | None = None,
    ) -> list[Row]:
        where, args = [], []
        for col, val in (("runbook", runbook), ("host", host), ("status", status)):
            if val:
                where.append(f"{col} = ?")
                args.append(val)
        if since:
            where.append("start >= ?")
            args.append(since)
        sql = "SELECT * FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY start DESC, id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        if not self.index_path.exists():
            return []
        with self.db() as con:
            return [Row.from_sql(r) for r in con.execute(sql, args)]

    def count(self) -> int:
        if not self.index_path.exists():
            return 0
        with self.db() as con:
            return int(con.execute("SELECT count(*) FROM runs").fetchone()[0])

    def get(self, run_id: int | str) -> Row:
        try:
            key = int(run_id)
        except ValueError:
            raise InputError(f"{run_id!r} is not a record id; see `opsbook records`") from None
        with self.db() as con:
            r = con.execute("SELECT * FROM runs WHERE id = ?", (key,)).fetchone()
        if r is None:
            raise InputError(f"no record with id {key}; see `opsbook records`")
        return Row.from_sql(r)

    def notebook(self, row: Row) -> dict[str, Any]:
        path = self.abspath(row)
        try:
            return dict(json.loads(path.read_bytes()))
        except (OSError, ValueError) as exc:
            raise InputError(f"record {row.id}: cannot read {path}: {exc}") from None

    # -- repair ----------------------------------------------------------------------------

    def mark_stale(self) -> int:
        """Mark ``running`` rows whose runner is gone as ``killed``; keep what they wrote."""
        if not self.index_path.exists():
            return 0
        with self.db() as con:
            stale = [
                Row.from_sql(r)
                for r in con.execute("SELECT * FROM runs WHERE status = 'running'")
                if not _pid_alive(r["pid"])
            ]
        for row in stale:
            path = self.abspath(row)
            header = self._promote_killed(path)
            if header is None:
                header = {**row.__dict__, "status": "killed", "end": iso(utcnow())}
            if path.exists():
                self.finish(row.id, path, header)
        return len(stale)

    def _promote_killed(self, path: Path) -> dict[str, Any] | None:
        """Finalise a dead run's record from its partial (or placeholder) notebook."""
        part = partial_path(path)
        source = part if part.exists() else path
        try:
            nb = json.loads(source.read_bytes())
        except (OSError, ValueError):
            return None
        header = dict(nb.get("metadata", {}).get(META_KEY, {}))
        if not header and source == part and path.exists():
            with contextlib.suppress(OSError, ValueError):
                header = dict(json.loads(path.read_bytes())["metadata"][META_KEY])
        if not header:
            return None
        end = datetime.fromtimestamp(source.stat().st_mtime, UTC).replace(microsecond=0)
        header.update(status="killed", exit_code=None, end=iso(end))
        header["summary"] = _killed_at(nb)
        atomic_write(path, dump_notebook(with_header(nb, header)))
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        return header

    def reindex(self) -> int:
        """Rebuild the index from the record notebooks alone; returns the number of runs."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".index.", suffix=".sqlite")
        os.close(fd)
        count = 0
        try:
            with self.db(Path(tmp)) as con:
                rows, texts, plans = [], [], []
                for path in self.record_files():
                    found = self._header_for_reindex(path)
                    if found is None:
                        continue
                    header, nb = found
                    header = {**header, "path": self.rel(path), "sha256": sha256_of(path)}
                    values = [_sql_value(k, header.get(k)) for k in _FIELDS]
                    rows.append([header.get("id"), *values])
                    texts.append((header["path"], search.text_of(nb)))
                    plans.append((header["path"], header))
                rows.sort(key=lambda r: (r[0] is None, r[0] or 0))
                seen: set[int] = set()
                for r in rows:
                    if r[0] in seen:  # a copied record: keep both, give the copy a new id
                        r[0] = None
                    if r[0] is not None:
                        seen.add(r[0])
                con.executemany(
                    f"INSERT INTO runs (id, {', '.join(_FIELDS)}) "
                    f"VALUES ({', '.join('?' * (len(_FIELDS) + 1))})",
                    rows,
                )
                ids = dict(con.execute("SELECT path, id FROM runs").fetchall())
                for rel, text in texts:
                    search.put(con, ids[rel], text)
                for rel, header in plans:
                    plan_index.put(con, ids[rel], header)
                count = len(rows)
            os.replace(tmp, self.index_path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return count

    def record_files(self) -> Iterator[Path]:
        """Every record notebook's path under the root (not partial ones, not locks)."""
        return (self.root / rel for rel in self.record_paths())

    def record_paths(self) -> Iterator[str]:
        """The same, relative to the root as the index has them (``records search`` walks
        the store each time: strings, no Path per file)."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "locks")
            here = os.path.relpath(dirpath, self.root)
            for name in sorted(filenames):
                if name.endswith(".ipynb") and not name.startswith("."):
                    yield name if here == "." else f"{here}/{name}"

    def _header_for_reindex(self, path: Path) -> tuple[dict[str, Any], Any] | None:
        try:
            nb = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        header = header_of(nb)
        if header is None:
            return None
        if header.get("status") == "running" and not _pid_alive(header.get("pid")):
            header = self._promote_killed(path) or header
        if header.get("changed") is None:
            # Older or partial headers: fall back to the structured results; as the runner
            # does, a plan speaks for a run that ended ok, not for one cut short.
            final = final_result(results_of(nb))
            if final is not None and (
                header.get("status") == "ok" or final.get("kind") == "result"
            ):
                header["changed"] = bool(final.get("changed"))
        return dict(header), nb


def header_of(nb: Any) -> dict[str, Any] | None:
    """The header of a record notebook; None when ``nb`` is not one."""
    meta = nb.get("metadata") if isinstance(nb, dict) else None
    header = meta.get(META_KEY) if isinstance(meta, dict) else None
    return header if isinstance(header, dict) and "runbook" in header else None


def _killed_at(nb: Mapping[str, Any]) -> str:
    """Which cell was running when the runner died (papermill marks it in its metadata)."""
    for cell in nb.get("cells", []):
        if cell.get("metadata", {}).get("papermill", {}).get("status") == "running":
            src = "".join(cell.get("source", ""))
            lines = [ln for ln in src.splitlines() if ln.strip() and not ln.startswith("#")]
            return f"the run died during: {lines[0][:200] if lines else '(empty cell)'}"
    return "the run died before it finished"


def _sql_value(key: str, value: Any) -> Any:
    if key == "parameters":
        return json.dumps(value or {}, sort_keys=True)
    if key == "changed":
        return None if value is None else int(bool(value))
    return value


def with_header(nb: Mapping[str, Any], header: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(nb)
    meta = dict(out.get("metadata", {}))
    keep = {k: v for k, v in header.items() if k not in ("path", "sha256")}
    meta[META_KEY] = keep
    out["metadata"] = meta
    return out


def redact_leaks(
    nb: Mapping[str, Any], header: Mapping[str, Any], secret_values: Iterable[str]
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """``(notebook, header, leaked)`` safe to write: call it before anything is written.

    Fails closed: when a secret loaded in this process occurs anywhere in the notebook
    or its header, both come back scrubbed, the summary is replaced by a fixed line
    (it may have held the secret) and the run is ``leaked-secret``, exit 1."""
    values = [s for s in secret_values if s]
    data = dump_notebook(with_header(nb, header))
    if not values or not secrets.find_leaks(data, values):
        return dict(nb), dict(header), False
    clean = json.loads(secrets.scrub(data, values))
    clean_header = dict(clean["metadata"][META_KEY])
    clean_header.update(status="leaked-secret", exit_code=1, summary=LEAKED_SUMMARY)
    return clean, clean_header, True


def summarize(nb: Mapping[str, Any], status: str) -> str:
    """One line for the index: the failing cell's error, else the final result's summary."""
    err = cell_error(nb)
    final = final_result(results_of(nb))
    if err and status != "ok":
        return err.splitlines()[0][:300]
    if final is None:
        return ""
    if final.get("kind") == "plan":
        n = len(final.get("changes", []))
        return f"plan only: {n} change{'s' * (n != 1)} not applied" if n else "plan: nothing to do"
    text = str(final.get("summary") or final.get("status") or "")
    return text.splitlines()[0][:300] if text else ""


def review(
    *,
    records_dir: str = "",
    runbook_filter: str = "",
    host_filter: str = "",
    status_filter: str = "any",
    since: str = "",
) -> Any:
    """The records-review runbook: the index filtered, with failures counted by runbook."""
    from collections import Counter

    from opslib.core.changes import Result

    store = Store(Path(records_dir) if records_dir else None)
    store.mark_stale()
    rows = store.list(
        runbook=runbook_filter or None,
        host=host_filter or None,
        status=None if status_filter in ("", "any") else status_filter,
        since=parse_since(since) if since else None,
    )
    here = Path.cwd()
    runs = [
        {
            "id": r.id,
            "start": r.start.replace("T", " "),
            "runbook": r.runbook,
            "host": r.host,
            "status": r.status,
            "changed": "-" if r.changed is None else ("yes" if r.changed else "no"),
            "seconds": r.seconds,
            "summary": r.summary,
            "record": os.path.relpath(store.abspath(r), here),
        }
        for r in rows
    ]
    bad = Counter(r.runbook for r in rows if r.status not in ("ok", "running"))
    total = Counter(r.runbook for r in rows)
    failures = [
        {"runbook": name, "runs": total[name], "not ok": bad[name]}
        for name in sorted(total, key=lambda n: (-bad[n], n))
    ]
    failed = sum(bad.values())
    result = Result(
        "records-review",
        "local",
        "ok",
        summary=f"{len(rows)} run{'s' * (len(rows) != 1)}, {failed} not ok",
    )
    result.add_table("runs", runs, key=("id",))
    result.add_table("failures by runbook", failures, key=("runbook",))
    return result


def saved_plans(
    store: Store, *, ids: list[int] | None = None, state: str = ""
) -> list[plan_index.PlanRow]:
    """Saved plans with their state now, newest first (only ``ids`` when given)."""
    if not store.index_path.exists():
        return []
    with store.db() as con:
        return plan_index.rows(con, iso(utcnow()), ids=ids, state=state)

__all__ = [
    "saved_plans",
    "LEAKED_SUMMARY",
    "RESULT_MIME",
    "Row",
    "Store",
    "atomic_write",
    "default_root",
    "final_result",
    "parse_since",
    "redact_leaks",
    "results_of",
]

RESULT_MIME = "application/vnd.opsbook.result+json"
META_KEY = "opsbook"
INDEX = "index.sqlite"
# Statuses of a run: ok and failed are final verdicts; the rest say why it ended.
# bad-input: the procedure itself raised an error of exit code 2 (InputError, HostError...).
STATUSES = (
    "running",
    "ok",
    "failed",
    "bad-input",
    "killed",
    "timeout",
    "locked",
    "leaked-secret",
)
LEAKED_SUMMARY = "a secret appeared in the record; it was redacted"

_SCHEMA = """
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
_FIELDS = (
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
