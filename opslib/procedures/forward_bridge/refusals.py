"""What makes forward-bridge's conversion of the interfaces files unsafe (pure): a
mapping or rename of the uplink, an alias on it, a bridge or bond that already holds it,
two inet stanzas of one name. Each refusal is one InputError naming the file and line."""

from __future__ import annotations

import fnmatch

from opslib.core.errors import InputError
from opslib.host.ifupdown import interfaces as ifs
from opslib.host.ifupdown import source_tree


def where(path: str, stanza: ifs.Stanza) -> str:
    return f"{path}:{stanza.lineno}"


def ports(iface: source_tree.Iface | ifs.Stanza) -> list[str]:
    return (iface.option("bridge_ports") or "").split()


def refusals(tree: source_tree.Tree, uplink: str, bridge: str) -> None:
    """Stanzas that make the conversion unsafe: InputError naming the file and line."""
    for path, i, s in tree.stanzas():
        at = where(path, s)
        if s.kind == "mapping" and any(fnmatch.fnmatchcase(uplink, pat) for pat in s.head[1:]):
            raise InputError(
                f"{uplink} is renamed by a mapping stanza at {at}; convert it by hand "
                "or remove the mapping first"
            )
        if s.kind == "rename" and any(w.split("=")[0] == uplink for w in s.head[1:]):
            raise InputError(f"{uplink} is renamed at {at}; name the renamed link as uplink")
        if s.kind != "iface":
            continue
        f = tree.iface(path, i)  # options inherited from a template count too
        if s.name.startswith(uplink + ":"):
            raise InputError(
                f"{s.name} at {at} puts an alias address on {uplink}, which becomes a "
                f"bridge port; move it to {bridge}:{s.name.split(':', 1)[1]} first"
            )
        held = ports(f)
        if s.name == bridge:
            others = [p for p in held if p not in (uplink, "none")]
            if others:
                raise InputError(
                    f"{bridge} already bridges {' '.join(others)} ({at}); choose another "
                    "bridge name or take it out of the file first"
                )
        elif uplink in held or "all" in held:
            raise InputError(
                f"{uplink} is already a port of {s.name} ({at}); choose that bridge as "
                "bridge or free the uplink first"
            )
        slaves = (f.option("bond_slaves") or "").split()
        if uplink in slaves:
            raise InputError(f"{uplink} is a slave of bond {s.name} ({at}); use uplink={s.name}")
        if s.name == uplink and f.option("bond_master"):
            raise InputError(
                f"{uplink} is a slave of bond {f.option('bond_master')} ({at}); "
                f"use uplink={f.option('bond_master')}"
            )


def one_inet(tree: source_tree.Tree, name: str) -> source_tree.Iface | None:
    """The inet stanza of ``name``, its family and method resolved through ``inherits``."""
    found = [f for f in tree.ifaces(name) if f.family == "inet"]
    if len(found) > 1:
        places = ", ".join(where(f.path, f.stanza) for f in found)
        raise InputError(f"{name} has {len(found)} inet stanzas ({places}); keep one")
    return found[0] if found else None
