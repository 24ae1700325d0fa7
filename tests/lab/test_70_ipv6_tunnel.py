"""ipv6-tunnel in the lab: the userspace 6in4 to the lab's broker (`he`), health, the
end-to-end path guest -> nat-bridge -> tunnel -> he "internet" checked from inside a
guest, and a second apply that changes nothing. The lab kernel has no sit: the kernel
implementation stops with one line and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from opslib.core.changes import Result
from opslib.core.errors import Unsupported
from opslib.host.kernel import netlink
from opslib.lab.config import Lab
from opslib.lab.simulated import guestconsole
from opslib.lab.simulated import parameters as lab_parameters
from opslib.procedures import ipv6_tunnel as t


def only(fn: object, values: dict[str, object]) -> dict[str, object]:
    return lab_parameters.arguments(fn, values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def applied(lab: Lab) -> Result:
    # the routed /64 on the NAT network (idempotent)
    lab_parameters.apply_runbook(lab, "nat-bridge-ipv6")
    values = lab_parameters.standalone_set(lab, "ipv6-tunnel")
    return t.apply(t.plan(**only(t.plan, values)), **only(t.apply, values))


def test_kernel_sit_is_unsupported_here_and_changes_nothing(lab: Lab) -> None:
    values = lab_parameters.standalone_set(
        lab, "ipv6-tunnel", implementation="kernel", tunnel="he-sit"
    )
    before = Path(values["interfaces_file"]).read_text()
    with pytest.raises(Unsupported, match="no sit") as exc:
        t.plan(**only(t.plan, values))
    assert "\n" not in str(exc.value)
    with pytest.raises(Unsupported):
        t.apply(t.Plan("ipv6-tunnel", "lab"), **only(t.apply, values))
    assert netlink.link_by_name(lab.host_ns, "he-sit") is None
    assert Path(values["interfaces_file"]).read_text() == before


def test_tunnel_apply_is_healthy(lab: Lab, applied: Result) -> None:
    assert applied.status == "changed", applied.summary
    failing = [c for c in applied.checks if c.status == "fail"]
    assert not failing, failing
    names = {c.name for c in applied.checks}
    assert "1400-byte ping6 to 2001:db8:1::1 (MTU)" in names
    assert f"routed 2001:db8:2::/64 on {lab.nat_network}" in names


def test_a_guest_reaches_the_internet_through_the_tunnel(lab: Lab, applied: Result) -> None:
    for guest in lab.nat_guests:
        rc, out = guestconsole.guest_shell(
            lab, guest.name, f"ping -6 -c2 -W3 -s 1400 {lab.internet_ipv6}", timeout=20
        )
        assert rc == 0, out
        assert "0% packet loss" in out and "1408 bytes from 2001:db8:ffff::1" in out


def test_health_checks_alone_pass_and_second_apply_changes_nothing(
    lab: Lab, applied: Result
) -> None:
    values = lab_parameters.standalone_set(lab, "ipv6-tunnel")
    health = t.run(**only(t.run, values))
    assert health.status == "ok", health.summary
    plan = t.plan(**only(t.plan, values))
    assert plan.empty, plan.changes
    again = t.apply(plan, **only(t.apply, values))
    assert again.status == "unchanged" and not again.changes


def test_health_names_the_broken_part_when_the_route_is_gone(lab: Lab, applied: Result) -> None:
    values = lab_parameters.standalone_set(lab, "ipv6-tunnel")
    with netlink.ipr(lab.host_ns) as ip:
        ip.route("del", dst="::/0", family=10, table=254)
    try:
        failing = {c.name for c in t.checks(**only(t.checks, values)) if c.status == "fail"}
        assert "default IPv6 route via he-ipv6" in failing
        plan = t.plan(**only(t.plan, values))
        assert [c.action for c in plan.changes] == ["route"]
    finally:
        t.apply(t.plan(**only(t.plan, values)), **only(t.apply, values))
    assert t.run(**only(t.run, values)).status == "ok"
