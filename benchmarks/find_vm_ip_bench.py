"""Benchmark: find-vm-ip for all VMs against the wiki's own shell pipeline.

Run on demand, as root, against a lab that is up (``opsbook lab up``)::

    OPSBOOK_LAB_PREFIX=ob .venv/bin/python benchmarks/find_vm_ip_bench.py

Both sides talk to the same real daemons: the lab's libvirtd (10, 100, 1000 extra
domains defined, not started, one NIC each on the NAT network) and the kernel's
neighbour table of the lab's NAT bridge in the host netns (filled to 1,000 and
10,000 entries with pyroute2: permanent ones, plus a few stale; one entry per
benchmark VM carries its MAC, so both sides have something to find). The
pipeline is the wiki's, looped over the same VMs inside the host netns::

    ip neighbour | grep -Ff <(virsh dumpxml $VM | xpath -q -e '//mac/@address' \\
        | cut -d '"' -f 2) | cut -d ' ' -f 1

It costs tens of ms per VM, so with more than ``--sample`` VMs it is timed on an
evenly spread sample and extrapolated linearly (printed as "~"). Everything the
benchmark adds is removed at the end (domains named ``bench-*``, neighbours it added).

Last, the one-VM lookup with the probe on a running lab guest that answers (target
< 300 ms: the probe ends once the guest answered, not after its 1 s deadline);
``--probe-only`` times just that. A timed run that fails (an error, a guest that
stays silent, nothing found) prints no figure: the message goes to stderr, exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import ipaddress
import shlex
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from pyroute2 import IPRoute

from opslib import rtnl, virt
from opslib.errors import OpsError
from opslib.lab.config import Lab
from opslib.procedures import find_vm_ip

NUD_PERMANENT, NUD_STALE = 0x80, 0x04
STALE_ENTRIES = 100  # stale entries count against the kernel's gc thresholds; keep few
NEIGH_BASE = int(ipaddress.IPv6Address("2001:db8:be::"))


def bench_mac(i: int) -> str:
    return f"52:54:00:be:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


def filler_mac(i: int) -> str:
    return f"02:be:ee:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


def domain_xml(i: int, network: str) -> str:
    return f"""<domain type='qemu'>
  <name>bench-{i:05d}</name>
  <memory unit='MiB'>32</memory>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <interface type='network'>
      <mac address='{bench_mac(i)}'/>
      <source network='{network}'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>"""


class Bench:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.bridge = lab.nat_bridge
        self.ifindex = rtnl.ifindex(lab.host_ns, self.bridge)
        self.domains = 0
        self.neighbours = 0  # entries we added: index i -> 2001:db8:be::i

    # -- setup -----------------------------------------------------------------
    def set_domains(self, n: int) -> None:
        with virt.connect(self.lab.uri) as conn:
            for i in range(self.domains, n):
                conn.defineXML(domain_xml(i, self.lab.nat_network))
        self.domains = max(self.domains, n)

    def set_neighbours(self, n: int) -> None:
        with IPRoute(netns=self.lab.host_ns, flags=0) as ip:
            for i in range(self.neighbours, n):
                mac = bench_mac(i) if i < 1000 else filler_mac(i)
                state = NUD_STALE if i % (n // STALE_ENTRIES or 1) == 1 else NUD_PERMANENT
                ip.neigh(
                    "replace",
                    dst=str(ipaddress.IPv6Address(NEIGH_BASE + i)),
                    lladdr=mac,
                    ifindex=self.ifindex,
                    state=state,
                    family=socket.AF_INET6,
                )
            for i in range(n, self.neighbours):
                self._del(ip, i)
        self.neighbours = n

    def _del(self, ip: IPRoute, i: int) -> None:
        # Already gone is fine (a stale entry the kernel collected).
        with contextlib.suppress(Exception):
            ip.neigh(
                "del",
                dst=str(ipaddress.IPv6Address(NEIGH_BASE + i)),
                ifindex=self.ifindex,
                family=socket.AF_INET6,
            )

    def cleanup(self) -> None:
        with IPRoute(netns=self.lab.host_ns, flags=0) as ip:
            for i in range(self.neighbours):
                self._del(ip, i)
        with virt.connect(self.lab.uri) as conn:
            for dom in conn.listAllDomains():
                if dom.name().startswith("bench-"):
                    dom.undefine()

    def table_size(self) -> int:
        return len(rtnl.neighbours_on(self.lab.host_ns, self.ifindex))

    # -- the two sides ---------------------------------------------------------
    def ours(self, vm: str = "") -> list[find_vm_ip.VmAddresses]:
        return find_vm_ip.find(libvirt_uri=self.lab.uri, netns=self.lab.host_ns, vm=vm, agent=False)

    def pipeline(self, vms: list[str]) -> dict[str, set[str]]:
        """The wiki's command per VM, in the host netns; each VM's output lines."""
        uri = shlex.quote(self.lab.uri)
        script = (
            "for VM in " + " ".join(shlex.quote(v) for v in vms) + '; do echo "@@ $VM"; '
            "ip neighbour | grep -Ff <(virsh -c " + uri + " dumpxml $VM "
            "| xpath -q -e '//mac/@address' | cut -d '\"' -f 2) | cut -d ' ' -f 1; done"
        )
        out = subprocess.run(
            ["ip", "netns", "exec", self.lab.host_ns, "bash", "-c", script],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        found: dict[str, set[str]] = {}
        current = ""
        for line in out.splitlines():
            if line.startswith("@@ "):
                current = line[3:]
                found[current] = set()
            elif line.strip():
                found[current].add(line.strip())
        return found


class BenchFailed(Exception):
    """A timed run did not do what it measures: its figure would mean nothing."""


def probe_lookup(lab: Lab, vm: str) -> tuple[float, float, list[str]]:
    """One find-vm-ip of ``vm`` with the probe: (seconds, the probe's seconds, addresses).

    Fails unless every address the probe awaited answered and a neighbour entry
    of the guest is found afterwards: a silent guest would time the deadline.
    """
    t0 = time.perf_counter()
    obs = find_vm_ip.observe(libvirt_uri=lab.uri, netns=lab.host_ns, vm=vm, probe=True,
                             agent=False)  # fmt: skip
    [found] = find_vm_ip.assemble(obs)
    seconds = time.perf_counter() - t0
    if found.state != "running":
        raise BenchFailed(f"{vm} is {found.state}; bring the lab up: opsbook lab up")
    silent = [s for p in obs.probes for s in p.silent]
    if not obs.probes or silent:
        raise BenchFailed(f"the probe of {vm} waited for silent {silent or 'nothing'}")
    neighbours = [ip for nic in found.nics for ip in nic.ips(sources=["neighbour"])]
    if not neighbours:
        raise BenchFailed(f"no neighbour entry of {vm} after the probe")
    return seconds, obs.probe_seconds, neighbours


def probe_line(lab: Lab, repeat: int = 7) -> str:
    vm = lab.guests[0].name
    runs = [probe_lookup(lab, vm) for _ in range(repeat)]
    total = statistics.median(r[0] for r in runs)
    probe = statistics.median(r[1] for r in runs)
    return (
        f"one VM ({vm}) with the probe, answering: {total * 1000:.1f} ms "
        f"(median of {repeat}; target < 300 ms), of which the probe {probe * 1000:.1f} ms "
        f"(deadline {find_vm_ip.PROBE_WAIT * 1000:.0f} ms for silent addresses); "
        f"found {runs[-1][2]}"
    )


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default=None, help="lab prefix (default $OPSBOOK_LAB_PREFIX)")
    parser.add_argument("--vms", default="10,100,1000")
    parser.add_argument("--neighbours", default="1000,10000")
    parser.add_argument("--sample", type=int, default=25, help="pipeline VMs timed at most")
    parser.add_argument("--probe-only", action="store_true", help="only the probe lookup")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (BenchFailed, OpsError) as exc:
        print(f"benchmark failed, no figure: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    vm_counts = [int(x) for x in args.vms.split(",")]
    neigh_counts = [int(x) for x in args.neighbours.split(",")]

    bench = Bench(Lab.from_env(args.prefix))
    print(f"lab {bench.lab.prefix}: libvirt {bench.lab.uri}, bridge {bench.bridge} "
          f"in netns {bench.lab.host_ns}")  # fmt: skip
    if args.probe_only:
        print(probe_line(bench.lab))
        return 0
    header = (
        f"{'VMs':>6} {'neigh':>7} {'ours ms':>9} {'pipeline ms':>13} {'pipe/VM ms':>10} "
        f"{'ratio':>8}  agree"
    )
    print(header)
    print("-" * len(header))
    try:
        for n_vms in vm_counts:
            bench.set_domains(n_vms)
            for n_neigh in neigh_counts:
                bench.set_neighbours(n_neigh)
                ours_s, vms = timed(bench.ours, 3)
                assert isinstance(vms, list)
                names = [v.name for v in vms]
                step = max(1, len(names) // args.sample)
                sample = names[::step][: args.sample]
                pipe_s, piped = timed(functools.partial(bench.pipeline, sample), 1)
                assert isinstance(piped, dict)
                per_vm = pipe_s / len(sample)
                pipe_total = per_vm * len(names)
                approx = "~" if len(sample) < len(names) else " "
                # Same answers? The pipeline prints every neighbour IP of the VM's MACs.
                by_name = {v.name: v for v in vms}
                agree = all(
                    piped.get(n, set())
                    == {ip for nic in by_name[n].nics for ip in nic.ips(sources=["neighbour"])}
                    for n in sample
                )
                print(
                    f"{len(names):>6} {bench.table_size():>7} {ours_s * 1000:>9.1f} "
                    f"{approx}{pipe_total * 1000:>12.0f} {per_vm * 1000:>10.1f} "
                    f"{pipe_total / ours_s:>7.0f}x  {'yes' if agree else 'NO'}"
                    + (f" (pipeline timed on {len(sample)} VMs)" if approx == "~" else "")
                )
        one = "bench-00002"  # its neighbour entry is permanent (stale ones may be collected)
        bench.set_neighbours(max(neigh_counts))
        one_s, found = timed(lambda: bench.ours(one), 7)
        assert isinstance(found, list)
        if not found[0].ips():
            raise BenchFailed(f"{one}: its neighbour entry was not found")
        pipe_one, _ = timed(lambda: bench.pipeline([one]), 3)
        print()
        print(
            f"one VM ({one}) with {bench.table_size()} neighbours on {bench.bridge}: "
            f"ours {one_s * 1000:.1f} ms (median of 7; target < 50 ms), "
            f"pipeline {pipe_one * 1000:.0f} ms, ratio {pipe_one / one_s:.0f}x; "
            f"found {found[0].ips()}"
        )
        print(probe_line(bench.lab))
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
