"""ipv6-tunnel: the Hurricane Electric 6in4 tunnel of a daemon host, and its health.

The wiki's "IPv6 connectivity": each daemon host has its own 6in4 tunnel to the
broker, which routes a /64 to it (put on nat-bridge by the nat-bridge-ipv6 runbook).
This runbook makes the tunnel link (``sit`` through pyroute2), its client address,
the default IPv6 route via the broker and the MTU, and persists them as the broker's
own ``iface NAME inet6 v4tunnel`` stanza in the interfaces file so that the tunnel
survives a reboot.

``implementation="userspace"`` is for the lab, whose kernel has no ``sit``: the link
is a TUN device served by :mod:`opslib.lab.sixinfour` (same wire format); it is not
persisted (it runs as long as its process). On a kernel without sit, the kernel
implementation stops with one line before it changes anything.

When a step fails, apply puts back what it found: a replaced link is made again (the
old userspace end restarted, or a sit link to the old endpoints) with its MTU, state
and addresses, an address it added to an existing link is removed, the default IPv6
route it replaced is restored, and the interfaces file is written back byte for byte.

:func:`checks` is the read-only health the host-health runbook also runs.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opslib import interfaces, netlink, rtnl, virt
from opslib.changes import Change, Check, Plan, Result, ensure_unchanged
from opslib.errors import ApplyError, InputError, NetlinkError, OpsError, Unsupported
from opslib.lab import sixinfour
from opslib.procedures.nat_bridge_ipv6 import gateway, has_ipv6

if TYPE_CHECKING:
    from opslib.lab.config import Lab

RUNBOOK = "ipv6-tunnel"
IMPLEMENTATIONS = ("kernel", "userspace")
EOPNOTSUPP = 95
PING_SIZE = 1400  # the MTU check: 1400 bytes of payload must cross unfragmented


@dataclass(frozen=True)
class TunnelSpec:
    name: str
    local_ipv4: str
    server_ipv4: str
    client: ipaddress.IPv6Interface
    server_ipv6: str
    routed_prefix: ipaddress.IPv6Network
    mtu: int = 1480
    ttl: int = 255
    implementation: str = "kernel"


def _ipv4(what: str, value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(str(value).strip()))
    except ValueError:
        raise InputError(f"{what} {value!r} is not an IPv4 address") from None


def validate(
    *,
    tunnel: str,
    local_ipv4: str,
    server_ipv4: str,
    client_ipv6: str,
    server_ipv6: str,
    routed_prefix: str,
    mtu: int = 1480,
    implementation: str = "kernel",
) -> TunnelSpec:
    """Every tunnel parameter checked; InputError (one line) before any side effect."""
    if not tunnel or len(tunnel) > 15 or "/" in tunnel or " " in tunnel:
        raise InputError(f"tunnel name {tunnel!r} is not a link name (1-15 characters)")
    if implementation not in IMPLEMENTATIONS:
        raise InputError(f"implementation {implementation!r}: use kernel or userspace")
    local, server = _ipv4("local_ipv4", local_ipv4), _ipv4("server_ipv4", server_ipv4)
    try:
        client = ipaddress.IPv6Interface(str(client_ipv6).strip())
    except ValueError:
        raise InputError(
            f"client_ipv6 {client_ipv6!r} is not IPv6 address/64, e.g. 2001:db8:1::2/64"
        ) from None
    if "/" not in str(client_ipv6) or client.network.prefixlen != 64:
        raise InputError(f"client_ipv6 {client_ipv6!r} needs its /64, e.g. 2001:db8:1::2/64")
    try:
        server6 = ipaddress.IPv6Address(str(server_ipv6).strip())
    except ValueError:
        raise InputError(f"server_ipv6 {server_ipv6!r} is not an IPv6 address") from None
    if server6 not in client.network or server6 == client.ip:
        raise InputError(
            f"server_ipv6 {server6} must be the broker's other end in {client.network}"
        )
    from opslib.procedures.nat_bridge_ipv6 import validate_prefix

    routed = validate_prefix(routed_prefix)
    if routed.overlaps(client.network):
        raise InputError(f"routed_prefix {routed} overlaps the tunnel's {client.network}")
    if not 1280 <= int(mtu) <= 1480:
        raise InputError(f"mtu {mtu}: 6in4 over a 1500-byte path carries 1280..1480")
    return TunnelSpec(
        tunnel, local, server, client, str(server6), routed, int(mtu), 255, implementation
    )


# -- the interfaces stanza (pure) -------------------------------------------------------


def stanza_options(spec: TunnelSpec) -> list[tuple[str, str]]:
    """The broker's example stanza, in its order."""
    return [
        ("address", str(spec.client.ip)),
        ("netmask", str(spec.client.network.prefixlen)),
        ("endpoint", spec.server_ipv4),
        ("local", spec.local_ipv4),
        ("ttl", str(spec.ttl)),
        ("gateway", spec.server_ipv6),
        ("mtu", str(spec.mtu)),
    ]


