"""The contract of every changing runbook, checked on each (opslib.contract.transaction):

- planning is pure: with the adapters replaced by fakes that fail when called, the plan
  comes out of the observed state alone, the same every time;
- a second apply is unchanged;
- a saved plan (``opsbook plan``) applies while the host is as observed, and the same
  saved plan is refused as stale once the host moved (here: by that apply);
- a failure injected at step k undoes steps k-1 ... 1, last first, and leaves the observed
  state as it was at the start (unless a step up to k is a point of no return: then
  nothing is undone and the result is failed).

Every module of opslib.procedures that declares a PROCEDURE is checked; each needs a
world below (a fake or test double of the host it changes, no root needed). A new
runbook gets these tests by adding its world.
"""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import io
import os
import pkgutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

import opslib.procedures
from opslib.contract import transaction
from opslib.contract.inputs import declarations, parameters_cell
from opslib.contract.transaction import Procedure, Transaction
from opslib.core import secrets
from opslib.core.actions import Action
from opslib.core.changes import Check
from opslib.core.errors import OpsError, StalePlan
from opslib.host.cloudflare import dns
from opslib.host.ifupdown import confirm, file_io, network_restart, source_tree
from opslib.host.kernel import icmp, netlink
from opslib.host.libvirt import virt, virtxml
from opslib.host.sixinfour import tunnels


@dataclass
class World:
    """A runbook's procedure, its inputs, and the session its apply acts through."""

    proc: Procedure[Any, Any, Any]
    inputs: Any
    session: Any = None
    host: str = "contract"

    def observe(self) -> Any:
        with self.opened() as session:
            return self.proc.observe(self.inputs, session)

    @contextmanager
    def opened(self) -> Iterator[Any]:
        if self.session is not None:
            yield self.session
        else:
            with self.proc.session(self.inputs) as session:
                yield session

    def plan(self) -> Any:
        return transaction.plan(self.proc, self.inputs, self.host, session=self.session)

    def apply(self, plan: Any = None) -> Any:
        return transaction.apply(
            self.proc, self.inputs, self.host, reviewed=plan, session=self.session
        )


WORLDS: dict[str, Callable[[Path], Iterator[World]]] = {}


def world(runbook: str) -> Callable[[Callable[[Path], Iterator[World]]], Any]:
    def register(fn: Callable[[Path], Iterator[World]]) -> Any:
        WORLDS[runbook] = fn
        return fn

    return register


def procedures() -> dict[str, Procedure[Any, Any, Any]]:
    found = {}
    for info in pkgutil.iter_modules(opslib.procedures.__path__):
        module = importlib.import_module(f"opslib.procedures.{info.name}")
        proc = getattr(module, "PROCEDURE", None)
        if isinstance(proc, Procedure):
            found[proc.name] = proc
    return found


# -- the worlds ---------------------------------------------------------------------------

TOKEN = "contract-test-token-5e1f"


@world("cloudflare-aaaa")
def cloudflare(tmp_path: Path) -> Iterator[World]:
    """The API stand-in with a CNAME at the name: replace deletes it, then creates."""
    from opslib.lab.cloudflare.api import CloudflareStandIn
    from opslib.procedures import cloudflare_aaaa as cfa

    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    with CloudflareStandIn(token=TOKEN) as cf:
        cf.store.put_record("example.org", name="vm1.example.org", type="CNAME",
                            content="w.example.net")  # fmt: skip
        inputs = cfa.Inputs(
            record_name="vm1.example.org", zone="example.org", token=f"file:{token}",
            vm="vm1", api_base_url=cf.url, address="2001:db8:2::5", replace=True,
        )  # fmt: skip
        yield World(cfa.PROCEDURE, inputs)


NETREG_NODE = """<node>
  <network><name>forward-bridge</name><forward mode='bridge'/><bridge name='br0'/></network>
  <domain type='test'><name>vm-netreg</name><memory>65536</memory><os><type>hvm</type></os>
    <devices><interface type='network'><mac address='52:54:00:0b:00:03'/>
      <source network='default'/></interface></devices></domain>
</node>
"""


