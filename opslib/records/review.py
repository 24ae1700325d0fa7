"""The records-review runbook (notebooks/records-review.ipynb): the index filtered, with
the runs that did not end ok counted by runbook."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from opslib.core.changes import Result
from opslib.records.clock import parse_since
from opslib.records.store import Store


def review(
    *,
    records_dir: str = "",
    runbook_filter: str = "",
    host_filter: str = "",
    status_filter: str = "any",
    since: str = "",
) -> Any:
    """The records-review runbook: the index filtered, with failures counted by runbook."""
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
