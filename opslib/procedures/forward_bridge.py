"""forward-bridge: br0 over eth0 in the interfaces file, a confirm-or-revert restart
of networking, and the libvirt network ``forward-bridge`` (``<forward mode='bridge'/>``).

The wiki page says: add ``iface eth0 inet manual`` / ``auto br0`` / ``iface br0 inet
dhcp`` with ``bridge_ports eth0`` and ``bridge_stp off``, then ``systemctl restart
networking``. Over SSH that restart is how an operator locks themselves out, so
:func:`apply` keeps a backup, checks the new file with ``ifup --no-act``, restarts,
and verifies br0 within a deadline; if that fails it restores the backup, restarts
again and checks the old state is back.

Layers: :func:`observe` reads (files, netlink, libvirt); :func:`make_plan` and the
``plan_*`` functions are pure (observed state in, Plan out); :func:`apply` acts.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
import shlex
import shutil
import string
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lxml import etree

from opslib import confirm, netlink, rtnl, transaction, virt
from opslib import interfaces as ifs
from opslib.changes import Change, Check, Plan, Result
from opslib.errors import ApplyError, HostError, InputError, UnknownName
from opslib.transaction import Action, Detail, Procedure, Run

RUNBOOK = "forward-bridge"
# Seconds the revert watchdog waits beyond the restart and verification windows.
WATCHDOG_MARGIN = 30.0
DEFAULT_RESTART = (
    "ifdown --force -i {old} {ifaces}; ifdown --force {ifaces} 2>/dev/null; "
    "systemctl restart networking"
)
RESTART_FIELDS = frozenset({"old", "new", "ifaces"})

# Link kinds that can be the host's way out; "" is a physical NIC.
UPLINK_KINDS = frozenset({"", "veth", "bond", "team", "vlan"})
# Options that give an interface an address; they move from eth0 to the bridge.
ADDRESSING = frozenset(
    {"address", "netmask", "broadcast", "network", "gateway", "metric", "pointopoint",
     "scope", "hostname", "leasehours", "leasetime", "vendor", "client", "media",
     "bootfile", "server", "hwaddr",
     "dns_nameservers", "dns_search", "dns_domain", "dns_sortlist", "dns_options",
     "request_prefix", "accept_ra", "autoconf", "privext", "dhcp", "preferred_lifetime"}
)  # fmt: skip
# inet methods whose addressing the bridge takes over from the uplink.
TAKE_OVER = frozenset({"static", "dhcp", "bootp", "ipv4ll"})
HOOKS = frozenset({"pre_up", "up", "post_up", "pre_down", "down", "post_down"})
# A hook that adds addresses or routes ("ip route add ...", "ip -6 addr ...", "route add").
_NEEDS_ADDRESS = re.compile(r"(\bip\s+(-\S+\s+)*(r|ro|route|a|addr|address)\b|^route\b)")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_NETWORK_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")


# -- parameters ------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    """The planner's parameters, checked: apply gets them back from ``plan.data``."""

    libvirt_uri: str
    netns: str
    interfaces_file: str
    uplink: str = "eth0"
    bridge: str = "br0"
    address: str = ""  # static CIDR on the bridge; "" = the uplink's addressing (or DHCP)
    gateway: str = ""
    network_name: str = RUNBOOK

    def __post_init__(self) -> None:
        for what, name in (("uplink", self.uplink), ("bridge", self.bridge)):
            if not _IFNAME.match(name) or name in (".", ".."):
                raise InputError(
                    f"{what} {name!r} is not an interface name; use 1-15 letters, digits, . _ -"
                )
        if self.uplink == self.bridge:
            raise InputError(f"uplink and bridge are both {self.uplink!r}; give them two names")
        if not _NETWORK_NAME.match(self.network_name):
            raise InputError(
                f"network_name {self.network_name!r} is not a libvirt network name; "
                "use letters, digits, . _ + -"
            )
        if not self.interfaces_file.startswith("/"):
            raise InputError(
                f"interfaces_file {self.interfaces_file!r} is relative; give an absolute path"
            )
        if self.address:
            try:
                iface = ipaddress.IPv4Interface(self.address)
            except ValueError as exc:
                raise InputError(
                    f"address {self.address!r} is not an IPv4 address with prefix; "
                    "write it like 192.0.2.10/24 (or leave it empty for DHCP)"
                ) from exc
            if "/" not in self.address or iface.network.prefixlen >= 31:
                raise InputError(
                    f"address {self.address!r} needs a prefix length below 31, e.g. 192.0.2.10/24"
                )
            if not self.gateway:
                raise InputError(
                    "address is static but gateway is empty; give the default router on "
                    "the bridge's network as gateway"
                )
            try:
                gw = ipaddress.IPv4Address(self.gateway)
            except ValueError as exc:
                raise InputError(f"gateway {self.gateway!r} is not an IPv4 address") from exc
            if gw not in iface.network or gw == iface.ip:
                raise InputError(
                    f"gateway {self.gateway} is not another address in {iface.network}; "
                    "give the router of the bridge's network"
                )
        elif self.gateway:
            raise InputError(
                "gateway is set but address is empty (DHCP); DHCP supplies the gateway, "
                "so leave gateway empty or give a static address"
            )


# -- observation ---------------------------------------------------------------------


@dataclass(frozen=True)
class LinkFacts:
    name: str
    kind: str  # netlink's kind: "" for a physical NIC, veth, bridge, tun ...
    master: str  # name of the bridge it is a port of, "" when none
    up: bool = True


@dataclass(frozen=True)
class Observed:
    tree: ifs.Tree
    links: dict[str, LinkFacts]
    network: virt.Network | None


def observe_links(netns: str) -> dict[str, LinkFacts]:
    found = netlink.links(netns)
    names = {link.index: link.name for link in found}
    kinds = {}
    for link in found:
        kind = link.kind
        if link.name == "lo" or (not kind and link.mac in ("", "00:00:00:00:00:00")):
            kind = "loopback"
        kinds[link.name] = LinkFacts(link.name, kind, names.get(link.master, ""), link.up)
    return kinds


