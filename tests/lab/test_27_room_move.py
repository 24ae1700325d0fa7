"""room-ipv6-move on booted Debian 12 hosts (issue 25): daemon hosts on their own tunnels
move onto the session's room router (``dh1``, as test_25 makes it) and back.

``dh2`` is a daemon host as the wiki makes one: forward-bridge (``br0`` on campus, the
room's segment), nat-bridge with its routed /64 and a guest (``vm-nat1``), its own tunnel
(the unit ``opsbook-6in4-he-ipv6``), the guest's AAAA record at the lab's Cloudflare
stand-in. ``dh3`` is one too, without a guest: the second host of the fleet run, whose /64
the router does not route. Every run is the operator's (``ssh operator@HOST sudo -i
opsbook run room-ipv6-move -f SET -p …``, or ``opsbook fleet run``); assertions read the
hosts' own tools, the broker's side (the lab's ``he`` netns) and the stand-in's state.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from on_host import ssh, wait_for

from opslib.core.slaac import eui64_address
from opslib.lab.booted import daemonhost, guests, peers, runs
from opslib.lab.booted import fleet as labfleet
from opslib.lab.cloudflare import service
from opslib.lab.config import Lab

pytestmark = pytest.mark.lab_session("room")

MOVER, SECOND, LAST = "dh2", "dh3", "dh4"
GUEST = "vm-nat1"
ZONE = "example.org"
UNIT = "opsbook-6in4-he-ipv6.service"
OPSBOOK = str(Path(sys.executable).parent / "opsbook")


def _progress(line: str) -> None:
    print(f"room-move: {line}", file=sys.stderr, flush=True)


def on(host: daemonhost.Host, command: str, timeout: float = 300) -> str:
    rc, out = ssh(host, command, timeout=timeout)
    assert rc == 0, out
    return out


def configure(host: daemonhost.Host, *names: str) -> None:
    """The wiki's runbooks on ``host`` with parameters/lab and its per-host values."""
    values = runs.per_host(host)
    for runbook in names:
        rc, out = ssh(host, runs.command(runbook, values[runbook]), timeout=600)
        assert rc == 0, f"{runbook} on {host.name}: {out}"


def router_run(router: daemonhost.Host, behind: list[daemonhost.Host]) -> None:
    """room-router on the router with ``behind`` as its hosts: their /64s routed. Its
    advisory check (each host answering at its room address) fails for a host that does
    not take the room's RAs yet, and then so does its exit code: the routes are asserted."""
    values = {"host": router.name, **peers.room_parameters(router, behind)}
    _rc, out = ssh(router, runs.command("room-router", values), timeout=600)
    assert "room router made" in out or "no change" in out, out
    routes = on(router, "ip -6 route show")
    for host in behind:
        assert f"{router.lab.room_host_prefix(host.slot)} via" in routes, routes


def ignore_the_room(host: daemonhost.Host) -> None:
    """A daemon host on its own tunnel beside the room router: br0 ignores the room's RAs
    (accept_ra 0) and forgets what it took from them before nat-bridge-ipv6 runs, as
    room-ipv6-move's reverse move leaves it. libvirt refuses to turn IPv6 forwarding on
    while a link has routes from RAs ("kernel autoconfigured IPv6 routes"), and br0 took
    the room's from forward-bridge on (forwarding off: accept_ra 1 takes them)."""
    room = host.lab.room_prefix
    on(host, "sudo sysctl -qw net.ipv6.conf.br0.accept_ra=0 && "
             "sudo ip -6 route flush dev br0 proto ra && "
             f"{{ sudo ip -6 route del {room} dev br0 2>/dev/null; true; }} && "
             "sudo ip -6 addr flush dev br0 scope global dynamic")  # fmt: skip


def own_tunnel(host: daemonhost.Host, guest: Future[None] | None = None) -> None:
    """``host`` on its own tunnel beside the router: br0, nat-bridge with the tunnel's /64
    (once ``guest`` is up: nat-bridge-ipv6 waits for the guests' addresses), the tunnel."""
    configure(host, "forward-bridge")
    ignore_the_room(host)
    if guest is not None:
        guest.result()
    configure(host, "nat-bridge-ipv6", "ipv6-tunnel")


