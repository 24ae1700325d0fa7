"""Lab tests: one bare lab per session, built from real parts (needs root).

Prefix ``obt``, or $OPSBOOK_TEST_LAB_PREFIX so that developers can run sessions in
parallel. $OPSBOOK_TEST_KEEP_LAB=1 reuses a lab left up and leaves it up after
the session (to look at it with ``opsbook lab --prefix obt status``); by default
a session starts from ``lab down`` and ends with it.

Not root: the tests fail under CI=true (CI runs as root, a skip there would hide
everything) and are skipped otherwise.

The booted daemon host (``booted_host``) is one per session too: each boot costs about a
minute. It is up from the first test that asks for it until test_15's "down leaves
nothing" (marker ``takes_booted_host_down``), which runs after every other test that uses
it, whatever their modules; the end of the session takes it down in any case.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opslib.lab import control, daemonhost
from opslib.lab.config import Lab

HERE = Path(__file__).parent
BOOTED_HOST = "dh1"  # the session's booted daemon host
TAKES_HOST_DOWN = "takes_booted_host_down"


def lab_prefix() -> str:
    return os.environ.get("OPSBOOK_TEST_LAB_PREFIX") or "obt"


def _progress(line: str) -> None:
    # shown live with -s, and in the captured output of a failing test otherwise
    print(f"lab: {line}", file=sys.stderr, flush=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{TAKES_HOST_DOWN}: runs after every other test of the booted host"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.lab)
    # The tests of the session's booted host run together, where the first of them stands
    # (a test between them may take the whole lab down: test_92 does), and the one that
    # takes the host down goes last of them (a later one would boot it again: a minute).
    users = [i for i in items if "booted_host" in getattr(i, "fixturenames", ())]
    if users:
        last = [i for i in users if i.get_closest_marker(TAKES_HOST_DOWN)]
        others = [i for i in users if i not in last]
        at = items.index(users[0])
        rest = [i for i in items if i not in users]
        items[:] = [*rest[:at], *others, *last, *rest[at:]]


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    if os.geteuid() == 0:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("lab tests need root and CI runs as root: run the suite as root", pytrace=False)
    pytest.skip("lab tests need root")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The session's lab, brought up bare (after clearing what an earlier session left)."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    the_lab = Lab.from_env(lab_prefix())
    keep = os.environ.get("OPSBOOK_TEST_KEEP_LAB") == "1"
    if not keep:
        control.down(the_lab, progress=_progress)
    control.up(the_lab, progress=_progress)
    yield the_lab
    if not keep:
        control.down(the_lab, progress=_progress)


def _host_progress(line: str) -> None:
    print(f"host: {line}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def booted_host(lab: Lab) -> Iterator[daemonhost.Host]:
    """A booted Debian 12 daemon host on the session lab's campus, opsbook installed."""
    daemonhost.down(lab, BOOTED_HOST, progress=_host_progress)  # what an interrupted one left
    host = daemonhost.up(lab, BOOTED_HOST, progress=_host_progress)  # each step has a deadline
    yield host
    daemonhost.down(lab, BOOTED_HOST, progress=_host_progress)
