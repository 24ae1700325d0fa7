"""cloudflare-aaaa: publish a nat-bridge VM over IPv4 through a proxied Cloudflare AAAA record.

The wiki: "make a DNS AAAA record on Cloudflare to use IPv4-to-IPv6 proxying, for
use with nat-bridge". With the proxy on, IPv4 clients reach Cloudflare, which
connects to the VM's IPv6 address over HTTP/HTTPS.

- ``plan``: check the parameters, load the token, find the VM's global IPv6
  (its SLAAC address on the NAT network's /64, verified with ping6) unless an
  address is given, read the name's records, and plan create / update / nothing.
  A CNAME, a proxied A, or an AAAA of someone else pointing elsewhere refuses
  the plan unless ``replace``.
- ``apply``: re-read the records, make what still differs, read back, verify;
  undo what it made when that fails.
- ``checks``: for host-health, whether the record matches the VM (drift).

The record carries a comment naming this runbook and the VM: that is how a later
run knows the proxied record that points at the VM's old address is its own.
The token's value is never in a plan, result, log line or exception.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opslib import rtnl, secrets, slaac, virt
from opslib.changes import Change, Check, Plan, Result, Status
from opslib.dns import DnsClient, DnsRecord, RecordSpec, same_content
from opslib.errors import ApiError, InputError, OpsError

if TYPE_CHECKING:
    from opslib.lab.config import Lab

RUNBOOK = "cloudflare-aaaa"
MARKER = "opsbook cloudflare-aaaa"
_LABEL = re.compile(r"^(\*|[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)$")


# -- inputs (pure) -------------------------------------------------------------------


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

    @property
    def spec(self) -> RecordSpec:
        return RecordSpec(self.name, "AAAA", self.content, self.proxied, self.ttl, self.comment)


def _dns_name(value: str, what: str) -> str:
    name = value.strip().lower().rstrip(".")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InputError(f"{what} {value!r} is not a DNS name; write e.g. vm1.example.org")
    return name


def check_inputs(
    *,
    record_name: str,
    zone: str,
    token: str,
    api_base_url: str,
    proxied: bool,
    ttl: int,
    address: str,
    vm: str,
) -> tuple[str, str]:
    """Normalised (record name, zone); InputError (one line) for anything unusable."""
    zone_name = _dns_name(zone, "zone")
    if len(zone_name.split(".")) < 2:
        raise InputError(f"zone {zone!r} is not a registered domain; write e.g. example.org")
    name = _dns_name(record_name, "record_name")
    if name != zone_name and not name.endswith("." + zone_name):
        raise InputError(f"record_name {name} is not in zone {zone_name}; use NAME.{zone_name}")
    kind, sep, rest = token.partition(":")
    # Never echo the value: a mistaken value may be the token itself.
    if not sep or kind not in ("file", "env") or not rest:
        raise InputError("token names a source, never the token: use file:/path or env:NAME")
    if api_base_url:
        url = urlsplit(api_base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InputError(f"api_base_url {api_base_url!r} is not an http(s) URL; leave it empty")
        if url.scheme == "http" and not _loopback(url.hostname):
            raise InputError(
                f"api_base_url {api_base_url} would send the token unencrypted; use https "
                "(plain http only for the stand-in on 127.0.0.1)"
            )
    if ttl != 1 and not 60 <= ttl <= 86400:
        raise InputError(f"ttl {ttl} is out of range; use 1 (automatic) or 60..86400 seconds")
    if proxied and ttl != 1:
        raise InputError(
            f"ttl {ttl} has no effect on a proxied record (Cloudflare serves it with automatic "
            "TTL); use ttl=1 or proxied=False"
        )
    if address:
        check_address(address)
    elif not vm:
        raise InputError("give the VM (vm=NAME) or its IPv6 address (address=...)")
    return name, zone_name


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_address(address: str) -> str:
    """``address`` in canonical form if Cloudflare can reach it as an origin."""
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        raise InputError(
            f"address {address!r} is not an IPv6 address; give the VM's global IPv6 address, "
            "or leave address empty to find it from vm"
        ) from None
    bad = (
        "link-local" if ip.is_link_local else
        "loopback" if ip.is_loopback else
        "multicast" if ip.is_multicast else
        "unspecified" if ip.is_unspecified else
        "IPv4-mapped" if ip.ipv4_mapped else
        "unique-local (not routed on the internet)" if ip in ipaddress.ip_network("fc00::/7") else
        ""
    )  # fmt: skip
    if bad:
        raise InputError(f"address {ip} is {bad}; the proxy needs the VM's global IPv6 address")
    if ip.scope_id is not None:
        # ipaddress keeps "%eth0" (str() included); the API's AAAA content is a plain
        # address and would be refused at apply (400, code 9006).
        plain = str(ip).partition("%")[0]
        raise InputError(
            f"address {ip} has a zone index (%{ip.scope_id}), which no DNS record can hold; "
            f"write address={plain}"
        )
    return str(ip)


# -- planning (pure) ------------------------------------------------------------------


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


def make_plan(
    *, host: str, want: Desired, existing: Sequence[DnsRecord], replace: bool,
    notes: Sequence[str] = (), data: dict[str, Any] | None = None,
) -> Plan:  # fmt: skip
    """The Plan for ``want`` given the records observed (pure)."""
    ops, plan_notes = plan_records(existing, want, replace=replace)
    if not ops:
        plan_notes.append(f"{want.name} already points at {want.content}: nothing to do")
    return Plan(
        runbook=RUNBOOK,
        host=host,
        changes=tuple(op.change(want.zone) for op in ops),
        notes=(*notes, *plan_notes),
        data={"desired": asdict(want), "replace": replace, **(data or {})},
    )


# -- observation (side effects) -------------------------------------------------------


def load_token(source: str) -> tuple[str, list[str]]:
    """The token named by ``source``, and warnings about how it is kept."""
    value = secrets.load(source, warn=False)  # SecretError: one line, never the value
    warnings = []
    kind, _, path = source.partition(":")
    if kind == "file":
        with contextlib.suppress(OSError):
            if os.stat(path).st_mode & stat.S_IROTH:
                warnings.append(f"token file {path} is world-readable; run chmod o-r {path}")
    return value, warnings


@dataclass(frozen=True)
class VmAddress:
    address: str
    source: str  # how it was found, for the plan's notes


def slaac_candidates(domain: virt.Domain, networks: Sequence[virt.Network]) -> list[VmAddress]:
    """SLAAC addresses of the VM's NICs on NAT networks that carry an IPv6 /64 (pure)."""
    by_name = {n.name: n for n in networks}
    found = []
    for nic in domain.interfaces:
        net = by_name.get(nic.source) if nic.type == "network" else None
        ip6 = net.ip("ipv6") if net else None
        if net is None or ip6 is None or ip6.prefix != 64 or net.forward_mode != "nat":
            continue
        address = slaac.eui64_address(str(ip6.network), nic.mac)
        found.append(
            VmAddress(address, f"SLAAC of {nic.mac} in {ip6.network} (network {net.name})")
        )
    return found