@world("netreg-attach")
def netreg(tmp_path: Path) -> Iterator[World]:
    """libvirt's test driver with a shut-off guest; the test driver cannot attach devices,
    so attach/detach edit its persistent definition (the adapter's fake)."""
    from lxml import etree

    from opslib.procedures import netreg_attach as na

    node = tmp_path / "node.xml"
    node.write_text(NETREG_NODE)
    with virt.connect(f"test://{node}") as conn, pytest.MonkeyPatch.context() as m:
        conn.lookupByName("vm-netreg").destroy()

        def attach(conn: Any, vm: str, xml: str, *, config: bool, live: bool) -> None:
            assert config and not live
            (nic,) = virtxml.parse_interfaces(f"<d><devices>{xml}</devices></d>")
            config_xml = virt.definition(conn, vm).config_xml
            conn.defineXML(virtxml.DomainXml(config_xml).with_interface(nic).text)

        def detach(conn: Any, vm: str, xml: str, *, config: bool, live: bool) -> None:
            root = etree.fromstring(virt.definition(conn, vm).config_xml.encode())
            mac = virtxml.parse_interfaces(f"<d><devices>{xml}</devices></d>")[0].mac
            for iface in root.iterfind("devices/interface"):
                if iface.find("mac").get("address") == mac:  # type: ignore[union-attr]
                    iface.getparent().remove(iface)  # type: ignore[union-attr]
            conn.defineXML(etree.tostring(root, encoding="unicode"))

        m.setattr(virt, "attach_device", attach)
        m.setattr(virt, "detach_device", detach)
        inputs = na.Inputs(vm="vm-netreg", mac="52:54:00:0b:01:03", libvirt_uri=f"test://{node}")
        yield World(na.PROCEDURE, inputs, session=conn)


class Msg(dict[str, Any]):
    """A netlink message as pyroute2 decodes it: fields by key, attributes by get_attr."""

    def __init__(self, fields: dict[str, Any], attrs: dict[str, Any]) -> None:
        super().__init__(fields)
        self.attrs = attrs

    def get_attr(self, name: str) -> Any:
        return self.attrs.get(name)


