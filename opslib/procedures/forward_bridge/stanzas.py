"""The interfaces(5) side of forward-bridge (pure): the uplink's stanzas turned into a
bridge over it, the bridge taking over the uplink's addressing (or the given one), with
everything else in the files kept byte for byte; refusals name the file and line.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Protocol

from opslib.core.errors import InputError
from opslib.host.ifupdown import edits, source_tree
from opslib.host.ifupdown import interfaces as ifs
from opslib.procedures.forward_bridge.addressing import (
    ADDRESSING,
    Addressing,
    addressing_of,
    bridge_addressing,
    same_address,
    same_addressing,
)
from opslib.procedures.forward_bridge.refusals import one_inet, ports, refusals, where


class BridgeParams(Protocol):
    """What the conversion needs of forward-bridge's parameters."""

    @property
    def uplink(self) -> str: ...
    @property
    def bridge(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def gateway(self) -> str: ...


HOOKS = frozenset({"pre_up", "up", "post_up", "pre_down", "down", "post_down"})
# A hook that adds addresses or routes ("ip route add ...", "ip -6 addr ...", "route add").
_NEEDS_ADDRESS = re.compile(r"(\bip\s+(-\S+\s+)*(r|ro|route|a|addr|address)\b|^route\b)")


def _manual_uplink(up: source_tree.Iface, indent: str) -> tuple[ifs.Stanza, list[str]]:
    """The uplink's stanza as ``inet manual`` without addressing, and notes.

    A template it inherits from stays named when it holds no addressing (link settings
    such as mtu keep applying); otherwise its other options are written into the stanza,
    since inheriting would bring its address back.
    """
    s = edits.remove_options(up.stanza, lambda k: k in ADDRESSING)
    head = ["iface", up.name, "inet", "manual"]
    notes: list[str] = []
    template = up.stanza.inherits
    if template:
        inherited_addressing = [k for k, _v in up.inherited if ifs.option_key(k) in ADDRESSING]
        if not inherited_addressing:
            head += ["inherits", template]
        else:
            keep = [(k, v) for k, v in up.inherited if ifs.option_key(k) not in ADDRESSING]
            s = edits.prepend_options(s, keep, indent)
            notes.append(
                f"{up.name} no longer inherits {template}, which holds addressing "
                f"({', '.join(inherited_addressing)})"
                + (f"; its {', '.join(k for k, _v in keep)} lines are copied in" if keep else "")
            )
    return _trim_blanks(edits.set_head(s, head)), notes


def _edit_bridge(
    bridge: source_tree.Iface, p: BridgeParams, wanted: Addressing | None, indent: str
) -> ifs.Stanza:
    s = bridge.stanza
    if p.address:
        if bridge.method != "static":
            s = edits.set_head(s, ["iface", p.bridge, "inet", "static"])
        if not same_address(s, p.address):
            s = edits.remove_options(s, lambda k: k == "netmask")
            s = edits.set_option(s, "address", p.address, indent)
        if s.option("gateway") != p.gateway:
            s = edits.set_option(s, "gateway", p.gateway, indent)
    elif wanted is not None and not (
        bridge.method == wanted.method and same_addressing(addressing_of(bridge), wanted)
    ):
        s = edits.remove_options(s, lambda k: k in ADDRESSING)
        s = edits.set_head(s, ["iface", p.bridge, "inet", wanted.method])
        s = edits.prepend_options(s, wanted.options, indent)
    if ports(s) != [p.uplink]:
        s = edits.set_option(s, "bridge_ports", p.uplink, indent)
    if (s.option("bridge_stp") or "").lower() not in ("off", "no", "0"):
        s = edits.set_option(s, "bridge_stp", "off", indent)
    return s


def _kept_options(
    tree: source_tree.Tree,
    models: dict[str, list[ifs.Stanza]],
    up: source_tree.Iface | None,
    uplink: str,
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


def plan_files(tree: source_tree.Tree, p: BridgeParams) -> tuple[dict[str, str], list[str]]:
    """The new text of every file that changes, and notes for people (pure).

    All edits happen in the file that defines the stanza: an eth0 defined in a
    sourced file is edited there, and a new br0 stanza goes right after eth0's.
    """
    refusals(tree, p.uplink, p.bridge)
    up_inet, br_inet = one_inet(tree, p.uplink), one_inet(tree, p.bridge)
    addressing, addressing_note = bridge_addressing(
        up_inet, br_inet, uplink=p.uplink, bridge=p.bridge, address=p.address, gateway=p.gateway
    )
    c = _Conversion(tree, p, up_inet, br_inet)
    c.vlan_notes()
    c.uplink_manual()
    moved = c.inet6_moved()
    auto_line, has_auto_bridge = c.auto_lines()
    if addressing_note:
        c.notes.append(addressing_note)
    c.place_bridge(addressing, auto_line, has_auto_bridge, moved)
    return c.changed_files(), c.notes


class _Conversion:
    """The files' stanzas while :func:`plan_files` edits them (``models``), and its notes.
    Each method is one step of the conversion, in the order plan_files runs them."""

    def __init__(
        self,
        tree: source_tree.Tree,
        p: BridgeParams,
        up_inet: source_tree.Iface | None,
        br_inet: source_tree.Iface | None,
    ) -> None:
        self.tree, self.p, self.up_inet, self.br_inet = tree, p, up_inet, br_inet
        self.models = {path: list(m.stanzas) for path, m in tree.files.items()}
        self.indent = tree.files[tree.main].indent
        self.notes: list[str] = []

    def vlan_notes(self) -> None:
        """VLANs on the uplink keep working on a bridge port: a note says where they go."""
        p, notes = self.p, self.notes
        for path, _i, s in self.tree.stanzas():
            if s.kind == "iface" and s.name != p.uplink:
                raw_device = s.option("vlan_raw_device")
                if raw_device == p.uplink or s.name.startswith(p.uplink + "."):
                    notes.append(
                        f"{s.name} ({where(path, s)}) is a VLAN on {p.uplink}; it keeps working "
                        f"on a bridge port, but {p.bridge}.VID is the usual place for it"
                    )

    def uplink_manual(self) -> None:
        """eth0 inet -> manual, its addressing options move to br0 (hooks and link options
        stay)."""
        p, up_inet, notes = self.p, self.up_inet, self.notes
        if up_inet is None or up_inet.method == "manual":
            return
        path, i = up_inet.path, up_inet.index
        self.models[path][i], template_notes = _manual_uplink(up_inet, self.indent)
        dropped = ", ".join(
            f"{k} {v}" for k, v in up_inet.options if ifs.option_key(k) in ADDRESSING
        )
        notes.append(
            f"{p.uplink}: inet {up_inet.method} -> manual"
            + (f" (dropped: {dropped})" if p.address and dropped else "")
        )
        notes += template_notes

    def inet6_moved(self) -> list[ifs.Stanza]:
        """eth0's inet6 stanzas configure the bridge now: renamed, to go after br0's inet."""
        tree, p, models, notes = self.tree, self.p, self.models, self.notes
        moved: list[ifs.Stanza] = []
        for f in tree.ifaces(p.uplink):
            path, i, s = f.path, f.index, f.stanza
            if f.family != "inet6" or f.method == "manual":
                continue
            if any(b.family == "inet6" for b in tree.ifaces(p.bridge)):
                raise InputError(
                    f"both {p.uplink} ({where(path, s)}) and {p.bridge} have inet6 stanzas; "
                    f"remove {p.uplink}'s first"
                )
            moved += [_BLANK, _terminated(edits.set_head(s, ["iface", p.bridge, *s.head[2:]]))]
            models[path][i] = _GONE
            notes.append(
                f"{p.uplink}'s inet6 {f.method} stanza ({where(path, s)}) moves to {p.bridge}"
            )
        return moved

    def auto_lines(self) -> tuple[ifs.Stanza, bool]:
        """auto / allow-*: br0 is auto. eth0 leaves its lines when nothing is left for ifup
        to do on it (the wiki's stanza: bridge-utils ups the port). When its stanza keeps
        hooks or link options (mtu, hwaddress, if-*.d options), it keeps its lines:
        bridge-utils only enslaves and ups a port, never runs ifup on it, so they would
        silently stop. Returns br0's new auto line and whether an auto line names it."""
        tree, p, models, notes = self.tree, self.p, self.models, self.notes
        kept = _kept_options(tree, models, self.up_inet, p.uplink)
        order = {(path, i): n for n, (path, i, _s) in enumerate(tree.in_order())}
        has_auto_bridge = False
        bridge_auto: tuple[str, int] | None = None  # the first auto line naming the bridge
        uplink_autos: list[tuple[str, int]] = []  # auto lines that keep naming the uplink
        kept_in: list[str] = []
        for path, i, s in sorted(
            (x for x in tree.stanzas() if x[2].kind in ("auto", "allow")),
            key=lambda x: order[x[:2]],
        ):
            cls, names = s.classes
            if cls == "auto" and p.bridge in names:
                has_auto_bridge = True
                bridge_auto = bridge_auto or (path, i)
            if p.uplink not in names:
                continue
            if kept:
                kept_in.append(f"{s.head[0]} line ({where(path, s)})")
                if cls == "auto":
                    uplink_autos.append((path, i))
                continue
            rest = [n for n in names if n != p.uplink]
            models[path][i] = edits.set_head(s, [s.head[0], *rest]) if rest else _GONE
            notes.append(
                f"{p.uplink} leaves its {s.head[0]} line ({where(path, s)}): "
                f"{p.bridge} brings its port up"
            )
        auto_line = ifs.Stanza((ifs.Line(f"auto {p.bridge}\n"),))
        if kept:
            auto_line = self.uplink_keeps_lines(
                kept, kept_in, order, bridge_auto, uplink_autos, auto_line
            )
        return auto_line, has_auto_bridge

    def uplink_keeps_lines(
        self,
        kept: list[str],
        kept_in: list[str],
        order: dict[tuple[str, int], int],
        bridge_auto: tuple[str, int] | None,
        uplink_autos: list[tuple[str, int]],
        auto_line: ifs.Stanza,
    ) -> ifs.Stanza:
        """The uplink keeps its auto lines (``kept`` options), ahead of the bridge's; the
        notes say so, and name hooks that need the address the bridge has now."""
        p, models, notes = self.p, self.models, self.notes
        up_inet, br_inet = self.up_inet, self.br_inet
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
                models[path][i] = (
                    edits.set_head(models[path][i], [head[0], *rest]) if rest else _GONE
                )
            if bridge_auto is not None:
                path, i = bridge_auto
                head = [n for n in models[path][i].head if n != p.uplink]
                at = head.index(p.bridge)
                models[path][i] = edits.set_head(
                    models[path][i], [*head[:at], p.uplink, *head[at:]]
                )
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
                        f"{p.uplink}'s '{key} {command}' ({where(up_inet.path, up_inet.stanza)})"
                        f" looks like it needs an address or route, which {p.bridge} has now; "
                        f"move it to {p.bridge}'s stanza"
                    )
        return auto_line

    def place_bridge(
        self,
        addressing: Addressing | None,
        auto_line: ifs.Stanza,
        has_auto_bridge: bool,
        moved: list[ifs.Stanza],
    ) -> None:
        """br0's stanza: a new one right after eth0's inet (with its auto line and the
        moved inet6 stanzas), or the existing one edited in place."""
        tree, p, models, indent = self.tree, self.p, self.models, self.indent
        up_inet, br_inet = self.up_inet, self.br_inet
        if br_inet is None:
            assert addressing is not None  # only an existing bridge keeps its own
            options = [*addressing.options, ("bridge_ports", p.uplink), ("bridge_stp", "off")]
            new_bridge = edits.iface_stanza(p.bridge, "inet", addressing.method, options, indent)
            block = [_BLANK, auto_line, new_bridge, *moved]
            if up_inet is not None:
                path, i = up_inet.path, up_inet.index
                models[path][i] = _terminated(models[path][i])
                models[path][i + 1 : i + 1] = block
            else:
                manual = edits.iface_stanza(p.uplink, "inet", "manual", (), indent)
                main = models[tree.main]
                if main and not main[-1].raw.endswith("\n"):
                    main[-1] = _terminated(main[-1])
                main += [_BLANK, manual, *block]
                self.notes.append(
                    f"{p.uplink} had no inet stanza; it gets 'iface {p.uplink} inet manual'"
                )
        else:
            path, i = br_inet.path, br_inet.index
            models[path][i] = _edit_bridge(br_inet, p, addressing, indent)
            extra = [] if has_auto_bridge else [auto_line]
            if moved:
                models[path][i] = _terminated(models[path][i])
            models[path][i:i] = extra
            models[path][i + len(extra) + 1 : i + len(extra) + 1] = moved

    def changed_files(self) -> dict[str, str]:
        """The new text of each file whose stanzas changed (a CRLF file stays CRLF)."""
        changed: dict[str, str] = {}
        for path, stanzas in self.models.items():
            text = "".join(s.raw for s in _drop_gone(stanzas))
            original = self.tree.files[path].render()
            if original.count("\r\n") * 2 > original.count("\n"):
                text = re.sub(r"(?<!\r)\n", "\r\n", text)  # keep a CRLF file CRLF
            if text != original:
                changed[path] = text
        return changed


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


def bridge_summary(tree: source_tree.Tree, files: dict[str, str], p: BridgeParams) -> str:
    """The bridge's method and address in the planned files, e.g. "static 192.0.2.10/24"."""
    texts = {path: m.render() for path, m in tree.files.items()} | files
    bridge = one_inet(source_tree.tree_from_texts(tree.main, texts), p.bridge)
    if bridge is None:
        return "no inet stanza"
    address, netmask = bridge.option("address") or "", bridge.option("netmask")
    if address and netmask and "/" not in address:
        try:
            address = ipaddress.IPv4Interface(f"{address}/{netmask}").with_prefixlen
        except ValueError:
            address = f"{address} netmask {netmask}"
    return " ".join(w for w in (bridge.method, address) if w)
