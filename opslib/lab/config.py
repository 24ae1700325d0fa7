"""Every name, path, address and MAC of one lab, in one frozen value.

Other modules (the lab itself, runbook tests, the demo) read them from here and
never copy them::

    from opslib.lab.config import Lab
    lab = Lab.from_env()          # prefix from $OPSBOOK_LAB_PREFIX, default "ob"
    lab.uri, lab.host_ns, lab.guest("vm-nat1").mac, lab.campus_gateway

Address plan (documentation ranges only, see docs/conventions.md):
campus 192.0.2.0/24 (gateway + NetReg 192.0.2.1, host eth0 leased 192.0.2.10);
he IPv4 endpoint 203.0.113.1 behind campus; NAT network ``default`` on virbr0
198.51.100.1/24; tunnel 2001:db8:1::1 (he) / 2001:db8:1::2 (host) /64; routed
/64 2001:db8:2::/64; "internet" 2001:db8:ffff::1 on he's lo.

Booted hosts (opslib.lab.booted): host in slot N (daemonN) at 192.0.2.(19+N), MAC
02:0b:01:00:00:NN; its own tunnel 2001:db8:1:N::1 (he) / 2001:db8:1:N::2 /64, routed
/64 2001:db8:2:N::/64 (N in hex; opslib.lab.booted.peers.tunnel_parameters).

The room router (``lab up --room-router``, the room-router runbook): daemon1 is the router;
the broker routes the /48 :attr:`Lab.room_delegated` (2001:db8:48::/48) through daemon1's
own tunnel (as Hurricane Electric's "Routed /48" rides the same tunnel as its /64).
radvd on daemon1 advertises :attr:`Lab.room_prefix` (2001:db8:48::/64, daemon1 is
2001:db8:48::1) on campus; a host in slot N takes 2001:db8:48:0:b:1ff:fe00:N there by
SLAAC (EUI-64 of its MAC: :meth:`Lab.room_address`) and gets the nat-bridge /64
2001:db8:48:N::/64 (:meth:`Lab.room_host_prefix`), routed by daemon1 via that address.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from opslib.core.errors import InputError

DEFAULT_PREFIX = "ob"
DEFAULT_HOST = "daemon1"  # the booted host `opsbook lab host up|down|ssh` means by default
LAB_BASE = Path("/var/tmp/opsbook-lab")
# The guest kernel + initramfs are built once per machine and shared by every lab.
IMAGE_DIR = Path(os.environ.get("OPSBOOK_GUEST_CACHE", "/var/cache/opsbook/guest"))

# Network namespace names end in "-campus" (7 characters); interface names in the
# root namespace never carry the prefix, so 8 characters leave room everywhere.
_PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,7}$")


@dataclass(frozen=True)
class Guest:
    """A lab VM. ``nat_mac`` is its NIC on the NAT network ``default``.

    ``netreg_mac`` is the MAC the guest is meant to get on forward-bridge: it is NOT
    attached at ``lab up`` and NOT registered in NetReg (the netreg-attach runbook
    does both, as the wiki page says a person does).
    """

    name: str
    nat_mac: str
    netreg_mac: str | None = None


@dataclass(frozen=True)
class Lab:
    """One lab daemon host, named by its prefix."""

    prefix: str = DEFAULT_PREFIX
    base: Path = LAB_BASE
    image_dir: Path = IMAGE_DIR

    # --- campus: the physical network and NetReg ------------------------------
    campus_network: str = "192.0.2.0/24"
    campus_gateway: str = "192.0.2.1"  # campus router + NetReg dnsmasq
    campus_dhcp_range: tuple[str, str] = ("192.0.2.100", "192.0.2.199")
    host_eth0_mac: str = "02:0b:00:00:00:0a"
    host_eth0_ip: str = "192.0.2.10"  # NetReg's fixed lease for the host's MAC
    campus_bridge: str = "campus0"  # in the campus netns; the host's eth0 peer is a port
    campus_host_port: str = "host0"  # campus end of the host's eth0 veth

    # --- he: the tunnel broker ------------------------------------------------
    he_ipv4: str = "203.0.113.1"  # the broker's IPv4 tunnel endpoint
    he_link_campus_ipv4: str = "203.0.113.254"  # campus's end of the campus<->he link
    he_link_prefixlen: int = 24
    campus_he_port: str = "he0"  # campus end of the link to he (he's end is eth0)
    internet_ipv6: str = "2001:db8:ffff::1"  # on he's lo: "the internet"
    tunnel_he_ipv6: str = "2001:db8:1::1"
    tunnel_host_ipv6: str = "2001:db8:1::2"
    tunnel_prefixlen: int = 64
    routed_prefix: str = "2001:db8:2::/64"  # the /64 the host puts on nat-bridge
    # the room router (docstring): the /48 the broker delegates, the /64 radvd advertises
    room_router: str = "daemon1"
    room_delegated: str = "2001:db8:48::/48"
    room_prefix: str = "2001:db8:48::/64"

    # --- host: the daemon host ------------------------------------------------
    nat_network: str = "default"
    nat_bridge: str = "virbr0"
    nat_bridge_mac: str = "52:54:00:0b:ff:01"
    nat_ipv4: str = "198.51.100.1"
    nat_prefixlen: int = 24
    nat_dhcp_range: tuple[str, str] = ("198.51.100.100", "198.51.100.199")

    guests: tuple[Guest, ...] = field(
        default=(
            Guest("vm-nat1", "52:54:00:0b:00:01"),
            Guest("vm-nat2", "52:54:00:0b:00:02"),
            Guest("vm-netreg", "52:54:00:0b:00:03", netreg_mac="52:54:00:0b:01:03"),
        )
    )
    guest_memory_mib: int = 160

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise InputError(
                f"lab prefix {self.prefix!r} is not usable; use 1-8 letters/digits "
                "starting with a letter (e.g. OPSBOOK_LAB_PREFIX=ob2)"
            )

    @classmethod
    def from_env(cls, prefix: str | None = None) -> Lab:
        """The lab named by ``prefix``, else $OPSBOOK_LAB_PREFIX, else "ob"."""
        return cls(prefix=prefix or os.environ.get("OPSBOOK_LAB_PREFIX") or DEFAULT_PREFIX)

    # --- the room router ----------------------------------------------------------
    def room_host_prefix(self, slot: int) -> str:
        """The nat-bridge /64 of the host in ``slot`` behind the room router."""
        return f"2001:db8:48:{slot:x}::/64"

    @property
    def room_address_router(self) -> str:
        """The router's address on the room's /64 (its ::1)."""
        import ipaddress

        return str(ipaddress.IPv6Network(self.room_prefix).network_address + 1)

    def room_address(self, mac: str) -> str:
        """The SLAAC (EUI-64) address a NIC with ``mac`` takes on the room's /64."""
        from opslib.core.slaac import eui64_address

        return eui64_address(self.room_prefix, mac)

    # --- names ------------------------------------------------------------------
    @property
    def host_ns(self) -> str:
        return f"{self.prefix}-host"

    @property
    def campus_ns(self) -> str:
        return f"{self.prefix}-campus"

    @property
    def he_ns(self) -> str:
        return f"{self.prefix}-he"

    @property
    def probe_ns(self) -> str:
        """Throwaway netns of :func:`opslib.lab.campus.netreg.dhcp_probe`."""
        return f"{self.prefix}-probe"

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.host_ns, self.campus_ns, self.he_ns)

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.run_dir}/libvirt-sock"

    def guest(self, name: str) -> Guest:
        for guest in self.guests:
            if guest.name == name:
                return guest
        from opslib.core.errors import UnknownName

        raise UnknownName("lab guest", name, [g.name for g in self.guests])

    @property
    def netreg_guest(self) -> Guest:
        return next(g for g in self.guests if g.netreg_mac)

    @property
    def nat_guests(self) -> tuple[Guest, ...]:
        return self.guests

    # --- directories (bind-mounted over libvirt's in the host's mount namespace) ---
    @property
    def root(self) -> Path:
        return self.base / self.prefix

    @property
    def etc_dir(self) -> Path:
        return self.root / "etc"

    @property
    def libvirt_etc_dir(self) -> Path:
        """Seen as /etc/libvirt by the lab's libvirtd."""
        return self.etc_dir / "libvirt"

    @property
    def var_dir(self) -> Path:
        """Its lib/ and cache/ are seen as /var/lib and /var/cache by the host's processes."""
        return self.root / "var"

    @property
    def lib_dir(self) -> Path:
        """/var/lib/libvirt of the lab's libvirtd (its dnsmasq status files live here)."""
        return self.var_dir / "lib" / "libvirt"

    @property
    def run_dir(self) -> Path:
        """Seen as /run/libvirt: the libvirtd and virtlogd sockets."""
        return self.root / "run"

    @property
    def host_run_dir(self) -> Path:
        """Seen as /run by every process of the host (ifupdown state, udhcpc pid files)."""
        return self.root / "hostrun"

    @property
    def log_dir(self) -> Path:
        """Seen as /var/log by the host (libvirt's logs in libvirt/); NetReg's log, the
        guests' consoles. ``down`` keeps it for post-mortems; ``up`` starts it afresh."""
        return self.root / "log"

    @property
    def guest_dir(self) -> Path:
        """The guests' kernel + initramfs (a private copy) and shell sockets."""
        return self.root / "guest"

    # --- files ------------------------------------------------------------------
    @property
    def interfaces_file(self) -> Path:
        """The host's /etc/network/interfaces (use ``ifup -i FILE --state-dir DIR``)."""
        return self.etc_dir / "network" / "interfaces"

    @property
    def ifupdown_state_dir(self) -> Path:
        """ifupdown's state (/run/network of the host, so plain ``ifup`` agrees)."""
        return self.host_run_dir / "network"

    @property
    def resolv_conf(self) -> Path:
        """Bind-mounted over /etc/resolv.conf for every process of the host."""
        return self.etc_dir / "resolv.conf"

    @property
    def netreg_hosts_file(self) -> Path:
        """NetReg's registry: a dnsmasq dhcp-hostsfile, one ``MAC[,IP]`` a line."""
        return self.etc_dir / "netreg" / "hosts"

    @property
    def netreg_conf(self) -> Path:
        return self.etc_dir / "netreg" / "dnsmasq.conf"

    @property
    def netreg_pid_file(self) -> Path:
        return self.root / "netreg.pid"

    @property
    def netreg_lease_file(self) -> Path:
        return self.root / "netreg.leases"

    @property
    def netreg_log(self) -> Path:
        return self.log_dir / "netreg.log"

    @property
    def libvirtd_pid_file(self) -> Path:
        return self.root / "libvirtd.pid"

    @property
    def virtlogd_pid_file(self) -> Path:
        return self.root / "virtlogd.pid"

    @property
    def nat_status_file(self) -> Path:
        """libvirt's dnsmasq lease status of the NAT network (JSON)."""
        return self.lib_dir / "dnsmasq" / f"{self.nat_bridge}.status"

    def console_log(self, guest: str) -> Path:
        """The guest's serial console (ttyS0), readable from the root namespace."""
        return self.log_dir / f"console-{guest}.log"

    def shell_socket(self, guest: str) -> Path:
        """A root shell on the guest's second serial port (ttyS1)."""
        return self.guest_dir / f"{guest}.sock"
