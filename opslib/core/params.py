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
or raises :class:`~opslib.core.errors.InputError` with one line naming the fix.
"""

from __future__ import annotations

import ast
import io
import json
import re
import socket
import tokenize
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opslib.core.errors import InputError, UnknownName
from opslib.core.param_rules import RULE_KINDS, Rule, check_rules, parse_rule
from opslib.core.param_types import ELSEWHERE, TYPES, Bad, choice, ipv6_prefix64_or_ula
from opslib.core.param_types import host as host_name

__all__ = [
    "TYPES",
    "Param",
    "Rule",
    "RunbookInfo",
    "check_rules",
    "convert",
    "parse_declarations",
    "read_runbook",
    "this_host",
    "validate",
]

# Types whose empty value means something ("" = this network namespace, this machine).
_EMPTY_IS_VALUE = {"netns", "host"}
# TYPE, TYPE?, TYPE[ARG], TYPE[ARG]?, each optionally followed by its rules: "(RULE, RULE)".
_TYPE_RE = re.compile(
    r"(?P<base>[a-z][a-z0-9-]*)(\[(?P<arg>[^\]]*)\])?(?P<opt>\?)?(\s*\((?P<rules>[^)]*)\))?"
)
# A numeric type's ranges, both ends included, either one may be left open, several
# separated by "|" (a number alone is a range of one): int[1..3600], float[0.5..],
# int[..9000], int[1|60..86400] (Cloudflare's TTL: 1 = automatic, or 60 to 86400).
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_RANGE_RE = re.compile(rf"\s*(?P<low>{_NUMBER})?\s*\.\.\s*(?P<high>{_NUMBER})?\s*")
_ONE_RE = re.compile(rf"\s*(?P<low>{_NUMBER})\s*")
_NUMERIC = ("int", "float")
Range = tuple[float | None, float | None]


def _number_text(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and low == high:
        return _number_text(low)
    return (
        f"{'' if low is None else _number_text(low)}..{'' if high is None else _number_text(high)}"
    )


@dataclass(frozen=True)
class Param:
    """One declared parameter of a runbook."""

    name: str
    type: str  # base type, a key of TYPES or "choice"
    default: Any
    help: str = ""
    optional: bool = False  # declared with "?": may be empty
    choices: tuple[str, ...] = ()
    # int/float: the range the value must lie in, both ends included (None: open); with
    # holes, ``ranges`` lists the parts and low/high span them all.
    low: float | None = None
    high: float | None = None
    ranges: tuple[Range, ...] = ()
    rules: tuple[Rule, ...] = ()

    @property
    def type_label(self) -> str:
        base = f"choice[{'|'.join(self.choices)}]" if self.type == "choice" else self.type
        if self.ranges:
            base += f"[{'|'.join(_range_text(lo, hi) for lo, hi in self.ranges)}]"
        elif self.low is not None or self.high is not None:
            low = "" if self.low is None else _number_text(self.low)
            high = "" if self.high is None else _number_text(self.high)
            base += f"[{low}..{high}]"
        return base + ("?" if self.optional else "")

    @property
    def declared(self) -> str:
        """The type as the parameters cell writes it, rules included."""
        rules = f" ({', '.join(map(str, self.rules))})" if self.rules else ""
        return self.type_label + rules

    def _check_of(self, here: bool) -> Callable[[object], Any]:
        if self.type == "choice":
            return choice(self.choices)
        if any(r.kind == "ula if" for r in self.rules):
            return ipv6_prefix64_or_ula  # the rule decides, once the flag has its value
        if not here and self.type in ELSEWHERE:
            return ELSEWHERE[self.type]
        return TYPES[self.type]

    def convert(self, value: object, *, here: bool = True) -> Any:
        """The value in its declared type, or InputError naming this parameter. ``here``
        false: the value is for another machine (the fleet's check), so a path is checked
        as a path, not for existence on this one."""
        if value is None or (isinstance(value, str) and value == ""):
            if self.optional or self.type in _EMPTY_IS_VALUE:
                return "" if self.type not in ("int", "float", "bool") else None
            raise InputError(
                f"parameter {self.name} ({self.type_label}) needs a value; "
                f"give -p {self.name} VALUE"
            )
        try:
            converted = self._check_of(here)(value)
            self._check_range(converted)
        except Bad as bad:
            raise InputError(f"parameter {self.name} ({self.type_label}): {bad}") from None
        return converted

    def _check_range(self, value: Any) -> None:
        ranges = self.ranges or ((self.low, self.high),)
        if ranges == ((None, None),):
            return
        # Written as "inside one" so that a NaN is refused too.
        for low, high in ranges:
            if (low is None or value >= low) and (high is None or value <= high):
                return
        if self.ranges:
            parts = [_range_text(lo, hi).replace("..", " to ") for lo, hi in self.ranges]
            wanted = f"give {' or '.join(parts)}"
        else:
            lo, hi = (None if b is None else _number_text(b) for b in (self.low, self.high))
            wanted = "give a value " + (
                f"from {lo} to {hi}"
                if lo is not None and hi is not None
                else f"of at least {lo}"
                if lo is not None
                else f"of at most {hi}"
            )
        raise Bad(f"{_number_text(value)} is out of range; {wanted}")

    def to_json(self) -> dict[str, Any]:
        found = {"name": self.name, "type": self.type_label, "default": self.default}
        if self.rules:
            found["rules"] = [str(r) for r in self.rules]
        return {**found, "help": self.help}


def convert(param: Param, value: object) -> Any:
    return param.convert(value)


@dataclass(frozen=True)
class _Type:
    base: str
    optional: bool
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    ranges: tuple[Range, ...] = ()
    rules: tuple[Rule, ...] = ()


def _parse_ranges(name: str, base: str, arg: str, lineno: int) -> tuple[Range, ...]:
    example = "int[1..3600]" if base == "int" else "float[0.5..60]"
    found = []
    for part in arg.split("|"):
        match = _RANGE_RE.fullmatch(part) or _ONE_RE.fullmatch(part)
        if not match or not (match["low"] or match.groupdict().get("high")):
            raise InputError(
                f"line {lineno}: {name}: cannot read the range [{arg}]; write {base}[MIN..MAX], "
                f"e.g. {example} (leave an end out for no limit; | between parts)"
            )
        ends = (match["low"], match.groupdict().get("high", match["low"]))
        try:
            low, high = (None if e is None else TYPES[base](e) for e in ends)
        except Bad:
            raise InputError(
                f"line {lineno}: {name}: the range [{arg}] of an int needs whole numbers"
            ) from None
        if low is not None and high is not None and low > high:
            raise InputError(f"line {lineno}: {name}: the range [{arg}] is empty; write [MIN..MAX]")
        found.append((low, high))
    return tuple(found)


def _parse_rules(name: str, text: str | None, lineno: int) -> tuple[Rule, ...]:
    rules = []
    for part in (text or "").split(","):
        rule = parse_rule(part)
        if rule is None:
            kinds = ", ".join(f"{'V ' if k == 'if' else ''}{k} FIELD" for k in RULE_KINDS)
            raise InputError(
                f"line {lineno}: {name}: cannot read the rule {part.strip()!r}; write "
                f"({kinds}, V needs FIELD)"
            )
        rules.append(rule)
    return tuple(rules)


def _parse_type(name: str, spec: str, lineno: int) -> _Type:
    match = _TYPE_RE.fullmatch(spec)
    if not match:
        raise InputError(f"line {lineno}: {name}: cannot read type {spec!r}; write `# TYPE: help`")
    base, opt, arg = match["base"], bool(match["opt"]), match["arg"]
    rules = _parse_rules(name, match["rules"], lineno) if match["rules"] is not None else ()
    if base == "choice":
        choices = tuple(c.strip() for c in (arg or "").split("|") if c.strip())
        if not choices:
            raise InputError(f"line {lineno}: {name}: choice needs options, e.g. choice[a|b]")
        return _Type(base, opt, choices, rules=rules)
    if base in _NUMERIC and arg is not None:
        ranges = _parse_ranges(name, base, arg, lineno)
        lows, highs = [lo for lo, _ in ranges], [hi for _, hi in ranges]
        low = None if None in lows else min(x for x in lows if x is not None)
        high = None if None in highs else max(x for x in highs if x is not None)
        many = ranges if len(ranges) > 1 else ()
        return _Type(base, opt, low=low, high=high, ranges=many, rules=rules)
    if arg is not None or base not in TYPES:
        known = ", ".join([*TYPES, "choice[a|b]", "int[MIN..MAX]", "float[MIN..MAX]"])
        raise InputError(f"line {lineno}: {name}: unknown parameter type {spec!r}; known: {known}")
    if any(r.kind == "ula if" for r in rules) and base != "ipv6-prefix64":
        raise InputError(f"line {lineno}: {name}: 'ula if' is a rule of ipv6-prefix64 only")
    return _Type(base, opt, rules=rules)


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
            Param(
                name, t.base, default, help_text.strip(), t.optional, t.choices, t.low, t.high,
                t.ranges, t.rules,
            )
        )  # fmt: skip
    names = {p.name for p in params}
    for p in params:
        for rule in p.rules:
            if rule.other not in names or rule.other == p.name:
                raise InputError(
                    f"parameters cell: {p.name}: its rule '{rule}' names no other parameter"
                )
    return params


def validate(
    params: Iterable[Param], given: Mapping[str, object], *, where: str = "", here: bool = True
) -> dict[str, Any]:
    """Every declared parameter in its type: defaults overridden by ``given``, then the
    rules between them. ``here`` false: for another machine (:meth:`Param.convert`).

    Unknown names, wrong types, bad values and broken rules raise InputError (one line).
    """
    declared = {p.name: p for p in params}
    for name in given:
        if name not in declared:
            err = UnknownName("parameter", name, declared)
            raise InputError(f"{where}{err}") from None
    values: dict[str, Any] = {}
    try:
        for name, param in declared.items():
            values[name] = param.convert(given.get(name, param.default), here=here)
        check_rules(declared.values(), values)
    except InputError as exc:
        raise InputError(f"{where}{exc}") from None
    return values


def this_host() -> str:
    """This machine's host name: what an empty ``host`` stands for where runs are filed.

    The notebooks' defaults describe the machine they run on; a name like "lab" only comes
    from a parameter set (``parameters/lab/``) or ``--host``."""
    name = socket.gethostname()
    try:
        return host_name(name)
    except Bad:
        raise InputError(
            f"this machine's host name {name!r} cannot name its records; give --host HOST"
        ) from None


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
