"""A runbook's inputs, declared once.

Each runbook has one frozen dataclass of inputs (``kw_only``, checked in
``__post_init__``) whose fields are declared with :func:`param`: the notebook type
(:mod:`opslib.core.params`), the help text and the default. Everything else comes from it:

- :func:`parameters_cell`: the notebook's ``parameters`` cell (``host`` first, then
  each field, then ``apply`` for a changing runbook). The notebook's form and the CLI
  (``opsbook run``, ``opsbook runbooks``) read their declarations from that cell, and
  ``tests/unit/test_contract.py`` checks that every runbook's notebook holds this very text
  (``scripts/parameter-cells.py`` writes them);
- :func:`verbs`: a changing runbook's ``plan(*, host, FIELD...)`` and
  ``apply(plan, *, FIELD...)``, whose signatures name the fields (``Runbook.kwargs_for``
  passes the notebook's values by these names). ``plan`` builds the inputs and plans
  (:func:`opslib.contract.transaction.plan`); ``apply`` takes the inputs the plan carries, with the
  fields given again replaced (the notebook gives them all again; a value that changes
  the plan is refused by the engine's comparison), asks the procedure whether this host
  can apply (``Procedure.check_host``: root?), and applies
  (:func:`opslib.contract.transaction.apply`);
- :func:`reading`: a read-only verb (``run``) taking the same fields.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable
from typing import Any, TypeVar

from opslib.contract import transaction
from opslib.core import params
from opslib.core.changes import Plan, Result

__all__ = [
    "APPLY_LINE",
    "HOST_LINE",
    "PLANNED",
    "Declared",
    "declarations",
    "libvirt_uri",
    "netns",
    "param",
    "parameters_cell",
    "reading",
    "verbs",
]

I = TypeVar("I")  # noqa: E741 - a runbook's inputs dataclass
R = TypeVar("R")
_KEY = "opsbook.param"  # a field's metadata: (notebook type, help, the cell's value)
HOST_LINE = 'host = ""  # host: the host name records are filed under ("" = this machine\'s name)'
APPLY_LINE = "apply = False  # bool: make the changes (False shows the plan only)"


class _Planned:
    def __repr__(self) -> str:
        return "<as planned>"


PLANNED: Any = _Planned()  # apply's default for every field: the value the plan was made with


def param(
    type: str,
    help: str,
    default: Any = dataclasses.MISSING,
    *,
    example: Any = "",
    rules: tuple[str, ...] = (),
) -> Any:
    """A field of a runbook's inputs that is a notebook parameter.

    ``type`` is the parameters cell's type (``libvirt-uri``, ``ifname?``,
    ``float[1..3600]``...; :mod:`opslib.core.param_types`), ``rules`` its rules with other
    fields (``needs address``, ``in zone``...; :mod:`opslib.core.param_rules`). Without
    ``default`` the field is required from Python and the cell shows ``example`` (a
    placeholder the operator replaces)."""
    shown = example if default is dataclasses.MISSING else default
    spec = f"{type} ({', '.join(rules)})" if rules else type
    meta = {_KEY: (spec, help, shown)}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def libvirt_uri(help: str = "libvirt connection of the host") -> Any:
    """The ``libvirt_uri`` field most runbooks have."""
    return param("libvirt-uri", help, "qemu:///system")


def netns(what: str = "bridges") -> Any:
    """The ``netns`` field: the network namespace of the host's ``what``."""
    return param("netns", f'network namespace of the host\'s {what} ("" = this one)', "")


