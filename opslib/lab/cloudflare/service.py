"""The Cloudflare stand-in as a lab service.

``opsbook lab up`` starts :mod:`opslib.lab.cloudflare.api` as a process on
127.0.0.1 (``SERVICE``); runbooks reach it with :func:`lab_url` and the token in
:func:`lab_token_file`, tests through :func:`lab_store`.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import zlib
from pathlib import Path

from opslib.core import procs
from opslib.core.errors import HostError
from opslib.lab import services
from opslib.lab.cloudflare import api
from opslib.lab.cloudflare.requests import API_PREFIX
from opslib.lab.cloudflare.store import Store
from opslib.lab.config import Lab

LAB_ZONES = ("example.org",)
LAB_START_TIMEOUT = 15.0


def lab_dir(lab: Lab) -> Path:
    return lab.root / "cloudflare"


def lab_token_file(lab: Lab) -> Path:
    """The edit token (Zone DNS Edit), mode 0600: the runbook's ``token=file:...``."""
    return lab_dir(lab) / "token"


def lab_read_token_file(lab: Lab) -> Path:
    """A token that may read but not edit: for the 403 path."""
    return lab_dir(lab) / "read-token"


def lab_state_file(lab: Lab) -> Path:
    return lab_dir(lab) / "state.json"


def lab_pid_file(lab: Lab) -> Path:
    return lab_dir(lab) / "api.pid"


def lab_port(lab: Lab) -> int:
    # Fixed per prefix, so that parameter files can name the URL (ob: 18783).
    return 18700 + zlib.crc32(lab.prefix.encode()) % 1000


def lab_url(lab: Lab) -> str:
    return f"http://127.0.0.1:{lab_port(lab)}{API_PREFIX}"


def lab_store(lab: Lab) -> Store:
    """The running lab stand-in's state: inspect and change records, inject faults."""
    return Store(lab_state_file(lab))


def lab_running(lab: Lab) -> int | None:
    """The pid of this lab's stand-in, if it runs (never a recycled pid of another program)."""
    return procs.owned_pid(lab_pid_file(lab), api.__name__, str(lab_state_file(lab)))


def _write_secret(path: Path) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(20) + "\n")


def lab_up(lab: Lab) -> None:
    """Start the lab's stand-in (tokens written on first start); a no-op when it runs."""
    if lab_running(lab):
        return
    _write_secret(lab_token_file(lab))
    _write_secret(lab_read_token_file(lab))
    with open(lab_dir(lab) / "api.log", "ab") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            [sys.executable, "-m", api.__name__, "--port", str(lab_port(lab)),
             "--state", str(lab_state_file(lab)), "--zones", *LAB_ZONES,
             "--token-file", str(lab_token_file(lab)),
             "--read-token-file", str(lab_read_token_file(lab)),
             "--pid-file", str(lab_pid_file(lab))],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + LAB_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HostError(
                f"the Cloudflare stand-in exited ({proc.returncode}) at start; "
                f"see {lab_dir(lab) / 'api.log'} (port {lab_port(lab)} in use?)"
            )
        if lab_running(lab):
            return
        time.sleep(0.1)
    proc.terminate()
    raise HostError(f"the Cloudflare stand-in did not start within {LAB_START_TIMEOUT:g} s")


def lab_down(lab: Lab) -> None:
    """Stop the lab's stand-in (its state file stays until the lab directory goes)."""
    pid = lab_running(lab)
    if pid is None:
        return
    procs.terminate([pid])
    lab_pid_file(lab).unlink(missing_ok=True)


def lab_status(lab: Lab) -> list[dict[str, str]]:
    pid = lab_running(lab)
    return [
        {
            "component": "cloudflare-api",
            "name": lab_url(lab),
            "state": "running" if pid else "stopped",
            "detail": f"pid {pid}, token {lab_token_file(lab)}" if pid else "",
        }
    ]


SERVICE = services.LabService("cloudflare-api", lab_up, lab_down, lab_status)