def with_stanza(text: str, path: str, spec: TunnelSpec) -> str:
    """The interfaces file with ``auto NAME`` and ``iface NAME inet6 v4tunnel`` set."""
    model = interfaces.parse(text, path)
    found = [(i, s) for i, s in model.ifaces(spec.name) if s.family == "inet6"]
    stanzas = list(model.stanzas)
    if found:
        index, stanza = found[0]
        stanza = interfaces.set_head(stanza, ["iface", spec.name, "inet6", "v4tunnel"])
        for key, value in stanza_options(spec):
            stanza = interfaces.set_option(stanza, key, value, model.indent)
        stanzas[index] = stanza
    else:
        model = interfaces.ensure_final_newline(model)
        stanzas = list(model.stanzas)
        if stanzas and stanzas[-1].kind != "blank":
            stanzas.append(interfaces.Stanza((interfaces.Line("\n"),)))
        stanzas.append(
            interfaces.iface_stanza(
                spec.name, "inet6", "v4tunnel", stanza_options(spec), model.indent
            )
        )
    auto = any(
        s.kind in ("auto", "allow") and s.classes[0] == "auto" and spec.name in s.classes[1]
        for s in stanzas
    )
    if not auto:
        at = found[0][0] if found else len(stanzas) - 1
        stanzas.insert(at, interfaces.Stanza((interfaces.Line(f"auto {spec.name}\n"),)))
    return interfaces.with_stanzas(model, stanzas).render()


# -- observed state -------------------------------------------------------------------------


@dataclass(frozen=True)
class TunnelState:
    exists: bool
    kind: str = ""  # sit | tun
    up: bool = False
    mtu: int = 0
    local: str = ""
    remote: str = ""
    addresses: tuple[str, ...] = ()  # global IPv6 CIDRs on it
    default_gateway: str = ""  # of the default IPv6 route when it leaves through the tunnel
    default_elsewhere: str = ""  # "via GW dev N" of a default IPv6 route not via the tunnel
    interfaces_text: str | None = None  # None: the file does not exist (read byte-exact)
    # The default IPv6 route as found, to put back: (gateway, ifindex, via the tunnel).
    previous_default: tuple[str, int, bool] | None = None


def pidfile(run_dir: str, name: str) -> Path:
    return Path(run_dir) / f"sixinfour-{name}.pid"


def _sit_endpoints(netns: str, index: int) -> tuple[str, str]:
    with netlink.ipr(netns) as ip, netlink.translated("cannot read the tunnel"):
        msg = ip.get_links(index)[0]
    info = msg.get_attr("IFLA_LINKINFO")
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    if data is None:
        return "", ""
    return data.get_attr("IFLA_SIT_LOCAL") or "", data.get_attr("IFLA_SIT_REMOTE") or ""


