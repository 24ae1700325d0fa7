"""The userspace 6in4 end as a systemd unit (opslib.host.sixinfour.tunnel_unit): what ipv6-tunnel
plans
for it, and the unit systemd is given. The live path runs on the lab's booted host
(tests/lab/test_19_runbooks_on_booted_host.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from opslib.host.sixinfour import tunnel_unit
from opslib.procedures import ipv6_tunnel as t

SPEC = t.Inputs(
    tunnel="he-ipv6", local_ipv4="192.0.2.20", server_ipv4="203.0.113.1",
    client_ipv6="2001:db8:1:1::2/64", server_ipv6="2001:db8:1:1::1",
    routed_prefix="2001:db8:2:1::/64", implementation="userspace",
).spec  # fmt: skip


def unit(python: str = "/opt/opsbook/bin/python") -> str:
    return tunnel_unit.render(
        tunnel="he-ipv6", local="192.0.2.20", remote="203.0.113.1", mtu=1480, ttl=255,
        address="2001:db8:1:1::2/64", via="2001:db8:1:1::1",
        pidfile=Path("/run/opsbook/sixinfour-he-ipv6.pid"), python=python,
    )  # fmt: skip


def test_the_unit_runs_the_end_with_its_address_and_route_and_starts_at_boot() -> None:
    text = unit()
    assert (
        "ExecStart=/opt/opsbook/bin/python -m opslib.host.sixinfour.userspace --name he-ipv6 "
        "--local 192.0.2.20 --remote 203.0.113.1 --mtu 1480 --ttl 255 "
        "--pidfile /run/opsbook/sixinfour-he-ipv6.pid "
        "--address 2001:db8:1:1::2/64 --via 2001:db8:1:1::1\n"
    ) in text
    assert "Restart=on-failure\n" in text and "StartLimitIntervalSec=0\n" in text
    assert "WantedBy=multi-user.target\n" in text


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    path = tmp_path / tunnel_unit.name("he-ipv6")
    path.write_text(unit(python=shutil.which("python3") or "/usr/bin/python3"))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_the_plan_shows_the_unit_it_installs() -> None:
    plan = t.tunnel_plan(
        t.TunnelState(False, unit_host=True), SPEC, host="h", interfaces_file="/i", unit=unit()
    )
    target = "file:/etc/systemd/system/opsbook-6in4-he-ipv6.service"
    assert (target, "create") in [(c.target, c.action) for c in plan.changes]
    assert "+ExecStart=/opt/opsbook/bin/python -m opslib.host.sixinfour.userspace" in plan.diff
    assert not [n for n in plan.notes if "lives as long as its process" in n]
    assert plan.unit == unit()


def test_a_tunnel_running_as_its_unit_plans_nothing() -> None:
    state = t.TunnelState(
        True, kind="tun", up=True, mtu=1480, local="192.0.2.20", remote="203.0.113.1",
        addresses=("2001:db8:1:1::2/64",), default_gateway="2001:db8:1:1::1",
        unit_host=True, unit_text=unit(),
    )  # fmt: skip
    assert t.tunnel_plan(state, SPEC, host="h", interfaces_file="/i", unit=unit()).empty


def test_a_running_end_without_its_unit_is_handed_over() -> None:
    state = t.TunnelState(
        True, kind="tun", up=True, mtu=1480, local="192.0.2.20", remote="203.0.113.1",
        addresses=("2001:db8:1:1::2/64",), default_gateway="2001:db8:1:1::1", unit_host=True,
    )  # fmt: skip
    plan = t.tunnel_plan(state, SPEC, host="h", interfaces_file="/i", unit=unit())
    assert [c.action for c in plan.changes] == ["create"]
    assert plan.changes[0].target.endswith("opsbook-6in4-he-ipv6.service")
