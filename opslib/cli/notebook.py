"""``opsbook notebook``: JupyterLab on a daemon host, for the operator logged in over SSH.

It serves the runbooks opsbook was installed with (``PREFIX/share/opsbook/notebooks``,
read-only there: a run is kept as a record, never by saving the notebook; in a checkout,
its ``notebooks/``) on 127.0.0.1 only, port 8888 by default, with a fresh token. The
operator reaches it through an SSH tunnel from the workstation, and it stops when the
session that started it ends (SIGHUP), on Ctrl-C or SIGTERM. Interactive applies and
saved runs are filed where the operator's headless runs go: ``$OPSBOOK_RECORDS`` or
``./records`` (``--records``). ``--defaults DIR`` pre-fills the forms from a parameter
set directory (``$OPSBOOK_DEFAULTS``); without one, the notebooks' real-host defaults.
JupyterLab's own state goes to ``$XDG_STATE_HOME/opsbook/jupyterlab``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
from pathlib import Path

from opslib.core.errors import InputError

DEFAULT_PORT = 8888


def _state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "opsbook" / "jupyterlab"


def _records(args: argparse.Namespace) -> Path:
    return Path(args.records or os.environ.get("OPSBOOK_RECORDS") or "records").resolve()


def _check(args: argparse.Namespace, notebooks: Path) -> None:
    """Bad input in one line each, before anything starts."""
    from opslib.engine.notebook_server import port_free

    if not 1 <= args.port <= 65535:
        raise InputError(f"--port {args.port}: not a TCP port; use 1-65535 (default 8888)")
    if not port_free(args.port):
        raise InputError(
            f"127.0.0.1:{args.port} is in use on this host (another JupyterLab?); "
            f"pick another with --port, and use it in the tunnel"
        )
    if not notebooks.is_dir():
        raise InputError(f"no runbooks in {notebooks}: reinstall opsbook (install-daemon-host.sh)")
    defaults = args.defaults or os.environ.get("OPSBOOK_DEFAULTS")
    if defaults and not Path(defaults).is_dir():
        raise InputError(f"--defaults {defaults}: no such directory of parameter sets")
    records = _records(args)
    existing = next((p for p in (records, *records.parents) if p.exists()), records)
    if not os.access(existing, os.W_OK):
        raise InputError(f"records go to {records}, which you cannot write; use --records DIR")


def cmd_notebook(args: argparse.Namespace) -> int:
    from opslib.engine import notebook_server, runner

    notebooks = runner.notebooks_dir().resolve()
    _check(args, notebooks)
    records = _records(args)
    env = {"OPSBOOK_RECORDS": str(records)}
    # the host's apply policy, PARAMS/HOST/policy.yaml, as `opsbook run` finds it from here
    env["OPSBOOK_PARAMS_DIR"] = str(
        Path(os.environ.get("OPSBOOK_PARAMS_DIR") or "parameters").resolve()
    )
    defaults = args.defaults or os.environ.get("OPSBOOK_DEFAULTS")
    if defaults:
        env["OPSBOOK_DEFAULTS"] = str(Path(defaults).resolve())
    server = notebook_server.start(
        state_dir=_state_dir(), root_dir=notebooks.parent, env=env, port=args.port, timeout=120
    )

    def say(line: str) -> None:
        print(line, flush=True)  # over SSH without a terminal too

    try:
        # the account the operator logged in as, also under `sudo -i opsbook notebook`
        user, host = os.environ.get("SUDO_USER") or getpass.getuser(), socket.gethostname()
        say(f"JupyterLab on 127.0.0.1:{args.port} of {host}, pid {server.process.pid}")
        say(f"  runbooks:   {notebooks}")
        say(f"  parameters: {env.get('OPSBOOK_DEFAULTS', 'the notebooks’ real-host defaults')}")
        say(f"  records:    {records}")
        say(f"  log:        {server.log}")
        say("  on your workstation:")
        say(f"    ssh -N -L 127.0.0.1:{args.port}:127.0.0.1:{args.port} {user}@{host}")
        say(f"  then open:  {server.url}")
        say("Ctrl-C or closing this session stops it.")
    except BaseException:
        server.stop()
        raise
    return notebook_server.run_until_stopped(server, say)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "notebook",
        help="JupyterLab with the runbooks on this host (127.0.0.1; reach it by SSH tunnel)",
        description="Start JupyterLab on 127.0.0.1 of this host with the installed runbooks, "
        "print the SSH tunnel to open from your workstation and the URL with its token; "
        "stops on Ctrl-C or when the session ends.",
    )
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port on 127.0.0.1 (default {DEFAULT_PORT})",
    )
    p.add_argument(
        "--records",
        metavar="DIR",
        help="where runs are filed (default: $OPSBOOK_RECORDS or ./records)",
    )
    p.add_argument(
        "--defaults",
        metavar="DIR",
        help="parameter sets that pre-fill the forms, e.g. parameters/HOST "
        "(default: $OPSBOOK_DEFAULTS, else the notebooks' real-host defaults)",
    )
    p.set_defaults(func=cmd_notebook)
