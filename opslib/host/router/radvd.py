"""radvd, Debian's router advertisement daemon, as the room router runs it: one
``/etc/radvd.conf`` written whole (:func:`render`), checked with ``radvd --configtest``
before it replaces the old one, the ``radvd`` unit enabled and restarted; and whether
RAs leave the room's interface (the kernel's ``Icmp6OutRouterAdvertisements`` counter
of that interface, ``/proc/net/dev_snmp6/IFACE``).

Debian's unit starts only where ``/etc/radvd.conf`` exists (``ConditionPathExists``), so
an enabled radvd without its file is no failed unit.
"""

from __future__ import annotations

import ipaddress
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from opslib.core import files, procs
from opslib.core.errors import ApplyError, HostError
from opslib.core.shellcmd import command
from opslib.host.systemctl import systemctl

CONF = Path("/etc/radvd.conf")
UNIT = "radvd.service"
MARKER = "# opsbook room-router: the room's /64 for SLAAC"


def render(*, interface: str, prefix: str, max_interval: int) -> str:
    """radvd.conf: RAs on ``interface`` every ``max_interval`` s at most (a third of it at
    least, radvd's own ratio), ``prefix`` on-link and for SLAAC, the router's address
    advertised with it. The default lifetime is radvd's (3 × max_interval)."""
    net = ipaddress.IPv6Network(prefix)
    low = max(3, max_interval // 3)
    return (
        f"{MARKER} on {interface}; written whole by `opsbook run room-router`\n"
        f"interface {interface}\n"
        "{\n"
        "\tAdvSendAdvert on;\n"
        f"\tMinRtrAdvInterval {low};\n"
        f"\tMaxRtrAdvInterval {max_interval};\n"
        f"\tprefix {net}\n"
        "\t{\n"
        "\t\tAdvOnLink on;\n"
        "\t\tAdvAutonomous on;\n"
        "\t\tAdvRouterAddr on;\n"
        "\t};\n"
        "};\n"
    )


def configtest(text: str) -> None:
    """``radvd --configtest`` on ``text``; ApplyError with radvd's complaint."""
    with tempfile.TemporaryDirectory(prefix="opsbook-radvd-") as tmp:
        path = Path(tmp) / "radvd.conf"
        path.write_text(text)
        try:
            done = subprocess.run(
                ["radvd", "--configtest", "--logmethod", "stderr", "-C", str(path)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except FileNotFoundError as exc:
            raise HostError("radvd is not installed: apt-get install radvd") from exc
    if done.returncode != 0:
        raise ApplyError(f"radvd refuses the new radvd.conf: {procs.last_line(done)}")


def installed() -> bool:
    return any(Path(d, "radvd").exists() for d in ("/usr/sbin", "/sbin", "/usr/bin"))


@dataclass(frozen=True)
class Service:
    """The radvd unit as found: its file's text (None: none), enabled, active."""

    text: str | None
    enabled: bool
    active: bool


def _systemctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return systemctl(*args, missing=": radvd runs as a systemd unit here", check=check)


def observe(conf: Path = CONF) -> Service:
    text = conf.read_text() if conf.exists() else None
    enabled = _systemctl("is-enabled", "--quiet", UNIT, check=False).returncode == 0
    active = _systemctl("is-active", "--quiet", UNIT, check=False).returncode == 0
    return Service(text, enabled, active)


def install(text: str, conf: Path = CONF) -> None:
    """Check the text, write it, enable radvd and (re)start it."""
    configtest(text)
    try:
        files.atomic_write(conf, text)
    except OSError as exc:
        raise ApplyError(f"cannot write {conf}: {exc.strerror}") from exc
    _systemctl("enable", "--quiet", UNIT)
    _systemctl("restart", UNIT)


def put_back(found: Service, conf: Path = CONF) -> str:
    """radvd.conf and the unit's state as observed."""
    done = files.restore_as_observed(
        conf, found.text, write=lambda old: files.atomic_write(conf, old)
    )
    _systemctl("enable" if found.enabled else "disable", "--quiet", UNIT)
    if found.active and found.text is not None:
        _systemctl("restart", UNIT)
    elif not found.active:
        _systemctl("stop", UNIT)
    return ", ".join(p for p in (done, f"radvd {'active' if found.active else 'stopped'}") if p)


def sent(interface: str, netns: str = "") -> int | None:
    """RAs the kernel has sent on ``interface`` (None: no such interface)."""
    path = Path("/proc/net/dev_snmp6", interface)
    if netns:  # another netns's /proc/net: read through a process there
        argv = ["ip", "netns", "exec", netns, "cat", str(path)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        text = done.stdout if done.returncode == 0 else ""
    else:
        text = path.read_text() if path.exists() else ""
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "Icmp6OutRouterAdvertisements":
            return int(words[1])
    return None


def wait_sent(interface: str, since: int | None, timeout: float, netns: str = "") -> str:
    """Wait until an RA more than ``since`` has left ``interface``; '' or why not."""
    deadline = time.monotonic() + timeout
    while True:
        now = sent(interface, netns)
        if now is not None and now > (since or 0):
            return ""
        if time.monotonic() > deadline:
            seen = "no such interface" if now is None else f"{now} sent in all"
            return (
                f"no RA left {interface} within {timeout:.0f}s ({seen}); see "
                f"{command('journalctl', '-u', UNIT)}"
            )
        time.sleep(0.5)
