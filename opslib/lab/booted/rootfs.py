"""The booted daemon host's image: a Debian 12 root file system, built once per recipe.

:func:`build` runs ``debootstrap --variant=minbase`` from the Debian mirror this
machine's apt already uses (read from its sources, never written here), then
installs the daemon host's packages inside with ``systemd-nspawn`` and runs
:data:`CONFIGURE` there (what every lab host shares: the operator account, no SSH
host keys or machine id of its own: each booted host makes those).

The image is cached as ``/var/cache/opsbook/rootfs/bookworm-HASH``; HASH covers
the package lists and :data:`CONFIGURE`, so a change to either builds a new
image and an unchanged recipe reuses the cache. A build happens in a hidden
temp dir beside it and is renamed into place at the end: an interrupted build
leaves nothing a later run would take for an image (the next build removes
it). Booted hosts never write to the image; each gets an overlay
(:mod:`opslib.lab.booted.daemonhost`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from opslib.core import files
from opslib.core.errors import HostError
from opslib.lab.booted import nspawn

SUITE = "bookworm"
# What systemd as PID 1 and ifupdown need to boot: debootstrap --include.
BOOT_PACKAGES = ("systemd", "systemd-sysv", "dbus", "iproute2", "ifupdown")
# The daemon host's services (shared/DESIGN.md), installed inside with apt-get.
HOST_PACKAGES = (
    "libvirt-daemon-system",
    "libvirt-daemon-driver-qemu",
    "qemu-system-x86",
    "ipxe-qemu",
    "dnsmasq-base",
    "bridge-utils",
    "udhcpc",
    "iptables",
    "nftables",
    "iputils-ping",
    "procps",
    "radvd",  # the room router's router advertisements (the room-router runbook)
    "openssh-server",
    "openssh-sftp-server",  # scp speaks SFTP since OpenSSH 9
    "sudo",
    "python3",
    "python3-venv",
)
# Run inside the bootstrapped root (sh -c). Changing it builds a new image.
CONFIGURE = f"""set -e
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
apt-get update -q
apt-get install -y -q --no-install-recommends {" ".join(HOST_PACKAGES)}
apt-get clean
rm -rf /var/lib/apt/lists/*
# Debian has a group 'operator' (gid 37) already: the account joins it
useradd --create-home --shell /bin/bash --gid operator --groups sudo,libvirt operator
cat > /etc/sudoers.d/opsbook-lab-operator <<'EOF'
# opsbook lab only: the operator's sudo needs no password (a real host asks for one)
operator ALL=(ALL) NOPASSWD:ALL
EOF
chmod 0440 /etc/sudoers.d/opsbook-lab-operator
cat >> /etc/libvirt/qemu.conf <<'EOF'

# opsbook lab only: in a systemd-nspawn container the cgroup tree is read-only, and
# qemu fails to start ("Failed to create v1 controller cpu"); a real host keeps the default.
cgroup_controllers = [ ]
EOF
cat > /etc/network/interfaces <<'EOF'
# The daemon host's /etc/network/interfaces, as freshly installed.
# auto, not allow-hotplug: the lab's container has no udev to raise hotplug events.
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp
EOF
# every booted host makes its own
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
"""

CACHE_DIR = Path(os.environ.get("OPSBOOK_ROOTFS_CACHE", "/var/cache/opsbook/rootfs"))
# debootstrap's minbase + the packages come to about 700 MB; the build needs room beside it
MIN_FREE_MIB = 1536
# each of debootstrap and the package install; generous: a slow mirror, a loaded machine
STEP_TIMEOUT = 1800.0
SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Image:
    path: Path
    built_seconds: float | None  # None: taken from the cache


def recipe_hash() -> str:
    """What the image depends on: the suite, both package lists and :data:`CONFIGURE`."""
    digest = hashlib.sha256()
    for part in (SUITE, *BOOT_PACKAGES, "--", *HOST_PACKAGES, "--", CONFIGURE):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:12]


def image_path(cache_dir: Path = CACHE_DIR) -> Path:
    return cache_dir / f"{SUITE}-{recipe_hash()}"


def cached(cache_dir: Path = CACHE_DIR) -> Path | None:
    """The image of the current recipe, or None when it has to be built."""
    path = image_path(cache_dir)
    return path if (path / "usr" / "lib" / "systemd" / "systemd").exists() else None


# --- the mirror ------------------------------------------------------------------
def mirror_deb822(text: str, suite: str = SUITE) -> str | None:
    """The first URI of an enabled ``Types: deb`` stanza that lists ``suite``."""
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
            uris = fields.get("uris", "").split()
            if uris:
                return uris[0]
    return None


def mirror_one_line(text: str, suite: str = SUITE) -> str | None:
    """The URI of the first ``deb [options] URI SUITE components`` line."""
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2 and words[1] == suite:
            return words[0]
    return None


def mirror(sources: tuple[Path, ...] = SOURCES) -> str:
    """The Debian mirror of this machine's apt sources for :data:`SUITE`."""
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        found = mirror_deb822(text) if path.suffix == ".sources" else mirror_one_line(text)
        if found:
            return found
    raise HostError(
        f"no Debian {SUITE} mirror in {' or '.join(map(str, sources))}; "
        f"add one (e.g. 'deb URI {SUITE} main') and run apt-get update"
    )


# --- preflight -------------------------------------------------------------------
def preflight(cache_dir: Path = CACHE_DIR) -> None:
    """Root, the build tools, free space: one line naming the fix, before anything is made."""
    if os.geteuid() != 0:
        raise HostError("building the daemon host image needs root: run it with sudo")
    for tool, package in (("debootstrap", "debootstrap"), ("systemd-nspawn", "systemd-container")):
        if not shutil.which(tool):
            raise HostError(f"the daemon host image needs {tool}: apt-get install {package}")
    probe, free = files.free_mib(cache_dir)
    if free < MIN_FREE_MIB:
        raise HostError(
            f"no room for the daemon host image: {free} MiB free under {probe}, "
            f"{MIN_FREE_MIB} MiB needed; free some space there"
        )


# --- build -----------------------------------------------------------------------
def _mounts_below(path: Path) -> list[str]:
    prefix = str(path) + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix) or point == str(path):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """Remove a root file system tree, unmounting what an interrupted tool left mounted in it
    first (debootstrap mounts /proc and /sys inside): rmtree must never walk into /proc."""
    for point in _mounts_below(path):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    if _mounts_below(path):
        raise HostError(f"{path} still has mounts below it; unmount them, then remove it")
    shutil.rmtree(path, ignore_errors=False)


def _in_use(path: Path) -> bool:
    """Whether a booted host's overlay has this image as its lower dir."""
    return f"lowerdir={path}" in Path("/proc/self/mountinfo").read_text()


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _step(argv: list[str], log: Path, what: str) -> None:
    with log.open("a") as out:
        out.write(f"\n==> {what}: {' '.join(argv[:8])} ...\n")
        out.flush()
        # a process group of its own: on a timeout its children (dpkg, apt's methods) go too
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _end_group(proc)
            raise HostError(
                f"building the daemon host image: {what} took over {STEP_TIMEOUT:.0f}s "
                f"(a slow mirror?); see {log}"
            ) from None
        except BaseException:  # interrupted: no dpkg left running in the temp dir
            _end_group(proc)
            raise
    if rc != 0:
        raise HostError(f"building the daemon host image failed at {what}; see {log}")


def _build_into(work: Path, log: Path, progress: Progress) -> None:
    source = mirror()
    started = time.monotonic()
    _step(
        [
            "debootstrap", "--variant=minbase", f"--include={','.join(BOOT_PACKAGES)}",
            SUITE, str(work), source,
        ],
        log,
        "debootstrap",
    )  # fmt: skip
    progress(f"host image: debootstrap {SUITE} from {source} ({time.monotonic() - started:.1f}s)")
    started = time.monotonic()
    machine = f"opsbook-build-{os.getpid()}"
    _step(
        [
            "systemd-nspawn", "-q", "-D", str(work), "-M", machine, "--register=no",
            "--keep-unit", "sh", "-c", CONFIGURE,
        ],
        log,
        "installing the host packages",
    )  # fmt: skip
    nspawn.forget(machine)
    progress(f"host image: packages and configuration ({time.monotonic() - started:.1f}s)")


def build(cache_dir: Path = CACHE_DIR, *, progress: Progress = print, force: bool = False) -> Image:
    """The image of the current recipe: from the cache, else built (safe to run concurrently)."""
    if cached(cache_dir) and not force:  # it appears only whole (renamed into place)
        return Image(image_path(cache_dir), None)
    preflight(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second lab waits for the first one's build
        target = image_path(cache_dir)
        if cached(cache_dir) and not force:
            return Image(target, None)  # another lab built it meanwhile
        if target.exists():
            if _in_use(target):
                raise HostError(
                    f"the daemon host image {target} is in use; bring the lab's hosts down first"
                )
            remove_tree(target)
        for stale in cache_dir.glob(".build-*"):
            remove_tree(stale)  # what an interrupted build left
        preflight(cache_dir)  # the leftovers may have held the space
        started = time.monotonic()
        log = cache_dir / "build.log"
        log.write_text(f"opsbook daemon host image {target.name}\n")
        work = Path(tempfile.mkdtemp(prefix=f".build-{target.name}-", dir=cache_dir))
        try:
            os.chmod(work, 0o755)
            _build_into(work, log, progress)
            os.replace(work, target)
        except BaseException:
            remove_tree(work)
            raise
        for old in cache_dir.glob(f"{SUITE}-*"):
            if old != target and not _in_use(old):
                remove_tree(old)  # an image of an older recipe nothing boots from
        seconds = time.monotonic() - started
        progress(f"host image built in {seconds:.1f}s: {target}")
        return Image(target, seconds)