def vm_address(*, libvirt_uri: str, netns: str, vm: str) -> VmAddress:
    """The VM's global IPv6 on nat-bridge: its SLAAC address, verified to answer ping6."""
    with virt.connect(libvirt_uri) as conn:
        domain = virt.get_domain(conn, vm)
        networks = virt.list_networks(conn)
    candidates = slaac_candidates(domain, networks)
    if not candidates:
        raise InputError(
            f"VM {vm} has no NIC on a NAT network with an IPv6 /64; run nat-bridge-ipv6 "
            "first, or pass address="
        )
    if not domain.running:
        raise InputError(f"VM {vm} is {domain.state}; start it, or pass address=")
    for found in candidates:
        if rtnl.ping(netns, found.address, tries=3).ok:
            return VmAddress(found.address, f"{found.source}, answers ping6")
    tried = ", ".join(c.address for c in candidates)
    raise InputError(
        f"VM {vm} does not answer ping6 at {tried}; check that it is up and uses SLAAC, "
        "or pass address="
    )


def _client(token: str, api_base_url: str) -> DnsClient:
    return DnsClient(token=token, base_url=api_base_url)


# -- the runbook's verbs ---------------------------------------------------------------


def plan(
    *,
    host: str,
    libvirt_uri: str,
    netns: str,
    vm: str,
    record_name: str,
    zone: str,
    token: str,
    api_base_url: str = "",
    proxied: bool = True,
    ttl: int = 1,
    address: str = "",
    replace: bool = False,
) -> Plan:
    """Observe the VM and the zone, and plan the record."""
    name, zone_name = check_inputs(
        record_name=record_name, zone=zone, token=token, api_base_url=api_base_url,
        proxied=proxied, ttl=ttl, address=address, vm=vm,
    )  # fmt: skip
    token_value, notes = load_token(token)
    if address:
        found = VmAddress(check_address(address), "given as a parameter")
    else:
        found = vm_address(libvirt_uri=libvirt_uri, netns=netns, vm=vm)
    want = Desired(zone_name, name, found.address, proxied, ttl, vm)
    with _client(token_value, api_base_url) as client:
        zone_id = client.zone_id(zone_name)
        existing = client.list_records(zone_id, name=name)
    return make_plan(
        host=host, want=want, existing=existing, replace=replace,
        notes=[f"address {found.address}: {found.source}", *notes],
        data={"zone_id": zone_id, "warnings": notes},
    )  # fmt: skip


