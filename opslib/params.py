"""Parameter declarations and their types: one place for the runner, the forms and tests.

A runbook declares its parameters in the code cell tagged ``parameters``, one
assignment per line with a trailing type comment::

    host = "lab"  # host: the host name records are filed under
    vm = ""  # vm?: one VM, or empty for all
    mode = "dry"  # choice[dry|wet]: how to run
    deadline = 60  # float[1..3600]: seconds until the bridge must work

:func:`parse_declarations` reads such a cell with :mod:`ast` (the values) and
:mod:`tokenize` (the comments). :func:`convert` turns a text (command line,
parameter file, form field) or an already typed value into the declared type,
or raises :class:`~opslib.errors.InputError` with one line naming the fix.
"""

from __future__ import annotations

import ast
import io
import ipaddress
import json
import os
import re
import socket
import tokenize
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opslib.errors import InputError, UnknownName
from opslib.ipv6prefix import BadPrefix, parse_prefix64

__all__ = [
    "TYPES",
    "Param",
    "RunbookInfo",
    "convert",
    "parse_declarations",
    "read_runbook",
    "this_host",
    "validate",
]

WIKI_PLACEHOLDER_MAC = "yo:ug:ot:fr:om:nr"


class _Bad(ValueError):
    """A value does not fit its type; the text completes 'parameter NAME: ...'."""


def _text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Bad(f"expected text, got {type(value).__name__}")
    return str(value).strip()


def _str(value: object) -> str:
    # str keeps the text exactly (no strip): "010" stays "010".
    if isinstance(value, str):
        return value
    return _text(value)