def observe_network(libvirt_uri: str, name: str) -> virt.Network | None:
    with virt.connect(libvirt_uri) as conn:
        try:
            return virt.get_network(conn, name)
        except UnknownName:
            return None


def observe(p: Params) -> Observed:
    """Read the interfaces files, the links of the netns and the libvirt network."""
    return Observed(
        ifs.load_tree(p.interfaces_file),
        observe_links(p.netns),
        observe_network(p.libvirt_uri, p.network_name),
    )


# -- planning: the interfaces files (pure) -------------------------------------------


def _where(path: str, stanza: ifs.Stanza) -> str:
    return f"{path}:{stanza.lineno}"


def _ports(iface: ifs.Iface | ifs.Stanza) -> list[str]:
    return (iface.option("bridge_ports") or "").split()


def _refusals(tree: ifs.Tree, uplink: str, bridge: str) -> None:
    """Stanzas that make the conversion unsafe: InputError naming the file and line."""
    for path, i, s in tree.stanzas():
        where = _where(path, s)
        if s.kind == "mapping" and any(fnmatch.fnmatchcase(uplink, pat) for pat in s.head[1:]):
            raise InputError(
                f"{uplink} is renamed by a mapping stanza at {where}; convert it by hand "
                "or remove the mapping first"
            )
        if s.kind == "rename" and any(w.split("=")[0] == uplink for w in s.head[1:]):
            raise InputError(f"{uplink} is renamed at {where}; name the renamed link as uplink")
        if s.kind != "iface":
            continue
        f = tree.iface(path, i)  # options inherited from a template count too
        if s.name.startswith(uplink + ":"):
            raise InputError(
                f"{s.name} at {where} puts an alias address on {uplink}, which becomes a "
                f"bridge port; move it to {bridge}:{s.name.split(':', 1)[1]} first"
            )
        ports = _ports(f)
        if s.name == bridge:
            others = [p for p in ports if p not in (uplink, "none")]
            if others:
                raise InputError(
                    f"{bridge} already bridges {' '.join(others)} ({where}); choose another "
                    "bridge name or take it out of the file first"
                )
        elif uplink in ports or "all" in ports:
            raise InputError(
                f"{uplink} is already a port of {s.name} ({where}); choose that bridge as "
                "bridge or free the uplink first"
            )
        slaves = (f.option("bond_slaves") or "").split()
        if uplink in slaves:
            raise InputError(f"{uplink} is a slave of bond {s.name} ({where}); use uplink={s.name}")
        if s.name == uplink and f.option("bond_master"):
            raise InputError(
                f"{uplink} is a slave of bond {f.option('bond_master')} ({where}); "
                f"use uplink={f.option('bond_master')}"
            )


def _one_inet(tree: ifs.Tree, name: str) -> ifs.Iface | None:
    """The inet stanza of ``name``, its family and method resolved through ``inherits``."""
    found = [f for f in tree.ifaces(name) if f.family == "inet"]
    if len(found) > 1:
        places = ", ".join(_where(f.path, f.stanza) for f in found)
        raise InputError(f"{name} has {len(found)} inet stanzas ({places}); keep one")
    return found[0] if found else None


def _manual_uplink(up: ifs.Iface, indent: str) -> tuple[ifs.Stanza, list[str]]:
    """The uplink's stanza as ``inet manual`` without addressing, and notes.

    A template it inherits from stays named when it holds no addressing (link settings
    such as mtu keep applying); otherwise its other options are written into the stanza,
    since inheriting would bring its address back.
    """
    s = ifs.remove_options(up.stanza, lambda k: k in ADDRESSING)
    head = ["iface", up.name, "inet", "manual"]
    notes: list[str] = []
    template = up.stanza.inherits
    if template:
        inherited_addressing = [k for k, _v in up.inherited if ifs.option_key(k) in ADDRESSING]
        if not inherited_addressing:
            head += ["inherits", template]
        else:
            keep = [(k, v) for k, v in up.inherited if ifs.option_key(k) not in ADDRESSING]
            s = ifs.prepend_options(s, keep, indent)
            notes.append(
                f"{up.name} no longer inherits {template}, which holds addressing "
                f"({', '.join(inherited_addressing)})"
                + (f"; its {', '.join(k for k, _v in keep)} lines are copied in" if keep else "")
            )
    return _trim_blanks(ifs.set_head(s, head)), notes


def _same_address(stanza: ifs.Stanza, cidr: str) -> bool:
    current = stanza.option("address") or ""
    netmask = stanza.option("netmask")
    try:
        if "/" not in current and netmask:
            current = f"{current}/{netmask}"
        return ipaddress.IPv4Interface(current) == ipaddress.IPv4Interface(cidr)
    except ValueError:
        return False


@dataclass(frozen=True)
class Addressing:
    """How the bridge gets its IPv4 address: an inet method and its option lines."""

    method: str
    options: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        options = ", ".join(f"{k} {v}" for k, v in self.options)
        return f"inet {self.method}" + (f" ({options})" if options else "")


def _addressing_of(f: ifs.Iface) -> Addressing:
    return Addressing(
        f.method, tuple((k, v) for k, v in f.options if ifs.option_key(k) in ADDRESSING)
    )


def _same_addressing(a: Addressing, b: Addressing) -> bool:
    def norm(x: Addressing) -> tuple[str, list[tuple[str, str]]]:
        return x.method, [(ifs.option_key(k), v) for k, v in x.options]

    return norm(a) == norm(b)