def read_text(path: str) -> str | None:
    """The file as it is, line ends included (CRLF stays CRLF); None when it is absent."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc


def observe(netns: str, name: str, *, interfaces_file: str, run_dir: str) -> TunnelState:
    text = read_text(interfaces_file)
    link = netlink.link_by_name(netns, name)
    default = netlink.default_route(netns, family=socket.AF_INET6)
    if link is None:
        elsewhere = f"via {default.gateway} dev {default.ifindex}" if default else ""
        return TunnelState(
            False,
            default_elsewhere=elsewhere,
            interfaces_text=text,
            previous_default=(default.gateway, default.ifindex, False) if default else None,
        )
    local = remote = ""
    if link.kind == "sit":
        local, remote = _sit_endpoints(netns, link.index)
    elif link.kind == "tun":
        running = sixinfour.running_spec(pidfile(run_dir, name))
        if running is not None:
            local, remote = running.local, running.remote
    addrs = tuple(
        f"{a.address}/{a.prefix}"
        for a in netlink.addresses(netns, ifindex=link.index)
        if a.family == "ipv6" and a.scope == "global"
    )
    via_tunnel = default is not None and default.ifindex == link.index
    return TunnelState(
        True,
        kind=link.kind,
        up=link.up,
        mtu=link.mtu,
        local=local,
        remote=remote,
        addresses=addrs,
        default_gateway=default.gateway if default and via_tunnel else "",
        default_elsewhere=(
            f"via {default.gateway} dev {default.ifindex}" if default and not via_tunnel else ""
        ),
        interfaces_text=text,
        previous_default=(default.gateway, default.ifindex, via_tunnel) if default else None,
    )


def sit_supported() -> bool:
    """Whether this kernel can make sit links (loaded, built in, or a module to load)."""
    if Path("/sys/module/sit").exists():
        return True
    release = os.uname().release
    for listing in ("modules.dep", "modules.builtin"):
        try:
            text = Path(f"/lib/modules/{release}/{listing}").read_text()
        except OSError:
            continue
        if "/sit.ko" in text:
            return True
    return False


# -- the plan (pure) --------------------------------------------------------------------------


def compute_plan(
    state: TunnelState,
    spec: TunnelSpec,
    *,
    host: str,
    interfaces_file: str,
    sit_available: bool = True,
) -> Plan:
    changes: list[Change] = []
    notes: list[str] = []
    kind = "sit" if spec.implementation == "kernel" else "tun"
    wanted_ends = (spec.local_ipv4, spec.server_ipv4)
    link_target = f"link:{spec.name}"
    recreate = state.exists and (state.kind != kind or (state.local, state.remote) != wanted_ends)
    if (not state.exists or recreate) and kind == "sit" and not sit_available:
        raise Unsupported(
            f"this kernel has no sit (6in4) support, so {spec.name} cannot be made; "
            "load the sit module or build a kernel with CONFIG_IPV6_SIT (nothing was changed)"
        )
    describe = f"{kind} {spec.local_ipv4} -> {spec.server_ipv4} mtu {spec.mtu} ttl {spec.ttl}"
    if not state.exists:
        changes.append(Change(link_target, "create", f"create {spec.name}: {describe}"))
    elif recreate:
        seen = f"{state.kind} {state.local or '?'} -> {state.remote or '?'}"
        changes.append(
            Change(link_target, "replace", f"replace {spec.name} ({seen}) by {describe}")
        )
    fresh = not state.exists or recreate
    if not fresh and state.mtu != spec.mtu:
        changes.append(Change(link_target, "mtu", f"MTU {state.mtu} -> {spec.mtu}"))
    if fresh or not state.up:
        changes.append(Change(link_target, "up", f"bring {spec.name} up"))
    client = str(spec.client)
    if fresh or client not in state.addresses:
        changes.append(Change(link_target, "address", f"add {client} to {spec.name}"))
    if fresh or state.default_gateway != spec.server_ipv6:
        was = state.default_elsewhere or (
            f"via {state.default_gateway}" if state.default_gateway else "none"
        )
        changes.append(
            Change(
                "route:default/ipv6",
                "route",
                f"default IPv6 route via {spec.server_ipv6} dev {spec.name}",
                was,
                f"via {spec.server_ipv6} dev {spec.name}",
            )
        )
    for extra in state.addresses:
        if not fresh and extra != client:
            notes.append(f"{spec.name} also has {extra}; left alone")
    new_text = None
    if spec.implementation == "kernel":
        before = state.interfaces_text
        new_text = with_stanza(before or "", interfaces_file, spec)
        if new_text != before:
            changes.append(
                Change(
                    f"file:{interfaces_file}",
                    "update" if before is not None else "create",
                    f"persist {spec.name} as `iface {spec.name} inet6 v4tunnel`",
                    before,
                    new_text,
                )
            )
    else:
        notes.append(
            f"userspace 6in4 (lab): {spec.name} lives as long as its process; "
            "it is not written to the interfaces file"
        )
    return Plan(
        runbook=RUNBOOK,
        host=host,
        changes=tuple(changes),
        notes=tuple(notes),
        data={"interfaces": new_text, "actions": sorted({c.action for c in changes})},
    )


# -- netlink requests (shared by the live path and the message tests) -----------------------


def sit_request(ip: Any, spec: TunnelSpec) -> None:
    """Create the sit link: what ``ip tunnel add NAME mode sit remote R local L ttl 255`` does."""
    ip.link(
        "add",
        ifname=spec.name,
        kind="sit",
        sit_local=spec.local_ipv4,
        sit_remote=spec.server_ipv4,
        sit_ttl=spec.ttl,
        mtu=spec.mtu,
    )


def config_requests(ip: Any, spec: TunnelSpec, index: int, actions: set[str]) -> None:
    """MTU + up, client address, default route (the plan's actions) for the link at ``index``."""
    if actions & {"mtu", "up"}:
        ip.link("set", index=index, mtu=spec.mtu, state="up")
    if "address" in actions:
        ip.addr(
            "add",
            index=index,
            address=str(spec.client.ip),
            prefixlen=spec.client.network.prefixlen,
            family=socket.AF_INET6,
        )
    if "route" in actions:
        ip.route(
            "replace",
            dst="::/0",
            gateway=spec.server_ipv6,
            oif=index,
            family=socket.AF_INET6,
            table=254,
        )


# -- side effects -------------------------------------------------------------------------------


def _observe_and_plan(
    *,
    host: str,
    netns: str,
    tunnel: str,
    local_ipv4: str,
    server_ipv4: str,
    client_ipv6: str,
    server_ipv6: str,
    routed_prefix: str,
    mtu: int,
    implementation: str,
    interfaces_file: str,
    run_dir: str,
) -> tuple[TunnelSpec, TunnelState, Plan]:
    """Validate, observe and plan: what plan shows and what apply re-checks."""
    spec = validate(
        tunnel=tunnel,
        local_ipv4=local_ipv4,
        server_ipv4=server_ipv4,
        client_ipv6=client_ipv6,
        server_ipv6=server_ipv6,
        routed_prefix=routed_prefix,
        mtu=mtu,
        implementation=implementation,
    )
    state = observe(netns, tunnel, interfaces_file=interfaces_file, run_dir=run_dir)
    planned = compute_plan(
        state,
        spec,
        host=host,
        interfaces_file=interfaces_file,
        sit_available=implementation != "kernel" or sit_supported(),
    )
    return spec, state, planned


def plan(
    *,
    host: str,
    netns: str,
    tunnel: str,
    local_ipv4: str,
    server_ipv4: str,
    client_ipv6: str,
    server_ipv6: str,
    routed_prefix: str,
    mtu: int = 1480,
    implementation: str = "kernel",
    interfaces_file: str = "/etc/network/interfaces",
    run_dir: str = "/run/opsbook",
) -> Plan:
    _spec, _state, planned = _observe_and_plan(
        host=host,
        netns=netns,
        tunnel=tunnel,
        local_ipv4=local_ipv4,
        server_ipv4=server_ipv4,
        client_ipv6=client_ipv6,
        server_ipv6=server_ipv6,
        routed_prefix=routed_prefix,
        mtu=mtu,
        implementation=implementation,
        interfaces_file=interfaces_file,
        run_dir=run_dir,
    )
    return planned


def _create_link(netns: str, spec: TunnelSpec, run_dir: str, replace: bool) -> None:
    if spec.implementation == "userspace":
        end = sixinfour.EndSpec(netns, spec.name, spec.local_ipv4, spec.server_ipv4, spec.mtu)
        if replace:
            sixinfour.stop(pidfile(run_dir, spec.name))
            netlink.delete_link(netns, spec.name)
        sixinfour.start(end, pidfile(run_dir, spec.name))
        return
    if replace:
        netlink.delete_link(netns, spec.name)
    try:
        with netlink.ipr(netns) as ip, netlink.translated(f"cannot create sit link {spec.name}"):
            sit_request(ip, spec)
    except NetlinkError as exc:
        if exc.errno == EOPNOTSUPP:
            raise Unsupported(
                f"this kernel has no sit (6in4) support, so {spec.name} cannot be made; "
                "load the sit module or build a kernel with CONFIG_IPV6_SIT"
            ) from exc
        raise


def _remove_link(netns: str, spec: TunnelSpec, run_dir: str) -> None:
    if spec.implementation == "userspace":
        sixinfour.stop(pidfile(run_dir, spec.name))
    netlink.delete_link(netns, spec.name)


def _recreate_old_link(
    netns: str,
    spec: TunnelSpec,
    state: TunnelState,
    old_end: sixinfour.EndSpec | None,
    run_dir: str,
) -> None:
    """The link a replace deleted, as observed: its userspace end, or a sit link."""
    if state.kind == "tun":
        if old_end is None:
            raise ApplyError(f"the old {spec.name} had no userspace 6in4 process to start again")
        sixinfour.stop(pidfile(run_dir, spec.name))
        sixinfour.start(old_end, pidfile(run_dir, spec.name))
    elif state.kind == "sit":
        old = replace(spec, local_ipv4=state.local, server_ipv4=state.remote, mtu=state.mtu)
        with netlink.ipr(netns) as ip, netlink.translated(f"cannot recreate {spec.name}"):
            sit_request(ip, old)
    else:
        raise ApplyError(f"cannot recreate a {state.kind or 'plain'} link {spec.name}")


def _restore_link_config(netns: str, spec: TunnelSpec, state: TunnelState) -> None:
    """MTU, up/down and global addresses of the link as observed (none the plan added)."""
    with netlink.ipr(netns) as ip, netlink.translated(f"cannot restore {spec.name}"):
        found = ip.link_lookup(ifname=spec.name)
        if not found:
            raise ApplyError(f"{spec.name} is gone")
        index = found[0]
        ip.link("set", index=index, mtu=state.mtu, state="up" if state.up else "down")
        present = {
            f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}"
            for m in ip.get_addr(index=index, family=socket.AF_INET6)
        }
        for cidr in set(state.addresses) - present:
            iface = ipaddress.IPv6Interface(cidr)
            ip.addr(
                "add",
                index=index,
                address=str(iface.ip),
                prefixlen=iface.network.prefixlen,
                family=socket.AF_INET6,
            )
        client = str(spec.client)
        if client in present and client not in state.addresses:
            ip.addr(
                "del",
                index=index,
                address=str(spec.client.ip),
                prefixlen=spec.client.network.prefixlen,
                family=socket.AF_INET6,
            )


