"""The parameter types: one function each that parses a value or refuses it in one line.

``opsbook run -p`` and ``-f`` files, the fleet's check, the notebook's form and the
runbook's inputs dataclass all use these, through :class:`opslib.core.params.Param`. A
function takes the value (text, or an already typed value) and returns it typed, or raises
:class:`Bad` with the rest of the line ``parameter NAME (TYPE): ...``: what is wrong and
what to write. A new type is one function here and one entry in :data:`TYPES`
(docs/runbook-shape.md, "Adding a parameter type").
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opslib.core import roomhosts
from opslib.core.ipv6prefix import ULA, BadPrefix, parse_prefix48, parse_prefix64

WIKI_PLACEHOLDER_MAC = "yo:ug:ot:fr:om:nr"


class Bad(ValueError):
    """A value does not fit its type; the text completes 'parameter NAME (TYPE): ...'."""


def _text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise Bad(f"expected text, got {type(value).__name__}")
    return str(value).strip()


def _str(value: object) -> str:
    # str keeps the text exactly (no strip): "010" stays "010".
    if isinstance(value, str):
        return value
    return _text(value)


def _int(value: object) -> int:
    if isinstance(value, bool):
        raise Bad("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    text = _text(value)
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise Bad(f"{text!r} is not an integer")
    return int(text, 10)


def _float(value: object) -> float:
    if isinstance(value, bool):
        raise Bad("expected a number, got a boolean")
    if isinstance(value, int | float):
        return float(value)
    text = _text(value)
    try:
        return float(text)
    except ValueError:
        raise Bad(f"{text!r} is not a number") from None


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise Bad(f"{text!r} is not a boolean; use true or false")


_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def host(value: object) -> str:
    text = _text(value)
    # Records are filed under the host name, so it must be a plain DNS name.
    if len(text) > 253 or not all(_HOST_LABEL.fullmatch(p) for p in text.split(".")):
        raise Bad(f"{text!r} is not a host name (letters, digits, '-' and '.')")
    return text


_URI_SCHEME = re.compile(r"[a-z][a-z0-9]*(\+[a-z0-9]+)?")


def _libvirt_uri(value: object) -> str:
    text = _text(value)
    parts = urlsplit(text)
    if not _URI_SCHEME.fullmatch(parts.scheme) or "://" not in text or " " in text:
        raise Bad(f"{text!r} is not a libvirt URI; use e.g. qemu:///system")
    driver = parts.scheme.split("+")[0]
    if driver == "qemu" and parts.path not in ("/system", "/session", "/embed"):
        raise Bad(f"{text!r}: a qemu URI ends in /system or /session, e.g. qemu:///system")
    return text


_NETNS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")


def _netns(value: object) -> str:
    text = _text(value)
    if text and not _NETNS.fullmatch(text):
        raise Bad(f"{text!r} is not a network namespace name (as in `ip netns list`)")
    return text


def _libvirt_name(kind: str) -> Callable[[object], str]:
    """A VM's or network's name as libvirt takes it: no '/', no control character, and no
    leading '-' (virsh would read it as an option where a fix suggests a command)."""

    def check(value: object) -> str:
        text = _text(value)
        if "/" in text or any(ord(c) < 32 for c in text) or text != text.strip():
            raise Bad(f"{text!r} is not a {kind} name; libvirt names have no '/'")
        if text.startswith("-"):
            raise Bad(f"{text!r} starts with '-'; name the {kind} without it")
        return text

    return check


# What ip-link(8) and ifupdown accept without quoting: 1-15 characters (IFNAMSIZ - 1),
# no leading "-" (it would read as an option where restart commands substitute names).
_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")


def _ifname(value: object) -> str:
    text = _text(value)
    if not _IFNAME.fullmatch(text) or text in (".", ".."):
        raise Bad(
            f"{text!r} is not an interface name; use 1-15 letters, digits, '.', '_' or '-' "
            "(not first), e.g. eth0 or br0"
        )
    return text


_MAC = re.compile(r"[0-9a-f]{2}([:-][0-9a-f]{2}){5}")


def _mac(value: object) -> str:
    text = _text(value).lower()
    if text == WIKI_PLACEHOLDER_MAC:
        raise Bad(f"{text!r} is the wiki's placeholder; give the MAC NetReg registered")
    if not _MAC.fullmatch(text):
        raise Bad(f"{text!r} is not a MAC address; write six hex pairs, e.g. 52:54:00:12:34:56")
    mac = text.replace("-", ":")
    if mac == "00:00:00:00:00:00":
        raise Bad("00:00:00:00:00:00 is not a usable MAC address")
    if int(mac[:2], 16) & 1:
        raise Bad(f"{mac} is a multicast MAC (first octet odd); a NIC needs a unicast one")
    return mac


def _ipv4(value: object) -> str:
    text = _text(value)
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise Bad(f"{text!r} is not an IPv4 address; write it like 192.0.2.10") from None


def _ipv4_cidr(value: object) -> str:
    """An address on a network with room for a router: 192.0.2.10/24 (prefix up to /30)."""
    text = _text(value)
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError:
        raise Bad(
            f"{text!r} is not an IPv4 address with prefix; write it like 192.0.2.10/24"
        ) from None
    if "/" not in text or iface.network.prefixlen >= 31:
        raise Bad(f"{text!r} needs a prefix length below 31, e.g. 192.0.2.10/24")
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise Bad(f"{text!r} is the network's own or broadcast address; give a host's")
    return str(iface)


def _ipv6_parsed(text: str) -> ipaddress.IPv6Address:
    if "%" in text:
        plain, _, zone = text.partition("%")
        raise Bad(
            f"{text!r} has a zone index (%{zone.partition('/')[0]}), which no record, route "
            f"or tunnel end can hold; write {plain}"
        )
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        raise Bad(f"{text!r} is not an IPv6 address; write it like 2001:db8::1") from None


def _ipv6(value: object) -> str:
    return str(_ipv6_parsed(_text(value)))


def _ipv6_global(value: object) -> str:
    """An address the internet reaches (a DNS record's AAAA, an origin Cloudflare proxies)."""
    ip = _ipv6_parsed(_text(value))
    bad = (
        "link-local" if ip.is_link_local else
        "loopback" if ip.is_loopback else
        "multicast" if ip.is_multicast else
        "unspecified" if ip.is_unspecified else
        "IPv4-mapped" if ip.ipv4_mapped else
        "unique-local (not routed on the internet)" if ip in ULA else
        ""
    )  # fmt: skip
    if bad:
        raise Bad(f"{ip} is {bad}; give a global IPv6 address, e.g. 2001:db8:2::5")
    return str(ip)


def _ipv6_cidr64(value: object) -> str:
    """An address with its /64, as a tunnel broker gives the tunnel's ends."""
    text = _text(value)
    address, slash, length = text.partition("/")
    try:
        ip = _ipv6_parsed(address)
    except Bad:
        raise Bad(
            f"{text!r} is not an IPv6 address with /64; write it like 2001:db8:1::2/64"
        ) from None
    if not slash or length != "64":
        raise Bad(f"{text!r} needs its /64, e.g. 2001:db8:1::2/64")
    return f"{ip}/64"


def _ipv6_prefix64(value: object, *, ula: bool = False) -> str:
    text = _text(value)
    try:
        net = parse_prefix64(text)
    except BadPrefix as bad:
        raise Bad(f"{text!r} {bad}") from None
    if net.subnet_of(ULA) and not ula:
        raise Bad(
            f"{text!r} is unique-local (fc00::/7), not reachable from the internet; "
            "use the routed /64 the tunnel broker assigned"
        )
    return str(net)


def ipv6_prefix64_or_ula(value: object) -> str:
    """ipv6-prefix64 where a rule ``ula if FLAG`` decides about unique-local prefixes."""
    return _ipv6_prefix64(value, ula=True)


# Debian's adduser/groupadd: lowercase letter or '_' first, at most 32 characters.
_ACCOUNT = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def _ipv6_prefix48(value: object) -> str:
    """A routed /48, as a tunnel broker delegates one (Hurricane Electric's "Routed /48")."""
    text = _text(value)
    try:
        return str(parse_prefix48(text))
    except BadPrefix as bad:
        raise Bad(f"{text!r} {bad}") from None


def _room_hosts(value: object) -> str:
    text = value if isinstance(value, str) else _text(value)
    try:
        return roomhosts.render(roomhosts.parse(text))
    except ValueError as exc:
        raise Bad(str(exc)) from None


def _account(value: object) -> str:
    text = _text(value)
    if not _ACCOUNT.fullmatch(text):
        raise Bad(
            f"{text!r} is not an account name (lowercase letters, digits, '_' and '-', "
            "starting with a letter or '_')"
        )
    if text == "root":
        raise Bad("root is the superuser; name an unprivileged account")
    return text


def _group(value: object) -> str:
    text = _text(value)
    if not _ACCOUNT.fullmatch(text):
        raise Bad(
            f"{text!r} is not a group name (lowercase letters, digits, '_' and '-', "
            "starting with a letter or '_')"
        )
    return text


_DNS_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


def _dns_name(value: object) -> str:
    text = _text(value)
    name = text.lower().rstrip(".")
    labels = name.split(".")
    # "*" (a wildcard record) only as the first label
    plain = labels[1:] if labels[0] == "*" and len(labels) > 1 else labels
    if not name or len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in plain):
        raise Bad(f"{text!r} is not a DNS name; write e.g. vm1.example.org")
    return name


