"""host-health: every check of the wiki page's setup as one read-only table.

Meant to run every hour on every daemon host: exit 1 (through the runbook
engine) when any check fails, with the failed checks named in the summary. A
check that cannot run (no token, a missing piece) is a warn with the reason,
never a crash of the whole run. Check groups run concurrently so that the
whole headless run stays within a few seconds.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from opslib.contract import inputs
from opslib.contract.inputs import param
from opslib.core.changes import Check, Result
from opslib.core.errors import OpsError
from opslib.core.shellcmd import command, then, word
from opslib.host.kernel import netlink
from opslib.host.libvirt import virt
from opslib.procedures.host_health import guest_reboot, ipv6_mode

RUNBOOK = "host-health"
MIN_FREE_BYTES = 200 * 1024 * 1024


def _guarded(group: str, fn: Callable[[], list[Check]]) -> list[Check]:
    """Run a check group; a group that cannot run becomes one warn with the reason."""
    try:
        return fn()
    except OpsError as exc:
        return [Check(group, "warn", f"could not check: {exc}", "see the reason")]
    except Exception as exc:  # a bug in one check must not hide the others
        return [Check(group, "warn", f"could not check: {type(exc).__name__}: {exc}")]


def libvirt_checks(libvirt_uri: str, networks: Mapping[str, str]) -> list[Check]:
    """libvirtd answers; each network (name: the runbook that defines it) exists, is
    active and autostarted."""
    try:
        with virt.connect(libvirt_uri) as conn:
            found = {n.name: n for n in virt.list_networks(conn)}
    except OpsError as exc:
        return [
            Check(
                "libvirtd reachable",
                "fail",
                str(exc),
                f"start libvirtd ({command('systemctl', 'start', 'libvirtd')}) and check "
                f"{word(libvirt_uri)}",
            )
        ]
    out = [Check("libvirtd reachable", "ok", libvirt_uri)]
    for name, runbook in networks.items():
        net = found.get(name)
        if net is None:
            out.append(
                Check(f"network {name}", "fail", "not defined", f"run the {runbook} runbook")
            )
            continue
        problems, fixes = [], []
        if not net.active:
            problems.append("inactive")
            fixes.append(command("virsh", "net-start", name))
        if not net.autostart:
            problems.append("no autostart")
            fixes.append(command("virsh", "net-autostart", name))
        out.append(
            Check(
                f"network {name}",
                "fail" if problems else "ok",
                ", ".join(problems) or f"active, autostart, bridge {net.bridge}",
                then(*fixes),
            )
        )
    return out


def bridge_checks(netns: str, bridge: str, uplink: str) -> list[Check]:
    """br0 is up, has eth0 as its port and an IPv4 address."""
    links = {link.name: link for link in netlink.links(netns)}
    br = links.get(bridge)
    if br is None or br.kind != "bridge":
        return [Check(f"{bridge} up", "fail", "missing", "run the forward-bridge runbook")]
    out = [
        Check(
            f"{bridge} up",
            "ok" if br.up else "fail",
            br.operstate.lower() if br.up else "down",
            "" if br.up else f"{command('ip', 'link', 'set', bridge, 'up')}, or restart networking",
        )
    ]
    port = links.get(uplink)
    is_port = port is not None and port.master == br.index
    out.append(
        Check(
            f"{uplink} port of {bridge}",
            "ok" if is_port else "fail",
            "yes" if is_port else ("missing" if port is None else "not a port"),
            "" if is_port else "run the forward-bridge runbook",
        )
    )
    addrs = [
        f"{a.address}/{a.prefix}"
        for a in netlink.addresses(netns, ifindex=br.index)
        if a.family == "ipv4" and a.scope == "global"
    ]
    out.append(
        Check(
            f"{bridge} address",
            "ok" if addrs else "fail",
            " ".join(addrs) or "no IPv4 address",
            "" if addrs else "is the host's MAC registered in NetReg? restart networking",
        )
    )
    return out


def records_checks(records_dir: str) -> list[Check]:
    """The record store is writable and has space left."""
    root = Path(records_dir or "records")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".health-"):
            pass
    except OSError as exc:
        fix = f"make {word(root)} a directory this account can write"
        return [Check("records writable", "fail", f"{root}: {exc.strerror}", fix)]
    free = shutil.disk_usage(root).free
    return [
        Check("records writable", "ok", str(root)),
        Check(
            "records space",
            "ok" if free >= MIN_FREE_BYTES else "fail",
            f"{free // (1024 * 1024)} MiB free",
            "" if free >= MIN_FREE_BYTES else f"free space on {word(root)} or prune old records",
        ),
    ]


def summarize(checks: list[Check]) -> tuple[str, str]:
    failing = [c.name for c in checks if c.status == "fail"]
    warns = [c.name for c in checks if c.status == "warn"]
    if failing:
        checks_word = "check" if len(failing) == 1 else "checks"
        return "failed", f"{len(failing)} {checks_word} failed: {', '.join(failing)}"
    tail = f" ({len(warns)} warn: {', '.join(warns)})" if warns else ""
    return "ok", f"all {len(checks)} checks passed{tail}"


def run_groups(groups: dict[str, Callable[[], list[Check]]]) -> list[Check]:
    """Run the check groups concurrently, keeping their order in the table."""
    with ThreadPoolExecutor(max_workers=min(8, len(groups) or 1)) as pool:
        futures = [pool.submit(_guarded, name, fn) for name, fn in groups.items()]
        return [c for f in futures for c in f.result()]


def result_of(host: str, checks: list[Check], data: dict[str, Any] | None = None) -> Result:
    status, summary = summarize(checks)
    return Result(
        RUNBOOK,
        host,
        "failed" if status == "failed" else "ok",
        summary=summary,
        checks=checks,
        data=data or {},
    )


def records_dir_default() -> str:
    return os.environ.get("OPSBOOK_RECORDS", "records")


def nat_prefix_checks(libvirt_uri: str, nat_network: str, routed_prefix: str) -> list[Check]:
    """The NAT network carries the routed /64 (the wiki's nat-bridge IPv6 block)."""
    with virt.connect(libvirt_uri) as conn:
        net = virt.get_network(conn, nat_network)
    ip6 = net.ip("ipv6")
    want = ipaddress.IPv6Network(routed_prefix)
    ok = ip6 is not None and ip6.network == want
    seen = f"{ip6.address}/{ip6.prefix}" if ip6 else "no IPv6 on the network"
    fix = "" if ok else f"run nat-bridge-ipv6 with prefix {want}"
    return [Check(f"{nat_network} has {want}", "ok" if ok else "fail", seen, fix)]


def tunnel_checks(
    *, netns: str, tunnel: str, client_ipv6: str, server_ipv6: str, routed_prefix: str
) -> list[Check]:
    from opslib.procedures import ipv6_tunnel

    return ipv6_tunnel.checks(
        netns=netns,
        tunnel=tunnel,
        client_ipv6=client_ipv6,
        server_ipv6=server_ipv6,
        routed_prefix=routed_prefix,
    )


def managed_dns_records(records_dir: str, host: str) -> list[dict[str, Any]]:
    """The AAAA records opslib manages on this host: the last successful
    cloudflare-aaaa apply per record name, from the record index."""
    from opslib.records import store

    latest: dict[str, dict[str, Any]] = {}
    for row in store.Store(records_dir).list(runbook="cloudflare-aaaa", host=host):
        p = row.parameters
        name = p.get("record_name")
        if row.status == "ok" and p.get("apply") and name and name not in latest:
            latest[name] = p
    return list(latest.values())


def _dns_check(
    host: str, libvirt_uri: str, netns: str, p: dict[str, Any], token: str, api_base_url: str
) -> list[Check]:
    from opslib.procedures import cloudflare_aaaa

    return cloudflare_aaaa.checks(
        host=host,
        libvirt_uri=libvirt_uri,
        netns=netns,
        vm=p["vm"],
        record_name=p["record_name"],
        zone=p["zone"],
        token=token,
        api_base_url=api_base_url or p.get("api_base_url", ""),
        proxied=bool(p.get("proxied", True)),
        ttl=int(p.get("ttl", 1)),
    )


def _guests(libvirt_uri: str) -> dict[str, virt.Domain]:
    try:
        with virt.connect(libvirt_uri, readonly=True) as conn:
            return {d.name: d for d in virt.list_domains(conn)}
    except OpsError:  # the libvirt group says so; each record is then checked as it can be
        return {}


def dns_checks(
    *, host: str, libvirt_uri: str, netns: str, records_dir: str, token: str, api_base_url: str
) -> list[Check]:
    """DNS drift: every managed AAAA record points at its VM's current address."""
    managed = managed_dns_records(records_dir, host)
    if not managed:
        return [Check("DNS records", "ok", "no AAAA records managed on this host")]
    guests = _guests(libvirt_uri)
    out: list[Check] = []
    for p in managed:
        down = guest_reboot.down(guests.get(p.get("vm") or ""), p["record_name"])
        if down is not None:
            out.append(down)
            continue
        source = token or p.get("token", "")
        if not source:
            out.append(Check(f"DNS {p['record_name']}", "warn", "no token source to read it"))
            continue
        check = partial(_dns_check, host, libvirt_uri, netns, p, source, api_base_url)
        out += _guarded(f"DNS {p['record_name']}", check)
    return out


def reboot_checks(
    *, host: str, libvirt_uri: str, forward_network: str, bridge: str, records_dir: str
) -> list[Check]:
    """:func:`come_back` for the guests of ``libvirt_uri`` and the AAAA records managed here."""
    published: dict[str, list[str]] = {}
    for p in managed_dns_records(records_dir, host):
        if p.get("vm"):
            published.setdefault(p["vm"], []).append(p["record_name"])
    with virt.connect(libvirt_uri, readonly=True) as conn:
        domains = virt.list_domains(conn)
    return guest_reboot.come_back(
        domains, forward_network=forward_network, bridge=bridge, published=published
    )


@dataclass(frozen=True, kw_only=True)
class Inputs(inputs.Declared):
    """What to check; an empty optional part is not checked. Each field is converted to
    its declared type and the rules between them checked (a tunnel check needs the
    tunnel's addresses: without them it would only warn, and the run would pass with the
    tunnel never looked at), the same check as ``opsbook run``'s."""

    libvirt_uri: str = inputs.libvirt_uri()
    netns: str = inputs.netns()
    nat_network: str = param("network-name?", "the NAT network (libvirt) with the routed "
                             "IPv6 /64 (empty = not checked)", "nat-bridge")  # fmt: skip
    forward_network: str = param("network-name?", "the bridged network on br0 (empty = not "
                                 "checked)", "forward-bridge")  # fmt: skip
    bridge: str = param("ifname?", "the host bridge of forward-bridge (empty = not checked)",
                        "br0")  # fmt: skip
    uplink: str = param("ifname", "the bridge's uplink port", "eth0")
    routed_prefix: str = param("ipv6-prefix64?", "the /64 routed to this host (empty = not "
                               "checked)", "")  # fmt: skip
    tunnel: str = param("ifname?", "the 6in4 tunnel's link name (empty = not checked)", "",
                        rules=("needs client_ipv6", "needs server_ipv6"))  # fmt: skip
    client_ipv6: str = param("ipv6-cidr64?", "this host's tunnel address with /64", "")
    server_ipv6: str = param("ipv6?", "the broker's tunnel address", "",
                             rules=("in client_ipv6",))  # fmt: skip
    ipv6_mode: str = param(
        "choice[auto|tunnel|room]", "how the host reaches IPv6: its own tunnel, the room "
        "router (RAs on the bridge), or auto (the tunnel link exists, else an RA route)", "auto",
    )  # fmt: skip
    token: str = param("secret?", "Cloudflare token source for DNS drift (file:/path or "
                       "env:NAME; empty = as recorded)", "")  # fmt: skip
    api_base_url: str = param(
        "https-url?", "Cloudflare API base URL (empty = the SDK's default)", ""
    )
    records_dir: str = ""  # "" = $OPSBOOK_RECORDS, else records/


def _run(i: Inputs, host: str) -> Result:
    """All checks; read-only."""
    records_dir = i.records_dir or records_dir_default()
    libvirt_uri, netns, nat_network = i.libvirt_uri, i.netns, i.nat_network
    defines = {
        nat_network: "nat-bridge-ipv6",
        i.forward_network: "forward-bridge",
    }  # network: runbook
    groups: dict[str, Callable[[], list[Check]]] = {
        "libvirt": lambda: libvirt_checks(libvirt_uri, {n: rb for n, rb in defines.items() if n}),
    }
    if i.bridge:
        groups["bridge"] = lambda: bridge_checks(netns, i.bridge, i.uplink)
    if i.routed_prefix and nat_network:
        groups["nat-bridge IPv6"] = lambda: nat_prefix_checks(
            libvirt_uri, nat_network, i.routed_prefix
        )
    segment = i.bridge or i.uplink
    mode, why = ipv6_mode.decide(netns, i.ipv6_mode, i.tunnel, segment)
    groups["IPv6 via"] = lambda: [ipv6_mode.mode_check(mode, why, i.tunnel, segment)]
    if mode == "tunnel" and i.tunnel:
        groups["tunnel"] = lambda: tunnel_checks(
            netns=netns, tunnel=i.tunnel, client_ipv6=i.client_ipv6,
            server_ipv6=i.server_ipv6, routed_prefix=i.routed_prefix,
        )  # fmt: skip
    elif mode == "room":
        groups["room router"] = lambda: ipv6_mode.room_checks(netns, segment, i.routed_prefix)
    # a guest's global IPv6 is due only where the NAT network is given a routed /64
    ipv6_on = nat_network if i.routed_prefix else ""
    groups["guests"] = lambda: guest_checks(
        libvirt_uri=libvirt_uri, netns=netns, nat_network=ipv6_on
    )
    groups["DNS"] = lambda: dns_checks(
        host=host, libvirt_uri=libvirt_uri, netns=netns, records_dir=records_dir,
        token=i.token, api_base_url=i.api_base_url,
    )  # fmt: skip
    groups[guest_reboot.COME_BACK] = lambda: reboot_checks(
        host=host, libvirt_uri=libvirt_uri, forward_network=i.forward_network,
        bridge=i.bridge, records_dir=records_dir,
    )  # fmt: skip
    groups["records"] = lambda: records_checks(records_dir)
    return result_of(host, run_groups(groups), {"ipv6_mode": mode or "none"})


run = inputs.reading(Inputs, _run)


def guest_checks(*, libvirt_uri: str, netns: str, nat_network: str) -> list[Check]:
    """Every running guest has an address; every guest on ``nat_network`` (empty: none,
    the host routes no IPv6 to its guests) a global IPv6."""
    from opslib.procedures import find_vm_ip

    # No agent: a guest without one would cost a timeout per run.
    vms = find_vm_ip.find(libvirt_uri=libvirt_uri, netns=netns, agent=False)
    out: list[Check] = []
    for vm in vms:
        if vm.state != "running":
            continue
        name = f"guest {vm.name}"
        if not vm.nics:
            out.append(Check(name, "warn", "running without interfaces"))
            continue
        ips = vm.ips()
        problems = []
        if not ips:
            problems.append("no address seen")
        for nic in vm.nics:
            if nat_network and nic.network == nat_network and not nic.global_ips("ipv6"):
                problems.append(f"no global IPv6 on {nat_network} ({nic.mac})")
        out.append(
            Check(
                name,
                "fail" if problems else "ok",
                "; ".join(problems) or " ".join(ips),
                "run find-vm-ip with probe = True; check the guest's network configuration"
                if problems
                else "",
            )
        )
    return out or [Check("guests", "ok", "no running guests")]
