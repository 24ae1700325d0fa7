"""Benchmark: find-vm-ip for all VMs against the wiki's own shell pipeline.

Runs on a configured simulated host (``STATE``), as root::

    .venv/bin/opsbook lab --prefix ob up --simulated --configured
    .venv/bin/python benchmarks/find_vm_ip_bench.py --prefix ob   # or $OPSBOOK_LAB_PREFIX

It checks that state first (:func:`check_state`: the simulated host's libvirtd, its NAT
network on virbr0 carrying IPv6, the guests running) and names what is missing in one
line, exit 1. A plain ``lab up`` boots daemon1 only; a bare ``--simulated`` leaves virbr0
without IPv6, so the IPv6 neighbours below cannot be added.

Both sides talk to the same real daemons: the simulated host's libvirtd (10, 100, 1000
extra domains defined, not started, one NIC each on the NAT network under its real name:
``nat-bridge`` once nat-bridge-ipv6 renamed libvirt's ``default``) and the kernel's
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
``--probe-only`` times just that. Each row's two sides must find, for every VM timed
by the pipeline, exactly the neighbour entry the benchmark gave it; a row whose sides
disagree fails the run. A timed run that fails (an error, a disagreement, a guest that
stays silent, nothing found) prints no figure: the message goes to stderr, exit 1; the
figures are printed only once every run succeeded.
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
from dataclasses import dataclass
from pathlib import Path

import libvirt
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

sys.path.insert(0, str(Path(__file__).resolve().parent))

import labstate

from opslib.core.errors import OpsError
from opslib.host.kernel import rtnl
from opslib.host.libvirt import virt
from opslib.lab.config import Lab
from opslib.procedures import find_vm_ip

STATE = "a configured simulated host: opsbook lab up --simulated --configured"
NUD_PERMANENT, NUD_STALE = 0x80, 0x04
STALE_ENTRIES = 100  # stale entries count against the kernel's gc thresholds; keep few
NEIGH_BASE = int(ipaddress.IPv6Address("2001:db8:be::"))
ONE = 2  # the one-VM lookup's VM, bench-00002: its entry is permanent in every round


def check_state(lab: Lab) -> labstate.SimulatedHost:
    """The simulated host configured (StateMissing otherwise): its NAT network's name."""
    return labstate.configured_simulated_host(lab)


def bench_mac(i: int) -> str:
    return f"52:54:00:be:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


def filler_mac(i: int) -> str:
    return f"02:be:ee:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


def neigh_ip(i: int) -> str:
    return str(ipaddress.IPv6Address(NEIGH_BASE + i))


def bench_name(i: int) -> str:
    return f"bench-{i:05d}"


