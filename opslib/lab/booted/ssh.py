"""SSH to the lab's booted hosts, the way an operator on campus reaches a daemon host.

Everything lives under ``LAB/ssh/`` and never in this machine's ``~/.ssh``:

- ``id_ed25519`` (mode 600) + ``.pub``: the workstation's key, made once per lab;
  its public half is the ``operator`` account's authorized key on every host;
- ``known_hosts``: each host's own host key, recorded when the host was prepared
  (before it booted), so strict host key checking holds from the first connection;
- ``ssh_config``: one ``Host NAME`` block per host (its campus address, the key,
  the known_hosts file). From the campus namespace::

      ip netns exec PREFIX-campus ssh -F LAB/ssh/ssh_config NAME opsbook runbooks
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from opslib.core import procs
from opslib.core.errors import HostError
from opslib.lab.config import Lab

USER = "operator"


@dataclass(frozen=True)
class Known:
    """A host as SSH sees it: its name (the ``Host`` alias), address and host key line."""

    name: str
    address: str
    host_key: str  # "ssh-ed25519 AAAA... comment"


def ssh_dir(lab: Lab) -> Path:
    return lab.root / "ssh"


def identity(lab: Lab) -> Path:
    return ssh_dir(lab) / "id_ed25519"


def config_file(lab: Lab) -> Path:
    return ssh_dir(lab) / "ssh_config"


def known_hosts_file(lab: Lab) -> Path:
    return ssh_dir(lab) / "known_hosts"


def render_config(lab: Lab, hosts: Iterable[Known]) -> str:
    """The lab's ssh_config: strict host keys from the lab's own file, only the lab's key."""
    blocks = [
        "# opsbook lab: the booted hosts on campus (written by opsbook lab host up)\n"
        f"# from the campus netns: ip netns exec {lab.campus_ns} ssh -F {config_file(lab)} NAME\n"
    ]
    for host in sorted(hosts, key=lambda h: h.name):
        blocks.append(
            f"Host {host.name}\n"
            f"  HostName {host.address}\n"
            f"  HostKeyAlias {host.name}\n"
            f"  User {USER}\n"
            f"  IdentityFile {identity(lab)}\n"
            "  IdentitiesOnly yes\n"
            "  IdentityAgent none\n"
            f"  UserKnownHostsFile {known_hosts_file(lab)}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  UpdateHostKeys no\n"
            "  BatchMode yes\n"
            "  ConnectTimeout 10\n"
            "  ServerAliveInterval 5\n"
            "  ServerAliveCountMax 3\n"
            "  LogLevel ERROR\n"
        )
    return "\n".join(blocks)


def render_known_hosts(hosts: Iterable[Known]) -> str:
    """One ``NAME KEYTYPE KEY`` line a host (the config's HostKeyAlias is NAME)."""
    lines = []
    for host in sorted(hosts, key=lambda h: h.name):
        keytype, key = host.host_key.split()[:2]
        lines.append(f"{host.name} {keytype} {key}\n")
    return "".join(lines)


def ensure_key(lab: Lab) -> str:
    """The lab's key pair (made once); returns the public key line."""
    key = identity(lab)
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.parent.chmod(0o700)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"opsbook-lab-{lab.prefix}",
              "-f", str(key)], "making the lab's SSH key")  # fmt: skip
    key.chmod(0o600)
    return key.with_suffix(".pub").read_text().strip()


def write_files(lab: Lab, hosts: Iterable[Known]) -> None:
    hosts = list(hosts)
    for path, text in (
        (config_file(lab), render_config(lab, hosts)),
        (known_hosts_file(lab), render_known_hosts(hosts)),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.new")
        tmp.write_text(text)
        tmp.chmod(0o600)
        tmp.replace(path)


def ssh_argv(lab: Lab, name: str, command: str | list[str] = "", *, tty: bool = False) -> list[str]:
    """``ssh NAME COMMAND`` from the campus netns, with the lab's config."""
    remote = shlex.join(command) if isinstance(command, list) else command
    return [
        "ip", "netns", "exec", lab.campus_ns, "ssh", "-F", str(config_file(lab)),
        *(["-t"] if tty else []), name, *([remote] if remote else []),
    ]  # fmt: skip


def tunnel_argv(lab: Lab, name: str, local_port: int, remote_port: int) -> list[str]:
    """``ssh -N -L 127.0.0.1:LOCAL:127.0.0.1:REMOTE NAME`` from the campus netns: the
    workstation's end of a tunnel to a service on the host's loopback (its JupyterLab).
    The local end listens on the campus netns's 127.0.0.1, where the browser runs too."""
    return [
        "ip", "netns", "exec", lab.campus_ns, "ssh", "-F", str(config_file(lab)), "-N",
        "-o", "ExitOnForwardFailure=yes",
        "-L", f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}", name,
    ]  # fmt: skip


def scp_argv(lab: Lab, name: str, sources: list[Path], target: str) -> list[str]:
    return [
        "ip", "netns", "exec", lab.campus_ns, "scp", "-q", "-r", "-F", str(config_file(lab)),
        *map(str, sources), f"{name}:{target}",
    ]  # fmt: skip


def run(
    lab: Lab, name: str, command: str | list[str], *, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on host ``name`` as the operator over SSH; text output."""
    argv = ssh_argv(lab, name, command)
    return procs.run(argv, what=f"ssh {name} {command!s}", timeout=timeout, check=check)


def _run(argv: list[str], what: str) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise HostError(f"{what}: {argv[0]} is missing; apt-get install openssh-client") from exc
    if proc.returncode != 0:
        raise HostError(f"{what} failed: {(proc.stderr or proc.stdout).strip()[-200:]}")
