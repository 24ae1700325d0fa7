"""netreg-attach without root: MAC rules, planning and the diff, on libvirt's test driver."""

from __future__ import annotations

from pathlib import Path

import pytest

from opslib.core.changes import Plan
from opslib.core.errors import InputError, UnknownName
from opslib.procedures import netreg_attach as na

NODE = """<node>
  <network>
    <name>forward-bridge</name>
    <forward mode='bridge'/>
    <bridge name='br0'/>
  </network>
  <domain type='test'>
    <name>vm-netreg</name>
    <memory>65536</memory>
    <os><type>hvm</type></os>
    <devices>
      <interface type='network'>
        <mac address='52:54:00:0b:00:03'/>
        <source network='default'/>
      </interface>
    </devices>
  </domain>
  <domain type='test'>
    <name>other</name>
    <memory>65536</memory>
    <os><type>hvm</type></os>
    <devices>
      <interface type='network'>
        <mac address='52:54:00:0b:00:09'/>
        <source network='forward-bridge'/>
      </interface>
    </devices>
  </domain>
</node>
"""
MAC = "52:54:00:0b:01:03"


@pytest.fixture
def uri(tmp_path: Path) -> str:
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    return f"test://{node}"


def plan(uri: str, **kw: str) -> Plan:
    args = {"host": "t", "libvirt_uri": uri, "vm": "vm-netreg", "mac": MAC, **kw}
    return na.plan(**args)


def test_plan_shows_the_nic_as_a_diff_of_the_definition(uri: str) -> None:
    p = plan(uri, mac=MAC.upper())
    assert [c.target for c in p.changes] == ["domain:vm-netreg", "domain:vm-netreg:live"]
    added = [line for line in p.diff.splitlines() if line.startswith("+") and "+++" not in line]
    assert added == [
        '+    <interface type="network">',
        f'+      <mac address="{MAC}"/>',
        '+      <source network="forward-bridge"/>',
        '+      <model type="virtio"/>',
        "+    </interface>",
    ]


@pytest.mark.parametrize(
    ("mac", "says"),
    [
        ("yo:ug:ot:fr:om:nr", "placeholder"),
        ("00:00:00:00:00:00", "not a usable MAC"),
        ("01:00:5e:00:00:01", "multicast"),
        ("ff:ff:ff:ff:ff:ff", "multicast"),
        ("52:54:00:0b:01", "not a MAC address"),
        ("52:54:00:0b:00:09", "already used by other"),
    ],
)
def test_bad_macs_get_one_line_and_no_plan(uri: str, mac: str, says: str) -> None:
    with pytest.raises(InputError) as exc:
        plan(uri, mac=mac)
    assert says in str(exc.value)
    assert "\n" not in str(exc.value)
    assert exc.value.exit_code == 2


def test_the_vms_own_mac_on_another_network_is_refused(uri: str) -> None:
    with pytest.raises(InputError, match="already has MAC 52:54:00:0b:00:03 on default"):
        plan(uri, mac="52:54:00:0b:00:03")


def test_missing_network_and_unknown_vm(uri: str) -> None:
    with pytest.raises(InputError, match="run the forward-bridge runbook first"):
        plan(uri, network="nope")
    with pytest.raises(UnknownName, match="did you mean vm-netreg"):
        plan(uri, vm="vm-netrge")


def test_virt_install_mode_gives_the_exact_argument(uri: str) -> None:
    p = plan(uri, vm="", mode="virt-install")
    assert p.empty
    result = na.apply(p, libvirt_uri=uri)
    assert result.summary == f"virt-install ... --network network=forward-bridge,mac={MAC}"
    with pytest.raises(InputError, match="already used by other"):
        plan(uri, vm="", mode="virt-install", mac="52:54:00:0b:00:09")