def domain_xml(i: int, network: str) -> str:
    return f"""<domain type='qemu'>
  <name>{bench_name(i)}</name>
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


class BenchFailed(Exception):
    """A timed run did not do what it measures: its figure would mean nothing."""


class Bench:
    def __init__(self, lab: Lab, host: labstate.SimulatedHost) -> None:
        self.lab = lab
        self.network = host.network  # the real name (nat-bridge), never lab.nat_network
        self.bridge = host.bridge
        self.ifindex = rtnl.ifindex(lab.host_ns, self.bridge)
        self.domains = 0
        self.neighbours = 0  # entries we added: index i -> 2001:db8:be::i
        self.stale: set[int] = set()  # added as stale: the kernel may collect them

    # -- setup -----------------------------------------------------------------
    def set_domains(self, n: int) -> None:
        try:
            with virt.connect(self.lab.uri) as conn:
                for i in range(self.domains, n):
                    conn.defineXML(domain_xml(i, self.network))
        except libvirt.libvirtError as exc:
            raise BenchFailed(f"defining {bench_name(self.domains)}..: {exc}") from exc
        self.domains = max(self.domains, n)

    def set_neighbours(self, n: int) -> None:
        try:
            with IPRoute(netns=self.lab.host_ns, flags=0) as ip:
                for i in range(self.neighbours, n):
                    stale = i % (n // STALE_ENTRIES or 1) == 1
                    ip.neigh(
                        "replace",
                        dst=neigh_ip(i),
                        lladdr=bench_mac(i) if i < 1000 else filler_mac(i),
                        ifindex=self.ifindex,
                        state=NUD_STALE if stale else NUD_PERMANENT,
                        family=socket.AF_INET6,
                    )
                    if stale:
                        self.stale.add(i)
                    else:
                        self.stale.discard(i)
                for i in range(n, self.neighbours):
                    self._del(ip, i)
                    self.stale.discard(i)
        except NetlinkError as exc:
            raise BenchFailed(
                f"adding IPv6 neighbours on {self.bridge} in {self.lab.host_ns}: {exc}"
            ) from exc
        self.neighbours = n

    def _del(self, ip: IPRoute, i: int) -> None:
        # Already gone is fine (a stale entry the kernel collected).
        with contextlib.suppress(Exception):
            ip.neigh("del", dst=neigh_ip(i), ifindex=self.ifindex, family=socket.AF_INET6)

    def cleanup(self) -> None:
        """Remove what the benchmark added (also what an interrupted run left)."""
        with IPRoute(netns=self.lab.host_ns, flags=0) as ip:
            for i in range(self.neighbours):
                self._del(ip, i)
        with virt.connect(self.lab.uri) as conn:
            for dom in conn.listAllDomains():
                if dom.name().startswith("bench-"):
                    dom.undefine()

    def table_size(self) -> int:
        return len(rtnl.neighbours_on(self.lab.host_ns, self.ifindex))

    def steady(self) -> list[str]:
        """The benchmark's VMs whose neighbour entry stays put (permanent, or none)."""
        return [bench_name(i) for i in range(self.domains) if i not in self.stale]

    def expected(self, name: str) -> set[str]:
        """What both sides must find for benchmark VM ``name``: the entry it was given."""
        i = int(name.removeprefix("bench-"))
        return {neigh_ip(i)} if i < min(self.neighbours, 1000) else set()

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
        argv = ["ip", "netns", "exec", self.lab.host_ns, "bash", "-c", script]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            why = (proc.stderr.strip() or "no output").splitlines()[-1]
            raise BenchFailed(f"the wiki's pipeline exited {proc.returncode}: {why}")
        found: dict[str, set[str]] = {}
        current = ""
        for line in proc.stdout.splitlines():
            if line.startswith("@@ "):
                current = line[3:]
                found[current] = set()
            elif line.strip():
                found[current].add(line.strip())
        return found


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
        raise BenchFailed(f"{vm} is {found.state}; {STATE}")
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


@dataclass(frozen=True)
class Row:
    vms: int
    neighbours: int
    ours_s: float
    per_vm: float  # the pipeline's seconds per VM
    sampled: int  # VMs the pipeline was timed on

    def line(self) -> str:
        pipe_total = self.per_vm * self.vms
        approx = "~" if self.sampled < self.vms else " "
        return (
            f"{self.vms:>6} {self.neighbours:>7} {self.ours_s * 1000:>9.1f} "
            f"{approx}{pipe_total * 1000:>12.0f} {self.per_vm * 1000:>10.1f} "
            f"{pipe_total / self.ours_s:>7.0f}x"
            + (f"  (pipeline timed on {self.sampled} VMs)" if approx == "~" else "")
        )