def _do(client: DnsClient, zone_id: str, op: Op) -> DnsRecord | None:
    if op.action == "create" and op.after:
        return client.create_record(zone_id, op.after)
    if op.action == "update" and op.before and op.after:
        return client.update_record(zone_id, op.before.id, op.after)
    if op.action == "delete" and op.before:
        client.delete_record(zone_id, op.before)
        return None
    raise AssertionError(f"malformed op {op}")


def _undo(client: DnsClient, zone_id: str, op: Op, made: DnsRecord | None) -> None:
    b = op.before
    if op.action == "create" and made:
        client.delete_record(zone_id, made)
    elif op.action == "update" and b:
        client.update_record(
            zone_id, b.id, RecordSpec(b.name, b.type, b.content, b.proxied, b.ttl, b.comment)
        )
    elif op.action == "delete" and b:
        client.create_record(
            zone_id, RecordSpec(b.name, b.type, b.content, b.proxied, b.ttl, b.comment)
        )


def _rollback(client: DnsClient, zone_id: str, done: list[tuple[Op, DnsRecord | None]]) -> str:
    failed = []
    for op, made in reversed(done):
        try:
            _undo(client, zone_id, op, made)
        except OpsError as exc:
            failed.append(f"cannot undo {op.summary}: {exc}")
    return "; ".join(failed)


