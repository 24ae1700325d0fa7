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

Beside it: :mod:`.run_index` (the index's runs table), :mod:`.notebook_json` (a record's
header and results inside its JSON), :mod:`.clock` (UTC times as the index holds them) and
:mod:`.review` (the records-review runbook).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opslib.core import files
from opslib.core.errors import InputError
from opslib.records import clock, notebook_json, plan_index, run_index, search
from opslib.records.run_index import FIELDS, Row, sql_value


def default_root() -> Path:
    return Path(os.environ.get("OPSBOOK_RECORDS") or "records")


def atomic_write(path: Path, data: bytes) -> None:
    """Write a record or page whole (a reader never sees a torn one)."""
    files.atomic_write(path, data)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
            con.executescript(run_index.SCHEMA + search.SCHEMA + plan_index.SCHEMA)
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
                f"INSERT INTO runs ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})",
                [sql_value(k, row.get(k)) for k in FIELDS],
            )
            run_id = int(cur.lastrowid or 0)
            # Reserve the name before releasing the database lock.
            placeholder = notebook_json.with_header(notebook, {**row, "id": run_id})
            atomic_write(path, notebook_json.dump_notebook(placeholder))
        return run_id, path

    def finish(self, run_id: int, path: Path, header: Mapping[str, Any]) -> None:
        """Update the row from the header of the finished record at ``path``."""
        data = path.read_bytes()
        row = {**header, "path": self.rel(path), "sha256": hashlib.sha256(data).hexdigest()}
        sets = ", ".join(f"{k} = ?" for k in FIELDS)
        with self.db() as con:
            con.execute(
                f"UPDATE runs SET {sets} WHERE id = ?",
                [*(sql_value(k, row.get(k)) for k in FIELDS), run_id],
            )
            with contextlib.suppress(ValueError):  # the run is indexed; its text when readable
                search.put(con, run_id, search.text_of(json.loads(data)))
            plan_index.put(con, run_id, header)  # a saved plan (opsbook plan): its state

    def add(self, header: Mapping[str, Any], notebook: Mapping[str, Any]) -> tuple[int, Path]:
        """File a finished record in one go (interactive applies)."""
        run_id, path = self.begin(header, notebook)
        final = notebook_json.with_header(notebook, {**header, "id": run_id})
        atomic_write(path, notebook_json.dump_notebook(final))
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
                header = {**row.__dict__, "status": "killed", "end": clock.iso(clock.utcnow())}
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
        header = dict(nb.get("metadata", {}).get(notebook_json.META_KEY, {}))
        if not header and source == part and path.exists():
            with contextlib.suppress(OSError, ValueError):
                header = dict(json.loads(path.read_bytes())["metadata"][notebook_json.META_KEY])
        if not header:
            return None
        end = datetime.fromtimestamp(source.stat().st_mtime, UTC).replace(microsecond=0)
        header.update(status="killed", exit_code=None, end=clock.iso(end))
        header["summary"] = notebook_json.killed_at(nb)
        atomic_write(path, notebook_json.dump_notebook(notebook_json.with_header(nb, header)))
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
                    values = [sql_value(k, header.get(k)) for k in FIELDS]
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
                    f"INSERT INTO runs (id, {', '.join(FIELDS)}) "
                    f"VALUES ({', '.join('?' * (len(FIELDS) + 1))})",
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
        header = notebook_json.header_of(nb)
        if header is None:
            return None
        if header.get("status") == "running" and not _pid_alive(header.get("pid")):
            header = self._promote_killed(path) or header
        if header.get("changed") is None:
            # Older or partial headers: fall back to the structured results; as the runner
            # does, a plan speaks for a run that ended ok, not for one cut short.
            final = notebook_json.final_result(notebook_json.results_of(nb))
            if final is not None and (
                header.get("status") == "ok" or final.get("kind") == "result"
            ):
                header["changed"] = bool(final.get("changed"))
        return dict(header), nb


def saved_plans(
    store: Store, *, ids: list[int] | None = None, state: str = ""
) -> list[plan_index.PlanRow]:
    """Saved plans with their state now, newest first (only ``ids`` when given)."""
    if not store.index_path.exists():
        return []
    with store.db() as con:
        return plan_index.rows(con, clock.iso(clock.utcnow()), ids=ids, state=state)


__all__ = ["INDEX", "STATUSES", "Store", "atomic_write", "default_root", "saved_plans"]

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