class FakeKernel:
    """The rtnetlink requests the runbooks make, on links (and their bridge), addresses and
    one default route per family (what netlink.ipr yields, for a namespace of its own)."""

    def __init__(self) -> None:
        self.links: dict[int, dict[str, Any]] = {
            1: {"name": "lo", "kind": "", "up": True, "mtu": 65536, "addrs": set()},
            2: {"name": "eth0", "kind": "veth", "up": True, "mtu": 1500, "addrs": set()},
        }
        self.default: dict[int, tuple[str, int]] = {socket.AF_INET6: ("2001:db8:9::1", 2)}

    def install(self, m: pytest.MonkeyPatch) -> None:
        """In place of the kernel: the changes (pyroute2, at netlink.ipr) and the reads
        (raw rtnetlink dumps, at netlink.links, addresses and routes)."""
        m.setattr(netlink, "ipr", self.ipr)
        m.setattr(netlink, "links", self.read_links)
        m.setattr(netlink, "addresses", self.read_addresses)
        m.setattr(netlink, "routes", self.read_routes)

    @contextmanager
    def ipr(self, netns: str = "") -> Iterator[FakeKernel]:
        yield self

    def read_links(self, netns: str = "") -> list[netlink.Link]:
        return [
            netlink.Link(i, link["name"], link["kind"], f"52:54:00:00:00:{i:02x}", link["up"],
                         "UP" if link["up"] else "DOWN", link.get("master", 0), link["mtu"])
            for i, link in sorted(self.links.items())
        ]  # fmt: skip

    def read_addresses(self, netns: str = "", *, ifindex: int | None = None) -> list[Any]:
        return [
            netlink.Address(i, netlink.FAMILIES[f], a, p, "global")
            for i, link in sorted(self.links.items())
            if ifindex in (None, i)
            for a, p, f in sorted(link["addrs"])
        ]

    def read_routes(self, netns: str = "", *, family: int = socket.AF_INET) -> list[Any]:
        if family not in self.default:
            return []
        gateway, oif = self.default[family]
        return [netlink.Route(netlink.FAMILIES[family], "default", gateway, oif)]

    def _index(self, kw: dict[str, Any]) -> int:
        return int(kw["index"]) if "index" in kw else self.link_lookup(ifname=kw["ifname"])[0]

    def link_lookup(self, *, ifname: str) -> list[int]:
        return [i for i, link in self.links.items() if link["name"] == ifname]

    def get_links(self, *indexes: int) -> list[Msg]:
        found = []
        for i, link in sorted(self.links.items()):
            if indexes and i not in indexes:
                continue
            data = Msg(
                {}, {"IFLA_SIT_LOCAL": link.get("local"), "IFLA_SIT_REMOTE": link.get("remote")}
            )
            info = Msg({}, {"IFLA_INFO_KIND": link["kind"], "IFLA_INFO_DATA": data})
            found.append(Msg({"index": i, "flags": int(link["up"])}, {
                "IFLA_IFNAME": link["name"], "IFLA_LINKINFO": info if link["kind"] else None,
                "IFLA_ADDRESS": f"52:54:00:00:00:{i:02x}", "IFLA_MTU": link["mtu"],
                "IFLA_MASTER": link.get("master", 0),
            }))  # fmt: skip
        return found

    def get_addr(self, index: int | None = None, family: int | None = None) -> list[Msg]:
        return [
            Msg(
                {"index": i, "family": f, "prefixlen": p, "scope": 0},
                {"IFA_ADDRESS": a},
            )
            for i, link in sorted(self.links.items())
            if index in (None, i)
            for a, p, f in sorted(link["addrs"])
            if family in (None, f)
        ]

    def get_routes(self, family: int, table: int) -> list[Msg]:
        if family not in self.default:
            return []
        gateway, oif = self.default[family]
        return [Msg({"dst_len": 0}, {"RTA_GATEWAY": gateway, "RTA_OIF": oif})]

    def link(self, command: str, **kw: Any) -> None:
        if command == "add":
            index = max(self.links) + 1
            self.links[index] = {
                "name": kw["ifname"], "kind": kw["kind"], "up": False, "addrs": set(),
                "mtu": kw.get("mtu", 1480), "local": kw["sit_local"], "remote": kw["sit_remote"],
            }  # fmt: skip
        elif command == "set":
            link = self.links[self._index(kw)]
            link["mtu"] = kw.get("mtu", link["mtu"])
            link["up"] = kw.get("state", "up" if link["up"] else "down") == "up"
        elif command == "del":
            index = self._index(kw)
            del self.links[index]
            self.default = {f: r for f, r in self.default.items() if r[1] != index}

    def addr(self, command: str, **kw: Any) -> None:
        addrs = self.links[self._index(kw)]["addrs"]
        entry = (kw["address"], kw["prefixlen"], kw.get("family", socket.AF_INET))
        addrs.add(entry) if command == "add" else addrs.discard(entry)

    def route(self, command: str, **kw: Any) -> None:
        if command == "replace":
            self.default[kw["family"]] = (kw.get("gateway", ""), kw["oif"])
        elif command == "del":
            self.default.pop(kw["family"], None)

    def close(self) -> None:
        pass


@world("ipv6-tunnel")
def ipv6_tunnel(tmp_path: Path) -> Iterator[World]:
    """A sit tunnel on a fake kernel (rtnetlink faked at netlink.ipr), the interfaces file
    in tmp: create, configure, persist; the host's default IPv6 route goes back on undo."""
    from opslib.procedures import ipv6_tunnel as t

    iface_file = tmp_path / "interfaces"
    iface_file.write_text("auto lo\niface lo inet loopback\n")
    kernel = FakeKernel()
    with pytest.MonkeyPatch.context() as m:
        kernel.install(m)
        m.setattr(t, "sit_supported", lambda: True)
        inputs = t.Inputs(
            tunnel="he-ipv6", local_ipv4="192.0.2.10", server_ipv4="203.0.113.1",
            client_ipv6="2001:db8:1::2/64", server_ipv6="2001:db8:1::1",
            routed_prefix="2001:db8:2::/64", netns="", interfaces_file=str(iface_file),
            run_dir=str(tmp_path),
        )  # fmt: skip
        # The health beyond this host pings the broker and reads sysctls: not here. The
        # link's own checks (verify he-ipv6) run on the fake kernel, a step like the others.
        m.setattr(tunnels, "path_health", lambda **_kw: [])
        yield World(t.PROCEDURE, inputs)


