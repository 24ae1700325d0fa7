"""What several test modules share: the fixture directories, polling with a deadline, and
``opsbook`` run as a child process the way an operator runs it.

Test modules import it by name (``from support import eventually``): pyproject.toml puts
tests/ on pytest's path. Test modules never import each other; what two of them need is here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
REPO_NOTEBOOKS = REPO / "notebooks"  # the runbooks opsbook ships
NOTEBOOKS = TESTS / "notebooks"  # fixture runbooks (engine-demo)
PLAN_NOTEBOOKS = TESTS / "plan_notebooks"  # the saved-plan fixture runbook (file-demo)
INTERFACES_CORPUS = TESTS / "interfaces_corpus"

T = TypeVar("T")


def eventually(
    ready: Callable[[], T], *, timeout: float = 60, every: float = 0.1, what: str = ""
) -> T:
    """Call ``ready`` until it returns something true, and return that; fail the test
    naming ``what`` (and the last value) once ``timeout`` seconds have passed.

    Deadlines are generous on purpose: CI is a loaded 2-core machine, and a test waits
    only as long as the thing takes, never for the deadline itself.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            name = what or getattr(ready, "__name__", "a condition")
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {name} (last: {value!r})"
            )
        time.sleep(every)


def opsbook(*args: str, store: Path, **kw: Any) -> subprocess.Popen[str]:
    """``opsbook ARGS`` in a child process, its runbooks the fixture ones of tests/notebooks,
    its records in ``store``; ``finish`` waits for it."""
    env = {**os.environ, "OPSBOOK_NOTEBOOKS": str(NOTEBOOKS), "OPSBOOK_RECORDS": str(store)}
    return subprocess.Popen(
        [sys.executable, "-m", "opslib.cli.main", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@dataclass
class Done:
    """What an ``opsbook run`` child left: its exit code, output, and the record it named."""

    rc: int
    out: str
    err: str

    @property
    def record(self) -> Path:
        line = next(ln for ln in self.out.splitlines() if ln.startswith("record #"))
        return Path(line.split(": ", 1)[1].rsplit("  (", 1)[0]).resolve()

    @property
    def run_id(self) -> int:
        line = next(ln for ln in self.out.splitlines() if ln.startswith("record #"))
        return int(line.split()[1].strip("#:"))


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> Done:
    out, err = proc.communicate(timeout=timeout)
    return Done(proc.returncode, out, err)


def partial_cell_running(store: Path, host: str, source: str) -> bool:
    """Whether a headless run on ``host`` is running the cell whose code is ``source``
    (papermill's status in the record it writes as it goes)."""
    for part in (store / host).rglob(".*.partial.ipynb"):
        try:
            nb = json.loads(part.read_text())
        except (OSError, ValueError):
            continue
        for cell in nb["cells"]:
            status = cell.get("metadata", {}).get("papermill", {}).get("status")
            if "".join(cell["source"]) == source and status == "running":
                return True
    return False


def records_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``opsbook records --records ROOT ARGS`` in a child process, run to its end."""
    argv = [sys.executable, "-m", "opslib.cli.main", "records", "--records", str(root), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@contextmanager
def throwaway_netns(tag: str, *commands: str) -> Iterator[str]:
    """A network namespace of this test process (``ob<tag>-<pid>``), set up with
    ``ip -n NS`` commands (e.g. ``"link set lo up"``), deleted on the way out."""
    name = f"ob{tag}-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for command in commands:
            subprocess.run(["ip", "-n", name, *command.split()], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