def _restore_default_route(netns: str, spec: TunnelSpec, state: TunnelState) -> str:
    """The default IPv6 route as observed; what was done ("" when nothing to do)."""
    now = netlink.default_route(netns, family=socket.AF_INET6)
    link = netlink.link_by_name(netns, spec.name)
    with netlink.ipr(netns) as ip, netlink.translated("cannot restore the default IPv6 route"):
        if state.previous_default is None:
            if now is not None and link is not None and now.ifindex == link.index:
                ip.route("del", dst="::/0", oif=link.index, family=socket.AF_INET6, table=254)
                return "default IPv6 route via the tunnel removed"
            return ""
        gateway, ifindex, via_tunnel = state.previous_default
        if via_tunnel:
            if link is None:
                raise ApplyError(f"{spec.name} is gone, so its default route via {gateway} too")
            ifindex = link.index
        if now is not None and (now.gateway, now.ifindex) == (gateway, ifindex):
            return ""
        kwargs: dict[str, Any] = {"gateway": gateway} if gateway else {}
        ip.route("replace", dst="::/0", oif=ifindex, family=socket.AF_INET6, table=254, **kwargs)
        return f"default IPv6 route via {gateway or '-'} dev index {ifindex} back"


def restore_file(path: str, text: str | None) -> None:
    """Put the file back byte for byte as observed (remove it when there was none)."""
    if text is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ApplyError(f"cannot remove {path}: {exc.strerror}") from exc
    else:
        interfaces.write_atomic(path, text)


