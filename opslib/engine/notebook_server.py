"""JupyterLab on 127.0.0.1, started and stopped by opsbook (``opsbook notebook`` on a
daemon host, ``opsbook lab notebook`` for the lab).

The server runs from the venv that runs opslib (so its ``python3`` kernel is that
venv's), listens on 127.0.0.1 only (an operator reaches it through an SSH tunnel) and
asks for a token, given to it in its environment rather than on its command line.
JupyterLab's own state (settings, workspaces, runtime files, checkpoints, its log)
lives in a state directory: autosave is off (the runbooks stay as installed or
committed; a run is kept as a record), and nothing fetches news or update checks
from the network (a daemon host has none).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from opslib.core.errors import HostError

__all__ = ["NotebookServer", "port_free", "run_until_stopped", "start"]

# User settings the server starts with (JupyterLab's settings-dir format: JSON5 files).
_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NotebookServer:
    """A JupyterLab process this module started (stop it with :meth:`stop`)."""

    root_dir: Path
    port: int
    token: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/lab?token={self.token}"

    def url_for(self, path: str | Path) -> str:
        """The JupyterLab URL that opens ``path`` (relative to the root, or inside it)."""
        rel = Path(path)
        if rel.is_absolute():
            rel = rel.resolve().relative_to(self.root_dir.resolve())
        return f"{self.base}/lab/tree/{urllib.parse.quote(rel.as_posix())}?token={self.token}"

    def api(self, path: str) -> object:
        """GET ``/api/PATH`` with the token; the decoded JSON."""
        request = urllib.request.Request(
            f"{self.base}/api/{path}", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, *, grace: float = 10.0) -> None:
        """Shut the server down (its kernels with it); SIGKILL after ``grace`` seconds."""
        if not self.running():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> NotebookServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(
    *,
    state_dir: Path,
    root_dir: Path,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    token: str | None = None,
    timeout: float = 60.0,
) -> NotebookServer:
    """Start JupyterLab on 127.0.0.1 serving ``root_dir``; wait until its API answers.

    ``env`` is added to this process's environment (the kernels inherit it).
    JupyterLab's settings, workspaces, runtime files and log go under ``state_dir``.
    """
    root = root_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    settings = state_dir / "settings"
    for name, values in _SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values, indent=2) + "\n")
    port = port or _free_port()
    token = token or secrets.token_hex(24)
    venv_bin = str(Path(sys.executable).parent)
    full_env = {
        **os.environ,
        **(env or {}),
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(state_dir / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(state_dir / "runtime"),
        "JUPYTER_TOKEN": token,  # not on the command line, where `ps` shows it
        "PYTHONUNBUFFERED": "1",
    }
    argv = [
        sys.executable, "-m", "jupyterlab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--ServerApp.log_level=WARN",
        # checkpoints stay out of the notebooks' directory (a checkout, or read-only)
        f"--FileCheckpoints.checkpoint_dir={state_dir.resolve() / 'checkpoints'}",
    ]  # fmt: skip
    log = state_dir / "jupyterlab.log"
    with log.open("ab") as log_file:
        process = subprocess.Popen(
            argv,
            cwd=root,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches only `opsbook`
        )
    server = NotebookServer(root, port, token, process, log, dict(env or {}))
    deadline = time.monotonic() + timeout
    while True:
        if not server.running():
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise HostError(f"JupyterLab exited at start: {' | '.join(tail)} (log: {log})")
        try:
            server.api("status")
            return server
        except (OSError, urllib.error.URLError, ValueError):
            if time.monotonic() > deadline:
                server.stop()
                raise HostError(
                    f"JupyterLab did not answer on 127.0.0.1:{port} within {timeout:.0f} s "
                    f"(log: {log})"
                ) from None
            time.sleep(0.2)


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be listened on here."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run_until_stopped(server: NotebookServer, say: Callable[[str], None] = print) -> int:
    """Wait for ``server`` to exit; Ctrl-C, SIGTERM or SIGHUP (the SSH session it runs in
    closed) stop it, its kernels with it. 0 when stopped that way or it exited cleanly."""

    def stop_on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop_on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        server.process.wait()
        return 0 if server.process.returncode == 0 else 1
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            say("stopping JupyterLab")
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