@world("room-router")
def room_router(tmp_path: Path) -> Iterator[World]:
    """ipv6-tunnel's fake kernel for the tunnel; forwarding and the /48's routes as dicts
    behind their adapters, radvd's unit stood in for (tests/radvd_stand_in.py; their files
    real, in tmp): the tunnel, the forwarding file, the routes file and radvd.conf all to
    write."""
    from radvd_stand_in import RadvdStandIn

    from opslib.host.kernel import sysctl
    from opslib.host.router import routes
    from opslib.procedures import ipv6_tunnel
    from opslib.procedures import room_router as rr

    iface_file = tmp_path / "interfaces"
    iface_file.write_text("source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n")
    live: dict[str, Any] = {rr.FORWARDING: "0"}
    table: dict[str, str] = {}
    address: list[bool] = [False]

    def observe_routes(_netns: str, spec: Any) -> routes.RoutesState:
        return routes.RoutesState(address[0], {d: table.get(d, "") for d in spec.wanted()})

    def apply_live(_netns: str, spec: Any, _state: Any) -> list[str]:
        address[0] = True
        table.update(spec.wanted())
        return ["routed"]

    def put_back(_netns: str, spec: Any, state: Any) -> str:
        address[0] = state.address
        for dst in spec.wanted():
            table[dst] = state.routes.get(dst, "")
        return "put back"

    def ping(_netns: str, targets: Any, **_kw: Any) -> icmp.Echo:
        return icmp.Echo({t: frozenset({t}) for t in targets}, frozenset(), 0.0)

    kernel = FakeKernel()
    with pytest.MonkeyPatch.context() as m:
        kernel.install(m)
        m.setattr(ipv6_tunnel, "sit_supported", lambda: True)
        m.setattr(sysctl, "live", lambda key, _netns="": live[key])
        m.setattr(sysctl, "set_live", lambda values, _ns="": live.update(values.items()))
        m.setattr(routes, "observe", observe_routes)
        m.setattr(routes, "apply_live", apply_live)
        m.setattr(routes, "put_back", put_back)
        RadvdStandIn().patch(m)
        m.setattr(icmp, "ping", ping)
        inputs = rr.Inputs(
            tunnel="he-ipv6", local_ipv4="192.0.2.20", server_ipv4="203.0.113.1",
            client_ipv6="2001:db8:1:1::2/64", server_ipv6="2001:db8:1:1::1",
            routed_prefix="2001:db8:48::/48", room_interface="eth0",
            room_prefix="2001:db8:48::/64",
            hosts="daemon2 2001:db8:48:2::/64 via 2001:db8:48:0:b:1ff:fe00:2",
            interfaces_file=str(iface_file),
            routes_file=str(tmp_path / "interfaces.d" / "opsbook-room-router"),
            sysctl_file=str(tmp_path / "sysctl.d" / "60-opsbook-room-router.conf"),
            radvd_conf=str(tmp_path / "radvd.conf"), run_dir=str(tmp_path),
        )  # fmt: skip
        yield World(rr.PROCEDURE, inputs)


NAT_NODE = """<node>
  <network><name>default</name><forward mode='nat'/><bridge name='virbr0'/>
    <ip address='198.51.100.1' netmask='255.255.255.0'/></network>
  <domain type='test'><name>vm-off</name><memory>65536</memory><os><type>hvm</type></os>
    <devices><interface type='network'><mac address='52:54:00:0b:00:02'/>
      <source network='default'/></interface></devices></domain>
</node>
"""


@contextmanager
def _nat(tmp_path: Path, rename_from: str) -> Iterator[World]:
    """libvirt's test driver: a NAT network (autostarted) and a shut-off guest on it, no
    links in the (faked) namespace; the network gets the prefix, or is also renamed."""
    from opslib.procedures import nat_bridge_ipv6 as nb

    node = tmp_path / "node.xml"
    node.write_text(NAT_NODE)
    with virt.connect(f"test://{node}") as conn, pytest.MonkeyPatch.context() as m:
        conn.lookupByName("vm-off").destroy()
        conn.networkLookupByName("default").setAutostart(1)
        m.setattr(netlink, "links", lambda netns="": [])
        network = "nat-bridge" if rename_from else "default"
        inputs = nb.Inputs(
            prefix="2001:db8:2::/64", network=network, rename_from=rename_from, timeout=0
        )
        yield World(nb.PROCEDURE, inputs, session=conn)