def roll_back(
    netns: str,
    spec: TunnelSpec,
    state: TunnelState,
    *,
    touched: set[str],
    actions: set[str],
    old_end: sixinfour.EndSpec | None,
    run_dir: str,
    interfaces_file: str,
    done: list[str],
) -> list[str]:
    """Undo what apply began (``touched``), back to ``state``; what could not be undone.

    A replaced link is made again as it was (its userspace end started again, or a sit
    link to its old endpoints), with its MTU, state and addresses; an existing link
    loses the address apply added; the default IPv6 route goes back to the one found.
    """
    problems: list[str] = []

    def attempt(doing: str, fn: Callable[[], str | None]) -> bool:
        """Run one undo step; its outcome (or ``doing``) in ``done``, or a problem."""
        try:
            outcome = fn()
        except OpsError as exc:
            problems.append(f"{doing} failed: {exc}")
            return False
        if outcome != "":
            done.append(outcome or doing)
        return True

    name = spec.name
    if "link" in touched:
        attempt(f"new {name} removed", lambda: _remove_link(netns, spec, run_dir))
        if state.exists and attempt(
            f"old {name} ({state.kind} {state.local} -> {state.remote}) made again",
            lambda: _recreate_old_link(netns, spec, state, old_end, run_dir),
        ):
            attempt(
                "its MTU, state and addresses back",
                lambda: _restore_link_config(netns, spec, state),
            )
    elif "config" in touched and actions & {"mtu", "up", "address"}:
        attempt(
            f"{name}'s MTU, state and addresses back",
            lambda: _restore_link_config(netns, spec, state),
        )
    if touched & {"link", "config"}:
        attempt("default IPv6 route back", lambda: _restore_default_route(netns, spec, state))
    if "file" in touched:
        existed = state.interfaces_text is not None
        attempt(
            f"{interfaces_file} {'restored' if existed else 'removed'}",
            lambda: restore_file(interfaces_file, state.interfaces_text),
        )
    return problems


