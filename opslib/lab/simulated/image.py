"""The guest image: a Debian kernel and a busybox initramfs, built once per machine.

``build_image()`` downloads the kernel package that ``linux-image-amd64`` points
at (``apt-get download`` + ``dpkg -x``: no initramfs trigger runs), and packs
busybox-static, the virtio-net modules of that kernel and ``guest/init`` into a
gzip'd cpio. Everything lands in ``IMAGE_DIR`` under a file lock, so parallel
labs and test sessions share one build. The initramfs is rebuilt when the guest
scripts change.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from opslib.core.errors import HostError
from opslib.lab.config import IMAGE_DIR

GUEST_FILES = Path(__file__).with_name("guest")
# virtio_net and what it needs, in load order (DESIGN.md: verified on Debian's 6.1 kernel)
MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
)
BUSYBOX = Path("/bin/busybox")


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    kernel_version: str


def _run(argv: list[str], *, cwd: Path | None = None, what: str) -> str:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise HostError(f"{what}: {argv[0]} is missing; install it (apt-get install ...)") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise HostError(f"{what} failed ({' '.join(argv)}): {tail[0]}")
    return proc.stdout


def _stamp() -> str:
    digest = hashlib.sha256()
    for path in sorted(GUEST_FILES.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(str(BUSYBOX.stat().st_size).encode() if BUSYBOX.exists() else b"-")
    return digest.hexdigest()[:16]


def image(image_dir: Path = IMAGE_DIR) -> GuestImage | None:
    """The built image, or None when ``opsbook lab image`` has not run (or is stale)."""
    version_file = image_dir / "kernel-version"
    kernel, initrd = image_dir / "vmlinuz", image_dir / "initrd.gz"
    stamp = image_dir / "initrd.stamp"
    if not (version_file.exists() and kernel.exists() and initrd.exists() and stamp.exists()):
        return None
    if stamp.read_text().strip() != _stamp():
        return None
    return GuestImage(kernel, initrd, version_file.read_text().strip())


def _kernel_package() -> str:
    out = _run(["apt-cache", "depends", "linux-image-amd64"], what="finding the guest kernel")
    for line in out.splitlines():
        name = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and name.startswith("linux-image-"):
            return name
    raise HostError("no kernel package behind linux-image-amd64; run apt-get update")


def _download_kernel(work: Path) -> None:
    package = _kernel_package()
    _run(["apt-get", "download", "-q", package], cwd=work, what="downloading the guest kernel")


def _fetch_kernel(image_dir: Path, progress: Callable[[str], None]) -> str:
    with tempfile.TemporaryDirectory(prefix="opsbook-kernel-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # apt drops to _apt for downloads when it can
        try:
            _download_kernel(work)
        except HostError:
            # Package lists that are missing or older than the archive: refresh once.
            progress("guest image: apt-get update (package lists missing or stale)")
            _run(["apt-get", "update", "-qq"], what="refreshing the package lists")
            _download_kernel(work)
        deb = next(work.glob("*.deb"))
        _run(["dpkg", "-x", str(deb), str(work / "x")], what="unpacking the guest kernel")
        vmlinuz = next((work / "x" / "boot").glob("vmlinuz-*"))
        version = vmlinuz.name.removeprefix("vmlinuz-")
        moddir = work / "x" / "lib" / "modules" / version
        target = image_dir / "modules"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for module in MODULES:
            found = list(moddir.rglob(f"{module}.ko"))
            if not found:
                raise HostError(f"guest kernel {version} has no module {module}.ko")
            shutil.copy2(found[0], target / f"{module}.ko")
        shutil.copy2(vmlinuz, image_dir / "vmlinuz.new")
        os.replace(image_dir / "vmlinuz.new", image_dir / "vmlinuz")
        (image_dir / "kernel-version").write_text(version + "\n")
        progress(f"guest kernel {version} from {deb.name}")
        return version


def _pack_initrd(image_dir: Path) -> None:
    if not BUSYBOX.exists() or not _is_static(BUSYBOX):
        raise HostError("the guest needs a static busybox; apt-get install busybox-static")
    with tempfile.TemporaryDirectory(prefix="opsbook-initrd-") as tmp:
        root = Path(tmp)
        for sub in ("bin", "lib/modules", "proc", "sys", "dev", "run", "tmp"):
            (root / sub).mkdir(parents=True)
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        (root / "bin" / "sh").symlink_to("busybox")
        shutil.copy2(GUEST_FILES / "init", root / "init")
        shutil.copy2(GUEST_FILES / "udhcpc.script", root / "udhcpc.script")
        for module in (image_dir / "modules").iterdir():
            shutil.copy2(module, root / "lib" / "modules" / module.name)
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        listing = "\n".join(names) + "\n"
        new = image_dir / "initrd.gz.new"
        with new.open("wb") as out:
            cpio = subprocess.Popen(
                ["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"],
                cwd=root,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            gz = subprocess.Popen(["gzip", "-1"], stdin=cpio.stdout, stdout=out)
            assert cpio.stdin is not None and cpio.stdout is not None
            cpio.stdout.close()
            cpio.stdin.write(listing.encode())
            cpio.stdin.close()
            if cpio.wait() != 0 or gz.wait() != 0:
                raise HostError("packing the guest initramfs failed (cpio/gzip)")
        os.replace(new, image_dir / "initrd.gz")
    (image_dir / "initrd.stamp").write_text(_stamp() + "\n")


def _is_static(path: Path) -> bool:
    # ELF without a PT_INTERP header is static; avoid needing file(1)
    data = path.read_bytes()[:4096]
    return data[:4] == b"\x7fELF" and b"/lib64/ld-linux" not in data


def build_image(
    image_dir: Path = IMAGE_DIR,
    *,
    force: bool = False,
    progress: Callable[[str], None] = print,
) -> GuestImage:
    """Build (once) and return the guest kernel + initramfs. Safe to call concurrently."""
    if os.geteuid() != 0:
        raise HostError("building the guest image needs root: run it with sudo")
    image_dir.mkdir(parents=True, exist_ok=True)
    with (image_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = image(image_dir)
        if current and not force:
            return current
        started = time.monotonic()
        if force or not (image_dir / "vmlinuz").exists() or not (image_dir / "modules").is_dir():
            _fetch_kernel(image_dir, progress)
        _pack_initrd(image_dir)
        built = image(image_dir)
        assert built is not None
        progress(f"guest initramfs {built.initrd} ({time.monotonic() - started:.1f}s)")
        return built


def kvm_works(image_dir: Path = IMAGE_DIR, *, timeout: float = 4.0) -> bool:
    """Whether a KVM guest boots here; cached per boot of this machine.

    Nested KVM on this kind of machine hangs or dies with "failed to set MSR"; a
    kernel that prints its banner within ``timeout`` seconds proves KVM works.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    cache = image_dir / "kvm-probe"
    if cache.exists():
        seen_boot, _, verdict = cache.read_text().partition(" ")
        if seen_boot == boot_id:
            return verdict.strip() == "kvm"
    built = image(image_dir)
    if built is None:
        return False
    argv = [
        "qemu-system-x86_64", "-accel", "kvm", "-M", "pc", "-m", "96", "-nodefaults",
        "-display", "none", "-no-reboot", "-serial", "stdio", "-kernel", str(built.kernel),
        "-append", "console=ttyS0 earlyprintk=serial panic=-1",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    ok = False
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        seen = b""
        while time.monotonic() < deadline and proc.poll() is None:
            chunk = proc.stdout.read(4096) or b""
            seen += chunk
            if b"Linux version" in seen:
                ok = True
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    cache.write_text(f"{boot_id} {'kvm' if ok else 'qemu'}\n")
    return ok
