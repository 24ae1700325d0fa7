"""The room router on booted Debian 12 hosts (issue 25): the session's ``dh1`` is the router,
``dh2`` a host behind it (on the room's segment, campus), ``dh3`` a daemon host on its own
tunnel. Everything runs as an operator runs it: ``ssh operator@dh1 sudo -i opsbook run
room-router -f SET -p …`` with ``parameters/lab/room-router.yaml`` and the per-host values
(:func:`opslib.lab.booted.peers.room_parameters`); the lab's broker delegates the room's /48
to dh1's tunnel (:func:`opslib.lab.booted.peers.make_room_router`).

Assertions read what the hosts' own tools say (ip, ping, systemctl) and what the broker's
side (the lab's ``he`` netns, "the internet" on its lo) reaches.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import subprocess
import threading
from collections.abc import Iterator

import pytest
from on_host import ssh, wait_for

from opslib.lab.booted import daemonhost, guests, peers, runs
from opslib.lab.campus import netreg
from opslib.lab.config import Lab

pytestmark = pytest.mark.lab_session("room")

BEHIND, OWN = "dh2", "dh3"
NAT_STANDIN = "lo"  # dh2's /64 on its lo here; the move (room-ipv6-move) puts it on nat-bridge


BOOTING: list[threading.Thread] = []
BOOT_FAILED: list[BaseException] = []


def _boot_guest(host: daemonhost.Host) -> None:
    try:
        guests.up(host, names=[guests.netreg_guest(host).name], progress=_progress)
    except BaseException as exc:  # handed to the test that needs the guest
        BOOT_FAILED.append(exc)


def guest_booted(host: daemonhost.Host) -> None:
    for thread in BOOTING:
        thread.join()
    if BOOT_FAILED:
        pytest.fail(f"{host.name}'s vm-netreg did not boot: {BOOT_FAILED[0]}")


def _progress(line: str) -> None:
    print(f"room: {line}", flush=True)


def on(host: daemonhost.Host, command: str, timeout: float = 120) -> str:
    rc, out = ssh(host, command, timeout=timeout)
    assert rc == 0, out
    return out


@pytest.fixture(scope="module")
def room(lab: Lab, booted_host: daemonhost.Host) -> Iterator[dict[str, daemonhost.Host]]:
    """dh1 (the router, its broker end delegating the /48), dh2 behind it, dh3 for its own
    tunnel (both with opsbook, as booted); dh2 and dh3 are taken down at the end."""
    for name in (BEHIND, OWN):
        daemonhost.down(lab, name, progress=_progress)  # what an interrupted module left
    try:
        behind = daemonhost.up(lab, BEHIND, reuse_install=True, progress=_progress)
        own = daemonhost.up(lab, OWN, reuse_install=True, progress=_progress)
        peers.up(booted_host)
        peers.make_room_router(booted_host)
        peers.start_broker(own)
        # dh2's vm-netreg boots while the first tests run (the last one puts it on campus)
        BOOTING.append(threading.Thread(target=_boot_guest, args=(behind,)))
        BOOTING[-1].start()
        yield {"router": booted_host, BEHIND: behind, OWN: own}
    finally:
        while BOOTING:
            BOOTING.pop().join()
        for name in (BEHIND, OWN):
            daemonhost.down(lab, name, progress=_progress)


def room_run(room: dict[str, daemonhost.Host], **extra: str) -> str:
    router = room["router"]
    values = {"host": router.name, **peers.room_parameters(router, [room[BEHIND]]), **extra}
    rc, out = ssh(router, runs.command("room-router", values), timeout=300)
    assert rc == 0, out
    return out


def outcome(out: str) -> str:
    found = re.findall(r"^ok \((changed|no change)\)", out, re.M)
    assert found, out
    return found[-1]


def test_the_plan_shows_radvd_conf_the_sysctl_file_and_the_routes_as_diffs(
    lab: Lab, room: dict[str, daemonhost.Host]
) -> None:
    out = room_run(room, apply="false")
    behind = room[BEHIND]
    assert "+interface eth0" in out and f"+\tprefix {lab.room_prefix}" in out, out
    assert "+net.ipv6.conf.all.forwarding = 1" in out, out
    via = lab.room_address(behind.mac)
    assert f"+\tup ip -6 route replace {lab.room_host_prefix(behind.slot)} via {via}" in out
    assert f"+\tup ip -6 route replace unreachable {lab.room_delegated}" in out, out


def test_room_router_applies_and_a_second_run_changes_nothing(
    lab: Lab, room: dict[str, daemonhost.Host]
) -> None:
    router = room["router"]
    # as `opsbook lab up --room-router` runs it: the set, the per-host values on top
    first = runs.room_router(router, [room[BEHIND]], say=_progress)
    assert first.changed is True and first.exit_code == 0, first.output
    assert on(router, "systemctl is-active radvd; systemctl is-enabled radvd") == (
        "active\nenabled\n"
    )
    assert on(router, "cat /proc/sys/net/ipv6/conf/all/forwarding") == "1\n"
    assert outcome(room_run(room)) == "no change"


def test_lab_status_shows_the_room_router(
    lab: Lab, room: dict[str, daemonhost.Host], capsys: pytest.CaptureFixture[str]
) -> None:
    from opslib.cli import main

    main.main(["lab", "--prefix", lab.prefix, "status", "--json"])
    rows = {(r["component"], r["name"]): r for r in json.loads(capsys.readouterr().out)}
    row = rows[("room router", room["router"].name)]
    assert row["state"] == "delegated", row  # the broker routes the /48 through its tunnel
    assert lab.room_delegated in row["detail"] and lab.room_prefix in row["detail"], row
    assert ("room router", room[BEHIND].name) not in rows


def reaches_the_broker_side(lab: Lab, host: daemonhost.Host, what: str) -> str:
    """New sessions until ``host`` has its SLAAC address on the room's /64, a default
    route learned from an RA, and pings the internet (he's lo) through the router."""
    address = lab.room_address(host.mac)
    return wait_for(
        lambda: ssh(
            host,
            "ip -6 -o addr show dev eth0 scope global; ip -6 route show default; "
            f"ping -6 -c 1 -W 2 {lab.internet_ipv6} >/dev/null && echo internet answers",
            timeout=30,
        )[1],
        lambda out: f"{address}/64" in out and "proto ra" in out and "answers" in out,
        120,
        what,
    )


def he_pings(lab: Lab, address: str) -> bool:
    argv = ["ip", "netns", "exec", lab.he_ns, "ping", "-6", "-c", "1", "-W", "2", address]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def test_a_host_on_the_segment_gets_slaac_and_reaches_the_broker_side(
    lab: Lab, room: dict[str, daemonhost.Host]
) -> None:
    behind = room[BEHIND]
    reaches_the_broker_side(lab, behind, f"{behind.name} on the room's /64")
    assert he_pings(lab, lab.room_address(behind.mac))  # and back, through the tunnel
    # its /64 (routed by the router via its room address) answers from the broker's side
    prefix = lab.room_host_prefix(behind.slot)
    mine = prefix.replace("::/64", "::1/128")
    unrouted = lab.room_host_prefix(0xFF)  # a /64 of the /48 the router routes to no host
    for address in (mine, unrouted.replace("::/64", "::1/128")):
        on(behind, f"sudo ip -6 addr replace {address} dev {NAT_STANDIN}")
    try:
        wait_for(
            lambda: "yes" if he_pings(lab, mine.split("/")[0]) else "no",
            lambda seen: seen == "yes",
            60,
            f"the broker's side reaching {prefix} through the router",
        )
        # host-health knows it is on the room router, and whose /64 the router routes
        guest_booted(behind)  # (it checks every guest too: vm-netreg holds its NAT lease)
        checks = health(behind, routed_prefix=prefix)
        assert checks["IPv6 via"][0] == "ok", checks
        assert "the room router, by RAs on eth0" in checks["IPv6 via"][1], checks
        for name in ("eth0 takes RAs", "RA seen on eth0",
                     "default IPv6 route via the router on eth0",
                     f"{prefix} reachable from the router"):  # fmt: skip
            assert checks[name][0] == "ok", (name, checks)
        checks = health(behind, routed_prefix=unrouted, fails=True)
        assert checks[f"{unrouted} reachable from the router"][0] == "fail", checks
    finally:
        for address in (mine, unrouted.replace("::/64", "::1/128")):
            on(behind, f"sudo ip -6 addr del {address} dev {NAT_STANDIN}")


def health(host: daemonhost.Host, *, fails: bool = False, **params: str) -> dict[str, list[str]]:
    """host-health on ``host`` as booted (no br0, no forward-bridge, its stock NAT network
    without IPv6); its checks by name: [status, seen]."""
    values = {"host": host.name, "nat_network": "", "forward_network": "", "bridge": "",
              **params}  # fmt: skip
    # a set on the host: `sudo -i` drops the empty arguments of a command line
    text = "".join(f"{key}: {json.dumps(value)}\n" for key, value in values.items())
    on(host, f"printf %s {shlex.quote(text)} > /tmp/health-25.yaml")
    command = "sudo -i opsbook run host-health -f /tmp/health-25.yaml"
    rc, out = ssh(host, command, timeout=300)
    assert rc == (1 if fails else 0), out
    found = {}
    for line in out.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 3 and cells[1] in ("ok", "fail", "warn"):
            found[cells[0]] = cells[1:]
    return found


def test_a_host_on_its_own_tunnel_still_works(lab: Lab, room: dict[str, daemonhost.Host]) -> None:
    own = room[OWN]
    values = runs.per_host(own)
    # On the room's segment a host took the router's RAs while it did not forward, and
    # libvirt then refuses an IPv6 network ("kernel autoconfigured IPv6 routes ... without
    # accept_ra set to 2"): a host that keeps its own tunnel ignores the room's RAs,
    # persisted, and drops what it took from them: the RA's prefix route counts for
    # libvirt too, and toggling disable_ipv6 leaves only the link-local address
    # (docs/room-router.md, "Beside the router").
    conf = "/etc/sysctl.d/60-own-tunnel.conf"
    drop = "sudo /usr/sbin/sysctl -q -w net.ipv6.conf.eth0.disable_ipv6="
    on(
        own,
        f"printf 'net.ipv6.conf.eth0.accept_ra = 0\\n' | sudo tee {conf} && "
        f"sudo /usr/sbin/sysctl -q -p {conf} && {drop}1 && {drop}0",
    )
    for runbook in ("nat-bridge-ipv6", "ipv6-tunnel"):  # the wiki's order: forwarding first
        rc, out = ssh(own, runs.command(runbook, values[runbook]), timeout=300)
        assert rc == 0, out
    # a forwarding host ignores the room's RAs (accept_ra 1): its own tunnel routes it
    routes = wait_for(
        lambda: ssh(
            own,
            "ip -6 route show default; "
            f"ping -6 -c 1 -W 2 {lab.internet_ipv6} >/dev/null && echo internet answers",
            timeout=30,
        )[1],
        lambda out: "dev he-ipv6" in out and "answers" in out,
        120,
        f"{own.name} reaching the internet through its own tunnel",
    )
    assert "proto ra" not in routes, routes
    tunnel = peers.tunnel_parameters(own)
    given = {k: tunnel[k] for k in ("routed_prefix", "client_ipv6", "server_ipv6")}
    checks = health(own, nat_network="nat-bridge", tunnel="he-ipv6", **given)
    assert "own tunnel he-ipv6" in checks["IPv6 via"][1], checks
    assert checks["he-ipv6 up"][0] == "ok" and "RA seen on eth0" not in checks, checks


def test_the_room_router_is_back_after_a_reboot(lab: Lab, room: dict[str, daemonhost.Host]) -> None:
    router = room["router"]
    daemonhost.reboot(lab, router.name, progress=_progress)
    peers.up(router)  # the lab's side of its links, again: the /48 still delegated
    wait_for(
        lambda: ssh(router, "systemctl is-active radvd opsbook-6in4-he-ipv6", timeout=30)[1],
        lambda out: out == "active\nactive\n",
        120,
        "radvd and the tunnel back after the router booted again",
    )
    behind = room[BEHIND]
    routes = on(router, "cat /proc/sys/net/ipv6/conf/all/forwarding; ip -6 route show")
    assert routes.startswith("1\n"), routes
    via = lab.room_address(behind.mac)
    assert f"{lab.room_host_prefix(behind.slot)} via {via} dev eth0" in routes, routes
    assert f"unreachable {lab.room_delegated}" in routes, routes
    reaches_the_broker_side(lab, behind, f"{behind.name} through the router after its reboot")
    assert outcome(room_run(room)) == "no change"


def test_a_guest_on_forward_bridge_takes_the_rooms_slaac_and_reaches_the_broker_side(
    lab: Lab, room: dict[str, daemonhost.Host]
) -> None:
    """dh2 bridges campus (forward-bridge) and gives vm-netreg its NetReg NIC there
    (netreg-attach): the guest is on the room's segment, takes its SLAAC address from the
    router's RAs and reaches the internet through the router (its console's report)."""
    behind = room[BEHIND]
    values = runs.per_host(behind)
    rc, out = ssh(behind, runs.command("forward-bridge", values["forward-bridge"]), timeout=300)
    assert rc == 0, out
    guest_booted(behind)
    guest = guests.netreg_guest(behind)
    assert guest.netreg_mac
    netreg.netreg_add(lab, guest.netreg_mac)  # the wiki's manual step: NetReg registers it
    rc, out = ssh(behind, runs.command("netreg-attach", values["netreg-attach"]), timeout=300)
    assert rc == 0, out
    address = lab.room_address(guest.netreg_mac)

    def seen() -> str:
        found = guests.report(behind, guest.name)
        if found is None:
            return ""
        ips = [str(ipaddress.ip_interface(a).ip) for _nic, a in found.addresses]
        return f"addresses {' '.join(ips)}; internet {found.internet}"

    wait_for(
        seen,
        lambda text: f" {address} " in f"{text.split(';')[0]} " and text.endswith("True"),
        180,
        f"{guest.name} on campus with {address} and the internet through the router",
    )
