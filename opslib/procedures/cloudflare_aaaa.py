"""cloudflare-aaaa: publish a nat-bridge VM over IPv4 through a proxied Cloudflare AAAA record.

The wiki: "make a DNS AAAA record on Cloudflare to use IPv4-to-IPv6 proxying, for
use with nat-bridge". With the proxy on, IPv4 clients reach Cloudflare, which
connects to the VM's IPv6 address over HTTP/HTTPS.

- ``plan``: check the parameters, load the token, find the VM's global IPv6
  (its SLAAC address on the NAT network's /64, verified with ping6) unless an
  address is given, read the name's records, and plan create / update / nothing.
  A CNAME, a proxied A, or an AAAA of someone else pointing elsewhere refuses
  the plan unless ``replace``.
- ``apply`` (opslib.contract.transaction): re-read the records, refuse when they no longer
  match the plan, make each call as a step, read back, verify; undo what it made,
  last first, when a call or the read-back fails.
- ``checks``: for host-health, whether the record matches the VM (drift).

The record rules (which record to keep, the calls, the read-back) are in
:mod:`opslib.host.cloudflare.aaaa`. The token's value is never in a plan, result, log line or
exception.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from opslib.contract import inputs
from opslib.contract.inputs import param
from opslib.contract.transaction import Procedure, Transaction
from opslib.core import secrets, slaac
from opslib.core.actions import Action, Detail
from opslib.core.changes import Check, Plan, Status
from opslib.core.errors import InputError, OpsError, VerificationFailed
from opslib.core.shellcmd import command
from opslib.host.cloudflare import aaaa
from opslib.host.cloudflare.aaaa import Desired, Op, plan_records, verify
from opslib.host.cloudflare.dns import DnsClient, DnsRecord
from opslib.host.kernel import icmp
from opslib.host.libvirt import netxml, virt

RUNBOOK = "cloudflare-aaaa"


# -- inputs ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Inputs(inputs.Declared):
    """The runbook's parameters, each converted to its declared type and the rules
    between them checked (the same check as ``opsbook run``'s), before any request."""

    libvirt_uri: str = inputs.libvirt_uri()
    netns: str = inputs.netns()
    vm: str = param(
        "vm?", "the VM to publish (empty when address is given)", "", rules=("or address",)
    )
    record_name: str = param(
        "dns-name", "the record's name, a full name inside the zone", example="vm.example.org",
        rules=("in zone",),
    )  # fmt: skip
    zone: str = param("dns-zone", "the Cloudflare zone", example="example.org")
    # a source, file:/path or env:NAME: never the token
    token: str = param(
        "secret", "file:/path or env:NAME of the API token",
        example="file:/etc/opsbook/cloudflare-token",
    )  # fmt: skip
    api_base_url: str = param(
        "https-url?", "API base URL; empty for Cloudflare's own (the lab's stand-in otherwise)", ""
    )
    proxied: bool = param("bool", "Cloudflare proxies the name (IPv4 clients reach the VM)", True)
    ttl: int = param(
        "int[1|60..86400]",
        "TTL in seconds, 1 = automatic (proxied records are always automatic)", 1,
        rules=("1 if proxied",),
    )  # fmt: skip
    address: str = param(
        "ipv6-global?", "publish this address instead of the VM's SLAAC address", ""
    )
    replace: bool = param(
        "bool", "replace a CNAME or another proxied record that holds the name", False
    )


# -- planning (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class DnsPlan(Plan):
    """cloudflare-aaaa's plan: the record it wants, and what host-health's check says."""

    desired: Desired | None = None
    replace: bool = False
    zone_id: str = ""
    warnings: tuple[str, ...] = ()  # about the token file


def records_plan(
    *, host: str, want: Desired, existing: Sequence[DnsRecord], replace: bool,
    notes: Sequence[str] = (), zone_id: str = "", warnings: Sequence[str] = (),
) -> DnsPlan:  # fmt: skip
    """The Plan for ``want`` given the records observed (pure)."""
    ops, plan_notes = plan_records(existing, want, replace=replace)
    if not ops:
        plan_notes.append(f"{want.name} already points at {want.content}: nothing to do")
    return DnsPlan(
        runbook=RUNBOOK,
        host=host,
        changes=tuple(op.change(want.zone) for op in ops),
        notes=(*notes, *plan_notes),
        desired=want, replace=replace, zone_id=zone_id, warnings=tuple(warnings),
    )  # fmt: skip


# -- observation (side effects) -------------------------------------------------------


def load_token(source: str) -> tuple[str, list[str]]:
    """The token named by ``source``, and warnings about how it is kept."""
    value = secrets.load(source, warn=False)  # SecretError: one line, never the value
    warnings = []
    kind, _, path = source.partition(":")
    if kind == "file":
        with contextlib.suppress(OSError):
            if os.stat(path).st_mode & stat.S_IROTH:
                warnings.append(
                    f"token file {path} is world-readable; run {command('chmod', 'o-r', path)}"
                )
    return value, warnings


@dataclass(frozen=True)
class VmAddress:
    address: str
    source: str  # how it was found, for the plan's notes


def slaac_candidates(domain: virt.Domain, networks: Sequence[netxml.Network]) -> list[VmAddress]:
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
        if icmp.ping(netns, found.address, tries=3).ok:
            return VmAddress(found.address, f"{found.source}, answers ping6")
    tried = ", ".join(c.address for c in candidates)
    raise InputError(
        f"VM {vm} does not answer ping6 at {tried}; check that it is up and uses SLAAC, "
        "or pass address="
    )


@dataclass(frozen=True)
class Api:
    """The open API client of one plan or apply, and how its token is kept."""

    client: DnsClient
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class Observed:
    want: Desired
    found: str  # how the address was found
    zone_id: str
    records: tuple[DnsRecord, ...]  # at the record's name
    warnings: tuple[str, ...]


# -- the runbook's verbs ---------------------------------------------------------------


@dataclass
class Applying:
    """What the actions of one apply share with finish."""

    done: list[Op] = field(default_factory=list)  # the record operations done, in order
    after: list[DnsRecord] = field(default_factory=list)  # the records read back


class CloudflareAaaa(Procedure[Inputs, Observed, Api]):
    name = RUNBOOK
    inputs = Inputs
    observe_step = "read records"

    @contextlib.contextmanager
    def session(self, inputs: Inputs) -> Iterator[Api]:
        token_value, warnings = load_token(inputs.token)
        with DnsClient(token=token_value, base_url=inputs.api_base_url) as client:
            yield Api(client, tuple(warnings))

    def observe(self, inputs: Inputs, session: Api) -> Observed:
        if inputs.address:
            found = VmAddress(inputs.address, "given as a parameter")
        else:
            found = vm_address(libvirt_uri=inputs.libvirt_uri, netns=inputs.netns, vm=inputs.vm)
        want = Desired(
            inputs.zone, inputs.record_name, found.address, inputs.proxied, inputs.ttl, inputs.vm
        )
        zone_id = session.client.zone_id(inputs.zone)
        existing = session.client.list_records(zone_id, name=inputs.record_name)
        return Observed(want, found.source, zone_id, tuple(existing), session.warnings)

    def describe(self, observed: Observed) -> str:
        return f"{len(observed.records)} record(s) at {observed.want.name}"

    def plan(self, inputs: Inputs, observed: Observed, host: str) -> Plan:
        return make_plan(inputs, observed, host)

    def steps(self, tx: Transaction[Inputs, Observed, Api]) -> list[Action]:
        client, zone_id, want = tx.session.client, tx.observed.zone_id, tx.observed.want
        ops, _notes = plan_records(tx.observed.records, want, replace=tx.inputs.replace)
        shared = tx.share(Applying())
        done = shared.done

        def action(op: Op) -> Action:
            made: list[DnsRecord] = []

            def do(_detail: Detail) -> None:
                record = aaaa.do(client, zone_id, op)
                made.extend([record] if record else [])
                done.append(op)

            def undo(_detail: Detail) -> None:
                aaaa.undo(client, zone_id, op, made[0] if made else None)

            return Action(op.summary, do, undo, undo_name=f"undo {op.summary}")

        def read_back(_detail: Detail) -> None:
            shared.after = client.list_records(zone_id, name=want.name)

        checked = Action("read back", read_back, check=lambda: verify(shared.after, want))
        return [*(action(op) for op in ops), checked]

    def finish(self, tx: Transaction[Inputs, Observed, Api]) -> None:
        applied, result, want = tx.applied, tx.result, tx.observed.want
        shared = tx.shared(Applying)
        result.checks[:0] = [
            Check("token file", "warn", w, "chmod o-r the token file") for w in tx.session.warnings
        ]
        undo_failed = "; ".join(f"cannot undo {a.name}: {exc}" for a, exc in applied.problems)
        if not applied.ok:
            # Undone changes are not changes made: keep them apart for the record.
            result.data["undone"] = [op.change(want.zone).to_json() for op in shared.done]
            if isinstance(applied.error, VerificationFailed):  # the read-back's check
                summary = f"{want.name} did not read back as planned"
            else:
                summary = str(applied.error)
                result.checks.append(Check(f"AAAA {want.name}", "fail", summary, "apply again"))
            result.summary = summary + (f"; {undo_failed}" if undo_failed else "")
            return
        after = shared.after
        kept = next((r for r in after if r.type == "AAAA" and want.points_at(r)), None)
        result.data = {"record": kept.to_json() if kept else None, "zone": want.zone}
        how = "proxied" if want.proxied else "DNS only"
        done = len(shared.done)
        result.summary = f"{want.name} AAAA {want.content} ({how})" + (
            f": {done} change(s)" if done else ": already so"
        )

    def comparable(self, observed: Observed) -> Any:
        # An undone delete is a new record with a new id: compare what the records say.
        return observed.want, sorted(r.text() for r in observed.records)


PROCEDURE = CloudflareAaaa()


def make_plan(inputs: Inputs, observed: Observed, host: str) -> Plan:
    """The runbook's planner (pure): observed state in, plan out."""
    want = observed.want
    return records_plan(
        host=host, want=want, existing=observed.records, replace=inputs.replace,
        notes=[f"address {want.content}: {observed.found}", *observed.warnings],
        zone_id=observed.zone_id, warnings=observed.warnings,
    )  # fmt: skip


plan, apply = inputs.verbs(PROCEDURE)


def checks(*, host: str, **given: Any) -> list[Check]:
    """Drift for host-health: does the record match the VM's address right now?
    ``given``: the inputs, as :func:`plan` takes them."""
    name = f"DNS {given.get('record_name', '')}"
    try:
        planned = plan(host=host, **given)
    except OpsError as exc:  # a refused plan, an unreachable API, a bad token: all fail here
        return [Check(name, "fail", str(exc), "run cloudflare-aaaa")]
    if not isinstance(planned, DnsPlan):  # what make_plan makes
        raise TypeError(f"cloudflare-aaaa planned a {type(planned)}, not a DnsPlan")
    warnings = planned.warnings
    if planned.changes:
        seen = "; ".join(c.summary for c in planned.changes)
        return [Check(name, "fail", f"drift: would {seen}", "run cloudflare-aaaa with apply")]
    status: Status = "warn" if warnings else "ok"
    content = planned.desired.content if planned.desired else "?"
    return [Check(name, status, f"AAAA {content}" + "".join(f"; {w}" for w in warnings))]
