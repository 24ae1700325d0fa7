"""A userspace 6in4 tunnel end: a TUN device plus a raw IPv4 socket for protocol 41.

For a kernel without the ``sit`` module this small process is the tunnel end. It does exactly what a
sit device does on the wire: an IPv6 packet read from the TUN device is sent to
the remote IPv4 endpoint as the payload of an IPv4 packet with protocol 41, and
the payload of every protocol-41 packet from the remote endpoint is written back
to the TUN device. Addresses and routes are NOT set here: the caller configures
the link with netlink like any other link (the ipv6-tunnel runbook does so for the
host's end, :mod:`opslib.lab.campus.broker` for the lab's broker end).

It serves hosts whose kernel has no ``sit`` (containers, some VPS kernels) and the lab
(this machine's kernel has none either). Run as a daemon in a named network namespace::

    python -m opslib.host.sixinfour.userspace --netns obS-he --name he-ipv6 \\
        --local 203.0.113.1 --remote 192.0.2.10 --pidfile /var/tmp/.../he.pid --daemon

``--daemon`` returns 0 once the TUN device exists (1 and one line on stderr when
it could not be made); the process then runs until SIGTERM, and the TUN device,
with its addresses and routes, disappears with it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from opslib.core import procs
from opslib.core.errors import ApplyError, HostError, InputError

IPPROTO_IPV6_IN_IPV4 = 41
CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MODULE = "opslib.host.sixinfour.userspace"


@dataclass(frozen=True)
class EndSpec:
    """One tunnel end as the daemon was asked to run it (also written next to the pid file)."""

    netns: str
    name: str
    local: str
    remote: str
    mtu: int = 1480
    ttl: int = 255

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 15 or "/" in self.name:
            raise InputError(f"tunnel name {self.name!r} is not a usable link name (1-15 chars)")
        for what, value in (("local", self.local), ("remote", self.remote)):
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                raise InputError(f"{what} endpoint {value!r} is not an IPv4 address") from None
        if not 1280 <= self.mtu <= 1480:
            raise InputError(f"MTU {self.mtu} is out of range; IPv6 needs 1280..1480 in 6in4")


# -- the daemon -----------------------------------------------------------------


def enter_netns(netns: str) -> None:
    """Move this process into the named network namespace (never creates one)."""
    if not netns:
        return
    path = f"/run/netns/{netns}"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise InputError(f"network namespace {netns!r} does not exist") from None
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise HostError(f"cannot enter netns {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def open_tun(name: str, mtu: int) -> int:
    """A TUN device (no packet info header) named ``name``, up, with ``mtu``; its fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise HostError(f"cannot create TUN device {name}: {exc.strerror}") from exc
    # The link is ours from here on; the caller's netlink sets addresses and routes.
    from pyroute2 import IPRoute

    with IPRoute() as ip:
        index = ip.link_lookup(ifname=name)[0]
        ip.link("set", index=index, mtu=mtu, state="up")
    return fd