def apply(plan: Plan, *, token: str, api_base_url: str = "", replace: bool = False) -> Result:
    """Make the record as planned (re-reading the zone first), read back, verify."""
    if plan.runbook != RUNBOOK or "desired" not in plan.data:
        raise InputError(f"this is a plan of {plan.runbook}, not of {RUNBOOK}")
    want = Desired(**plan.data["desired"])
    token_value, warnings = load_token(token)
    result = Result(RUNBOOK, plan.host, "unchanged")
    for warning in warnings:
        result.checks.append(Check("token file", "warn", warning, "chmod o-r the token file"))
    with _client(token_value, api_base_url) as client:
        zone_id = client.zone_id(want.zone)
        with result.step("read records") as detail:
            existing = client.list_records(zone_id, name=want.name)
            detail.append(f"{len(existing)} record(s) at {want.name}")
        ops, _notes = plan_records(existing, want, replace=replace)
        done: list[tuple[Op, DnsRecord | None]] = []
        try:
            for op in ops:
                with result.step(op.summary):
                    done.append((op, _do(client, zone_id, op)))
        except ApiError as exc:
            undo_failed = _rollback(client, zone_id, done)
            result.status = "rolled back" if done and not undo_failed else "failed"
            result.summary = str(exc) + (f"; {undo_failed}" if undo_failed else "")
            result.checks.append(Check(f"AAAA {want.name}", "fail", str(exc), "apply again"))
            result.data["undone"] = [op.change(want.zone).to_json() for op, _ in done]
            return result
        with result.step("read back"):
            after = client.list_records(zone_id, name=want.name)
        checks = verify(after, want)
        result.checks += checks
        if any(c.status == "fail" for c in checks):
            # Undone changes are not changes made: keep them apart for the record.
            result.data["undone"] = [op.change(want.zone).to_json() for op, _ in done]
            undo_failed = _rollback(client, zone_id, done)
            result.status = "rolled back" if done and not undo_failed else "failed"
            result.summary = f"{want.name} did not read back as planned" + (
                f"; {undo_failed}" if undo_failed else ""
            )
            return result
    result.changes = [op.change(want.zone) for op, _ in done]
    result.status = "changed" if done else "unchanged"
    kept = next((r for r in after if r.type == "AAAA" and _points_at(r, want)), None)
    result.data = {"record": kept.to_json() if kept else None, "zone": want.zone}
    how = "proxied" if want.proxied else "DNS only"
    result.summary = f"{want.name} AAAA {want.content} ({how})" + (
        f": {len(done)} change(s)" if done else ": already so"
    )
    return result


def checks(
    *,
    host: str,
    libvirt_uri: str,
    netns: str,
    vm: str,
    record_name: str,
    zone: str,
    token: str,
    api_base_url: str = "",
    proxied: bool = True,
    ttl: int = 1,
    address: str = "",
) -> list[Check]:
    """Drift for host-health: does the record match the VM's address right now?"""
    name = f"DNS {record_name}"
    try:
        planned = plan(
            host=host, libvirt_uri=libvirt_uri, netns=netns, vm=vm, record_name=record_name,
            zone=zone, token=token, api_base_url=api_base_url, proxied=proxied, ttl=ttl,
            address=address,
        )  # fmt: skip
    except OpsError as exc:  # a refused plan, an unreachable API, a bad token: all fail here
        return [Check(name, "fail", str(exc), "run cloudflare-aaaa")]
    warnings = planned.data.get("warnings") or []
    if planned.changes:
        seen = "; ".join(c.summary for c in planned.changes)
        return [Check(name, "fail", f"drift: would {seen}", "run cloudflare-aaaa with apply")]
    status: Status = "warn" if warnings else "ok"
    want = planned.data["desired"]
    return [Check(name, status, f"AAAA {want['content']}" + "".join(f"; {w}" for w in warnings))]


def lab_parameters(lab: Lab, vm: str = "") -> dict[str, Any]:
    """This runbook's parameters for a lab: a NAT guest published through the stand-in."""
    from opslib.lab import cloudflare_api

    guest = vm or lab.guests[0].name
    return {
        "host": "lab",
        "libvirt_uri": lab.uri,
        "netns": lab.host_ns,
        "vm": guest,
        "record_name": f"{guest}.{cloudflare_api.LAB_ZONES[0]}",
        "zone": cloudflare_api.LAB_ZONES[0],
        "token": f"file:{cloudflare_api.lab_token_file(lab)}",
        "api_base_url": cloudflare_api.lab_url(lab),
        "proxied": True,
        "ttl": 1,
        "address": "",
        "replace": False,
    }
