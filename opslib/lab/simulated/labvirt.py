"""The simulated host's libvirt: its daemons, NAT network and guests, and their leases."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

from opslib.core.errors import LibvirtError, OpsError
from opslib.lab.config import Lab
from opslib.lab.processes import Clock, alive, host_exec, wait_until
from opslib.lab.simulated import image as guest_image
from opslib.lab.simulated.guestconsole import RENEW_LEASE, guest_shell
from opslib.lab.simulated.guestxml import guest_xml, nat_network_xml

LEASE_TIMEOUT = 75.0


@contextlib.contextmanager
def connect(lab: Lab) -> Iterator[Any]:
    """A connection to the lab's own libvirtd, closed afterwards: opsbook's one way to
    connect (:func:`opslib.host.libvirt.virt.connect`), with the lab's hint when it fails."""
    from opslib.host.libvirt import virt

    with contextlib.ExitStack() as stack:
        try:
            conn = stack.enter_context(virt.connect(lab.uri))
        except LibvirtError as exc:
            raise LibvirtError(f"{exc}; is the lab up (opsbook lab up)?", exc.code) from exc
        yield conn


def start_daemons(lab: Lab) -> None:
    if not alive(lab, lab.virtlogd_pid_file):
        lab.virtlogd_pid_file.unlink(missing_ok=True)
        host_exec(lab, ["virtlogd", "-d", "-p", str(lab.virtlogd_pid_file)])
    if not alive(lab, lab.libvirtd_pid_file):
        lab.libvirtd_pid_file.unlink(missing_ok=True)
        host_exec(lab, ["libvirtd", "-d", "-p", str(lab.libvirtd_pid_file)])
    socket_path = lab.run_dir / "libvirt-sock"

    def answers() -> bool:
        if not socket_path.exists():
            return False
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(str(socket_path))
            except OSError:
                return False
        return True

    wait_until(
        answers, 20, f"the lab's libvirtd ({socket_path}); see {lab.log_dir}/libvirt/libvirtd.log"
    )


def nat_net(conn: Any, lab: Lab) -> Any:
    """The lab's NAT network: by its name, or by its bridge once a runbook renamed it
    (nat-bridge-ipv6 turns the stock `default` into `nat-bridge`, as the wiki has it)."""
    import libvirt

    try:
        return conn.networkLookupByName(lab.nat_network)
    except libvirt.libvirtError:
        for net in conn.listAllNetworks():
            with contextlib.suppress(libvirt.libvirtError):
                if net.bridgeName() == lab.nat_bridge:
                    return net
        raise


def ensure_nat_network(lab: Lab) -> None:
    import libvirt

    with connect(lab) as conn:
        try:
            try:
                net = nat_net(conn, lab)
            except libvirt.libvirtError:
                net = conn.networkDefineXML(nat_network_xml(lab))
            if not net.autostart():
                net.setAutostart(True)
            if not net.isActive():
                net.create()
        except libvirt.libvirtError as exc:
            raise LibvirtError(
                f"NAT network {lab.nat_network}: {exc}", exc.get_error_code()
            ) from exc


def domain_type(lab: Lab) -> str:
    """``kvm`` when a KVM guest boots here, else ``qemu`` (TCG); $OPSBOOK_LAB_DOMAIN_TYPE wins."""
    forced = os.environ.get("OPSBOOK_LAB_DOMAIN_TYPE", "")
    if forced in ("kvm", "qemu"):
        return forced
    return "kvm" if guest_image.kvm_works(lab.image_dir) else "qemu"


def start_guests(lab: Lab, dtype: str, clock: Clock) -> set[str]:
    """Define and start the guests; the NAT MACs of those that were running already."""
    import libvirt

    with connect(lab) as conn:
        try:
            with clock.step(f"guests defined and started ({dtype})"):
                domains = []
                for guest in lab.guests:
                    try:
                        dom = conn.lookupByName(guest.name)
                    except libvirt.libvirtError:
                        dom = conn.defineXML(guest_xml(lab, guest, dtype))
                    domains.append(dom)

                # guests already running renew only at their lease's T1 (see leased())
                running = {
                    g.nat_mac for g, d in zip(lab.guests, domains, strict=True) if d.isActive()
                }

                def start(dom: Any) -> None:
                    if not dom.isActive():
                        dom.create()

                with concurrent.futures.ThreadPoolExecutor(len(domains)) as pool:
                    for future in [pool.submit(start, d) for d in domains]:
                        future.result()
        except libvirt.libvirtError as exc:
            raise LibvirtError(f"lab guests: {exc}", exc.get_error_code()) from exc
    return running


def wait_leases(lab: Lab, running: set[str], clock: Clock) -> None:
    """Until every guest holds a lease on the NAT network (``running``: the guests that
    ran before this ``up``, asked to renew at once)."""
    import libvirt

    with connect(lab) as conn:
        try:
            with clock.step("every guest holds a NAT lease"):
                wanted = {g.nat_mac for g in lab.guests}
                net = nat_net(conn, lab)
                since, nudged = time.monotonic(), False

                def leased() -> bool:
                    nonlocal nudged
                    have = {lease["mac"] for lease in net.DHCPLeases()}
                    missing = wanted - have
                    if (
                        missing
                        and not nudged
                        and (missing <= running or time.monotonic() - since > 20)
                    ):
                        # A renamed or restarted network forgets its leases; a running
                        # guest would only renew at its next T1: ask it to renew now (at
                        # once when it was running before this `up`, else after its boot).
                        nudged = True
                        for guest in lab.guests:
                            if guest.nat_mac not in have:
                                with contextlib.suppress(OpsError):
                                    guest_shell(lab, guest.name, RENEW_LEASE, timeout=5)
                    return wanted <= have

                wait_until(
                    leased,
                    LEASE_TIMEOUT,
                    f"guest leases on {lab.nat_network}; see {lab.log_dir}",
                    0.5,
                )
        except libvirt.libvirtError as exc:
            raise LibvirtError(f"lab guests: {exc}", exc.get_error_code()) from exc


def destroy_all(lab: Lab) -> None:
    """Destroy the guests (in parallel: each takes a second or two) and the networks."""

    with contextlib.ExitStack() as stack:
        try:
            conn = stack.enter_context(connect(lab))
        except LibvirtError:
            return  # ending the processes comes next anyway
        _destroy(conn)


def _destroy(conn: Any) -> None:
    import libvirt

    try:
        domains = [d for d in conn.listAllDomains() if d.isActive()]
        if domains:
            with concurrent.futures.ThreadPoolExecutor(len(domains)) as pool:
                for future in [pool.submit(d.destroy) for d in domains]:
                    with contextlib.suppress(libvirt.libvirtError):
                        future.result()
        for net in conn.listAllNetworks():
            if net.isActive():
                with contextlib.suppress(libvirt.libvirtError):
                    net.destroy()
    except libvirt.libvirtError:
        pass  # best effort, see destroy_all


def nat_leases(lab: Lab) -> dict[str, str]:
    """MAC -> IPv4 of the NAT network's DHCP leases, as libvirt reports them."""
    import libvirt

    with connect(lab) as conn:
        try:
            net = nat_net(conn, lab)
            return {lease["mac"]: lease["ipaddr"] for lease in net.DHCPLeases()}
        except libvirt.libvirtError as exc:
            raise LibvirtError(f"leases of {lab.nat_network}: {exc}", exc.get_error_code()) from exc