@world("nat-bridge-ipv6")
def nat_bridge(tmp_path: Path) -> Iterator[World]:
    with _nat(tmp_path, "") as made:
        yield made


@world("nat-bridge-ipv6:rename")
def nat_bridge_rename(tmp_path: Path) -> Iterator[World]:
    with _nat(tmp_path, "default") as made:
        yield made


@world("room-ipv6-move")
def room_ipv6_move(tmp_path: Path) -> Iterator[World]:
    """tests/room_move_world.py: nat-bridge on the own tunnel's /64 (test driver), a guest's
    AAAA record (the stand-in), br0 and the tunnel's unit faked; the move to the room router."""
    from room_move_world import room_world

    from opslib.procedures import room_ipv6_move as move

    with room_world(tmp_path) as w:
        yield World(move.PROCEDURE, w.inputs, session=w.session)


class FakeIfupdown:
    """What restarting networking does to the fake kernel: br0 over eth0 holding the
    host's address when the interfaces file says so, eth0 holding it otherwise."""

    def __init__(self, kernel: FakeKernel, path: Path) -> None:
        self.kernel, self.path = kernel, path

    def run(self, argv: list[str], timeout: float) -> tuple[int, str]:
        if "--no-act" in argv:
            return 0, ""
        k, address = self.kernel, ("192.0.2.10", 24, socket.AF_INET)
        for index in [i for i, link in k.links.items() if link["name"] == "br0"]:
            del k.links[index]
        eth0 = k.links[2]
        if "bridge_ports eth0" in self.path.read_text():
            k.links[9] = {"name": "br0", "kind": "bridge", "up": True, "mtu": 1500,
                          "addrs": {address}}  # fmt: skip
            eth0.update(master=9, addrs=set())
            k.default[socket.AF_INET] = ("192.0.2.1", 9)
        else:
            eth0.update(master=0, addrs={address})
            k.default[socket.AF_INET] = ("192.0.2.1", 2)
        return 0, ""


@dataclass
class FakeWatchdog:
    pid: int = 4242
    unit: str = ""
    decided: bool = False

    def confirm(self) -> None:
        self.decided = True

    def disarm(self) -> None:
        self.decided = True


@world("forward-bridge")
def forward_bridge(tmp_path: Path) -> Iterator[World]:
    """eth0 on DHCP in an interfaces file in tmp, a fake kernel whose "restart networking"
    follows the file, libvirt's test:///default for the network (a name of this world's
    own), a watchdog that is only told what to do."""
    from opslib.procedures import forward_bridge as fb

    main = tmp_path / "interfaces"
    main.write_text("auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n")
    kernel = FakeKernel()
    kernel.links[2]["addrs"] = {("192.0.2.10", 24, socket.AF_INET)}
    kernel.default[socket.AF_INET] = ("192.0.2.1", 2)
    name = f"fb-contract-{tmp_path.name}"
    # test:///default keeps its state while a connection to it is open: this one.
    with virt.connect("test:///default") as kept, pytest.MonkeyPatch.context() as m:
        kernel.install(m)
        m.setattr(network_restart, "_run", FakeIfupdown(kernel, main).run)
        m.setattr(
            icmp, "ping", lambda *_a, **_kw: icmp.Echo({"x": frozenset({"x"})}, frozenset(), 0)
        )
        m.setattr(confirm, "arm", lambda **_kw: FakeWatchdog())
        inputs = fb.Inputs(
            libvirt_uri="test:///default", interfaces_file=str(main), network_name=name
        )
        restart = network_restart.Restart("true", 1.0, str(tmp_path / "backups"))
        try:
            yield World(fb.PROCEDURE, inputs, session=restart)
        finally:
            if name in [n.name for n in virt.list_networks(kept)]:
                virt.stop_network(kept, name)
                virt.undefine_network(kept, name)