def _dns_zone(value: object) -> str:
    name = _dns_name(value)
    if "." not in name:
        raise Bad(f"{name!r} is not a registered domain; write e.g. example.org")
    return name


def _https_url(value: object) -> str:
    """An https URL; plain http only to a loopback address (a local stand-in): a URL
    that carries a token must not send it unencrypted over a network."""
    text = _text(value)
    url = urlsplit(text)
    if url.scheme not in ("http", "https") or not url.hostname or any(c in text for c in " \n"):
        raise Bad(f"{text!r} is not an https URL; write it like https://api.example.org/v4")
    if url.scheme == "http" and not _loopback(url.hostname):
        raise Bad(
            f"{text} would travel unencrypted; use https (plain http only to 127.0.0.1 or ::1)"
        )
    return text


def _loopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _path(value: object) -> str:
    text = _text(value)
    if "\0" in text:
        raise Bad("a path cannot contain NUL")
    return str(Path(text).expanduser()) if text else text


def _host_path(value: object) -> str:
    """A file of the host the runbook acts on: absolute (not relative to the run's cwd)."""
    path = _path(value)
    if path and not path.startswith("/"):
        raise Bad(f"{path!r} is relative; give an absolute path, e.g. /etc/network/interfaces")
    return path


def _dir(value: object) -> str:
    # A directory the run reads from or keeps files in: a missing one would be made as
    # root, or read as an empty store that "passes" (records-review), so it must exist.
    path = _path(value)
    if not path:
        return path
    if not os.path.exists(path):
        raise Bad(f"{path!r} does not exist; give an existing directory (mkdir -p it first)")
    if not os.path.isdir(path):
        raise Bad(f"{path!r} is a file, not a directory; give a directory")
    return path


