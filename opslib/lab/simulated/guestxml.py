"""The libvirt XML of the lab's NAT network and of its tiny guests."""

from __future__ import annotations

from pathlib import Path

from opslib.lab.config import Guest, Lab

# kernel arguments that cut a TCG boot by about a quarter (no i8042 probing, no
# timer checks, no Spectre mitigations in a throwaway guest)
FAST_BOOT = (
    "mitigations=off nokaslr tsc=reliable no_timer_check i8042.noaux i8042.nokbd i8042.nopnp"
)


def nat_network_xml(lab: Lab) -> str:
    """libvirt's stock NAT network, IPv4 only, on a documentation range."""
    start, end = lab.nat_dhcp_range
    return f"""<network>
  <name>{lab.nat_network}</name>
  <forward mode='nat'/>
  <bridge name='{lab.nat_bridge}' stp='on' delay='0'/>
  <mac address='{lab.nat_bridge_mac}'/>
  <ip address='{lab.nat_ipv4}' prefix='{lab.nat_prefixlen}'>
    <dhcp>
      <range start='{start}' end='{end}'/>
    </dhcp>
  </ip>
</network>
"""


def guest_xml(
    lab: Lab,
    guest: Guest,
    domain_type: str,
    *,
    guest_dir: Path | None = None,
    console: Path | None = None,
    shell: Path | None = None,
) -> str:
    """A tiny VM: direct kernel boot, one NIC on the NAT network, two serial ports.

    ACPI stays on: NICs are hot-plugged later (netreg-attach) through ACPI PCI hotplug.
    ``guest_dir`` (kernel + initrd), ``console`` and ``shell`` default to the simulated
    host's paths; a booted host names paths of its own (:mod:`opslib.lab.booted.guests`).
    """
    guest_dir = guest_dir or lab.guest_dir
    console = console or lab.console_log(guest.name)
    shell = shell or lab.shell_socket(guest.name)
    cmdline = (
        f"console=ttyS0 panic=-1 quiet {FAST_BOOT} opsbook.name={guest.name} "
        f"opsbook.internet={lab.internet_ipv6}"
    )
    return f"""<domain type='{domain_type}'>
  <name>{guest.name}</name>
  <memory unit='MiB'>{lab.guest_memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{guest_dir}/vmlinuz</kernel>
    <initrd>{guest_dir}/initrd.gz</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='network'>
      <source network='{lab.nat_network}'/>
      <mac address='{guest.nat_mac}'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='{console}'/>
      <target port='0'/>
    </serial>
    <serial type='unix'>
      <source mode='bind' path='{shell}'/>
      <target port='1'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""
