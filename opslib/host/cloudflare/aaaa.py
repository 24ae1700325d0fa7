"""The AAAA record of a VM: what it should be, the API calls that make a name hold
exactly that record, how each is undone, and the read-back check (pure but for the calls).

cloudflare-aaaa plans with :func:`plan_records` and applies one :class:`Op` per step.
The record carries a comment naming the runbook and the VM: that is how a later run
knows the proxied record pointing at the VM's old address is its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opslib.core.changes import Change, Check
from opslib.core.errors import InputError
from opslib.host.cloudflare.dns import DnsClient, DnsRecord, RecordSpec, same_content

MARKER = "opsbook cloudflare-aaaa"


@dataclass(frozen=True)
class Desired:
    """The record this run wants, JSON-able for the plan."""

    zone: str
    name: str
    content: str
    proxied: bool
    ttl: int
    vm: str = ""

    @property
    def comment(self) -> str:
        return f"{MARKER}: vm {self.vm}" if self.vm else MARKER

    def points_at(self, record: DnsRecord) -> bool:
        return same_content(record.type, record.content, self.content)

    @property
    def spec(self) -> RecordSpec:
        return RecordSpec(self.name, "AAAA", self.content, self.proxied, self.ttl, self.comment)


@dataclass(frozen=True)
class Op:
    """One API call of a plan."""

    action: str  # create | update | delete
    before: DnsRecord | None = None  # the record it changes or deletes
    after: RecordSpec | None = None  # what it creates or updates to

    @property
    def summary(self) -> str:
        if self.action == "delete" and self.before:
            b = self.before
            return f"delete {b.type} {b.name} -> {b.content}"
        assert self.after is not None
        a = self.after
        how = "proxied" if a.proxied else "DNS only"
        return f"{self.action} {a.type} {a.name} -> {a.content} ({how})"

    def change(self, zone: str) -> Change:
        record = self.after or self.before
        return Change(
            target=f"dns:{zone}/{record.name if record else ''}",
            action=self.action,
            summary=self.summary,
            before=self.before.text() if self.before else None,
            after=self.after.text() if self.after else None,
        )


def _ours(record: DnsRecord, want: Desired) -> bool:
    return record.comment == want.comment


def _points_at(record: DnsRecord, want: Desired) -> bool:
    return same_content(record.type, record.content, want.content)


def _matches(record: DnsRecord, want: Desired) -> bool:
    return _points_at(record, want) and (record.proxied, record.ttl) == (want.proxied, want.ttl)


def plan_records(
    existing: Sequence[DnsRecord], want: Desired, *, replace: bool = False
) -> tuple[list[Op], list[str]]:
    """The calls that make ``existing`` hold exactly ``want``, and notes for people.

    Raises InputError naming what holds the name when that is a CNAME, a proxied
    A, or an AAAA of someone else pointing elsewhere, unless ``replace``.
    """
    at_name = [r for r in existing if r.name == want.name]
    aaaa = [r for r in at_name if r.type == "AAAA"]
    notes: list[str] = []
    # The record to keep: the right address first, then ours, then one we may take over.
    candidates = (
        [r for r in aaaa if _points_at(r, want)]
        + [r for r in aaaa if _ours(r, want)]
        + [r for r in aaaa if not r.proxied or replace]
    )
    keep = candidates[0] if candidates else None
    conflicts: list[DnsRecord] = [r for r in at_name if r.type == "CNAME"]
    conflicts += [r for r in at_name if r.type == "A" and r.proxied]
    duplicates: list[DnsRecord] = []
    for record in aaaa:
        if record is keep:
            continue
        if _points_at(record, want) or _ours(record, want):
            duplicates.append(record)  # left over from an earlier run: ours to remove
        else:
            conflicts.append(record)
    for record in at_name:
        if record.type == "A" and not record.proxied:
            notes.append(
                f"an unproxied A record {record.content} also holds {want.name}: "
                "IPv4 clients reach that address, not the proxy"
            )
    if conflicts and not replace:
        held = ", ".join(
            f"{'proxied ' if r.proxied else ''}{r.type} -> {r.content}" for r in conflicts
        )
        raise InputError(
            f"{want.name} is held by {held}; not touching it (set replace=True to replace it)"
        )
    ops = [Op("delete", before=r) for r in conflicts if r.type == "CNAME"]  # before a create
    if keep is None:
        ops.append(Op("create", after=want.spec))
    elif not _matches(keep, want):
        ops.append(Op("update", before=keep, after=want.spec))
    ops += [Op("delete", before=r) for r in conflicts if r.type != "CNAME"]
    ops += [Op("delete", before=r) for r in duplicates]
    return ops, notes


def verify(records: Sequence[DnsRecord], want: Desired) -> list[Check]:
    """Read-back checks: exactly one AAAA at the name, with the wanted values."""
    at_name = [r for r in records if r.name == want.name]
    seen = "".join(r.text() for r in at_name).strip() or "no record"
    aaaa = [r for r in at_name if r.type == "AAAA"]
    right = [r for r in aaaa if _matches(r, want)]
    checks = [
        Check(
            f"AAAA {want.name}",
            "ok" if len(right) == 1 and len(aaaa) == 1 else "fail",
            seen,
            "" if len(right) == len(aaaa) == 1 else f"want one AAAA -> {want.content}; apply again",
        )
    ]
    if any(r.type == "CNAME" for r in at_name):
        checks.append(Check(f"no CNAME at {want.name}", "fail", seen, "remove the CNAME"))
    return checks


def do(client: DnsClient, zone_id: str, op: Op) -> DnsRecord | None:
    """Make ``op``; the record it made (None for a delete)."""
    if op.action == "create" and op.after:
        return client.create_record(zone_id, op.after)
    if op.action == "update" and op.before and op.after:
        return client.update_record(zone_id, op.before.id, op.after)
    if op.action == "delete" and op.before:
        client.delete_record(zone_id, op.before)
        return None
    raise AssertionError(f"malformed op {op}")


def undo(client: DnsClient, zone_id: str, op: Op, made: DnsRecord | None) -> None:
    """Put back what ``op`` changed (``made``: the record a create made)."""
    b = op.before
    if op.action == "create" and made:
        client.delete_record(zone_id, made)
    elif op.action == "update" and b:
        client.update_record(zone_id, b.id, b.spec)
    elif op.action == "delete" and b:
        client.create_record(zone_id, b.spec)
