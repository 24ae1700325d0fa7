"""opslib.contract.inputs: a runbook's inputs declared once, and what derives from them."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import pytest

from opslib.contract import inputs
from opslib.contract.inputs import param
from opslib.contract.transaction import Procedure, Transaction
from opslib.core import params
from opslib.core.actions import Action
from opslib.core.changes import Change, Plan
from opslib.core.errors import ApplyError, HostError, InputError


@dataclass(frozen=True, kw_only=True)
class Inputs:
    libvirt_uri: str = inputs.libvirt_uri()
    name: str = param("ifname", "the link to make", example="br0")
    mtu: int = param("int[1280..9000]", "its MTU", 1500)
    note: str = param("str?", "free text", "")
    root: str = "/"  # not a parameter

    def __post_init__(self) -> None:
        if self.name == "lo":
            raise InputError("name lo is the loopback; name another link")


WORLD: dict[str, int] = {}  # link name -> MTU


class Links(Procedure[Inputs, dict[str, int], None]):
    name = "toy-links"
    inputs = Inputs
    allowed = True

    @contextmanager
    def session(self, inputs: Inputs) -> Iterator[None]:
        yield None

    def observe(self, inputs: Inputs, session: None) -> dict[str, int]:
        return dict(WORLD)

    def plan(self, inputs: Inputs, observed: dict[str, int], host: str) -> Plan:
        if observed.get(inputs.name) == inputs.mtu:
            return Plan(self.name, host)
        return Plan(self.name, host, (Change(f"link:{inputs.name}", "mtu", f"mtu {inputs.mtu}"),))

    def steps(self, tx: Transaction[Inputs, dict[str, int], None]) -> list[Action]:
        def do(_detail: list[str]) -> None:
            WORLD[tx.inputs.name] = tx.inputs.mtu

        return [Action("set", do)] if tx.plan.changes else []

    def check_host(self, inputs: Inputs) -> None:
        if not self.allowed:
            raise HostError("not here")


PROC = Links()
plan, apply = inputs.verbs(PROC)


def test_the_parameters_cell_reads_back_as_the_declarations() -> None:
    cell = inputs.parameters_cell(Inputs)
    assert cell.splitlines() == [
        inputs.HOST_LINE,
        'libvirt_uri = "qemu:///system"  # libvirt-uri: libvirt connection of the host',
        'name = "br0"  # ifname: the link to make',
        "mtu = 1500  # int[1280..9000]: its MTU",
        'note = ""  # str?: free text',
        inputs.APPLY_LINE,
    ]
    decls = params.parse_declarations(cell)
    assert [p.name for p in decls] == ["host", "libvirt_uri", "name", "mtu", "note", "apply"]
    assert decls[3].high == 9000 and decls[4].optional
    assert inputs.parameters_cell(Inputs, changing=False).splitlines()[-1].startswith("note =")


def test_the_verbs_take_the_fields_by_name() -> None:
    assert list(inspect.signature(plan).parameters) == [
        "host", "libvirt_uri", "name", "mtu", "note", "root"
    ]  # fmt: skip
    assert inspect.signature(plan).parameters["name"].default is inspect.Parameter.empty
    assert list(inspect.signature(apply).parameters)[:2] == ["plan", "host"]
    assert plan.__module__ == __name__ and apply.__name__ == "apply"


def test_apply_applies_the_planned_inputs_and_the_fields_given_again() -> None:
    WORLD.clear()
    planned = plan(host="h", name="br0", mtu=1400)
    assert planned.inputs == Inputs(name="br0", mtu=1400)
    assert apply(planned).status == "changed" and WORLD == {"br0": 1400}
    again = plan(host="h", name="br0", mtu=1400)
    assert apply(again, note="same plan").status == "unchanged"
    # a value given again that changes the plan is refused: the host no longer matches it
    with pytest.raises(ApplyError, match="changed since the plan was made"):
        apply(again, mtu=1300)
    assert WORLD == {"br0": 1400}


def test_bad_inputs_and_another_runbooks_plan_are_one_line_before_anything() -> None:
    WORLD.clear()
    with pytest.raises(InputError, match=r"^name lo is the loopback"):
        plan(host="h", name="lo")
    with pytest.raises(InputError, match=r"^this is a plan of other, not of toy-links$"):
        apply(replace(Plan("other", "h"), inputs=Inputs(name="br0")))
    PROC.allowed = False
    try:
        with pytest.raises(HostError, match="not here"):
            apply(plan(host="h", name="br0"))
    finally:
        PROC.allowed = True
    assert WORLD == {}


def test_a_read_only_verb_takes_what_plan_takes() -> None:
    def _report(i: Inputs, host: str) -> str:
        """The link's MTU."""
        return f"{host}: {i.name} {i.mtu}"

    run = inputs.reading(Inputs, _report)
    assert run.__name__ == "report" and run.__doc__ == "The link's MTU."
    assert list(inspect.signature(run).parameters)[:3] == ["host", "libvirt_uri", "name"]
    assert run(host="h", name="eth1") == "h: eth1 1500"


@dataclass(frozen=True, kw_only=True)
class Bridge(inputs.Declared):
    address: str = param("ipv4-cidr?", "static address", "", rules=("needs gateway",))
    gateway: str = param("ipv4?", "router", "", rules=("needs address", "in address"))
    uplink: str = param("ifname", "port", "eth0")
    bridge: str = param("ifname", "the bridge", "br0")

    def __post_init__(self) -> None:  # what needs several fields and is not declared
        if self.uplink == self.bridge:
            raise InputError("uplink and bridge are both one link; give two")


def test_a_declared_dataclass_converts_by_the_types_then_checks_rules_then_its_own() -> None:
    made = Bridge(address=" 192.0.2.10/24", gateway="192.0.2.1")
    assert made.address == "192.0.2.10/24"  # the type's normal form, as opsbook run gives it
    with pytest.raises(InputError, match=r"^parameter uplink \(ifname\): '-eth0' is not"):
        Bridge(uplink="-eth0")
    with pytest.raises(InputError, match=r"^parameter gateway: needs address too"):
        Bridge(gateway="192.0.2.1")
    with pytest.raises(InputError, match=r"^uplink and bridge are both"):
        Bridge(bridge="eth0")
    assert "(needs address, in address)" in inputs.parameters_cell(Bridge)
    assert replace(made, gateway="192.0.2.254").gateway == "192.0.2.254"


def test_the_form_shows_a_broken_rule_beside_the_field_that_declares_it() -> None:
    from opslib.engine.runbook import Runbook

    decls = inputs.declarations(Bridge)
    raw = {p.name: p.default for p in decls}
    rb = Runbook("bridge", decls, raw, {})
    assert rb.set("gateway", "192.0.2.1") == {"gateway": "needs address too; give address, "
                                              "or leave gateway empty"}  # fmt: skip
    assert rb.set("address", "192.0.2.10/24") == {}