def _bridge_addressing(
    up: ifs.Iface | None, br: ifs.Iface | None, p: Params
) -> tuple[Addressing | None, str]:
    """What the bridge's inet stanza should say (None: keep the bridge's own), and a note.

    By default the bridge takes over the uplink's method and addressing options, so
    converting changes how the host is reached by nothing; ``address``/``gateway``
    override that. An uplink without addressing leaves a configured bridge as it is,
    else the bridge asks DHCP (the wiki's stanza).
    """
    if p.address:
        dns = [
            (k, v) for k, v in (up.options if up else []) if ifs.option_key(k).startswith("dns_")
        ]
        wanted = Addressing("static", (("address", p.address), ("gateway", p.gateway), *dns))
        return wanted, f"{p.bridge} gets the given address: {wanted.describe()}"
    if up is not None and up.method in TAKE_OVER:
        wanted = _addressing_of(up)
        if (
            br is not None
            and br.method != "manual"
            and not _same_addressing(_addressing_of(br), wanted)
        ):
            raise InputError(
                f"both {p.uplink} ({_where(up.path, up.stanza)}) and {p.bridge} "
                f"({_where(br.path, br.stanza)}) configure an IPv4 address; remove "
                f"{p.bridge}'s or give address and gateway"
            )
        where = _where(up.path, up.stanza)
        return (
            wanted,
            f"{p.bridge} takes over {p.uplink}'s addressing ({where}): {wanted.describe()}",
        )
    if up is not None and up.method != "manual":
        raise InputError(
            f"{p.uplink} is configured 'inet {up.method}' ({_where(up.path, up.stanza)}); "
            "forward-bridge converts an uplink that is static, dhcp, bootp, ipv4ll or manual"
        )
    if br is not None and br.method != "manual":
        return None, ""
    return Addressing("dhcp"), (
        f"{p.uplink} has no IPv4 addressing of its own; {p.bridge} asks DHCP (the wiki's "
        "stanza; give address and gateway for a static one)"
    )


def _edit_bridge(
    bridge: ifs.Iface, p: Params, wanted: Addressing | None, indent: str
) -> ifs.Stanza:
    s = bridge.stanza
    if p.address:
        if bridge.method != "static":
            s = ifs.set_head(s, ["iface", p.bridge, "inet", "static"])
        if not _same_address(s, p.address):
            s = ifs.remove_options(s, lambda k: k == "netmask")
            s = ifs.set_option(s, "address", p.address, indent)
        if s.option("gateway") != p.gateway:
            s = ifs.set_option(s, "gateway", p.gateway, indent)
    elif wanted is not None and not (
        bridge.method == wanted.method and _same_addressing(_addressing_of(bridge), wanted)
    ):
        s = ifs.remove_options(s, lambda k: k in ADDRESSING)
        s = ifs.set_head(s, ["iface", p.bridge, "inet", wanted.method])
        s = ifs.prepend_options(s, wanted.options, indent)
    if _ports(s) != [p.uplink]:
        s = ifs.set_option(s, "bridge_ports", p.uplink, indent)
    if (s.option("bridge_stp") or "").lower() not in ("off", "no", "0"):
        s = ifs.set_option(s, "bridge_stp", "off", indent)
    return s


def _kept_options(
    tree: ifs.Tree, models: dict[str, list[ifs.Stanza]], up: ifs.Iface | None, uplink: str
) -> list[str]:
    """The option keys ifup still acts on for the uplink in the planned files."""
    keys: list[str] = []
    for f in tree.ifaces(uplink):
        if f.family == "inet6" and f.method != "manual":
            continue  # moves to the bridge
        if up is not None and (f.path, f.index) == (up.path, up.index):
            new = models[f.path][f.index]
            keys += [k for k, _v in new.options]
            if new.inherits:
                keys += [k for k, _v in f.inherited]
        else:
            keys += [k for k, _v in f.options]
    return list(dict.fromkeys(keys))


def _terminated(stanza: ifs.Stanza) -> ifs.Stanza:
    last = stanza.lines[-1]
    if last.raw.endswith("\n"):
        return stanza
    return ifs.Stanza((*stanza.lines[:-1], ifs.Line(last.raw + "\n")), stanza.lineno)