@pytest.fixture(scope="module")
def room(lab: Lab, booted_host: daemonhost.Host) -> Iterator[dict[str, daemonhost.Host]]:
    """The router (dh1: the broker delegates the /48, room-router routes dh2's /64 only),
    dh2 and dh3 configured as daemon hosts on their own tunnels; both taken down after."""
    for name in (MOVER, SECOND):
        daemonhost.down(lab, name, progress=_progress)  # what an interrupted module left
    try:
        mover = daemonhost.up(lab, MOVER, reuse_install=True, progress=_progress)
        second = daemonhost.up(lab, SECOND, reuse_install=True, progress=_progress)
        # dh2's guest boots and dh3 is configured while the router is made and dh2 is
        with ThreadPoolExecutor(2) as pool:
            booting = pool.submit(guests.up, mover, names=[GUEST], progress=_progress)
            for host in (booted_host, mover, second):
                peers.up(host)
            peers.make_room_router(booted_host)
            beside = pool.submit(own_tunnel, second)
            router_run(booted_host, [mover])
            own_tunnel(mover, booting)
            beside.result()
        service.lab_store(lab).delete_records(ZONE, name=record_name(mover), type="AAAA")
        configure(mover, "cloudflare-aaaa")
        yield {"router": booted_host, MOVER: mover, SECOND: second}
    finally:
        for name in (MOVER, SECOND):
            daemonhost.down(lab, name, progress=_progress)


def record_name(host: daemonhost.Host) -> str:
    return f"{GUEST}-{host.name}.{ZONE}"


def move_values(host: daemonhost.Host, **extra: str) -> dict[str, str]:
    """room-ipv6-move's values on ``host`` beside parameters/lab's set (daemon1's): its
    tunnel page, its /64 of the room's /48, its own loopback's stand-in."""
    lab = host.lab
    return {
        "host": host.name,
        **peers.tunnel_parameters(host),
        "room_prefix": lab.room_host_prefix(host.slot),
        "api_base_url": peers.cloudflare_url(host),
        **extra,
    }


def move(host: daemonhost.Host, **extra: str) -> tuple[int, str]:
    return ssh(host, runs.command("room-ipv6-move", move_values(host, **extra)), timeout=600)


def outcome(out: str) -> str:
    found = re.findall(r"^ok \((changed|no change)\)", out, re.M)
    assert found, out
    return found[-1]


def guest_address(host: daemonhost.Host, prefix: str) -> str:
    return eui64_address(prefix, guests.guest(host, GUEST).nat_mac)


def he_pings(lab: Lab, address: str) -> bool:
    argv = ["ip", "netns", "exec", lab.he_ns, "ping", "-6", "-c", "1", "-W", "2", address]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def answers_from_he(lab: Lab, address: str, what: str) -> None:
    wait_for(lambda: "yes" if he_pings(lab, address) else "no", lambda s: s == "yes", 90, what)


def aaaa(lab: Lab, host: daemonhost.Host) -> list[str]:
    found = service.lab_store(lab).records(ZONE, name=record_name(host), type="AAAA")
    return [r["content"] for r in found]


def state(lab: Lab, host: daemonhost.Host) -> str:
    """What a move changes, as the host's tools print it (no ifindex, no timers), and
    the AAAA record: equal before and after a move that was rolled back."""
    shown = on(
        host,
        "ip -6 -o addr show scope global | awk '{print $2, $4}' | sort; "
        "ip -6 route show | grep -v '^fe80\\|^multicast\\|^ff00' | sed 's/ expires [0-9]*sec//'; "
        "cat /proc/sys/net/ipv6/conf/br0/accept_ra /etc/network/interfaces; "
        f"systemctl is-active {UNIT} || true; "
        # connections: libvirt's count of the taps it attached (the rollback reattaches)
        "sudo virsh -q -c qemu:///system net-dumpxml nat-bridge | grep -v '<mac \\|uuid' "
        "| sed \"s/ connections='[0-9]*'//\"",
    )
    return shown + f"AAAA {aaaa(lab, host)}\n"


def test_daemon2_runs_on_its_own_tunnel_with_a_published_guest(
    lab: Lab, room: dict[str, daemonhost.Host]
) -> None:
    mover = room[MOVER]
    routed = peers.tunnel_parameters(mover)["routed_prefix"]
    assert on(mover, f"systemctl is-active {UNIT}") == "active\n"
    assert aaaa(lab, mover) == [guest_address(mover, routed)]
    answers_from_he(lab, guest_address(mover, routed), f"{GUEST} on {mover.name}'s tunnel")


def test_a_move_whose_route_the_router_withholds_leaves_daemon2_as_it_was(
    lab: Lab, room: dict[str, daemonhost.Host]
) -> None:
    router, mover = room["router"], room[MOVER]
    prefix = lab.room_host_prefix(mover.slot)
    on(router, f"sudo ip -6 route del {prefix}")  # withheld until room-router runs again
    try:
        before = state(lab, mover)
        rc, out = move(mover)
        assert rc != 0, out
        assert f"does the room router route {prefix} to this host?" in out, out
        # once the guest's tap carries again (virbr0 is "linkdown" until then)
        routed = peers.tunnel_parameters(mover)["routed_prefix"]
        answers_from_he(lab, guest_address(mover, routed), f"{GUEST} still on the tunnel")
        assert state(lab, mover) == before
    finally:
        router_run(router, [mover])