@world("libvirt-access")
def libvirt_access(tmp_path: Path) -> Iterator[World]:
    """/etc and alice's home in tmp; gpasswd edits that /etc/group; alice's virsh lists
    libvirt's test:///default networks once her group and ~/.profile say so."""
    from opslib.host.accounts import accounts
    from opslib.procedures import libvirt_access as la

    uid, gid = (1001, 1001) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(f"alice:x:{uid}:{gid}::/home/alice:/bin/bash\n")
    group = tmp_path / "etc" / "group"
    group.write_text("libvirt:x:105:operator\n")
    (tmp_path / "home" / "alice").mkdir(parents=True)
    (tmp_path / "home" / "alice" / ".profile").write_text("PATH=$HOME/bin:$PATH\n")

    def member(name: str, account: str, add: bool) -> None:
        head, _, members = group.read_text().strip().rpartition(":")
        kept = [m for m in members.split(",") if m and m != account] + [account] * add
        group.write_text(f"{head}:{','.join(kept)}\n")

    def probe(account: str) -> la.Probe:
        observed = la.PROCEDURE.observe(inputs, None)
        uri = la.exported_uri(observed.login.text if observed.login else None)
        members = observed.group.members if observed.group else ()
        if uri == inputs.libvirt_uri and account in members:
            return la.Probe(uri, 0, tuple(la.host_networks(uri)), "")
        return la.Probe(uri, 1, (), "error: failed to connect to the hypervisor")

    inputs = la.Inputs(account="alice", libvirt_uri="test:///default", root=str(tmp_path))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(accounts, "add_member", lambda g, a: member(g, a, True))
        m.setattr(accounts, "remove_member", lambda g, a: member(g, a, False))
        m.setattr(la, "probe", probe)
        yield World(la.PROCEDURE, inputs)


# -- the contract -------------------------------------------------------------------------


def test_every_changing_runbook_has_a_procedure_and_a_world() -> None:
    changing = set()
    for info in pkgutil.iter_modules(opslib.procedures.__path__):
        module = importlib.import_module(f"opslib.procedures.{info.name}")
        if hasattr(module, "apply"):
            changing.add(getattr(module, "RUNBOOK", info.name))
    assert set(procedures()) == changing
    assert {name.split(":")[0] for name in WORLDS} == set(procedures())


def declared_inputs() -> dict[str, Any]:
    """The runbook modules whose inputs are declared (opslib.contract.inputs), by runbook name."""
    found = {}
    for info in pkgutil.iter_modules(opslib.procedures.__path__):
        module = importlib.import_module(f"opslib.procedures.{info.name}")
        cls = getattr(module, "Inputs", None)
        if dataclasses.is_dataclass(cls) and declarations(cls, changing=False)[1:]:
            found[module.RUNBOOK] = module
    return found


def test_every_changing_runbook_declares_its_inputs() -> None:
    assert set(procedures()) <= set(declared_inputs())


@pytest.mark.parametrize("name", sorted(declared_inputs()))
def test_the_notebook_declares_the_inputs_of_its_runbook(name: str) -> None:
    """One declaration: the notebook's parameters cell (which the form and the CLI read) is
    the text its inputs dataclass gives, and the verbs take the fields by name."""
    import inspect
    import json

    from opslib.core import params
    from opslib.engine import runner

    module = declared_inputs()[name]
    changing = hasattr(module, "apply")
    info = runner.find_runbook(name)
    nb = json.loads(info.path.read_text(encoding="utf-8"))
    assert params.parameters_source(nb) == parameters_cell(module.Inputs, changing=changing), (
        f"run scripts/parameter-cells.py: notebooks/{name}.ipynb's parameters cell differs "
        "from its inputs"
    )
    assert list(info.params) == declarations(module.Inputs, changing=changing)
    fields = [f.name for f in dataclasses.fields(module.Inputs) if f.init]
    if changing:
        assert list(inspect.signature(module.plan).parameters) == ["host", *fields]
        assert list(inspect.signature(module.apply).parameters) == ["plan", "host", *fields]
    else:
        assert list(inspect.signature(module.run).parameters) == ["host", *fields]


@contextmanager
def made(name: str, directory: Path) -> Iterator[World]:
    directory.mkdir(parents=True, exist_ok=True)
    factory = WORLDS[name](directory)
    try:
        yield next(factory)
    finally:
        factory.close()


