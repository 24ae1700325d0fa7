"""``opsbook lab notebook``: JupyterLab on 127.0.0.1, its runbooks pointed at a lab.

The server runs from the venv that runs opslib (so its ``python3`` kernel is that
venv's), with the repository as its root, a random free port and a random token.
Its kernels inherit an environment that points the runbooks at the lab:

- ``OPSBOOK_DEFAULTS``: the lab's parameter sets. The notebooks keep their real-host
  defaults (``qemu:///system``); :func:`opslib.runbook.start` pre-fills the form from
  ``$OPSBOOK_DEFAULTS/RUNBOOK.yaml`` instead. For the default lab (prefix ``ob``) that is
  ``parameters/lab/``; another prefix gets a copy retargeted to its own namespaces and
  files, under the lab's root. A real host uses the same variable with its own
  ``parameters/HOST/``.
- ``OPSBOOK_RECORDS``: the record store where interactive applies are filed.
- ``OPSBOOK_LAB_PREFIX``: the lab.

JupyterLab's own state (settings, workspaces, runtime files, its log) lives in a
state directory, not in the user's home: autosave is off (the runbooks in the
repository stay as committed; a run is kept as a record) and nothing fetches news
or update checks from the network.
"""

from __future__ import annotations

import json
import os
import re
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

from opslib.errors import HostError
from opslib.lab.config import DEFAULT_PREFIX, Lab

__all__ = [
    "NotebookServer",
    "lab_defaults",
    "lab_environment",
    "repo_root",
    "retarget",
    "serve",
    "start",
    "start_for_lab",
]

# User settings the server starts with (JupyterLab's settings-dir format: JSON5 files).
_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def repo_root() -> Path:
    """The checkout opslib runs from (its notebooks/ and parameters/)."""
    return Path(__file__).resolve().parent.parent.parent


def _lab_strings(lab: Lab) -> list[str]:
    from opslib.lab import cloudflare_api

    return [
        f"{lab.root}",
        lab.host_ns,
        lab.campus_ns,
        lab.he_ns,
        lab.probe_ns,
        f"127.0.0.1:{cloudflare_api.lab_port(lab)}",
    ]


def retarget(text: str, lab: Lab) -> str:
    """``text`` written for the default lab, with that lab's names and paths made ``lab``'s."""
    default = Lab(prefix=DEFAULT_PREFIX)
    for old, new in zip(_lab_strings(default), _lab_strings(lab), strict=True):
        # whole names only: "ob-host" must not match inside "opsbook-lab-host"
        text = re.sub(rf"(?<![\w.-]){re.escape(old)}(?![\w.-])", new, text)
    return text


def lab_defaults(lab: Lab, *, repo: Path | None = None) -> Path:
    """The directory of the lab's parameter sets (written for a non-default prefix)."""
    source = (repo or repo_root()) / "parameters" / "lab"
    if lab.prefix == DEFAULT_PREFIX:
        return source
    target = lab.root / "parameters"
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.yaml")):
        header = f"# written for lab {lab.prefix} from parameters/lab/{path.name}\n"
        (target / path.name).write_text(header + retarget(path.read_text(encoding="utf-8"), lab))
    return target


def lab_environment(lab: Lab, *, records: Path, repo: Path | None = None) -> dict[str, str]:
    """The OPSBOOK_* variables that point a JupyterLab session's runbooks at ``lab``."""
    return {
        "OPSBOOK_DEFAULTS": str(lab_defaults(lab, repo=repo)),
        "OPSBOOK_RECORDS": str(records.resolve()),
        "OPSBOOK_LAB_PREFIX": lab.prefix,
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
    env: Mapping[str, str] | None = None,
    root_dir: Path | None = None,
    port: int | None = None,
    token: str | None = None,
    timeout: float = 60.0,
) -> NotebookServer:
    """Start JupyterLab on 127.0.0.1 and wait until its API answers.

    ``env`` is added to this process's environment (the kernels inherit it).
    JupyterLab's settings, workspaces, runtime files and log go under ``state_dir``.
    """
    root = (root_dir or repo_root()).resolve()
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
        # checkpoints of the repository's notebooks stay out of the checkout
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


def start_for_lab(
    lab: Lab, *, records: Path, state_dir: Path | None = None, timeout: float = 60.0
) -> NotebookServer:
    """JupyterLab with the runbooks pointed at ``lab`` (``opsbook lab notebook``)."""
    return start(
        state_dir=state_dir or lab.root / "jupyterlab",
        env=lab_environment(lab, records=records),
        timeout=timeout,
    )


def serve(lab: Lab, *, records: Path, say: Callable[[str], None] = print) -> int:
    """``opsbook lab notebook``: start, print where to go, run until Ctrl-C or SIGTERM."""
    server = start_for_lab(lab, records=records)

    def stop_on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop_on_term)
    try:
        say(f"JupyterLab for lab {lab.prefix} (runbooks in {server.root_dir / 'notebooks'})")
        say(f"  parameters: {server.env['OPSBOOK_DEFAULTS']}")
        say(f"  records:    {server.env['OPSBOOK_RECORDS']}")
        say(f"  log:        {server.log}")
        say(f"  open:       {server.url}")
        say("Ctrl-C stops it.")
        server.process.wait()
        return 0 if server.process.returncode == 0 else 1
    except KeyboardInterrupt:
        say("stopping JupyterLab")
        return 0
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
