"""room-ipv6-move without root: the record moves and the renumbering as planned, the move
applied and undone (libvirt's test driver, the Cloudflare stand-in, a fake br0 and tunnel:
tests/room_move_world.py), and the reverse move's plan."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from room_move_world import GUEST_MAC, INTERFACES, OWN, ROOM, room_world, turned

from opslib.contract import transaction
from opslib.core.actions import Action, Detail
from opslib.core.errors import ApplyError, HostError, InputError
from opslib.core.slaac import eui64_address
from opslib.host.cloudflare.dns import DnsRecord
from opslib.host.libvirt import virt
from opslib.procedures import room_ipv6_move as move
from opslib.procedures.room_ipv6_move import steps as move_steps
from opslib.procedures.room_ipv6_move.moves import Guest, interfaces_texts, record_moves

OLD_ADDRESS = eui64_address(OWN, GUEST_MAC)
TAKING = "\niface br0 inet6 auto\n\taccept_ra 2\n"  # br0 on the room router
FORGET = "sysctl -q -w net.ipv6.conf.br0.disable_ipv6=1 net.ipv6.conf.br0.disable_ipv6=0"
IGNORING = f"\niface br0 inet6 auto\n\taccept_ra 0\n\tup {FORGET}\n"  # on its own tunnel
NEW_ADDRESS = eui64_address(ROOM, GUEST_MAC)


def record(name: str, content: str, rid: str = "r1") -> DnsRecord:
    return DnsRecord(rid, name, "AAAA", content, True, 1, "opsbook cloudflare-aaaa: vm x")


def test_each_guests_record_moves_to_its_address_in_the_new_64() -> None:
    guests = [Guest("vm-nat1", GUEST_MAC), Guest("vm-nat2", "52:54:00:0b:00:03")]
    records = [
        record("vm-nat1.example.org", OLD_ADDRESS),
        record("stray.example.org", "2001:db8:2::99", "r2"),  # in the /64, no guest's
        record("www.example.org", "2001:db8:99::1", "r3"),  # elsewhere: not this host's
    ]
    moves, notes = record_moves(records, guests, (OWN, ""), ROOM)
    assert [(m.record.name, m.record.content, m.address, m.guest) for m in moves] == [
        ("vm-nat1.example.org", OLD_ADDRESS, NEW_ADDRESS, "vm-nat1")
    ]
    assert notes == [
        "AAAA stray.example.org -> 2001:db8:2::99 is in this host's old /64 but no guest of "
        "it has that address: left alone"
    ]
    change = moves[0].change("example.org")
    assert change.summary == f"AAAA vm-nat1.example.org: {OLD_ADDRESS} → {NEW_ADDRESS} (vm-nat1)"
    assert change.before and NEW_ADDRESS in (change.after or "") and "proxied" in change.after
    # already moved: nothing left to move
    assert record_moves([record("a.example.org", NEW_ADDRESS)], guests, (ROOM, OWN), ROOM)[0] == []


def test_the_plan_lists_every_part_of_the_move_in_order(tmp_path: Path) -> None:
    with room_world(tmp_path) as w:
        plan = transaction.plan(move.PROCEDURE, w.inputs, "daemon2", session=w.session)
    assert isinstance(plan, move.MovePlan)
    assert [(c.target, c.action) for c in plan.changes] == [
        ("link:br0", "accept-ra"),
        ("route:default/ipv6", "route"),
        (f"file:{w.inputs.interfaces_file}", "update"),
        ("network:nat-bridge", "update"),
        ("network:nat-bridge", "restart"),
        ("dns:example.org/vm-nat1-daemon2.example.org", "update"),
        ("file:/etc/systemd/system/opsbook-6in4-he-ipv6.service", "delete"),  # last
    ]
    by_target = {c.target: c for c in plan.changes if c.action != "restart"}
    iface = by_target[f"file:{w.inputs.interfaces_file}"]
    assert iface.before == INTERFACES
    assert iface.after == INTERFACES + TAKING
    assert "2001:db8:3:2::1" in (by_target["network:nat-bridge"].after or "")
    assert "2001:db8:2::1" not in (by_target["network:nat-bridge"].after or "")
    dns = by_target["dns:example.org/vm-nat1-daemon2.example.org"]
    assert f"{OLD_ADDRESS} → {NEW_ADDRESS}" in dns.summary
    assert by_target["link:br0"].before == "accept_ra = 1\n"
    assert by_target["link:br0"].after == "accept_ra = 2\n"
    assert plan.router == "fe80::3" and plan.remove_tunnel == "unit"


def test_no_router_advertisement_refuses_the_plan(tmp_path: Path) -> None:
    with room_world(tmp_path) as w:
        w.fake.advert = None
        with pytest.raises(HostError, match=r"^no router advertisement on br0 within 0 s: .*"
                           r"run room-router on it first \(nothing was changed\)$"):  # fmt: skip
            transaction.plan(move.PROCEDURE, w.inputs, "daemon2", session=w.session)


def _network_prefix(w: object) -> str:
    state = virt.network_state(w.session.conn, "nat-bridge")  # type: ignore[attr-defined]
    assert state is not None
    ip6 = virt.parse_network(state.xml).ip("ipv6")
    return str(ip6.network) if ip6 else ""


def test_the_move_then_nothing_to_do(tmp_path: Path) -> None:
    with room_world(tmp_path) as w:
        plan = transaction.plan(move.PROCEDURE, w.inputs, "daemon2", session=w.session)
        result = transaction.apply(move.PROCEDURE, w.inputs, "daemon2", reviewed=plan,
                                   session=w.session)  # fmt: skip
        assert result.status == "changed" and not result.failed, result.summary
        assert result.summary.startswith(f"moved on the room router: nat-bridge {ROOM}")
        [found] = w.store.records("example.org", name=w.guest_record, type="AAAA")
        assert found["content"] == NEW_ADDRESS and found["proxied"]
        assert w.store.records("example.org", name="www.example.org")[0]["content"] == (
            "2001:db8:99::1"
        )  # somebody else's: untouched
        assert _network_prefix(w) == ROOM
        assert (w.fake.accept_ra, w.fake.tunnel_up, w.fake.unit) == (2, False, None)
        assert w.fake.calls == ["remove unit"]
        assert "iface br0 inet6 auto" in Path(w.inputs.interfaces_file).read_text()
        names = [s.name for s in result.steps]
        assert names.index("remove the own tunnel he-ipv6") > names.index(
            f"AAAA {w.guest_record} → {NEW_ADDRESS}"
        )
        assert result.data["records"] == [
            {"name": w.guest_record, "from": OLD_ADDRESS, "to": NEW_ADDRESS, "guest": "vm-nat1"}
        ]
        again = transaction.plan(move.PROCEDURE, w.inputs, "daemon2", session=w.session)
        assert again.empty, [c.summary for c in again.changes]


def test_a_route_the_router_withholds_sends_everything_back(tmp_path: Path) -> None:
    """The check from PREFIX::1 fails: br0, the file, nat-bridge are put back, and the AAAA
    record and the tunnel were never touched (they come after the check)."""
    with room_world(tmp_path) as w:
        w.fake.routed = False
        start = move.PROCEDURE.comparable(move.PROCEDURE.observe(w.inputs, w.session))
        result = transaction.apply(move.PROCEDURE, w.inputs, "daemon2", session=w.session)
        assert result.status == "rolled back", result.summary
        assert "2001:db8:ffff::1 answers 2001:db8:3:2::1 through the room router" in result.summary
        assert move.PROCEDURE.comparable(move.PROCEDURE.observe(w.inputs, w.session)) == start
        assert _network_prefix(w) == OWN and w.fake.tunnel_default == "2001:db8:1::1"
        assert Path(w.inputs.interfaces_file).read_text() == INTERFACES
        assert w.store.records("example.org", name=w.guest_record)[0]["content"] == OLD_ADDRESS


def test_a_failure_after_the_records_moved_puts_them_back_with_the_tunnel(
    tmp_path: Path,
) -> None:
    """The last check fails (after the tunnel went): the tunnel, the record, nat-bridge and
    br0 all go back."""
    with room_world(tmp_path) as w:
        real = w.fake.tunnel_gone
        w.fake.tunnel_gone = lambda tunnel: False  # type: ignore[method-assign]
        result = transaction.apply(move.PROCEDURE, w.inputs, "daemon2", session=w.session)
        w.fake.tunnel_gone = real  # type: ignore[method-assign]
        assert result.status == "rolled back", result.summary
        assert w.fake.calls == ["remove unit", "back unit"]
        assert (w.fake.unit, w.fake.accept_ra) is not None
        assert w.fake.accept_ra == 1 and w.fake.tunnel_up
        assert w.store.records("example.org", name=w.guest_record)[0]["content"] == OLD_ADDRESS
        assert _network_prefix(w) == OWN


def test_the_reverse_move_plans_the_tunnel_and_the_records_back(tmp_path: Path) -> None:
    with room_world(tmp_path) as w:
        transaction.apply(move.PROCEDURE, w.inputs, "daemon2", session=w.session)
        back = turned(w, move.TO_TUNNEL)
        plan = transaction.plan(move.PROCEDURE, back.inputs, "daemon2", session=w.session)
    assert isinstance(plan, move.MovePlan) and plan.tunnel is not None
    targets = [(c.target, c.action) for c in plan.changes]
    assert targets[:2] == [
        ("link:br0", "accept-ra"),
        (f"file:{w.inputs.interfaces_file}", "update"),
    ]
    assert ("link:he-ipv6", "create") in targets
    assert ("file:/etc/systemd/system/opsbook-6in4-he-ipv6.service", "create") in targets
    assert targets[-3:] == [("network:nat-bridge", "update"), ("network:nat-bridge", "restart"),
                            ("dns:example.org/vm-nat1-daemon2.example.org", "update")]  # fmt: skip
    by_target = {c.target: c for c in plan.changes}
    persisted = by_target[f"file:{w.inputs.interfaces_file}"]
    assert persisted.after == INTERFACES + IGNORING
    assert "ignores the room's RAs at boot (accept_ra 0)" in persisted.summary
    assert "-\taccept_ra 2\n+\taccept_ra 0\n+\tup sysctl" in persisted.diff
    assert f"{NEW_ADDRESS} → {OLD_ADDRESS}" in plan.changes[-1].summary
    assert plan.prefix == OWN


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"room_prefix": OWN}, r"room_prefix: 2001:db8:2::/64 overlaps routed_prefix's network"),
        ({"room_prefix": "2001:db8:1::/64"}, r"room_prefix: .* overlaps client_ipv6's network"),
        ({"zone": "example.org", "token": ""}, r"zone: needs token too"),
    ],
)
def test_inputs_that_cannot_both_hold_are_refused(
    tmp_path: Path, given: dict[str, str], message: str
) -> None:
    with room_world(tmp_path) as w, pytest.raises(InputError, match=message):
        import dataclasses

        dataclasses.replace(w.inputs, **given)


def test_the_reverse_move_persists_accept_ra_0_and_the_forward_move_takes_it_back() -> None:
    """br0's inet6 stanza, both ways: accept_ra 0 and the line that drops what br0 took
    before at boot on the own tunnel; accept_ra 2 without that line on the room router.
    Each edit again changes nothing; the rest of the file is kept byte for byte."""
    path = "/etc/network/interfaces"

    def turn(text: str | None, direction: str) -> str | None:
        return interfaces_texts(text, path, direction=direction, bridge="br0", tunnel="he-ipv6")[0]

    moved = turn(INTERFACES, move.TO_ROOM)
    assert moved == INTERFACES + TAKING
    back = turn(moved, move.TO_TUNNEL)
    assert back == INTERFACES + IGNORING
    assert turn(back, move.TO_TUNNEL) == back
    assert turn(back, move.TO_ROOM) == moved
    # a host never moved, its file without a final newline: the stanza is added
    assert turn(INTERFACES.rstrip("\n"), move.TO_TUNNEL) == INTERFACES + IGNORING
    # an operator's own up line in the stanza stays, either way
    own = INTERFACES + "\niface br0 inet6 auto\n\taccept_ra 2\n\tup echo mine\n"
    assert turn(own, move.TO_TUNNEL) == (
        INTERFACES + f"\niface br0 inet6 auto\n\taccept_ra 0\n\tup echo mine\n\tup {FORGET}\n"
    )
    assert turn(turn(own, move.TO_TUNNEL), move.TO_ROOM) == own
    assert turn(None, move.TO_TUNNEL) is None  # no ifupdown here: nothing to persist in
    bridged = interfaces_texts(None, path, direction=move.TO_TUNNEL, bridge="br0.10", tunnel="t")
    assert bridged == (None, None)
    vlan = interfaces_texts("", path, direction=move.TO_TUNNEL, bridge="br0.10", tunnel="t")[0]
    assert "up sysctl -q -w net/ipv6/conf/br0.10/disable_ipv6=1 " in (vlan or "")


@pytest.mark.skipif(shutil.which("ifup") is None, reason="ifupdown not installed")
def test_ifupdown_sets_accept_ra_0_then_drops_what_br0_took(tmp_path: Path) -> None:
    """What ifupdown runs for br0 at boot with the reverse move's file: after the bridge's
    own stanza, accept_ra 0, then the line that drops what br0 took until then."""
    path = tmp_path / "interfaces"
    after, _ = interfaces_texts(
        INTERFACES, str(path), direction=move.TO_TUNNEL, bridge="br0", tunnel="he-ipv6"
    )
    path.write_text(after or "")
    state = tmp_path / "state"
    state.mkdir()
    argv = ["ifup", "--no-act", "-v", "-i", str(path), "--state-dir", str(state), "br0"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith(("sysctl", "ip "))]
    accept = said.index("sysctl -q -e -w net.ipv6.conf.br0.accept_ra=0")
    assert said.index(FORGET) > said.index("ip link set dev br0 up") > accept, said


def test_a_failed_reverse_move_puts_the_file_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moved, then back with the tunnel's step failing after br0's stanza was written: the
    stanza is accept_ra 2 again, as the move left it, and br0 takes RAs again; a reverse
    move that passes leaves accept_ra 0. (ipv6-tunnel's own steps would install a systemd
    unit on this machine: they are stood in for, failing, then making the fake tunnel.)"""

    def fail(_detail: Detail) -> None:
        raise ApplyError("the tunnel's step, stood in to fail")

    with room_world(tmp_path) as w:
        moved = transaction.apply(move.PROCEDURE, w.inputs, "daemon2", session=w.session)
        assert moved.status == "changed", moved.summary
        path = Path(w.inputs.interfaces_file)
        assert path.read_text() == INTERFACES + TAKING
        back = turned(w, move.TO_TUNNEL)
        tunnel = [Action("create he-ipv6 (stood in)", fail)]
        monkeypatch.setattr(move_steps, "tunnel_actions", lambda _run, _plan: tunnel)
        failed = transaction.apply(move.PROCEDURE, back.inputs, "daemon2", session=w.session)
        assert failed.status == "rolled back", failed.summary
        names = [s.name for s in failed.steps]
        assert names.index("create he-ipv6 (stood in)") > names.index(
            f"persist br0's accept_ra in {path}"
        )
        assert path.read_text() == INTERFACES + TAKING and w.fake.accept_ra == 2

        def make(_detail: Detail) -> None:
            w.fake.tunnel_up, w.fake.tunnel_default = True, "2001:db8:1::1"

        made = [Action("create he-ipv6 (stood in)", make)]
        monkeypatch.setattr(move_steps, "tunnel_actions", lambda _run, _plan: made)
        done = transaction.apply(move.PROCEDURE, back.inputs, "daemon2", session=w.session)
        assert done.status == "changed" and not done.failed, done.summary
        assert path.read_text() == INTERFACES + IGNORING and w.fake.accept_ra == 0