@pytest.fixture(params=sorted(WORLDS))
def world_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def the_world(world_name: str, tmp_path: Path) -> Iterator[World]:
    with made(world_name, tmp_path) as w:
        yield w


def _refuse(what: str) -> Callable[..., Any]:
    def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError(f"planning called {what}: a side effect")

    return refused


@contextmanager
def no_side_effects(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every adapter, and the calls under them, fails when called."""
    with monkeypatch.context() as m:
        for module, names in (
            (virt, ["connect"]),
            (netlink, ["ipr", "links", "link_by_name", "addresses", "default_route"]),
            (icmp, ["ping"]),
            (secrets, ["load"]),
            (file_io, ["write_atomic", "backup", "restore"]),
            (source_tree, ["load_tree"]),
            (confirm, ["arm"]),
            (libvirt, ["open", "openReadOnly"]),
            (subprocess, ["Popen", "run"]),
        ):
            for name in names:
                m.setattr(module, name, _refuse(f"{module.__name__}.{name}"))
        m.setattr(dns.DnsClient, "_call", _refuse("the DNS API"))
        m.setattr(socket, "socket", _refuse("socket.socket"))
        # Reading a file is observing: a plan made from a file it reads itself is not
        # the plan of what observe saw (and a saved plan's fingerprint would miss it).
        m.setattr(builtins, "open", _refuse("open"))
        m.setattr(io, "open", _refuse("io.open"))
        for name in ("open", "read_text", "read_bytes"):
            m.setattr(Path, name, _refuse(f"Path.{name}"))
        yield


def test_planning_is_pure(the_world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    observed = the_world.observe()
    first = the_world.plan()
    with no_side_effects(monkeypatch):
        plans = [the_world.proc.plan(the_world.inputs, observed, "contract") for _ in "ab"]
    assert plans[0] == plans[1] == first
    assert not first.empty, "the world should start with something to change"
    assert the_world.proc.comparable(the_world.observe()) == the_world.proc.comparable(observed)


def test_every_runbook_plans_with_make_plan(the_world: World) -> None:
    """One planner name and signature: the module's make_plan(inputs, observed, host),
    which the procedure's plan is."""
    import inspect
    import sys

    module = sys.modules[type(the_world.proc).__module__]
    params = inspect.signature(module.make_plan).parameters.values()
    assert [p.kind for p in params] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * 3
    assert list(inspect.signature(module.make_plan).parameters)[2] == "host"
    observed = the_world.observe()
    planned = module.make_plan(the_world.inputs, observed, "contract")
    assert planned == the_world.proc.plan(the_world.inputs, observed, "contract")


def test_a_second_apply_is_unchanged(the_world: World) -> None:
    plan = the_world.plan()
    result = the_world.apply(plan)
    assert result.status == "changed" and not result.failed, result.summary
    again = the_world.plan()
    assert again.empty, [c.summary for c in again.changes]
    second = the_world.apply(again)
    assert second.status == "unchanged" and not second.failed, second.summary
    assert second.changes == []


def test_a_saved_plan_applies_once_then_is_stale(the_world: World) -> None:
    """The fingerprint of what observe saw is the same for the same host (else every
    saved plan would be refused) and moves when the host changes (else a stale one
    would be applied)."""
    first, second = the_world.plan(), the_world.plan()
    assert first.fingerprint and first.fingerprint == second.fingerprint
    saved = dataclasses.replace(first, saved="plan #7")
    result = the_world.apply(saved)
    assert result.status == "changed" and not result.failed, result.summary
    with pytest.raises(StalePlan, match=r"^stale: .* changed since plan #7 .*; plan again$"):
        the_world.apply(saved)


def _actions(w: World) -> list[Action]:
    """The actions an apply would run now (built, none run)."""
    with w.opened() as session:
        observed = w.proc.observe(w.inputs, session)
        plan = w.proc.plan(w.inputs, observed, w.host)
        from opslib.core.changes import Result

        return w.proc.steps(Transaction(w.inputs, observed, plan, session, Result("x", "h", "ok")))


class Injected(OpsError):
    pass


def test_a_failure_at_step_k_undoes_the_steps_before_last_first(
    world_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with made(world_name, tmp_path / "count") as w:
        count = len(_actions(w))
    assert count >= 1, "the world should start with something to change"
    for k in range(count):  # each in a world of its own, as it was at the start
        with made(world_name, tmp_path / str(k)) as w:
            _fail_at(w, k, monkeypatch)


def _fail_at(w: World, k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    start = w.proc.comparable(w.observe())
    real_steps = w.proc.steps
    built: list[Action] = []

    def failing_at_k(
        tx: Transaction[Any, Any, Any], k: int = k, built: list[Action] = built
    ) -> list[Action]:
        actions = real_steps(tx)
        built[:] = actions

        def injected(_detail: list[str]) -> None:
            raise Injected(f"injected at step {k + 1}")

        actions[k] = dataclasses.replace(actions[k], do=injected)
        return actions

    monkeypatch.setattr(w.proc, "steps", failing_at_k)
    result = w.apply()
    monkeypatch.undo()
    assert result.failed and result.status in ("rolled back", "failed"), result.summary
    assert f"injected at step {k + 1}" in result.summary
    names = [s.name for s in result.steps]
    if any(a.commits for a in built[: k + 1]):
        # Past a point of no return nothing is undone: the result says what is left.
        assert result.status == "failed"
        assert not {a.undo_step for a in built} & set(names), names
        return
    undone = [a for a in built[: k + 1] if a.undo and (a is not built[k] or a.partial)]
    undone = sorted(reversed(undone), key=lambda a: a.undo_order)
    at = names.index(built[k].name) + 1
    assert names[at : at + len(undone)] == [a.undo_step for a in undone], (k, names)
    assert all(s.ok for s in result.steps[at : at + len(undone)]), result.summary
    assert w.proc.comparable(w.observe()) == start, f"after a failure at step {k + 1}"


# -- verification is a step of the transaction: what a failing check leaves -------------


def test_a_failing_check_of_the_tunnel_itself_rolls_the_apply_back(tmp_path: Path) -> None:
    """ipv6-tunnel's 'verify TUNNEL' (link up, address, default route): undoes it all."""
    with made("ipv6-tunnel", tmp_path) as w, pytest.MonkeyPatch.context() as m:
        start = w.proc.comparable(w.observe())
        down = Check("he-ipv6 up", "fail", "down")
        m.setattr(tunnels, "link_health", lambda **_kw: [down])
        result = w.apply()
        assert result.status == "rolled back", result.summary
        assert "failing: he-ipv6 up" in result.summary
        assert w.proc.comparable(w.observe()) == start


def test_a_failing_check_beyond_the_host_keeps_the_tunnel(tmp_path: Path) -> None:
    """ipv6-tunnel's 'health beyond this host' (broker, MTU, forwarding, routed /64):
    undoes nothing; the result fails by its checks."""
    with made("ipv6-tunnel", tmp_path) as w, pytest.MonkeyPatch.context() as m:
        silent = Check("broker 2001:db8:1::1 answers ping6", "fail", "no answer")
        m.setattr(tunnels, "path_health", lambda **_kw: [silent])
        result = w.apply()
        assert result.status == "changed" and result.failed, result.summary
        assert result.summary.endswith("failing: broker 2001:db8:1::1 answers ping6")
        assert w.plan().empty  # the tunnel is kept


def test_a_guest_that_does_not_come_back_keeps_the_network(tmp_path: Path) -> None:
    """nat-bridge-ipv6's wait for the guests is a point of no return: a failing check
    undoes nothing (the network keeps the prefix), the result is failed and names it."""
    from opslib.host.libvirt import guest_taps

    with made("nat-bridge-ipv6", tmp_path) as w, pytest.MonkeyPatch.context() as m:
        lost = Check("vm-off answers on 2001:db8:2::5", "fail", "no answer")
        m.setattr(guest_taps, "checks", lambda *_a, **_kw: [lost])
        result = w.apply()
        assert result.status == "failed", result.summary
        assert [c.action for c in result.changes] == ["update", "restart"]
        assert "failing: vm-off answers on 2001:db8:2::5" in result.summary
        assert not [s for s in result.steps if s.name.startswith("undo")], result.steps
        assert w.plan().empty  # the network keeps its prefix