def apply(
    plan: Plan,  # what the operator reviewed: apply re-plans and refuses if it differs
    *,
    host: str,
    netns: str,
    tunnel: str,
    local_ipv4: str,
    server_ipv4: str,
    client_ipv6: str,
    server_ipv6: str,
    routed_prefix: str,
    mtu: int = 1480,
    implementation: str = "kernel",
    interfaces_file: str = "/etc/network/interfaces",
    run_dir: str = "/run/opsbook",
    libvirt_uri: str = "",
    nat_network: str = "",
) -> Result:
    spec, state, fresh = _observe_and_plan(
        host=host,
        netns=netns,
        tunnel=tunnel,
        local_ipv4=local_ipv4,
        server_ipv4=server_ipv4,
        client_ipv6=client_ipv6,
        server_ipv6=server_ipv6,
        routed_prefix=routed_prefix,
        mtu=mtu,
        implementation=implementation,
        interfaces_file=interfaces_file,
        run_dir=run_dir,
    )
    ensure_unchanged(plan, fresh)
    result = Result(RUNBOOK, host, "unchanged")
    actions = set(fresh.data["actions"])
    replacing = "replace" in actions and state.exists
    # What a replace takes away, to start it again on failure (userspace: its process).
    old_end = (
        sixinfour.running_spec(pidfile(run_dir, spec.name))
        if state.exists and state.kind == "tun"
        else None
    )
    touched: set[str] = set()  # link | config | file: what apply has begun to change
    link_actions = actions & {"mtu", "up", "address", "route"}
    try:
        if actions & {"create", "replace"}:
            with result.step(f"create {spec.name} ({spec.implementation})") as detail:
                touched.add("link")
                _create_link(netns, spec, run_dir, replace=replacing)
                detail.append(f"{spec.name} exists")
        if link_actions:
            with result.step(f"configure {spec.name}") as detail:
                link = netlink.link_by_name(netns, spec.name)
                if link is None:
                    raise ApplyError(f"{spec.name} vanished while configuring it")
                touched.add("config")
                with netlink.ipr(netns) as ip, netlink.translated(f"cannot configure {spec.name}"):
                    config_requests(ip, spec, link.index, link_actions)
                detail.append(", ".join(sorted(link_actions)))
        new_text = fresh.data["interfaces"]
        if new_text is not None and new_text != state.interfaces_text:
            with result.step(f"persist in {interfaces_file}") as detail:
                if state.interfaces_text is not None:
                    detail.append(f"backup {interfaces.backup(interfaces_file)}")
                touched.add("file")
                interfaces.write_atomic(interfaces_file, new_text)
    except OpsError as exc:
        if isinstance(exc, Unsupported) and touched == {"link"} and not replacing:
            raise  # nothing was changed: the new link was the first change, and refused
        with result.step("roll back") as detail:
            problems = roll_back(
                netns,
                spec,
                state,
                touched=touched,
                actions=link_actions,
                old_end=old_end,
                run_dir=run_dir,
                interfaces_file=interfaces_file,
                done=detail,
            )
        if problems:
            result.status = "failed"
            result.summary = f"{exc}; rolling back left: {'; '.join(problems)}"
        else:
            result.status = "rolled back"
            put_back = ", ".join(detail) or "nothing had changed"
            result.summary = f"{exc}; rolled back ({put_back})"
        return result
    if fresh.changes:
        result.status = "changed"
        result.changes = list(fresh.changes)
    result.checks = checks(
        netns=netns,
        tunnel=tunnel,
        client_ipv6=client_ipv6,
        server_ipv6=server_ipv6,
        routed_prefix=routed_prefix,
        libvirt_uri=libvirt_uri,
        nat_network=nat_network,
    )
    failing = [c.name for c in result.checks if not c.ok]
    done = "made" if fresh.changes else "already there"
    result.summary = f"{spec.name} {done}" + (
        f"; failing: {', '.join(failing)}" if failing else "; every check passes"
    )
    return result


