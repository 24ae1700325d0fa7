"""The userspace 6in4 end (:mod:`opslib.host.sixinfour.userspace`) as a systemd service of the
host, so
that the tunnel comes back when the host boots, as a sit tunnel does from
/etc/network/interfaces.

On a host booted with systemd (``/run/systemd/system``) whose tunnel lives in the
host's own network namespace, the ipv6-tunnel runbook with
``implementation=userspace`` installs ``/etc/systemd/system/opsbook-6in4-NAME.service``
and enables it; the daemon there makes the TUN device and puts the tunnel's address and
default route on it each time it starts (``--address``, ``--via``), since they go with
the device. ``Restart=on-failure`` and no start limit: at boot the local IPv4 address
may come a little after the unit starts (its bind fails, it tries again).

Without systemd (or in another netns: the lab's simulated host) the end stays a
detached process, as before.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from opslib.core import files
from opslib.core.errors import ApplyError
from opslib.core.shellcmd import command
from opslib.host.kernel import netlink
from opslib.host.systemctl import systemctl

UNIT_DIR = Path("/etc/systemd/system")
MARKER = "# opsbook ipv6-tunnel: the userspace 6in4 end"
START_TIMEOUT = 15.0


def name(tunnel: str) -> str:
    return f"opsbook-6in4-{tunnel}.service"


def path(tunnel: str, unit_dir: Path = UNIT_DIR) -> Path:
    return unit_dir / name(tunnel)


def systemd_booted() -> bool:
    """Whether systemd is PID 1 here (what ``sd_booted()`` checks)."""
    return Path("/run/systemd/system").is_dir()


def applies(netns: str) -> bool:
    """The unit path: a systemd host, the tunnel in the host's own netns."""
    return not netns and systemd_booted()


def read(tunnel: str, unit_dir: Path = UNIT_DIR) -> str | None:
    """The unit file as found (None: there is none)."""
    try:
        return path(tunnel, unit_dir).read_text()
    except FileNotFoundError:
        return None


def render(
    *,
    tunnel: str,
    local: str,
    remote: str,
    mtu: int,
    ttl: int,
    address: str,
    via: str,
    pidfile: Path,
    python: str = sys.executable,
) -> str:
    """The unit: the daemon in the foreground, its address and default route with it."""
    argv = [
        python, "-m", "opslib.host.sixinfour.userspace", "--name", tunnel, "--local", local,
        "--remote", remote, "--mtu", str(mtu), "--ttl", str(ttl), "--pidfile", str(pidfile),
        "--address", address, "--via", via,
    ]  # fmt: skip
    command = shlex.join(argv).replace("%", "%%").replace("$", "$$")
    return (
        f"{MARKER} {tunnel} ({local} -> {remote}); written by `opsbook run ipv6-tunnel`\n"
        "[Unit]\n"
        f"Description=opsbook userspace 6in4 tunnel {tunnel} ({local} -> {remote})\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "StartLimitIntervalSec=0\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={command}\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def _systemctl(*args: str) -> None:
    systemctl(*args, missing=", yet systemd runs this host")


def install(tunnel: str, text: str, *, unit_dir: Path = UNIT_DIR) -> None:
    """Write the unit, enable it and (re)start it; wait until the tunnel has its address."""
    files.atomic_write(path(tunnel, unit_dir), text)
    _systemctl("daemon-reload")
    _systemctl("enable", name(tunnel))
    _systemctl("restart", name(tunnel))
    wait_ready(tunnel)


def wait_ready(tunnel: str, netns: str = "", timeout: float = START_TIMEOUT) -> None:
    """The unit's daemon made the link and configured it (a global IPv6 address)."""
    deadline = time.monotonic() + timeout
    while True:
        link = netlink.link_by_name(netns, tunnel)
        if link is not None and any(
            a.family == "ipv6" and a.scope == "global"
            for a in netlink.addresses(netns, ifindex=link.index)
        ):
            return
        if time.monotonic() > deadline:
            raise ApplyError(
                f"{name(tunnel)} did not bring {tunnel} up within {timeout:.0f}s; "
                f"see {command('journalctl', '-u', name(tunnel))}"
            )
        time.sleep(0.2)


def remove(tunnel: str, *, unit_dir: Path = UNIT_DIR) -> bool:
    """Stop, disable and delete the unit (its link goes with the daemon); True if it was
    there."""
    unit = path(tunnel, unit_dir)
    if not unit.exists():
        return False
    _systemctl("disable", "--now", name(tunnel))
    unit.unlink()
    _systemctl("daemon-reload")
    if _failed(tunnel):
        _systemctl("reset-failed", name(tunnel))
    return True


def _failed(tunnel: str) -> bool:
    done = subprocess.run(
        ["systemctl", "is-failed", "--quiet", name(tunnel)], capture_output=True, check=False
    )
    return done.returncode == 0


def put_back(tunnel: str, text: str | None, *, unit_dir: Path = UNIT_DIR) -> str:
    """The unit as found: removed when there was none, else its old text started again
    (:func:`opslib.core.files.restore_as_observed`)."""
    return files.restore_as_observed(
        path(tunnel, unit_dir), text, what=name(tunnel),
        write=lambda old: install(tunnel, old, unit_dir=unit_dir),
        remove=lambda: remove(tunnel, unit_dir=unit_dir),
    )  # fmt: skip