def plan_files(tree: ifs.Tree, p: Params) -> tuple[dict[str, str], list[str]]:
    """The new text of every file that changes, and notes for people (pure).

    All edits happen in the file that defines the stanza: an eth0 defined in a
    sourced file is edited there, and a new br0 stanza goes right after eth0's.
    """
    _refusals(tree, p.uplink, p.bridge)
    notes: list[str] = []
    models: dict[str, list[ifs.Stanza]] = {path: list(m.stanzas) for path, m in tree.files.items()}
    indent = tree.files[tree.main].indent
    up_inet = _one_inet(tree, p.uplink)
    br_inet = _one_inet(tree, p.bridge)
    addressing, addressing_note = _bridge_addressing(up_inet, br_inet, p)

    for path, _i, s in tree.stanzas():
        if s.kind == "iface" and s.name != p.uplink:
            raw_device = s.option("vlan_raw_device")
            if raw_device == p.uplink or s.name.startswith(p.uplink + "."):
                notes.append(
                    f"{s.name} ({_where(path, s)}) is a VLAN on {p.uplink}; it keeps working on "
                    f"a bridge port, but {p.bridge}.VID is the usual place for it"
                )

    # eth0 inet -> manual, its addressing options move to br0 (hooks and link options stay).
    if up_inet is not None:
        path, i, s = up_inet.path, up_inet.index, up_inet.stanza
        if up_inet.method != "manual":
            models[path][i], template_notes = _manual_uplink(up_inet, indent)
            dropped = ", ".join(
                f"{k} {v}" for k, v in up_inet.options if ifs.option_key(k) in ADDRESSING
            )
            notes.append(
                f"{p.uplink}: inet {up_inet.method} -> manual"
                + (f" (dropped: {dropped})" if p.address and dropped else "")
            )
            notes += template_notes

    # eth0's inet6 stanzas configure the bridge now: renamed and moved after br0's inet.
    moved: list[ifs.Stanza] = []
    for f in tree.ifaces(p.uplink):
        path, i, s = f.path, f.index, f.stanza
        if f.family != "inet6" or f.method == "manual":
            continue
        if any(b.family == "inet6" for b in tree.ifaces(p.bridge)):
            raise InputError(
                f"both {p.uplink} ({_where(path, s)}) and {p.bridge} have inet6 stanzas; "
                f"remove {p.uplink}'s first"
            )
        moved += [_BLANK, _terminated(ifs.set_head(s, ["iface", p.bridge, *s.head[2:]]))]
        models[path][i] = _GONE
        notes.append(
            f"{p.uplink}'s inet6 {f.method} stanza ({_where(path, s)}) moves to {p.bridge}"
        )

    # auto / allow-*: br0 is auto. eth0 leaves its lines when nothing is left for ifup to
    # do on it (the wiki's stanza: bridge-utils ups the port). When its stanza keeps hooks
    # or link options (mtu, hwaddress, if-*.d options), it keeps its lines: bridge-utils
    # only enslaves and ups a port, never runs ifup on it, so they would silently stop.
    kept = _kept_options(tree, models, up_inet, p.uplink)
    order = {(path, i): n for n, (path, i, _s) in enumerate(tree.in_order())}
    has_auto_bridge = False
    bridge_auto: tuple[str, int] | None = None  # the first auto line naming the bridge
    uplink_autos: list[tuple[str, int]] = []  # auto lines that keep naming the uplink
    kept_in: list[str] = []
    for path, i, s in sorted(
        (x for x in tree.stanzas() if x[2].kind in ("auto", "allow")), key=lambda x: order[x[:2]]
    ):
        cls, names = s.classes
        if cls == "auto" and p.bridge in names:
            has_auto_bridge = True
            bridge_auto = bridge_auto or (path, i)
        if p.uplink not in names:
            continue
        if kept:
            kept_in.append(f"{s.head[0]} line ({_where(path, s)})")
            if cls == "auto":
                uplink_autos.append((path, i))
            continue
        rest = [n for n in names if n != p.uplink]
        models[path][i] = ifs.set_head(s, [s.head[0], *rest]) if rest else _GONE
        notes.append(
            f"{p.uplink} leaves its {s.head[0]} line ({_where(path, s)}): "
            f"{p.bridge} brings its port up"
        )
    auto_line = ifs.Stanza((ifs.Line(f"auto {p.bridge}\n"),))
    if kept:
        # ifup -a goes by the auto lines' order: eth0 (and its hooks) before br0, so the
        # port is set up (mtu, offloads ...) before br0 takes it and asks for an address.
        if bridge_auto is not None:
            bridge_at = order[bridge_auto] - 0.5
        elif br_inet is not None:
            bridge_at = order[(br_inet.path, br_inet.index)] - 0.5
        elif up_inet is not None:
            bridge_at = order[(up_inet.path, up_inet.index)] + 0.5
        else:
            bridge_at = len(order)
        if uplink_autos and bridge_at < min(order[a] for a in uplink_autos):
            for path, i in uplink_autos:
                head = models[path][i].head
                rest = [n for n in head[1:] if n != p.uplink]
                models[path][i] = ifs.set_head(models[path][i], [head[0], *rest]) if rest else _GONE
            if bridge_auto is not None:
                path, i = bridge_auto
                head = [n for n in models[path][i].head if n != p.uplink]
                at = head.index(p.bridge)
                models[path][i] = ifs.set_head(models[path][i], [*head[:at], p.uplink, *head[at:]])
            else:
                auto_line = ifs.Stanza((ifs.Line(f"auto {p.uplink} {p.bridge}\n"),))
            kept_in = [f"auto line, moved into {p.bridge}'s ahead of {p.bridge}"]
        if kept_in:
            notes.append(
                f"{p.uplink} keeps its {', '.join(kept)} lines and stays in its "
                f"{', '.join(kept_in)} so that ifup still runs them (bridge-utils only "
                "enslaves and ups a port, it never runs ifup on it)"
                + (f"; ifup -a brings {p.uplink} up before {p.bridge}" if uplink_autos else "")
                + "; they now run on a bridge port without an address"
            )
        else:
            notes.append(
                f"{p.uplink} keeps its {', '.join(kept)} lines; it is in no auto or allow- "
                f"line, so they run only when someone runs 'ifup {p.uplink}', as before"
            )
        if up_inet is not None:
            for key, command in models[up_inet.path][up_inet.index].options:
                if ifs.option_key(key) in HOOKS and _NEEDS_ADDRESS.search(command):
                    notes.append(
                        f"{p.uplink}'s '{key} {command}' ({_where(up_inet.path, up_inet.stanza)})"
                        f" looks like it needs an address or route, which {p.bridge} has now; "
                        f"move it to {p.bridge}'s stanza"
                    )

    if addressing_note:
        notes.append(addressing_note)
    if br_inet is None:
        assert addressing is not None  # only an existing bridge keeps its own
        options = [*addressing.options, ("bridge_ports", p.uplink), ("bridge_stp", "off")]
        new_bridge = ifs.iface_stanza(p.bridge, "inet", addressing.method, options, indent)
        block = [_BLANK, auto_line, new_bridge, *moved]
        if up_inet is not None:
            path, i = up_inet.path, up_inet.index
            models[path][i] = _terminated(models[path][i])
            models[path][i + 1 : i + 1] = block
        else:
            manual = ifs.iface_stanza(p.uplink, "inet", "manual", (), indent)
            main = models[tree.main]
            if main and not main[-1].raw.endswith("\n"):
                main[-1] = _terminated(main[-1])
            main += [_BLANK, manual, *block]
            notes.append(f"{p.uplink} had no inet stanza; it gets 'iface {p.uplink} inet manual'")
    else:
        path, i, s = br_inet.path, br_inet.index, br_inet.stanza
        models[path][i] = _edit_bridge(br_inet, p, addressing, indent)
        extra = [] if has_auto_bridge else [auto_line]
        if moved:
            models[path][i] = _terminated(models[path][i])
        models[path][i:i] = extra
        models[path][i + len(extra) + 1 : i + len(extra) + 1] = moved

    changed: dict[str, str] = {}
    for path, stanzas in models.items():
        text = "".join(s.raw for s in _drop_gone(stanzas))
        original = tree.files[path].render()
        if original.count("\r\n") * 2 > original.count("\n"):
            text = re.sub(r"(?<!\r)\n", "\r\n", text)  # keep a CRLF file CRLF
        if text != original:
            changed[path] = text
    return changed, notes


_BLANK = ifs.Stanza((ifs.Line("\n"),))
_GONE = ifs.Stanza(())  # a removed stanza, until _drop_gone


