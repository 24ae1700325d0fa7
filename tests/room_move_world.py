"""A daemon host for room-ipv6-move without root: libvirt's test driver (nat-bridge on the
own tunnel's /64, a guest on it), the Cloudflare stand-in (the guest's AAAA record and
somebody else's), an interfaces file in a temporary directory, and :class:`FakeSide`, the
host's kernel and systemd as the runbook's :class:`~opslib.procedures.room_ipv6_move.side.Side`
sees them: br0's accept_ra and what it took from the room router's advertisements, the own
tunnel (a systemd unit) and its default route. tests/test_room_ipv6_move.py and the
contract test (tests/test_contract.py) use it."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from opslib.core.slaac import eui64_address
from opslib.host.ifupdown import file_io
from opslib.host.kernel import netlink
from opslib.host.kernel.ra import Advert, Taken
from opslib.host.libvirt import virt
from opslib.host.sixinfour.tunnels import TunnelState

OWN = "2001:db8:2::/64"  # the own tunnel's routed /64: nat-bridge's now
ROOM = "2001:db8:3:2::/64"  # what the room router routes to this host
ROOM_SEGMENT = "2001:db8:3::/64"  # the room's /64, advertised on br0
ROUTER = "fe80::3"
GUEST_MAC = "52:54:00:0b:00:02"
TOKEN = "room-move-test-token-41c7"
UNIT = "[Service]\nExecStart=/opt/opsbook/bin/python -m opslib.host.sixinfour.userspace\n"
INTERFACES = (
    "auto lo\niface lo inet loopback\n\nauto br0\niface br0 inet dhcp\n\tbridge_ports eth0\n"
)
NODE = """<node>
  <network><name>nat-bridge</name><forward mode='nat'/><bridge name='virbr0'/>
    <ip address='198.51.100.1' netmask='255.255.255.0'/>
    <ip family='ipv6' address='2001:db8:2::1' prefix='64'/></network>
  <domain type='test'><name>vm-nat1</name><memory>65536</memory><os><type>hvm</type></os>
    <devices><interface type='network'><mac address='52:54:00:0b:00:02'/>
      <source network='nat-bridge'/></interface></devices></domain>
</node>
"""


@dataclass
class FakeSide:
    """br0 and the own tunnel, as the runbook's Side reads and changes them."""

    accept_ra: int = 1
    taken: Taken = field(default_factory=Taken)
    tunnel_up: bool = True
    unit: str | None = UNIT
    tunnel_default: str = "2001:db8:1::1"
    advert: Advert | None = field(default_factory=lambda: Advert(ROUTER, 1800, (ROOM_SEGMENT,)))
    routed: bool = True  # the room router routes ROOM to this host
    calls: list[str] = field(default_factory=list)

    def accept_ra_of(self, bridge: str) -> int | None:
        return self.accept_ra

    def set_accept_ra(self, bridge: str, value: int) -> None:
        self.accept_ra = value

    def taken_of(self, bridge: str) -> Taken:
        return self.taken

    def forget(self, bridge: str) -> int:
        gone = len(self.taken.addresses) + len(self.taken.routes)
        self.taken = Taken()
        return gone

    def solicit(self, bridge: str, timeout: float) -> Advert | None:
        return self.advert

    def wait_for_ra(self, bridge: str, prefixes: tuple[str, ...], timeout: float) -> Taken:
        if self.accept_ra == 2 and self.advert is not None:
            self.taken = Taken(
                ("2001:db8:3::5054:ff:fe0a:1/64",), ROUTER, (f"default via {ROUTER}",)
            )
        return self.taken

    def tunnel(self, inputs: Any) -> TunnelState:
        text = file_io.read_exact(inputs.interfaces_file)
        if not self.tunnel_up:
            return TunnelState(False, interfaces_text=text, unit_host=True)
        return TunnelState(
            True, kind="tun", up=True, mtu=1480, addresses=(inputs.client_ipv6,),
            default_gateway=self.tunnel_default, interfaces_text=text, unit_host=True,
            unit_text=self.unit,
        )  # fmt: skip

    def drop_tunnel_default(self, tunnel: str) -> None:
        self.tunnel_default = ""

    def restore_default(self, spec: Any, state: TunnelState) -> str:
        self.tunnel_default = state.default_gateway
        return "default route back"

    def remove_tunnel(self, how: str, spec: Any, run_dir: str) -> None:
        self.calls.append(f"remove {how}")
        self.tunnel_up, self.unit, self.tunnel_default = False, None, ""

    def put_tunnel_back(self, how: str, spec: Any, state: TunnelState, run_dir: str) -> None:
        self.calls.append(f"back {how}")
        self.tunnel_up, self.unit = True, state.unit_text
        self.tunnel_default = state.default_gateway

    def tunnel_gone(self, tunnel: str) -> bool:
        return not self.tunnel_up

    def route_dev(self, dst: str, source: str) -> str:
        if self.tunnel_default:
            return "he-ipv6"
        return "br0" if self.taken.default_via else ""

    def answers(self, target: str, *, source: str = "", timeout: float = 20.0) -> bool:
        return self.routed or not source.startswith(ROOM.split("::")[0])