# -- health (read-only; host-health runs it too) ---------------------------------------------


def _check(name: str, ok: bool, seen: str, fix: str) -> Check:
    return Check(name, "ok" if ok else "fail", seen, "" if ok else fix)


def _forwarding(netns: str) -> str:
    cmd = ["sysctl", "-n", "net.ipv6.conf.all.forwarding"]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def checks(
    *,
    netns: str,
    tunnel: str,
    client_ipv6: str,
    server_ipv6: str,
    routed_prefix: str,
    libvirt_uri: str = "",
    nat_network: str = "",
) -> list[Check]:
    """Tunnel up, address, default route, broker answers, 1400-byte ping, /64 on nat-bridge."""
    client = ipaddress.IPv6Interface(client_ipv6)
    found: list[Check] = []
    link = netlink.link_by_name(netns, tunnel)
    found.append(
        _check(
            f"{tunnel} up",
            link is not None and link.up,
            "absent" if link is None else ("up" if link.up else "down"),
            f"apply the ipv6-tunnel runbook for {tunnel}",
        )
    )
    addrs = (
        [
            f"{a.address}/{a.prefix}"
            for a in netlink.addresses(netns, ifindex=link.index)
            if a.family == "ipv6"
        ]
        if link
        else []
    )
    found.append(
        _check(
            f"{client} on {tunnel}",
            str(client) in addrs,
            ", ".join(addrs) or "no IPv6 address",
            f"ip -6 addr add {client} dev {tunnel}",
        )
    )
    default = netlink.default_route(netns, family=socket.AF_INET6)
    via = bool(link and default and default.ifindex == link.index)
    found.append(
        _check(
            f"default IPv6 route via {tunnel}",
            via,
            f"via {default.gateway or '-'} dev index {default.ifindex}" if default else "none",
            f"ip -6 route replace default via {server_ipv6} dev {tunnel}",
        )
    )
    answers = bool(link) and rtnl.ping(netns, server_ipv6, wait=2).ok
    found.append(
        _check(
            f"broker {server_ipv6} answers ping6",
            answers,
            "answers" if answers else "no answer",
            "check the broker's IPv4 endpoint is reachable and allows protocol 41",
        )
    )
    big = answers and rtnl.ping(netns, server_ipv6, size=PING_SIZE, wait=2).ok
    found.append(
        _check(
            f"{PING_SIZE}-byte ping6 to {server_ipv6} (MTU)",
            big,
            "passes" if big else "fails",
            f"set the tunnel MTU to 1480 (or the broker's) on {tunnel}",
        )
    )
    forwarding = _forwarding(netns)
    found.append(
        _check(
            "IPv6 forwarding on",
            forwarding == "1",
            f"net.ipv6.conf.all.forwarding={forwarding or '?'}",
            "libvirt turns it on for a network with IPv6: apply nat-bridge-ipv6",
        )
    )
    if libvirt_uri and nat_network:
        found.append(_routed_check(netns, libvirt_uri, nat_network, routed_prefix))
    return found