def _drop_gone(stanzas: list[ifs.Stanza]) -> list[ifs.Stanza]:
    """Remove deleted stanzas without leaving two blank lines (or one at the end) behind."""
    out: list[ifs.Stanza] = []
    after_gone = False
    for s in stanzas:
        if not s.lines:
            after_gone = True
            continue
        if not (after_gone and s.kind == "blank" and out and out[-1].kind == "blank"):
            out.append(s)
        after_gone = False
    if after_gone and out and out[-1].kind == "blank":
        out.pop()
    return out


def _trim_blanks(stanza: ifs.Stanza) -> ifs.Stanza:
    """Blank lines that separated removed options must not end the stanza."""
    lines = list(stanza.lines)
    while len(lines) > 1 and lines[-1].is_blank:
        lines.pop()
    return ifs.Stanza(tuple(lines), stanza.lineno)


# -- planning: the kernel and libvirt (pure) ---------------------------------------------


def check_links(links: dict[str, LinkFacts], p: Params, netns: str) -> bool:
    """Refuse a missing or unsuitable uplink; True when the kernel is converted already."""
    where = f"netns {netns}" if netns else "this host"
    up = links.get(p.uplink)
    if up is None:
        raise InputError(
            f"there is no link {p.uplink} in {where}; set uplink to the host's NIC (ip link)"
        )
    if up.kind not in UPLINK_KINDS:
        raise InputError(
            f"{p.uplink} is a {up.kind} device, not an uplink; set uplink to the host's NIC"
        )
    if up.master and up.master != p.bridge:
        raise InputError(
            f"{p.uplink} is already a port of {up.master}; free it or set bridge={up.master}"
        )
    br = links.get(p.bridge)
    if br is not None:
        if br.kind != "bridge":
            raise InputError(f"{p.bridge} exists and is a {br.kind or 'NIC'}, not a bridge")
        # Guests' taps (kind tun) on the bridge are expected once VMs use it.
        others = [
            link.name
            for link in links.values()
            if link.master == p.bridge and link.name != p.uplink and link.kind != "tun"
        ]
        if others:
            raise InputError(
                f"{p.bridge} already bridges {' '.join(sorted(others))}; choose another bridge"
            )
    return up.master == p.bridge and br is not None and br.up


def network_xml(name: str, bridge: str, uuid: str = "") -> str:
    uuid_line = f"  <uuid>{uuid}</uuid>\n" if uuid else ""
    return (
        f"<network>\n  <name>{name}</name>\n{uuid_line}  <forward mode='bridge'/>\n"
        f"  <bridge name='{bridge}'/>\n</network>\n"
    )


def _canonical(xml: str) -> bytes:
    root = etree.fromstring(xml.encode(), etree.XMLParser(remove_blank_text=True))
    for uuid in root.findall("uuid"):
        root.remove(uuid)
    # Live XML counts the guests attached (<network connections='N'>): not configuration.
    root.attrib.pop("connections", None)
    return bytes(etree.tostring(root, method="c14n"))


def plan_network(net: virt.Network | None, name: str, bridge: str) -> list[Change]:
    target = f"network:{name}"
    if net is None:
        return [
            Change(target, "define", f"define {name} (forward mode bridge on {bridge})", None,
                   network_xml(name, bridge)),
            Change(target, "start", f"start {name}"),
            Change(target, "autostart", f"autostart {name}"),
        ]  # fmt: skip
    changes: list[Change] = []
    uuid = etree.fromstring(net.xml.encode()).findtext("uuid") or ""
    wanted = network_xml(name, bridge, uuid)
    if _canonical(net.xml) != _canonical(wanted):
        summary = f"update {name}: forward mode bridge on {bridge}"
        if net.active:
            summary += " (restarted: guests on it stay on the bridge)"
        changes.append(Change(target, "update", summary, net.xml, wanted))
    elif not net.persistent:
        changes.append(Change(target, "define", f"make {name} persistent", None, wanted))
    if not net.active:
        changes.append(Change(target, "start", f"start {name} (inactive)"))
    if not net.autostart:
        changes.append(Change(target, "autostart", f"autostart {name} (off)"))
    return changes


def _bridge_summary(tree: ifs.Tree, files: dict[str, str], p: Params) -> str:
    """The bridge's method and address in the planned files, e.g. "static 192.0.2.10/24"."""
    texts = {path: m.render() for path, m in tree.files.items()} | files
    bridge = _one_inet(ifs.tree_from_texts(tree.main, texts), p.bridge)
    if bridge is None:
        return "no inet stanza"
    address, netmask = bridge.option("address") or "", bridge.option("netmask")
    if address and netmask and "/" not in address:
        try:
            address = ipaddress.IPv4Interface(f"{address}/{netmask}").with_prefixlen
        except ValueError:
            address = f"{address} netmask {netmask}"
    return " ".join(w for w in (bridge.method, address) if w)


def make_plan(observed: Observed, p: Params, *, host: str, netns: str) -> Plan:
    """The whole plan from observed state (pure)."""
    kernel_converted = check_links(observed.links, p, netns)
    files, notes = plan_files(observed.tree, p)
    how = _bridge_summary(observed.tree, files, p) if files else ""
    changes = [
        Change(
            f"file:{path}",
            "update",
            f"{p.uplink} -> inet manual, {p.bridge} over {p.uplink} ({how})",
            observed.tree.files[path].render(),
            text,
        )
        for path, text in files.items()
    ]
    if files or not kernel_converted:
        why = "the file changes" if files else f"the file is converted but {p.uplink} is not a "
        why += "" if files else f"port of an up {p.bridge} yet"
        changes.append(
            Change(
                f"service:networking{'@' + netns if netns else ''}",
                "restart",
                f"restart networking ({why}); confirm {p.bridge} works or revert",
            )
        )
    changes += plan_network(observed.network, p.network_name, p.bridge)
    return Plan(
        RUNBOOK,
        host,
        tuple(changes),
        tuple(notes),
        data={
            "params": p.__dict__,
            "files": {path: observed.tree.files[path].render() for path in files},
            "new_files": files,
        },
        inputs=p,
    )