def _file(value: object) -> str:
    path = _path(value)
    if not path:
        return path
    if not os.path.exists(path):
        raise Bad(f"{path!r} does not exist; give an existing file")
    if os.path.isdir(path):
        raise Bad(f"{path!r} is a directory, not a file; give a file")
    return path


def _timespan(value: object) -> str:
    from opslib.core.systemd_calendar import timespan_usec  # lazy: only this type needs it

    text = _text(value)
    if any(ord(c) < 32 for c in text) or timespan_usec(text) is None:
        raise Bad(f"{text!r} is not a systemd time span; write e.g. 90s, 5min or 1h 30min")
    return text


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _secret(value: object) -> str:
    # Never echo the value: a mistaken value may be the secret itself.
    text = _text(value)
    kind, sep, rest = text.partition(":")
    if sep and kind == "file" and rest.startswith("/"):
        return text
    if sep and kind == "env" and _ENV_NAME.fullmatch(rest):
        return text
    if sep and kind == "file":
        raise Bad("a secret's file is named by its absolute path: file:/path")
    raise Bad("a secret parameter names a source, never a value: use file:/path or env:NAME")


def choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = _text(value)
        if text not in choices:
            raise Bad(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return check


TYPES: dict[str, Callable[[object], Any]] = {
    "str": _str,
    "int": _int,
    "float": _float,
    "bool": _bool,
    "host": host,
    "libvirt-uri": _libvirt_uri,
    "netns": _netns,
    "vm": _libvirt_name("VM"),
    "network": _libvirt_name("network"),  # one that exists (opsbook run asks libvirt)
    "network-name": _libvirt_name("network"),  # one that may not exist yet
    "ifname": _ifname,
    "mac": _mac,
    "ipv4": _ipv4,
    "ipv4-cidr": _ipv4_cidr,
    "ipv6": _ipv6,
    "ipv6-global": _ipv6_global,
    "ipv6-cidr64": _ipv6_cidr64,
    "ipv6-prefix64": _ipv6_prefix64,
    "ipv6-prefix48": _ipv6_prefix48,
    "room-hosts": _room_hosts,
    "account": _account,
    "group": _group,
    "dns-name": _dns_name,
    "dns-zone": _dns_zone,
    "https-url": _https_url,
    "path": _host_path,
    "dir": _dir,
    "file": _file,
    "timespan": _timespan,
    "secret": _secret,
}

# Types whose check looks at this machine's files, and what is left of it for a path on
# another machine (the fleet's check; the host's own `opsbook run` checks it exists).
ELSEWHERE: dict[str, Callable[[object], Any]] = {"dir": _path, "file": _path}