def _routed_check(netns: str, libvirt_uri: str, nat_network: str, routed_prefix: str) -> Check:
    net = ipaddress.IPv6Network(routed_prefix)
    name = f"routed {net} on {nat_network}"
    try:
        with virt.connect(libvirt_uri) as conn:
            network = virt.get_network(conn, nat_network)
    except OpsError as exc:
        return Check(name, "fail", str(exc), "check libvirt_uri and nat_network")
    on_bridge = any(
        a.family == "ipv6" and a.address == gateway(net) and a.prefix == 64
        for a in netlink.addresses(netns)
        if (link := netlink.link_by_name(netns, network.bridge)) and a.ifindex == link.index
    )
    ok = network.active and has_ipv6(network.xml, net) and on_bridge
    seen = (
        f"{gateway(net)}/64 on {network.bridge}"
        if ok
        else f"{nat_network}: {'running' if network.active else 'stopped'}, "
        f"{'has' if has_ipv6(network.xml, net) else 'lacks'} {gateway(net)}/64 in its XML"
    )
    return _check(name, ok, seen, f"apply nat-bridge-ipv6 with prefix {net}")


def run(
    *,
    host: str,
    netns: str,
    tunnel: str,
    client_ipv6: str,
    server_ipv6: str,
    routed_prefix: str,
    libvirt_uri: str = "",
    nat_network: str = "",
) -> Result:
    """The health checks alone, as a read-only result."""
    found = checks(
        netns=netns,
        tunnel=tunnel,
        client_ipv6=client_ipv6,
        server_ipv6=server_ipv6,
        routed_prefix=routed_prefix,
        libvirt_uri=libvirt_uri,
        nat_network=nat_network,
    )
    failing = [c.name for c in found if not c.ok]
    return Result(
        RUNBOOK,
        host,
        "ok" if not failing else "failed",
        summary="healthy" if not failing else f"failing: {', '.join(failing)}",
        checks=found,
    )


# -- the lab ---------------------------------------------------------------------------------------


def lab_parameters(lab: Lab) -> dict[str, Any]:
    """This runbook's parameters for a lab (its userspace 6in4)."""
    return {
        "host": "lab",
        "netns": lab.host_ns,
        "tunnel": "he-ipv6",
        "local_ipv4": lab.host_eth0_ip,
        "server_ipv4": lab.he_ipv4,
        "client_ipv6": f"{lab.tunnel_host_ipv6}/{lab.tunnel_prefixlen}",
        "server_ipv6": lab.tunnel_he_ipv6,
        "routed_prefix": lab.routed_prefix,
        "mtu": 1480,
        "implementation": "userspace",
        "interfaces_file": str(lab.interfaces_file),
        "run_dir": str(lab.root),
        "libvirt_uri": lab.uri,
        "nat_network": lab.nat_network,
    }


def _only(fn: Callable[..., Any], values: dict[str, Any]) -> dict[str, Any]:
    import inspect

    names = inspect.signature(fn).parameters
    return {k: v for k, v in values.items() if k in names}


def apply_lab(lab: Lab) -> Result:
    values = lab_parameters(lab)
    return apply(plan(**_only(plan, values)), **_only(apply, values))