class Adapter:
    """FakeSide under the Side method names (a few clash with its fields)."""

    def __init__(self, fake: FakeSide) -> None:
        self.fake = fake

    def __getattr__(self, name: str) -> Any:
        renamed = {"accept_ra": "accept_ra_of", "taken": "taken_of"}
        return getattr(self.fake, renamed.get(name, name))


@dataclass
class RoomWorld:
    inputs: Any
    session: Any
    fake: FakeSide
    store: Any
    guest_record: str  # its name


@contextlib.contextmanager
def room_world(tmp_path: Path, **given: Any) -> Iterator[RoomWorld]:
    from opslib.lab.cloudflare.api import CloudflareStandIn
    from opslib.procedures import room_ipv6_move as move

    node = tmp_path / "node.xml"
    node.write_text(NODE)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    iface_file = tmp_path / "interfaces"
    iface_file.write_text(INTERFACES)
    fake = FakeSide()
    with (
        CloudflareStandIn(token=TOKEN) as cf,
        virt.connect(f"test://{node}") as conn,
        pytest.MonkeyPatch.context() as m,
    ):
        conn.lookupByName("vm-nat1").destroy()  # a guest shut off: no tap to wait for
        m.setattr(netlink, "links", lambda netns="": [])
        name = "vm-nat1-daemon2.example.org"
        cf.store.put_record("example.org", name=name, type="AAAA",
                            content=eui64_address(OWN, GUEST_MAC), proxied=True,
                            comment="opsbook cloudflare-aaaa: vm vm-nat1")  # fmt: skip
        cf.store.put_record("example.org", name="www.example.org", type="AAAA",
                            content="2001:db8:99::1")  # fmt: skip
        values = dict(
            room_prefix=ROOM, probe="2001:db8:ffff::1", local_ipv4="192.0.2.12",
            server_ipv4="203.0.113.1", client_ipv6="2001:db8:1::2/64",
            server_ipv6="2001:db8:1::1", routed_prefix=OWN, implementation="userspace",
            interfaces_file=str(iface_file), run_dir=str(tmp_path), zone="example.org",
            token=f"file:{token}", api_base_url=cf.url, timeout=0, ra_wait=0,
        )  # fmt: skip
        inputs = move.Inputs(**{**values, **given})
        from opslib.host.cloudflare.dns import DnsClient

        with DnsClient(token=TOKEN, base_url=cf.url) as client:
            session = move.Session(conn, Adapter(fake), client)  # type: ignore[arg-type]
            yield RoomWorld(inputs, session, fake, cf.store, name)


def turned(world: RoomWorld, direction: str) -> RoomWorld:
    """The same world, with ``direction`` instead."""
    return dataclasses.replace(world, inputs=dataclasses.replace(world.inputs, direction=direction))