def _int(value: object) -> int:
    if isinstance(value, bool):
        raise _Bad("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    text = _text(value)
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise _Bad(f"{text!r} is not an integer")
    return int(text, 10)


def _float(value: object) -> float:
    if isinstance(value, bool):
        raise _Bad("expected a number, got a boolean")
    if isinstance(value, int | float):
        return float(value)
    text = _text(value)
    try:
        return float(text)
    except ValueError:
        raise _Bad(f"{text!r} is not a number") from None


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
    raise _Bad(f"{text!r} is not a boolean; use true or false")


_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _host(value: object) -> str:
    text = _text(value)
    # Records are filed under the host name, so it must be a plain DNS name.
    if len(text) > 253 or not all(_HOST_LABEL.fullmatch(p) for p in text.split(".")):
        raise _Bad(f"{text!r} is not a host name (letters, digits, '-' and '.')")
    return text


def this_host() -> str:
    """This machine's host name: what an empty ``host`` stands for where runs are filed.

    The notebooks' defaults describe the machine they run on; a name like "lab" only comes
    from a parameter set (``parameters/lab/``) or ``--host``."""
    name = socket.gethostname()
    try:
        return _host(name)
    except _Bad:
        raise InputError(
            f"this machine's host name {name!r} cannot name its records; give --host HOST"
        ) from None


_URI_SCHEME = re.compile(r"[a-z][a-z0-9]*(\+[a-z0-9]+)?")


def _libvirt_uri(value: object) -> str:
    text = _text(value)
    parts = urlsplit(text)
    if not _URI_SCHEME.fullmatch(parts.scheme) or "://" not in text or " " in text:
        raise _Bad(f"{text!r} is not a libvirt URI; use e.g. qemu:///system")
    driver = parts.scheme.split("+")[0]
    if driver == "qemu" and parts.path not in ("/system", "/session", "/embed"):
        raise _Bad(f"{text!r}: a qemu URI ends in /system or /session, e.g. qemu:///system")
    return text


_NETNS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")


def _netns(value: object) -> str:
    text = _text(value)
    if text and not _NETNS.fullmatch(text):
        raise _Bad(f"{text!r} is not a network namespace name (as in `ip netns list`)")
    return text


def _libvirt_name(kind: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = _text(value)
        if "/" in text or any(ord(c) < 32 for c in text) or text != text.strip():
            raise _Bad(f"{text!r} is not a {kind} name")
        return text

    return check


# What ip-link(8) and ifupdown accept without quoting: 1-15 characters (IFNAMSIZ - 1),
# no leading "-" (it would read as an option where restart commands substitute names).
_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")


def _ifname(value: object) -> str:
    text = _text(value)
    if not _IFNAME.fullmatch(text) or text in (".", ".."):
        raise _Bad(
            f"{text!r} is not an interface name; use 1-15 letters, digits, '.', '_' or '-', "
            "e.g. eth0 or br0"
        )
    return text


_MAC = re.compile(r"[0-9a-f]{2}([:-][0-9a-f]{2}){5}")


def _mac(value: object) -> str:
    text = _text(value).lower()
    if text == WIKI_PLACEHOLDER_MAC:
        raise _Bad(f"{text!r} is the wiki's placeholder; give the MAC NetReg registered")
    if not _MAC.fullmatch(text):
        raise _Bad(f"{text!r} is not a MAC address; write six hex pairs, e.g. 52:54:00:12:34:56")
    mac = text.replace("-", ":")
    if mac == "00:00:00:00:00:00":
        raise _Bad("00:00:00:00:00:00 is not a usable MAC address")
    if int(mac[:2], 16) & 1:
        raise _Bad(f"{mac} is a multicast MAC (first octet odd); a NIC needs a unicast one")
    return mac


def _address(value: object, family: int) -> str:
    text = _text(value)
    kind = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    try:
        return str(kind(text))
    except ValueError:
        raise _Bad(f"{text!r} is not an IPv{family} address") from None


def _ipv4(value: object) -> str:
    return _address(value, 4)


def _ipv6(value: object) -> str:
    return _address(value, 6)


def _ipv6_prefix64(value: object) -> str:
    text = _text(value)
    try:
        return str(parse_prefix64(text))
    except BadPrefix as bad:
        raise _Bad(f"{text!r} {bad}") from None


def _path(value: object) -> str:
    text = _text(value)
    if "\0" in text:
        raise _Bad("a path cannot contain NUL")
    return str(Path(text).expanduser()) if text else text


def _dir(value: object) -> str:
    # A directory the run reads from or keeps files in: a missing one would be made as
    # root, or read as an empty store that "passes" (records-review), so it must exist.
    path = _path(value)
    if not path:
        return path
    if not os.path.exists(path):
        raise _Bad(f"{path!r} does not exist; give an existing directory (mkdir -p it first)")
    if not os.path.isdir(path):
        raise _Bad(f"{path!r} is a file, not a directory; give a directory")
    return path


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _secret(value: object) -> str:
    # Never echo the value: a mistaken value may be the secret itself.
    text = _text(value)
    kind, sep, rest = text.partition(":")
    if sep and kind == "file" and rest.startswith("/"):
        return text
    if sep and kind == "env" and _ENV_NAME.fullmatch(rest):
        return text
    raise _Bad("a secret parameter names a source, never a value: use file:/path or env:NAME")


def _choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = _text(value)
        if text not in choices:
            raise _Bad(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return check


TYPES: dict[str, Callable[[object], Any]] = {
    "str": _str,
    "int": _int,
    "float": _float,
    "bool": _bool,
    "host": _host,
    "libvirt-uri": _libvirt_uri,
    "netns": _netns,
    "vm": _libvirt_name("VM"),
    "network": _libvirt_name("network"),
    "ifname": _ifname,
    "mac": _mac,
    "ipv4": _ipv4,
    "ipv6": _ipv6,
    "ipv6-prefix64": _ipv6_prefix64,
    "path": _path,
    "dir": _dir,
    "secret": _secret,
}
# Types whose empty value means something ("" = this network namespace, this machine).
_EMPTY_IS_VALUE = {"netns", "host"}
_TYPE_RE = re.compile(r"(?P<base>[a-z][a-z0-9-]*)(\[(?P<arg>[^\]]*)\])?(?P<opt>\?)?")
# A numeric type's range, both ends included, either one may be left open:
# int[1..3600], float[0.5..], int[..9000].
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_RANGE_RE = re.compile(rf"\s*(?P<low>{_NUMBER})?\s*\.\.\s*(?P<high>{_NUMBER})?\s*")
_NUMERIC = ("int", "float")


def _number_text(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Param:
    """One declared parameter of a runbook."""

    name: str
    type: str  # base type, a key of TYPES or "choice"
    default: Any
    help: str = ""
    optional: bool = False  # declared with "?": may be empty
    choices: tuple[str, ...] = ()
    # int/float: the range the value must lie in, both ends included (None: open).
    low: float | None = None
    high: float | None = None

    @property
    def type_label(self) -> str:
        base = f"choice[{'|'.join(self.choices)}]" if self.type == "choice" else self.type
        if self.low is not None or self.high is not None:
            low = "" if self.low is None else _number_text(self.low)
            high = "" if self.high is None else _number_text(self.high)
            base += f"[{low}..{high}]"
        return base + ("?" if self.optional else "")

    def convert(self, value: object) -> Any:
        """The value in its declared type, or InputError naming this parameter."""
        if value is None or (isinstance(value, str) and value == ""):
            if self.optional or self.type in _EMPTY_IS_VALUE:
                return "" if self.type not in ("int", "float", "bool") else None
            raise InputError(
                f"parameter {self.name} ({self.type_label}) needs a value; "
                f"give -p {self.name} VALUE"
            )
        check = _choice(self.choices) if self.type == "choice" else TYPES[self.type]
        try:
            converted = check(value)
            self._check_range(converted)
        except _Bad as bad:
            raise InputError(f"parameter {self.name} ({self.type_label}): {bad}") from None
        return converted

    def _check_range(self, value: Any) -> None:
        if self.low is None and self.high is None:
            return
        # Written as "not inside" so that a NaN is refused too.
        if (self.low is None or value >= self.low) and (self.high is None or value <= self.high):
            return
        low, high = (None if b is None else _number_text(b) for b in (self.low, self.high))
        wanted = (
            f"from {low} to {high}"
            if low is not None and high is not None
            else f"of at least {low}"
            if low is not None
            else f"of at most {high}"
        )
        raise _Bad(f"{_number_text(value)} is out of range; give a value {wanted}")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type_label,
            "default": self.default,
            "help": self.help,
        }


def convert(param: Param, value: object) -> Any:
    return param.convert(value)


@dataclass(frozen=True)
class _Type:
    base: str
    optional: bool
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None


def _parse_range(name: str, base: str, arg: str, lineno: int) -> tuple[float | None, ...]:
    example = "int[1..3600]" if base == "int" else "float[0.5..60]"
    match = _RANGE_RE.fullmatch(arg)
    if not match or not (match["low"] or match["high"]):
        raise InputError(
            f"line {lineno}: {name}: cannot read the range [{arg}]; write {base}[MIN..MAX], "
            f"e.g. {example} (leave an end out for no limit)"
        )
    convert = TYPES[base]
    try:
        low, high = (None if match[k] is None else convert(match[k]) for k in ("low", "high"))
    except _Bad:
        raise InputError(
            f"line {lineno}: {name}: the range [{arg}] of an int needs whole numbers"
        ) from None
    if low is not None and high is not None and low > high:
        raise InputError(f"line {lineno}: {name}: the range [{arg}] is empty; write [MIN..MAX]")
    return low, high


def _parse_type(name: str, spec: str, lineno: int) -> _Type:
    match = _TYPE_RE.fullmatch(spec)
    if not match:
        raise InputError(f"line {lineno}: {name}: cannot read type {spec!r}; write `# TYPE: help`")
    base, opt, arg = match["base"], bool(match["opt"]), match["arg"]
    if base == "choice":
        choices = tuple(c.strip() for c in (arg or "").split("|") if c.strip())
        if not choices:
            raise InputError(f"line {lineno}: {name}: choice needs options, e.g. choice[a|b]")
        return _Type(base, opt, choices)
    if base in _NUMERIC and arg is not None:
        low, high = _parse_range(name, base, arg, lineno)
        return _Type(base, opt, low=low, high=high)
    if arg is not None or base not in TYPES:
        known = ", ".join([*TYPES, "choice[a|b]", "int[MIN..MAX]", "float[MIN..MAX]"])
        raise InputError(f"line {lineno}: {name}: unknown parameter type {spec!r}; known: {known}")
    return _Type(base, opt)


def parse_declarations(source: str) -> list[Param]:
    """The parameters declared in a ``parameters`` cell's source, in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise InputError(f"parameters cell, line {exc.lineno}: {exc.msg}") from None
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string[1:].strip()
    params: list[Param] = []
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            target, value_node = node.target, node.value
        elif (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            target, value_node = node.targets[0], node.value
        else:
            continue
        if value_node is None:
            continue
        name = target.id
        try:
            default = ast.literal_eval(value_node)
        except ValueError:
            raise InputError(
                f"parameters cell, line {node.lineno}: {name}: the default must be a literal"
            ) from None
        end = node.end_lineno or node.lineno
        comment = comments.get(end, "")
        spec, _, help_text = comment.partition(":")
        if not comment or not _:
            raise InputError(
                f"parameters cell, line {node.lineno}: {name} has no type comment; "
                f"write `{name} = ...  # TYPE: help`"
            )
        t = _parse_type(name, spec.strip(), node.lineno)
        params.append(
            Param(name, t.base, default, help_text.strip(), t.optional, t.choices, t.low, t.high)
        )
    return params


def validate(
    params: Iterable[Param], given: Mapping[str, object], *, where: str = ""
) -> dict[str, Any]:
    """Every declared parameter in its type: defaults overridden by ``given``.

    Unknown names, wrong types and bad values raise InputError (one line).
    """
    declared = {p.name: p for p in params}
    for name in given:
        if name not in declared:
            err = UnknownName("parameter", name, declared)
            raise InputError(f"{where}{err}") from None
    values: dict[str, Any] = {}
    for name, param in declared.items():
        raw = given.get(name, param.default)
        try:
            values[name] = param.convert(raw)
        except InputError as exc:
            raise InputError(f"{where}{exc}") from None
    return values


@dataclass(frozen=True)
class RunbookInfo:
    """A runbook notebook as the engine sees it: name, purpose, parameters."""

    name: str
    path: Path
    purpose: str
    params: tuple[Param, ...]
    kernel: str

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


def _cell_source(cell: Mapping[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def parameters_source(nb: Mapping[str, Any]) -> str | None:
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get(
            "tags", []
        ):
            return _cell_source(cell)
    return None


def purpose_of(nb: Mapping[str, Any]) -> str:
    """The first non-empty line after the ``# title`` of the first markdown cell."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        lines = [ln.strip() for ln in _cell_source(cell).splitlines()]
        after_title = False
        for line in lines:
            if line.startswith("# "):
                after_title = True
            elif after_title and line:
                return line
        return ""
    return ""


def read_runbook(path: Path) -> RunbookInfo:
    """Read a notebook's declarations (plain JSON: fast and no nbformat import)."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read notebook: {exc}") from None
    source = parameters_source(nb)
    try:
        params = tuple(parse_declarations(source)) if source is not None else ()
    except InputError as exc:
        raise InputError(f"{path.name}: {exc}") from None
    kernel = nb.get("metadata", {}).get("kernelspec", {}).get("name", "python3")
    return RunbookInfo(path.stem, path, purpose_of(nb), params, kernel)


def check_names(decls: Iterable[Param], values: Mapping[str, Any]) -> None:
    """VM and network parameters name objects that exist (when a libvirt_uri is given).

    The names come from :mod:`opslib.virt`, which owns the libvirt connection and says
    in one line why it could not be reached."""
    uri = values.get("libvirt_uri")
    named = [p for p in decls if p.type in ("vm", "network") and values.get(p.name)]
    if not uri or not named:
        return
    from opslib import virt  # lazy: reading declarations needs no libvirt
    from opslib.errors import OpsError

    for p in named:
        try:
            known = virt.known_names(str(uri), p.type)
        except OpsError as exc:
            raise InputError(f"parameter {p.name}: {exc}") from None
        if values[p.name] not in known:
            err = UnknownName("VM" if p.type == "vm" else "network", values[p.name], known)
            raise InputError(f"parameter {p.name}: {err}") from None