def plan(
    *,
    host: str,
    libvirt_uri: str,
    netns: str,
    interfaces_file: str,
    uplink: str = "eth0",
    bridge: str = "br0",
    address: str = "",
    gateway: str = "",
    network_name: str = RUNBOOK,
) -> Plan:
    """Observe the host and plan the conversion; refuses unsafe starting points."""
    p = Params(libvirt_uri, netns, interfaces_file, uplink, bridge, address, gateway, network_name)
    if netns and not netlink.netns_exists(netns):
        raise InputError(f"network namespace {netns!r} does not exist; check `ip netns list`")
    return make_plan(observe(p), p, host=host, netns=netns)


# -- apply -------------------------------------------------------------------------------


def restart_argv(template: str, netns: str, **fields: str) -> list[str]:
    """The restart command as argv: ``sh -c`` of the filled template, in ``netns`` if set."""
    names = {f for _t, f, _s, _c in string.Formatter().parse(template) if f is not None}
    unknown = names - RESTART_FIELDS
    if unknown or not template.strip():
        raise InputError(
            f"restart_command {template!r} is not usable; it needs a command and may only "
            f"use the placeholders {{old}} {{new}} {{ifaces}}"
        )
    # interface names are checked to be shell-safe words; paths are quoted when they must be
    quoted = {k: v if k == "ifaces" else shlex.quote(v) for k, v in fields.items()}
    command = template.format(**quoted)
    argv = ["sh", "-c", command]
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def _run(argv: Sequence[str], timeout: float) -> tuple[int, str]:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=max(timeout, 1.0), check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") if isinstance(exc.stdout, bytes) else (exc.stdout or "").encode()
        return 124, f"timed out after {timeout:.0f}s: {out.decode(errors='replace')[-300:]}"
    except OSError as exc:
        return 127, f"cannot run {argv[0]}: {exc.strerror}"
    output = (done.stdout + done.stderr).strip()
    return done.returncode, output[-600:]


@dataclass(frozen=True)
class KernelState:
    """What the restart changes, for comparing before and after a rollback."""

    uplink_master: str
    bridge_exists: bool
    ipv4: dict[str, tuple[str, ...]]  # link -> sorted global IPv4 CIDRs
    default_route: tuple[str, str]  # (gateway, device)

    def describe(self) -> str:
        addrs = "; ".join(f"{k} {' '.join(v) or '-'}" for k, v in sorted(self.ipv4.items()))
        gw, dev = self.default_route
        route = f"default via {gw} dev {dev}" if dev else "no default route"
        master = f"port of {self.uplink_master}" if self.uplink_master else "no bridge"
        return f"{addrs}; uplink {master}; {route}"


def kernel_state(netns: str, uplink: str, bridge: str) -> KernelState:
    links = {link.name: link for link in netlink.links(netns)}
    names = {link.index: link.name for link in links.values()}
    addrs: dict[str, list[str]] = {uplink: [], bridge: []}
    for a in netlink.addresses(netns):
        name = names.get(a.ifindex, "")
        if name in addrs and a.family == "ipv4" and a.scope == "global":
            addrs[name].append(f"{a.address}/{a.prefix}")
    route = netlink.default_route(netns)
    up = links.get(uplink)
    return KernelState(
        uplink_master=names.get(up.master, "") if up else "",
        bridge_exists=bridge in links,
        ipv4={k: tuple(sorted(v)) for k, v in addrs.items()},
        default_route=(route.gateway, names.get(route.ifindex, "")) if route else ("", ""),
    )


def verify_bridge(p: Params, netns: str) -> list[Check]:
    """The conversion as the kernel reports it, one Check per property."""
    state = kernel_state(netns, p.uplink, p.bridge)
    links = observe_links(netns)
    br = links.get(p.bridge)
    seen = "missing" if br is None else f"{br.kind or 'nic'} {'up' if br.up else 'down'}"
    checks = [
        Check(
            f"{p.bridge} up",
            "ok" if br and br.kind == "bridge" and br.up else "fail",
            f"{p.bridge}: {seen}",
            "see the restart step's output",
        ),
        Check(
            f"{p.uplink} is its port",
            "ok" if state.uplink_master == p.bridge else "fail",
            f"{p.uplink} master: {state.uplink_master or 'none'}",
        ),
    ]
    got = state.ipv4.get(p.bridge, ())
    ok = p.address in got if p.address else bool(got)
    checks.append(
        Check(
            f"{p.bridge} has an address",
            "ok" if ok else "fail",
            " ".join(got) or "no IPv4 address",
            "is the host's MAC registered for DHCP (NetReg)?" if not p.address else "",
        )
    )
    leftover = state.ipv4.get(p.uplink, ())
    checks.append(
        Check(
            f"{p.uplink} has no address",
            "fail" if leftover else "ok",
            " ".join(leftover) or "none",
            "an old DHCP client still runs on the port; let the restart take it down "
            "with the old file ({old})"
            if leftover
            else "",
        )
    )
    gw, dev = state.default_route
    route_ok = dev == p.bridge and (not p.gateway or gw == p.gateway)
    checks.append(
        Check(
            "default route",
            "ok" if route_ok else "fail",
            f"via {gw} dev {dev}" if dev else "none",
        )
    )
    answered = bool(gw) and route_ok and rtnl.ping(netns, gw).ok
    checks.append(
        Check("gateway answers", "ok" if answered else "fail", f"ping {gw or '-'}: "
              + ("reply" if answered else "no reply"))
    )  # fmt: skip
    return checks


def _poll(probe: Any, deadline: float) -> Any:
    """Call ``probe`` until it returns a passing value or the monotonic deadline passes."""
    while True:
        value, ok = probe()
        if ok or time.monotonic() >= deadline:
            return value
        time.sleep(0.5)


@dataclass(frozen=True)
class Restart:
    """How apply restarts networking: the command template and the deadline."""

    command: str = DEFAULT_RESTART
    deadline: float = 60.0
    backup_dir: str = ""


