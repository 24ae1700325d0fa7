"""What a booted daemon host reaches outside itself, as a real host reaches its tunnel
broker and Cloudflare:

- **its broker end**: a userspace 6in4 end (:mod:`opslib.host.sixinfour.userspace`) in the lab's
  ``he`` netns, ``tun-NAME``, from the broker's IPv4 to the host's campus address, with
  a tunnel /64 and a routed /64 of the host's own (numbered by its slot, beside the
  simulated host's 2001:db8:1::/64 and 2001:db8:2::/64). :func:`tunnel_parameters` are
  the values a broker's tunnel page would give the operator;
- **Cloudflare**: the lab's stand-in (:mod:`opslib.lab.cloudflare.api`) is also served
  on the host's own loopback (its netns), at :data:`CLOUDFLARE_PORT` (the URL of
  ``parameters/lab/``: the same in every lab, as the host's loopback is its own), on the
  stand-in's state file, so both listeners are one Cloudflare. Its edit token is put
  at the real-host default ``/etc/opsbook/cloudflare-token`` (root, 0600).

- **the room's /48**, on the host that is the lab's room router (``lab up --room-router``
  marks it: :func:`make_room_router`): the broker also routes :attr:`Lab.room_delegated`
  through that host's tunnel, as Hurricane Electric's Routed /48 rides the tunnel of its
  /64. :func:`room_parameters` are the room-router runbook's values for it.

``up(host)`` starts both (again: harmless); ``daemonhost.down`` stops both (their pid
files are the host's ``peer-*.pid``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from opslib.core import procs
from opslib.core.errors import HostError
from opslib.host.kernel import netlink
from opslib.host.sixinfour import userspace
from opslib.lab.booted.daemonhost import Host
from opslib.lab.cloudflare import api, service
from opslib.lab.cloudflare.requests import API_PREFIX

TOKEN_PATH = "/etc/opsbook/cloudflare-token"  # the cloudflare-aaaa runbook's default
START_TIMEOUT = 15.0
CLOUDFLARE_PORT = 18783  # on each booted host's own loopback: parameters/lab's api_base_url


# -- the broker end ----------------------------------------------------------------------
def broker_link(host: Host) -> str:
    return f"tun-{host.name}"


def broker_pidfile(host: Host) -> Path:
    return host.peer_pidfile("sixinfour-he")


def tunnel_parameters(host: Host) -> dict[str, str]:
    """The broker's tunnel page for this host: ipv6-tunnel's parameters."""
    slot = host.slot
    return {
        "local_ipv4": host.address,
        "server_ipv4": host.lab.he_ipv4,
        "client_ipv6": f"2001:db8:1:{slot:x}::2/64",
        "server_ipv6": f"2001:db8:1:{slot:x}::1",
        "routed_prefix": f"2001:db8:2:{slot:x}::/64",
    }


def start_broker(host: Host) -> int:
    lab, values = host.lab, tunnel_parameters(host)
    spec = userspace.EndSpec(lab.he_ns, broker_link(host), lab.he_ipv4, host.address)
    pid = userspace.start(spec, broker_pidfile(host))
    server = values["server_ipv6"]
    netlink.ensure_address(lab.he_ns, spec.name, f"{server}/64")
    gateway = values["client_ipv6"].split("/")[0]
    netlink.ensure_route(lab.he_ns, values["routed_prefix"], gateway=gateway, dev=spec.name)
    if is_room_router(host):
        netlink.ensure_route(lab.he_ns, lab.room_delegated, gateway=gateway, dev=spec.name)
    return pid


# -- the room router ------------------------------------------------------------------
def _room_marker(host: Host) -> Path:
    return host.dir / "room-router"


def is_room_router(host: Host) -> bool:
    return _room_marker(host).exists()


def make_room_router(host: Host) -> None:
    """The broker delegates the room's /48 to ``host``'s tunnel (now, and whenever
    :func:`up` starts its broker end again); kept until the host is taken down."""
    _room_marker(host).write_text(f"{host.lab.room_delegated}\n")
    start_broker(host)


def room_parameters(router: Host, hosts: list[Host], *, interface: str = "eth0") -> dict[str, str]:
    """The room-router runbook's values for ``router`` (the broker's tunnel page with its
    Routed /48, the room) with ``hosts`` behind it: each host's /64 by its slot, via its
    SLAAC address on the room's /64 (its campus MAC: the lab's hosts keep it on br0)."""
    from opslib.core import roomhosts

    lab, tunnel = router.lab, tunnel_parameters(router)
    entries = [(h.name, lab.room_host_prefix(h.slot), lab.room_address(h.mac)) for h in hosts]
    return {
        **{k: v for k, v in tunnel.items() if k != "routed_prefix"},
        "routed_prefix": lab.room_delegated,
        "room_prefix": lab.room_prefix,
        "room_interface": interface,
        "hosts": roomhosts.render(entries),
    }


# -- the Cloudflare stand-in on the host's loopback ------------------------------------
def cloudflare_pidfile(host: Host) -> Path:
    return host.peer_pidfile("cloudflare-api")


def cloudflare_url(host: Host) -> str:
    """Where the host reaches the stand-in: on its own loopback."""
    return f"http://127.0.0.1:{CLOUDFLARE_PORT}{API_PREFIX}"


def cloudflare_running(host: Host) -> int | None:
    pidfile = cloudflare_pidfile(host)
    return procs.owned_pid(pidfile, api.__name__, str(pidfile))


def start_cloudflare(host: Host) -> None:
    lab = host.lab
    service.lab_up(lab)  # the token files and the state the listeners share
    _install_token(host)
    if cloudflare_running(host):
        return
    log = host.dir / "cloudflare-api.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, sys.executable, "-m", api.__name__,
             "--port", str(CLOUDFLARE_PORT),
             "--state", str(service.lab_state_file(lab)),
             "--zones", *service.LAB_ZONES,
             "--token-file", str(service.lab_token_file(lab)),
             "--read-token-file", str(service.lab_read_token_file(lab)),
             "--pid-file", str(cloudflare_pidfile(host))],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT
    while not cloudflare_running(host):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise HostError(f"the Cloudflare stand-in did not start in {host.netns}; see {log}")
        time.sleep(0.1)


def _install_token(host: Host) -> None:
    target = host.root / TOKEN_PATH.lstrip("/")
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    token = service.lab_token_file(host.lab).read_text()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token)
    os.chmod(target, 0o600)


# -- up ------------------------------------------------------------------------------
def up(host: Host) -> None:
    start_broker(host)
    start_cloudflare(host)
