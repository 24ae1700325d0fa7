"""What a lab guest says about itself: its console reports and its one-line shell."""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass

from opslib.core.errors import HostError, InputError
from opslib.lab.config import Lab

# busybox udhcpc renews its lease on SIGUSR1
RENEW_LEASE = "kill -USR1 $(pidof udhcpc)"


@dataclass(frozen=True)
class GuestReport:
    """What a guest last printed about itself on its console."""

    tick: int
    addresses: tuple[tuple[str, str], ...]  # (interface, address/prefix), IPv4 and IPv6
    internet: bool | None  # ping6 to lab.internet_ipv6 answered


def guest_console(lab: Lab, name: str) -> str:
    """The guest's serial console so far."""
    lab.guest(name)
    try:
        return lab.console_log(name).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def guest_report(lab: Lab, name: str) -> GuestReport | None:
    """The last complete ``OPSBOOK`` report block of the guest, or None before the first."""
    return parse_guest_report(guest_console(lab, name))


def parse_guest_report(console: str) -> GuestReport | None:
    """The last complete ``OPSBOOK`` report block of a guest's console text."""
    lines = [line for line in console.splitlines() if line.startswith("OPSBOOK ")]
    ticks = [i for i, line in enumerate(lines) if line.startswith("OPSBOOK tick ")]
    if not ticks:
        return None
    end = ticks[-1]
    start = ticks[-2] + 1 if len(ticks) > 1 else 0
    addresses, internet = [], None
    for line in lines[start:end]:
        parts = line.split()
        if parts[1] == "addr" and len(parts) >= 6:
            addresses.append((parts[3], parts[5]))
        elif parts[1] == "ping6":
            internet = parts[-1] == "ok"
    return GuestReport(int(lines[end].split()[2]), tuple(addresses), internet)


def guest_shell(lab: Lab, name: str, command: str, *, timeout: float = 10.0) -> tuple[int, str]:
    """Run a one-line shell command in the guest (its ttyS1 shell): (exit status, output)."""
    lab.guest(name)
    if "\n" in command:
        raise InputError("guest_shell runs one line; join commands with ';'")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(lab.shell_socket(name)))
            sock.sendall(command.encode() + b"\n")
            data = b""
            deadline = time.monotonic() + timeout
            while (found := re.search(rb"OPSBOOK-END (\d+)\r?\n", data)) is None:
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("closed")
                data += chunk
        except (OSError, TimeoutError) as exc:
            raise HostError(f"no answer from the shell of guest {name}: {exc!r}") from exc
    return int(found.group(1)), data[: found.start()].decode(errors="replace")
