"""room-router's pure parts: the room-hosts value, its rules, radvd.conf, the routes file,
the plan from an observed router (no root, no host)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest
from support import REPO_NOTEBOOKS

from opslib.core import params, roomhosts
from opslib.core.errors import InputError
from opslib.host.router import radvd, routes
from opslib.host.router.radvd import Service
from opslib.host.router.routes import RoutesState
from opslib.host.sixinfour.tunnels import TunnelState
from opslib.procedures import room_router as rr
from opslib.procedures.room_router.plan import RouterState

NOTEBOOK = REPO_NOTEBOOKS / "room-router.ipynb"
HOSTS = "daemon2 2001:db8:48:2::/64 via 2001:db8:48::b:1ff:fe00:2"
VALUES = dict(
    local_ipv4="192.0.2.20", server_ipv4="203.0.113.1", client_ipv6="2001:db8:1:1::2/64",
    server_ipv6="2001:db8:1:1::1", routed_prefix="2001:db8:48::/48",
    room_prefix="2001:db8:48::/64", room_interface="eth0", hosts=HOSTS,
)  # fmt: skip


def test_room_hosts_read_and_write_one_canonical_line() -> None:
    text = f"{HOSTS};\n daemon3  2001:db8:48:3::/64 via 2001:db8:48::3 ,"
    hosts = roomhosts.parse(text)
    assert [h.name for h in hosts] == ["daemon2", "daemon3"]
    canonical = roomhosts.render(hosts)
    assert canonical == (
        "daemon2 2001:db8:48:2::/64 via 2001:db8:48:0:b:1ff:fe00:2, "
        "daemon3 2001:db8:48:3::/64 via 2001:db8:48::3"
    )
    assert roomhosts.render(roomhosts.parse(canonical)) == canonical
    assert roomhosts.render([("d4", "2001:db8:48:4::/64", "2001:db8:48::4")]) == (
        "d4 2001:db8:48:4::/64 via 2001:db8:48::4"
    )
    with pytest.raises(ValueError, match="prefix 2001:db8:48:2::/64 is given twice"):
        roomhosts.parse(f"{HOSTS}, daemon3 2001:db8:48:2::/64 via 2001:db8:48::3")


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"room_prefix": "2001:db8:49::/64"}, "room_prefix: 2001:db8:49::/64 is not a /64 of"),
        ({"hosts": "d2 2001:db8:49:2::/64 via 2001:db8:48::2"}, "d2's 2001:db8:49:2::/64 is not"),
        ({"hosts": "d2 2001:db8:48:2::/64 via 2001:db8:49::2"}, "next hop 2001:db8:49::2 is not"),
        ({"hosts": "d2 2001:db8:48::/64 via 2001:db8:48::2"}, "is room_prefix itself"),
    ],
)
def test_the_rules_refuse_a_room_that_does_not_fit_its_48(
    given: dict[str, str], words: str
) -> None:
    decls = params.read_runbook(NOTEBOOK).params
    values = {p.name: p.default for p in decls} | VALUES | given
    with pytest.raises(InputError, match=words.replace("(", r"\(")):
        params.validate(decls, values)
    with pytest.raises(InputError, match="parameter"):
        rr.Inputs(**(VALUES | given))


def test_the_tunnel_64_outside_the_48() -> None:
    with pytest.raises(
        InputError, match="parameter routed_prefix: 2001:db8:48::/48 overlaps client_ipv6"
    ):
        rr.Inputs(**(VALUES | {"client_ipv6": "2001:db8:48:ff::2/64",
                               "server_ipv6": "2001:db8:48:ff::1"}))  # fmt: skip


def test_radvd_conf_advertises_the_room_64_for_slaac() -> None:
    text = radvd.render(interface="br0", prefix="2001:db8:48::/64", max_interval=30)
    assert "interface br0\n{\n\tAdvSendAdvert on;\n\tMinRtrAdvInterval 10;\n" in text
    assert "\tMaxRtrAdvInterval 30;\n\tprefix 2001:db8:48::/64\n" in text
    assert "AdvOnLink on;" in text and "AdvAutonomous on;" in text


@pytest.mark.skipif(not shutil.which("radvd"), reason="radvd not installed (debian-packages)")
def test_radvd_itself_accepts_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "radvd.conf"
    conf.write_text(radvd.render(interface="lo", prefix="2001:db8:48::/64", max_interval=4))
    argv = ["radvd", "--configtest", "--logmethod", "stderr", "-C", str(conf)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_routes_file_holds_address_unreachable_48_and_a_route_per_host() -> None:
    spec = rr.Inputs(**VALUES).room
    text = routes.stanza(spec, "/etc/sysctl.d/60-opsbook-room-router.conf")
    assert text.splitlines()[1:] == [
        "iface eth0 inet6 static",
        "\taddress 2001:db8:48::1/64",
        "\tpre-up sysctl -q -p /etc/sysctl.d/60-opsbook-room-router.conf",
        "\tup ip -6 route replace unreachable 2001:db8:48::/48",
        "\tup ip -6 route replace 2001:db8:48:2::/64 via 2001:db8:48:0:b:1ff:fe00:2 dev eth0"
        "  # daemon2",
    ]


def _state(**kw: object) -> RouterState:
    base = RouterState(
        tunnel=TunnelState(False), radvd=Service(None, False, False), radvd_installed=True,
        sysctl_text=None, forwarding="0", routes_text=None,
        routes=RoutesState(False, {}), sources_routes_dir=True,
    )  # fmt: skip
    return dataclasses.replace(base, **kw)


def test_the_plan_shows_the_three_files_as_diffs_and_each_live_change() -> None:
    inputs = rr.Inputs(**VALUES, implementation="userspace")
    plan = rr.make_plan(inputs, _state(), "router")
    by_target = {c.target: c for c in plan.changes}
    for path in ("/etc/radvd.conf", "/etc/sysctl.d/60-opsbook-room-router.conf",
                 "/etc/network/interfaces.d/opsbook-room-router"):  # fmt: skip
        assert by_target[f"file:{path}"].diff.startswith("--- ")
    assert "+net.ipv6.conf.all.forwarding = 1" in by_target[
        "file:/etc/sysctl.d/60-opsbook-room-router.conf"].diff  # fmt: skip
    assert by_target["route:2001:db8:48:2::/64"].after == (
        "via 2001:db8:48:0:b:1ff:fe00:2 dev eth0"
    )
    assert by_target["route:2001:db8:48::/48"].after == "unreachable"
    assert "link:he-ipv6" in by_target  # the tunnel, from ipv6-tunnel's planner


def test_a_router_as_planned_needs_nothing() -> None:
    inputs = rr.Inputs(**VALUES, implementation="userspace")
    first = rr.make_plan(inputs, _state(), "router")
    assert isinstance(first, rr.RouterPlan)
    spec = inputs.room
    done = _state(
        radvd=Service(first.radvd_conf, True, True), sysctl_text=first.sysctl,
        forwarding="1", routes_text=first.routes_file,
        routes=RoutesState(True, spec.wanted()),
    )  # fmt: skip
    rest = rr.make_plan(inputs, done, "router")
    assert [c.target for c in rest.changes if not c.target.startswith(("link:", "route:def"))] == []


def test_a_host_dropped_from_hosts_is_a_route_to_remove_in_the_plan() -> None:
    """The router still routes daemon3's /64 (it was in ``hosts`` before): the plan
    removes that route, before → after as the other routes show theirs."""
    inputs = rr.Inputs(**VALUES, implementation="userspace")
    first = rr.make_plan(inputs, _state(), "router")
    assert isinstance(first, rr.RouterPlan)
    old = "via 2001:db8:48::3 dev eth0"
    done = _state(
        radvd=Service(first.radvd_conf, True, True), sysctl_text=first.sysctl,
        forwarding="1", routes_text=first.routes_file,
        routes=RoutesState(True, inputs.room.wanted(), dropped={"2001:db8:48:3::/64": old}),
    )  # fmt: skip
    plan = rr.make_plan(inputs, done, "router")
    [removal] = [c for c in plan.changes if c.target == "route:2001:db8:48:3::/64"]
    assert removal.action == "delete" and removal.summary.startswith("remove route")
    assert removal.diff.splitlines()[-2:] == [f"-{old}", "+none"]