def _literal(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def parameters_cell(cls: type, *, changing: bool = True) -> str:
    """The notebook's ``parameters`` cell for the inputs ``cls`` (no trailing newline);
    a read-only runbook's (``changing`` false) has no ``apply``."""
    lines = [HOST_LINE]
    for f in dataclasses.fields(cls):
        if _KEY in f.metadata:
            kind, help_text, shown = f.metadata[_KEY]
            lines.append(f"{f.name} = {_literal(shown)}  # {kind}: {help_text}")
    return "\n".join([*lines, APPLY_LINE] if changing else lines)


def declarations(cls: type, *, changing: bool = True) -> list[params.Param]:
    """The parameters the notebook declares for ``cls``, as the CLI and the form read them."""
    return params.parse_declarations(parameters_cell(cls, changing=changing))


_FIELDS: dict[type, tuple[params.Param, ...]] = {}


def _fields(cls: type) -> tuple[params.Param, ...]:
    """The declared fields of ``cls`` as the parameters cell declares them (read once)."""
    if cls not in _FIELDS:
        named = {f.name for f in dataclasses.fields(cls) if _KEY in f.metadata}
        _FIELDS[cls] = tuple(p for p in declarations(cls, changing=False) if p.name in named)
    return _FIELDS[cls]


class Declared:
    """The base of a runbook's inputs dataclass: each declared field is converted to its
    type by the same function the CLI, the fleet's check and the form use (so a value is
    refused, or normalised, the same everywhere), then the rules between fields are
    checked, then the class's own ``__post_init__`` runs: it keeps only what needs
    several fields and is not declared (forward-bridge: the restart template with the netns)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is None:
            return

        def __post_init__(self: Any) -> None:
            _typed(self)
            own(self)

        setattr(cls, "__post_init__", __post_init__)  # noqa: B010 - mypy: no method-assign

    def __post_init__(self) -> None:
        _typed(self)


def _typed(inputs: Any) -> None:
    decls = _fields(type(inputs))
    values = {}
    for p in decls:
        value = p.convert(getattr(inputs, p.name))
        object.__setattr__(inputs, p.name, value)
        values[p.name] = value
    params.check_rules(decls, values)


def _signature(cls: type, *, applying: bool) -> inspect.Signature:
    """plan: ``(*, host, FIELD=default...)``; apply: ``(plan, *, host=None, FIELD=PLANNED...)``."""
    kw, empty = inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.empty
    found = [inspect.Parameter("host", kw, annotation=str, default=None if applying else empty)]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else empty
        if f.init:
            found.append(inspect.Parameter(f.name, kw, default=PLANNED if applying else default))
    if applying:
        found.insert(0, inspect.Parameter("plan", inspect.Parameter.POSITIONAL_OR_KEYWORD))
    return inspect.Signature(found)


def _named(fn: Callable[..., Any], cls: type, module: str, doc: str, *, applying: bool) -> None:
    fn.__signature__ = _signature(cls, applying=applying)  # type: ignore[attr-defined]
    fn.__module__, fn.__qualname__, fn.__doc__ = module, fn.__name__, doc


def verbs(
    proc: transaction.Procedure[Any, Any, Any],
) -> tuple[Callable[..., Plan], Callable[..., Result]]:
    """The runbook module's ``plan`` and ``apply``, derived from ``proc.inputs``."""
    cls = proc.inputs

    def plan(*, host: str, **given: Any) -> Plan:
        return transaction.plan(proc, cls(**given), host)

    def apply(plan: Plan, *, host: str | None = None, **given: Any) -> Result:
        if plan.inputs is None and plan.runbook == proc.name:
            inputs = cls(**given)  # a plan without its inputs (read from a record): all here
        else:
            reviewed = transaction.inputs_of(plan, cls, proc.name)
            inputs = dataclasses.replace(reviewed, **given) if given else reviewed
        proc.check_host(inputs)
        return transaction.apply(proc, inputs, host or plan.host, reviewed=plan)

    module = type(proc).__module__
    _named(plan, cls, module, f"Observe the host and plan {proc.name}.", applying=False)
    _named(
        apply,
        cls,
        module,
        f"Apply a reviewed plan of {proc.name}: re-observe, refuse a plan the host no "
        "longer matches, run the steps, undo the done ones on failure.",
        applying=True,
    )
    return plan, apply


def reading(cls: type[I], fn: Callable[[I, str], R]) -> Callable[..., R]:
    """A read-only verb (a read-only runbook's ``run``; a changing one's health or drift)
    that takes what ``plan`` takes: ``fn(inputs, host)`` as ``NAME(*, host, FIELD...)``,
    named after ``fn``."""

    def verb(*, host: str, **given: Any) -> R:
        return fn(cls(**given), host)

    verb.__name__ = fn.__name__.lstrip("_")
    _named(verb, cls, fn.__module__, fn.__doc__ or "", applying=False)
    return verb