@dataclass
class _Work:
    """What the steps of one apply share: backups, flattened files, the watchdog."""

    p: Params
    restart: Restart
    backups: dict[str, str]
    armed: confirm.Armed
    directory: str = ""
    restart_failed: str = ""  # the restart command's exit code and output, when it failed
    rollback_started: float = 0.0

    def file(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def argv(self, old: str) -> list[str]:
        ifaces = f"{self.p.uplink} {self.p.bridge}"
        return restart_argv(self.restart.command, self.p.netns, old=old,
                            new=self.p.interfaces_file, ifaces=ifaces)  # fmt: skip


class ForwardBridge(Procedure[Params, Observed, Restart]):
    """The conversion: files written with confirm-or-revert, then the libvirt network.

    The session is the restart's settings (apply's own parameters)."""

    name = RUNBOOK
    inputs = Params
    observe_step = "observe"

    def observe(self, inputs: Params, session: Restart) -> Observed:
        return observe(inputs)

    def plan(self, inputs: Params, observed: Observed, host: str) -> Plan:
        return make_plan(observed, inputs, host=host, netns=inputs.netns)

    def steps(self, run: Run[Params, Observed, Restart]) -> list[Action]:
        p, plan = run.inputs, run.plan
        work = run.memo["work"] = _Work(p, run.session or Restart(), {}, confirm.Armed())
        run.result.data["diff"] = "".join(c.diff for c in plan.changes if c.target[:5] == "file:")
        steps = []
        if any(c.action == "restart" for c in plan.changes):
            steps += _restart_steps(run, work)
        net_changes = [c for c in plan.changes if c.target.startswith("network:")]
        if net_changes:
            steps.append(Action(
                f"libvirt network {p.network_name}",
                lambda detail: _apply_network(p, net_changes, detail),
                commits=True,  # the bridge works and is kept; the network is made on it
            ))  # fmt: skip
        return steps

    def finish(self, run: Run[Params, Observed, Restart]) -> None:
        outcome, result, work = run.outcome, run.result, run.memo["work"]
        try:
            if outcome.ok and result.changes:
                result.summary = "; ".join(c.summary for c in result.changes)
            elif outcome.ok:
                result.summary = "nothing to do: the bridge and the network are as planned"
                with result.step("verify") as detail:
                    result.checks = verify_bridge(run.inputs, run.inputs.netns)
                    detail.append(", ".join(f"{c.name}: {c.status}" for c in result.checks))
            elif outcome.failed is not None and outcome.failed.name.startswith("validate"):
                result.status = "failed"  # nothing was applied: the rejected file is gone
                why = outcome.error
                result.summary = f"ifup --no-act rejected the new file; the old one is back: {why}"
            elif outcome.failed is not None and outcome.failed.name == "verify" and outcome.undone:
                _previous_state_back(run, work)
            else:
                result.summary = transaction.failure_summary(outcome)
        finally:
            # An armed watchdog that was never told still needs the files to revert with.
            watchdog = work.armed.watchdog
            if work.directory and (watchdog is None or watchdog.decided):
                shutil.rmtree(work.directory, ignore_errors=True)

    def comparable(self, observed: Observed) -> Any:
        files = {path: model.render() for path, model in observed.tree.files.items()}
        return files, observed.links, observed.network


PROCEDURE = ForwardBridge()


def _restart_steps(run: Run[Params, Observed, Restart], work: _Work) -> list[Action]:
    """Back up, write, validate, arm the watchdog, restart, verify within the deadline;
    a failure restores the backups and restarts networking with them."""
    p, result, observed, deadline = run.inputs, run.result, run.observed, work.restart.deadline
    new_files: dict[str, str] = run.plan.data["new_files"]

    def back_up(detail: Detail) -> None:
        run.memo["kernel_before"] = kernel_state(p.netns, p.uplink, p.bridge)
        result.data["kernel_before"] = run.memo["kernel_before"].describe()
        work.directory = tempfile.mkdtemp(prefix="opsbook-forward-bridge-")
        with open(work.file("interfaces.old"), "w", encoding="utf-8") as f:
            f.write(ifs.flatten(observed.tree))
        for path in new_files:
            work.backups[path] = ifs.backup(path, work.restart.backup_dir or default_backup_dir(p))
            detail.append(f"{path} -> {work.backups[path]}")
        result.data["backups"] = work.backups

    def write(detail: Detail) -> None:
        for path, text in new_files.items():
            ifs.write_atomic(path, text)
            detail.append(path)
        with open(work.file("interfaces.new"), "w", encoding="utf-8") as f:
            f.write(ifs.flatten(ifs.load_tree(p.interfaces_file)))

    def restore(detail: Detail) -> None:
        for path, copy in work.backups.items():
            ifs.restore(path, copy)
            detail.append(f"{copy} -> {path}")

    def validate(detail: Detail) -> None:
        state = work.file("state")
        os.mkdir(state)
        argv = ["ifup", "--no-act", "-i", p.interfaces_file, "--state-dir", state, p.bridge]
        rc, out = _run(argv, 30)
        detail.append(f"rc {rc}")
        if rc != 0:
            detail.append(out)
            raise ApplyError(out)

    def restart(detail: Detail) -> None:
        run.memo["t0"] = time.monotonic()
        rc, out = _run(work.argv(old=work.file("interfaces.old")), deadline)
        detail.append(f"rc {rc}: {out}" if out else f"rc {rc}")
        work.restart_failed = f"exit code {rc}: {out[-200:]}" if rc != 0 else ""

    def restart_back(detail: Detail) -> None:
        work.rollback_started = time.monotonic()
        rc, out = _run(work.argv(old=work.file("interfaces.new")), deadline)
        detail.append(f"rc {rc}: {out}" if out else f"rc {rc}")

    def verify(detail: Detail) -> None:
        # a failed restart is final (ifup gave up): look once instead of waiting it out
        until = time.monotonic() if work.restart_failed else run.memo["t0"] + deadline
        checks = _poll(lambda: (c := verify_bridge(p, p.netns), all(x.ok for x in c)), until)
        detail.append(", ".join(f"{c.name}: {c.status}" for c in checks))
        if work.restart_failed:
            checks.insert(0, Check("restart command", "fail", work.restart_failed))
        run.memo["checks"] = checks

    def verified() -> list[Check]:
        checks: list[Check] = run.memo["checks"]
        if all(c.ok for c in checks):
            result.data["kernel_after"] = kernel_state(p.netns, p.uplink, p.bridge).describe()
        return checks

    watchdog = confirm.action(
        backups=lambda: work.backups,
        rollback=lambda: work.argv(old=work.file("interfaces.new")),
        seconds=2 * deadline + WATCHDOG_MARGIN,
        armed=work.armed,
    )
    return [
        Action("back up", back_up),
        Action("write", write, restore, undo_name="restore backup", partial=True),
        Action("validate (ifup --no-act)", validate),
        watchdog,
        # Undone last: networking restarts with the files the other undos put back.
        Action("restart networking", restart, restart_back,
               undo_name="restart networking (rollback)", undo_order=1),
        Action("verify", verify, check=verified),
    ]  # fmt: skip


def _previous_state_back(run: Run[Params, Observed, Restart], work: _Work) -> None:
    """After the undo: wait for the kernel to be as it was; say whether it is."""
    p, result = run.inputs, run.result
    failed = [c for c in run.memo.get("checks", []) if not c.ok]
    what = "; ".join(f"{c.name}: {c.seen}" for c in failed) or str(run.outcome.error)
    before: KernelState = run.memo["kernel_before"]
    with result.step("verify previous state") as detail:
        after = _poll(
            lambda: (s := kernel_state(p.netns, p.uplink, p.bridge), s == before),
            work.rollback_started + work.restart.deadline,
        )
        detail.append(after.describe())
    result.data["kernel_after"] = after.describe()
    back = after == before
    result.checks.append(
        Check(
            "previous state back",
            "ok" if back else "fail",
            after.describe(),
            "" if back else f"expected: {before.describe()}; fix by hand from the console",
        )
    )
    result.status = "rolled back" if back else "failed"
    result.summary = f"verification failed ({what}); " + (
        "restored the previous file and state" if back
        else "restored the file, but the previous state did not come back"
    )  # fmt: skip


def apply(
    plan: Plan,
    *,
    restart_command: str = DEFAULT_RESTART,
    deadline: float = 60.0,
    backup_dir: str = "",
) -> Result:
    """Make the plan's changes: files with confirm-or-revert, then the libvirt network.

    ``restart_command`` is run with ``sh -c`` (inside ``netns`` when set) and may use
    ``{old}`` (a single file holding the configuration being left: ifdown must read
    that one, or it leaves the old DHCP client behind), ``{new}`` (the interfaces
    file) and ``{ifaces}`` (the uplink and the bridge). ``deadline`` is the number of
    seconds from the restart until the bridge must work.

    The default first takes the uplink and bridge down with the old file (stopping
    eth0's DHCP client), then with the new one (``inet manual`` flushes eth0's
    address: udhcpc's release on ifdown races its kill and can leave the address on
    what becomes a bridge port, as seen in the lab), then restarts networking.
    """
    if deadline <= 0 or deadline > 3600:
        raise InputError(f"deadline {deadline} is out of range; give seconds between 1 and 3600")
    p = transaction.inputs_of(plan, Params, RUNBOOK)
    restart_argv(restart_command, p.netns, old="x", new="x", ifaces="x")  # InputError early
    if os.geteuid() != 0:
        raise HostError(
            f"apply must run as root: it writes {p.interfaces_file} and restarts networking; "
            "run it with sudo (plan works without)"
        )
    restart = Restart(restart_command, deadline, backup_dir)
    return transaction.apply(PROCEDURE, p, plan.host, reviewed=plan, session=restart)


def default_backup_dir(p: Params) -> str:
    """Beside the main file, hidden: no ``source`` glob (``*``) or ``source-directory``
    (names without dots) reads it, as one would a backup inside ``interfaces.d/``."""
    return os.path.join(os.path.dirname(os.path.abspath(p.interfaces_file)), ".opsbook-backups")


def _apply_network(p: Params, changes: list[Change], detail: list[str]) -> None:
    with virt.connect(p.libvirt_uri) as conn:
        for change in changes:
            if change.action in ("define", "update"):
                assert change.after is not None
                virt.define_network(conn, change.after)
                if change.action == "update" and virt.get_network(conn, p.network_name).active:
                    virt.restart_network(conn, p.network_name)
            elif change.action == "start":
                virt.start_network(conn, p.network_name)
            elif change.action == "autostart":
                virt.set_network_autostart(conn, p.network_name, True)
            detail.append(change.summary)
        net = virt.get_network(conn, p.network_name)
        if not (net.active and net.autostart and net.forward_mode == "bridge"):
            raise ApplyError(
                f"{p.network_name} is not active+autostarted in bridge mode after the changes"
            )
        detail.append(f"{p.network_name}: active, autostart, bridge {net.bridge}")


# -- the lab ---------------------------------------------------------------------------------


def lab_restart_command(lab: Any) -> str:
    """The lab host's "restart networking": ifupdown inside the host's mount namespace.

    ifdown reads ``{old}`` (the configuration being left) so that it stops the old
    DHCP client; ``--force`` also takes down a bridge whose ifup half failed.
    """
    from opslib.lab import control

    state = shlex.quote(str(lab.ifupdown_state_dir))
    inner = (
        f"ifdown --force -i {{old}} --state-dir {state} {{ifaces}}; "
        f"ifdown --force -i {{new}} --state-dir {state} {{ifaces}} 2>/dev/null; "
        f"ifup -a -i {{new}} --state-dir {state} && "
        f"ifup -a --allow=hotplug -i {{new}} --state-dir {state}"
    )
    return shlex.join(control.host_command(lab, ["sh", "-c", inner]))


def lab_params(lab: Any) -> dict[str, Any]:
    """The plan() keyword arguments of the lab's daemon host."""
    return {
        "host": "lab",
        "libvirt_uri": lab.uri,
        "netns": lab.host_ns,
        "interfaces_file": str(lab.interfaces_file),
    }


def apply_lab(lab: Any) -> Result:
    """``opsbook lab up --configured``: convert the lab host as the runbook would."""
    return apply(plan(**lab_params(lab)), restart_command=lab_restart_command(lab), deadline=60)
