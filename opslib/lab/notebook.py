"""``opsbook lab notebook``: JupyterLab on 127.0.0.1, its runbooks pointed at a lab.

The server runs from the venv that runs opslib (so its ``python3`` kernel is that
venv's), with the repository as its root, a random free port and a random token.
Its kernels inherit an environment that points the runbooks at the lab:

- ``OPSBOOK_DEFAULTS``: the simulated host's parameter sets. The notebooks keep their
  real-host defaults (``qemu:///system``); :func:`opslib.engine.runbook.start` pre-fills the form
  from ``$OPSBOOK_DEFAULTS/RUNBOOK.yaml`` instead: ``LAB/parameters``, generated for the
  lab's prefix and paths by :mod:`opslib.lab.simulated.sets`. A real host uses the same
  variable with its own ``parameters/HOST/``.
- ``OPSBOOK_RECORDS``: the record store where interactive applies are filed.
- ``OPSBOOK_LAB_PREFIX``: the lab.

The server itself (127.0.0.1, token, private settings: no autosave, no news or
update checks) is :mod:`opslib.engine.notebook_server`'s, the one ``opsbook notebook`` starts
on a daemon host; its state lives under the lab's root, not in the user's home.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from opslib.engine.notebook_server import NotebookServer, run_until_stopped, start
from opslib.lab.config import Lab
from opslib.lab.simulated import sets

__all__ = [
    "NotebookServer",
    "lab_defaults",
    "lab_environment",
    "repo_root",
    "serve",
    "start",
    "start_for_lab",
]


def repo_root() -> Path:
    """The checkout opslib runs from (its notebooks/ and parameters/)."""
    return Path(__file__).resolve().parent.parent.parent


def lab_defaults(lab: Lab, *, repo: Path | None = None) -> Path:
    """The directory of the simulated host's parameter sets for ``lab``
    (:mod:`opslib.lab.simulated.sets`, written under the lab's root). ``repo`` is
    accepted for the callers that name a checkout; the sets come from the lab's code."""
    del repo
    return sets.write(lab)


def lab_environment(lab: Lab, *, records: Path, repo: Path | None = None) -> dict[str, str]:
    """The OPSBOOK_* variables that point a JupyterLab session's runbooks at ``lab``."""
    return {
        "OPSBOOK_DEFAULTS": str(lab_defaults(lab, repo=repo)),
        "OPSBOOK_RECORDS": str(records.resolve()),
        "OPSBOOK_LAB_PREFIX": lab.prefix,
    }


def start_for_lab(
    lab: Lab, *, records: Path, state_dir: Path | None = None, timeout: float = 60.0
) -> NotebookServer:
    """JupyterLab with the runbooks pointed at ``lab`` (``opsbook lab notebook``)."""
    return start(
        state_dir=state_dir or lab.root / "jupyterlab",
        root_dir=repo_root(),
        env=lab_environment(lab, records=records),
        timeout=timeout,
    )


def serve(lab: Lab, *, records: Path, say: Callable[[str], None] = print) -> int:
    """``opsbook lab notebook``: start, print where to go, run until Ctrl-C or SIGTERM."""
    server = start_for_lab(lab, records=records)
    try:
        say(f"JupyterLab for lab {lab.prefix} (runbooks in {server.root_dir / 'notebooks'})")
        say(f"  parameters: {server.env['OPSBOOK_DEFAULTS']}")
        say(f"  records:    {server.env['OPSBOOK_RECORDS']}")
        say(f"  log:        {server.log}")
        say(f"  open:       {server.url}")
        say("Ctrl-C stops it.")
    except BaseException:
        server.stop()
        raise
    return run_until_stopped(server, say)