def measure(bench: Bench, sample_max: int) -> Row:
    """One row: opsbook on every VM, the pipeline on an even sample of the benchmark's
    steady VMs; BenchFailed unless both sides find, for each VM sampled, exactly the
    entry it was given (agreeing on nothing, with no bridge found say, is no agreement)."""
    ours_s, vms = timed(bench.ours, 3)
    assert isinstance(vms, list)
    steady = bench.steady()
    step = max(1, len(steady) // sample_max)
    sample = steady[::step][:sample_max]
    if not sample:
        raise BenchFailed("no benchmark VM to time the pipeline on")
    pipe_s, piped = timed(functools.partial(bench.pipeline, sample), 1)
    assert isinstance(piped, dict)
    by_name = {v.name: v for v in vms}
    wrong = []
    for name in sample:
        want = bench.expected(name)
        vm = by_name.get(name)
        mine = {ip for nic in vm.nics for ip in nic.ips(sources=["neighbour"])} if vm else None
        theirs = piped.get(name, set())
        if mine != want or theirs != want:
            wrong.append(
                f"{name}: opsbook {sorted(mine) if mine is not None else 'has no such VM'}, "
                f"pipeline {sorted(theirs)}, given {sorted(want)}"
            )
    size = bench.table_size()
    if wrong:
        raise BenchFailed(
            f"the two sides disagree on {len(wrong)} of {len(sample)} VMs ({len(vms)} VMs, "
            f"{size} neighbours on {bench.bridge}, network {bench.network}); first {wrong[0]}"
        )
    return Row(len(vms), size, ours_s, pipe_s / len(sample), len(sample))


def one_vm_line(bench: Bench, n_neigh: int) -> str:
    one = bench_name(ONE)
    bench.set_neighbours(n_neigh)
    one_s, found = timed(lambda: bench.ours(one), 7)
    assert isinstance(found, list)
    got = {ip for nic in found[0].nics for ip in nic.ips(sources=["neighbour"])}
    if got != bench.expected(one):
        raise BenchFailed(f"{one}: found {sorted(got)}, given {sorted(bench.expected(one))}")
    pipe_one, piped = timed(lambda: bench.pipeline([one]), 3)
    assert isinstance(piped, dict)
    if piped.get(one, set()) != got:
        raise BenchFailed(f"{one}: the pipeline found {sorted(piped.get(one, set()))}")
    return (
        f"one VM ({one}) with {bench.table_size()} neighbours on {bench.bridge}: "
        f"ours {one_s * 1000:.1f} ms (median of 7; target < 50 ms), "
        f"pipeline {pipe_one * 1000:.0f} ms, ratio {pipe_one / one_s:.0f}x; found {sorted(got)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default=None, help="lab prefix (default $OPSBOOK_LAB_PREFIX)")
    parser.add_argument("--vms", default="10,100,1000")
    parser.add_argument("--neighbours", default="1000,10000")
    parser.add_argument("--sample", type=int, default=25, help="pipeline VMs timed at most")
    parser.add_argument("--probe-only", action="store_true", help="only the probe lookup")
    args = parser.parse_args(argv)
    vm_counts = [int(x) for x in args.vms.split(",")]
    if min(vm_counts) <= ONE or args.sample < 1:
        parser.error(f"--vms must each be more than {ONE}, --sample 1 or more")
    try:
        lab = Lab.from_env(args.prefix)
        host = check_state(lab)
    except (labstate.StateMissing, OpsError) as exc:
        print(f"find_vm_ip_bench: {exc}", file=sys.stderr)
        return 1
    try:
        lines = run(Bench(lab, host), args)
    except (BenchFailed, OpsError) as exc:
        print(f"find_vm_ip_bench: benchmark failed, no figure: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def run(bench: Bench, args: argparse.Namespace) -> list[str]:
    """Every figure's line; printed by the caller only once all of them succeeded."""
    lab = bench.lab
    lines = [
        f"lab {lab.prefix}: libvirt {lab.uri}, network {bench.network}, bridge {bench.bridge} "
        f"in netns {lab.host_ns}"
    ]
    if args.probe_only:
        return [*lines, probe_line(lab)]
    header = (
        f"{'VMs':>6} {'neigh':>7} {'ours ms':>9} {'pipeline ms':>13} {'pipe/VM ms':>10} "
        f"{'ratio':>8}"
    )
    lines += [header, "-" * len(header)]
    neigh_counts = [int(x) for x in args.neighbours.split(",")]
    bench.cleanup()  # what an interrupted run left (bench-* domains)
    try:
        for n_vms in (int(x) for x in args.vms.split(",")):
            bench.set_domains(n_vms)
            for n_neigh in neigh_counts:
                bench.set_neighbours(n_neigh)
                print(f"timing {n_vms} VMs, {n_neigh} neighbours ...", file=sys.stderr)
                lines.append(measure(bench, args.sample).line())
        lines += ["", one_vm_line(bench, max(neigh_counts)), probe_line(lab)]
    finally:
        bench.cleanup()
    return lines


if __name__ == "__main__":
    sys.exit(main())