def configure_link(name: str, addresses: Sequence[str], via: str) -> None:
    """Addresses (kept when present) and the default IPv6 route through the TUN device:
    what a unit-managed end (:mod:`opslib.host.sixinfour.tunnel_unit`) puts back each time it
    starts."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ip:
        index = ip.link_lookup(ifname=name)[0]
        for cidr in addresses:
            iface = ipaddress.IPv6Interface(cidr)
            try:
                ip.addr("add", index=index, address=str(iface.ip),
                        prefixlen=iface.network.prefixlen, family=socket.AF_INET6)  # fmt: skip
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise HostError(f"cannot add {cidr} to {name}: {exc}") from exc
        if via:
            try:
                ip.route("replace", dst="::/0", gateway=via, oif=index,
                         family=socket.AF_INET6, table=254)  # fmt: skip
            except NetlinkError as exc:
                raise HostError(f"cannot route ::/0 via {via} dev {name}: {exc}") from exc


def open_raw(local: str, ttl: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPV6_IN_IPV4)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    try:
        sock.bind((local, 0))
    except OSError as exc:
        sock.close()
        raise HostError(f"cannot bind protocol 41 to {local}: {exc.strerror}") from exc
    return sock


def decapsulate(datagram: bytes, remote: str, local: str) -> bytes | None:
    """The IPv6 packet inside a received IPv4 datagram, or None when it is not ours."""
    if len(datagram) < 20 or datagram[0] >> 4 != 4:
        return None
    ihl = (datagram[0] & 0x0F) * 4
    src = socket.inet_ntoa(datagram[12:16])
    dst = socket.inet_ntoa(datagram[16:20])
    if datagram[9] != IPPROTO_IPV6_IN_IPV4 or src != remote or dst != local:
        return None
    inner = datagram[ihl:]
    return inner if inner and inner[0] >> 4 == 6 else None


def forward(spec: EndSpec, tun: int, raw: socket.socket, stop: list[bool]) -> None:
    """Move packets both ways until ``stop[0]`` becomes true."""
    while not stop[0]:
        try:
            ready, _, _ = select.select([tun, raw.fileno()], [], [], 1.0)
        except InterruptedError:
            continue
        if tun in ready:
            packet = os.read(tun, 65535)
            if packet and packet[0] >> 4 == 6:
                # A too-big packet or an unreachable endpoint loses this packet only,
                # as a sit device would; the tunnel keeps running.
                with contextlib.suppress(OSError):
                    raw.sendto(packet, (spec.remote, 0))
        if raw.fileno() in ready:
            inner = decapsulate(raw.recv(65535), spec.remote, spec.local)
            if inner is not None:
                with contextlib.suppress(OSError):
                    os.write(tun, inner)


def serve(
    spec: EndSpec,
    pidfile: Path,
    ready_fd: int | None = None,
    *,
    addresses: Sequence[str] = (),
    via: str = "",
) -> int:
    """Run one tunnel end in this process until SIGTERM/SIGINT; with ``addresses`` /
    ``via``, the link gets them (and the default IPv6 route) once it exists."""
    stop = [False]

    def _stop(_signum: int, _frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    enter_netns(spec.netns)
    tun = open_tun(spec.name, spec.mtu)
    raw = open_raw(spec.local, spec.ttl)
    if addresses or via:
        configure_link(spec.name, addresses, via)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(f"{os.getpid()}\n")
    state_file(pidfile).write_text(json.dumps(asdict(spec)) + "\n")
    if ready_fd is not None:
        os.write(ready_fd, b"ok\n")
        os.close(ready_fd)
    try:
        forward(spec, tun, raw, stop)
    finally:
        raw.close()
        os.close(tun)
        for path in (pidfile, state_file(pidfile)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return 0


def daemonize(spec: EndSpec, pidfile: Path) -> int:
    """Fork a detached tunnel end; return 0 when it is ready, 1 with one line when not."""
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            answer = pipe.read().decode(errors="replace").strip()
        if answer == "ok":
            return 0
        print(f"sixinfour: {answer or 'the tunnel process died while starting'}", file=sys.stderr)
        return 1
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)  # the grandchild is adopted by init, so nobody has to reap it
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        code = serve(spec, pidfile, ready_fd=write_end)
    except Exception as exc:  # report any start failure through the pipe, one line
        with contextlib.suppress(OSError):
            os.write(write_end, str(exc).splitlines()[0].encode() if str(exc) else b"failed")
        os._exit(1)
    os._exit(code)


# -- controlling it from another process -------------------------------------------


def state_file(pidfile: Path) -> Path:
    return pidfile.with_suffix(".json")


def running(pidfile: Path) -> int | None:
    """The pid of the tunnel end behind ``pidfile`` when it runs, else None."""
    return procs.owned_pid(pidfile, MODULE, str(pidfile))


def running_spec(pidfile: Path) -> EndSpec | None:
    """What the running end behind ``pidfile`` was started with."""
    if running(pidfile) is None:
        return None
    try:
        return EndSpec(**json.loads(state_file(pidfile).read_text()))
    except (FileNotFoundError, ValueError, TypeError, InputError):
        return None


def start(spec: EndSpec, pidfile: Path, *, timeout: float = 10.0) -> int:
    """Start a tunnel end (no-op if one with the same spec runs); its pid."""
    pid = running(pidfile)
    if pid is not None:
        if running_spec(pidfile) == spec:
            return pid
        stop(pidfile)
    cmd = [
        sys.executable,
        "-m",
        MODULE,
        "--netns",
        spec.netns,
        "--name",
        spec.name,
        "--local",
        spec.local,
        "--remote",
        spec.remote,
        "--mtu",
        str(spec.mtu),
        "--ttl",
        str(spec.ttl),
        "--pidfile",
        str(pidfile),
        "--daemon",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ApplyError(f"userspace 6in4 {spec.name} did not start in {timeout:.0f} s") from exc
    if proc.returncode != 0:
        line = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ApplyError(f"userspace 6in4 {spec.name} in {spec.netns or 'this netns'}: {line}")
    pid = running(pidfile)
    if pid is None:
        raise ApplyError(f"userspace 6in4 {spec.name} started but left no pid in {pidfile}")
    return pid


def stop(pidfile: Path, *, timeout: float = 5.0) -> bool:
    """Stop the tunnel end behind ``pidfile``; True if one was running."""
    pid = running(pidfile)
    if pid is None:
        return False
    procs.terminate([pid], grace=timeout)
    return True


# -- command line --------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description="userspace 6in4")
    parser.add_argument("--netns", default="", help="named network namespace to run in")
    parser.add_argument("--name", required=True, help="TUN device name, e.g. he-ipv6")
    parser.add_argument("--local", required=True, help="local IPv4 endpoint")
    parser.add_argument("--remote", required=True, help="remote IPv4 endpoint")
    parser.add_argument("--mtu", type=int, default=1480)
    parser.add_argument("--ttl", type=int, default=255)
    parser.add_argument("--pidfile", required=True, type=Path)
    parser.add_argument("--daemon", action="store_true", help="detach; exit 0 once ready")
    parser.add_argument("--address", action="append", default=[], help="IPv6 CIDR to put on it")
    parser.add_argument("--via", default="", help="default IPv6 route via this tunnel peer")
    args = parser.parse_args(argv)
    try:
        spec = EndSpec(args.netns, args.name, args.local, args.remote, args.mtu, args.ttl)
        if args.daemon:
            return daemonize(spec, args.pidfile)
        return serve(spec, args.pidfile, addresses=args.address, via=args.via)
    except (InputError, HostError) as exc:
        print(f"sixinfour: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InputError) else 1
    except OSError as exc:
        if exc.errno == errno.EPERM:
            print("sixinfour: needs root (CAP_NET_ADMIN and CAP_NET_RAW)", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