def test_daemon2_moves_onto_the_room_router(lab: Lab, room: dict[str, daemonhost.Host]) -> None:
    mover = room[MOVER]
    prefix = lab.room_host_prefix(mover.slot)
    old = guest_address(mover, peers.tunnel_parameters(mover)["routed_prefix"])
    new = guest_address(mover, prefix)
    rc, out = move(mover)
    assert rc == 0 and outcome(out) == "changed", out
    assert f"{record_name(mover)}: {old} → {new}" in out, out  # the plan's line
    # the guest has its address in the new /64 and the broker's side reaches it through
    # the router (the tunnel is gone: no other way); its record points there
    answers_from_he(lab, new, f"{GUEST} at {new} through the room router")
    assert aaaa(lab, mover) == [new]
    rc, gone = ssh(mover, f"systemctl cat {UNIT}; ip link show he-ipv6")
    assert rc != 0 and "No files found" in gone, gone
    routes = on(mover, "ip -6 route show default")
    assert "proto ra" in routes and "dev br0" in routes, routes
    rc, out = move(mover)
    assert rc == 0 and outcome(out) == "no change", out


def test_the_reverse_move_restores_the_own_tunnel(
    lab: Lab, room: dict[str, daemonhost.Host]
) -> None:
    mover = room[MOVER]
    routed = peers.tunnel_parameters(mover)["routed_prefix"]
    rc, out = move(mover, direction="to-own-tunnel")
    assert rc == 0 and outcome(out) == "changed", out
    assert on(mover, f"systemctl is-active {UNIT}; systemctl is-enabled {UNIT}") == (
        "active\nenabled\n"
    )
    # br0 ignores the room's RAs at boot too: persisted in its stanza (docs/room-router.md)
    stanza = on(mover, "sed -n '/^iface br0 inet6/,/^$/p' /etc/network/interfaces")
    assert "\taccept_ra 0\n" in stanza and "net.ipv6.conf.br0.disable_ipv6=1" in stanza, stanza
    assert on(mover, "cat /proc/sys/net/ipv6/conf/br0/accept_ra") == "0\n"
    routes = on(mover, "ip -6 route show default")
    assert "dev he-ipv6" in routes and "proto ra" not in routes, routes
    answers_from_he(lab, guest_address(mover, routed), f"{GUEST} on the tunnel again")
    assert aaaa(lab, mover) == [guest_address(mover, routed)]


def fleet_sets(lab: Lab, hosts: list[daemonhost.Host]) -> Path:
    """The inventory of ``hosts`` and each one's room-ipv6-move set beside it (whole:
    parameters/lab's values, then the host's)."""
    from opslib.core.paramsets import load_param_file

    base = load_param_file(runs.sets_dir() / "room-ipv6-move.yaml")
    for host in hosts:
        path = labfleet.parameter_sets(lab) / host.name / "room-ipv6-move.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        values = {**base, **move_values(host)}
        values.pop("apply", None)
        path.write_text(json.dumps(values, indent=2) + "\n")
    return labfleet.write_inventory(lab, [h.name for h in hosts])


def test_a_fleet_move_stops_at_the_host_whose_route_is_withheld(
    lab: Lab, room: dict[str, daemonhost.Host], tmp_path: Path
) -> None:
    """``--serial 1 --max-fail-percentage 0`` over dh2, dh3 and dh4 (booted here, never
    reached): dh2 moves, dh3 (no route from the router) rolls back, dh4 is not run."""
    mover, second = room[MOVER], room[SECOND]
    daemonhost.down(lab, LAST, progress=_progress)
    try:
        last = daemonhost.up(lab, LAST, reuse_install=True, progress=_progress)
        inventory = fleet_sets(lab, [mover, second, last])
        before = state(lab, second)  # the router routes no /64 to dh3
        argv = [OPSBOOK, "fleet", "run", "room-ipv6-move", "-i", str(inventory),
                "--serial", "1", "--max-fail-percentage", "0",
                "-p", "direction", "to-room-router", "-p", "apply", "true"]  # fmt: skip
        env = {**os.environ, "OPSBOOK_RECORDS": str(tmp_path)}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=1200, env=env)
    finally:
        labfleet.write_inventory(lab, [room["router"].name])
        daemonhost.down(lab, LAST, progress=_progress)
    print(proc.stdout, proc.stderr, sep="\n", file=sys.stderr)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    table = {}
    for line in proc.stdout.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells and cells[0] in (MOVER, SECOND, LAST) and len(cells) >= 2:
            table[cells[0]] = cells[1:]
    assert table[MOVER][0] == "changed" and table[SECOND][0] == "failed", table
    assert table[LAST][0] == "skipped" and "the rollout stopped" in table[LAST][1], table
    assert state(lab, second) == before  # rolled back
    rc, gone = ssh(mover, f"systemctl cat {UNIT}")
    assert rc != 0, gone  # the first stays moved
    answers_from_he(lab, guest_address(mover, lab.room_host_prefix(mover.slot)), "dh2 moved")
