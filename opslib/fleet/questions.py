"""Fleet-wide questions: which host has the object a runbook was asked about.

``opsbook fleet run find-vm-ip -p vm NAME`` asks every host. On one host a VM it does not
run is bad input (``no VM named 'NAME'``, exit 2): asked of the fleet, it is an answer, not
a failure. :func:`answer` turns those hosts' rows into ``ok`` with ``not on this host``
and returns the line naming where the object is (with its addresses, from the record of
the host that has it), e.g. ``VM vm-nat1 runs on fl2: 192.168.122.45 (ipv4)``. When no
host has it, the rows stay bad input (exit 1) and the line says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["QUESTIONS", "answer"]

# runbook -> (its parameter naming the object, the kind its UnknownName error names)
QUESTIONS: dict[str, tuple[str, str]] = {"find-vm-ip": ("vm", "VM")}
NOT_HERE = "not on this host"


def _addresses(store: Any, record_id: int | None, name: str) -> list[str]:
    """The object's addresses from the host's record (find-vm-ip's addresses table)."""
    if record_id is None:
        return []
    from opslib.records import notebook_json

    try:
        final = notebook_json.final_result(
            notebook_json.results_of(store.notebook(store.get(record_id)))
        )
    except Exception:  # an unreadable record: the row still names the host
        return []
    table = ((final or {}).get("tables") or {}).get("addresses") or []
    seen = [
        f"{r['ip']} ({r.get('family', '')})" for r in table if r.get("vm") == name and r.get("ip")
    ]
    return list(dict.fromkeys(seen))


def answer(runbook: str, given: Mapping[str, str], rows: Sequence[Any], store: Any) -> str | None:
    """The line answering the fleet-wide question, or None when the run asked none; the
    rows of hosts without the object become ``ok``, ``not on this host`` (when one has it)."""
    if runbook not in QUESTIONS or not given.get(QUESTIONS[runbook][0]):
        return None
    param, kind = QUESTIONS[runbook]
    name = given[param]
    absent = f"no {kind} named {name!r}"
    missing = [r for r in rows if r.status == "bad-input" and absent in r.summary]
    having = [r for r in rows if r.status in ("ok", "changed")]
    if not having:
        asked = sum(1 for r in rows if r.status not in ("unreachable", "skipped"))
        return f"{kind} {name} runs on none of the {asked} host(s) that answered"
    for row in missing:
        row.status, row.summary = "ok", f"{NOT_HERE} ({absent})"
    where = []
    for row in having:
        found = _addresses(store, row.record_id, name)
        where.append(f"{row.host}: {', '.join(found) if found else 'no address seen'}")
    return f"{kind} {name} runs on {'; '.join(where)}"
