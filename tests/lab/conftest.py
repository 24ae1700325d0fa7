"""Lab tests: one bare lab per session, built from real parts (needs root).

Prefix ``obt``, or $OPSBOOK_TEST_LAB_PREFIX so that developers can run sessions in
parallel. $OPSBOOK_TEST_KEEP_LAB=1 reuses a lab left up and leaves it up after
the session (to look at it with ``opsbook lab --prefix obt status``); by default
a session starts from ``lab down`` and ends with it.

Not root: the tests fail under CI=true (CI runs as root, a skip there would hide
everything) and are skipped otherwise.

$OPSBOOK_TEST_LAB_SESSION=NAME runs one share of the lab tests (:func:`session_of`):
``scripts/test.sh`` runs the shares as pytest sessions side by side, each with a lab (and
prefix) of its own, as their boots, installs and deadlines are mostly waiting.

The booted daemon host (``booted_host``) is one per session too: each boot costs about a
minute. It is up from the first test that asks for it until test_15's "down leaves
nothing" (marker ``takes_booted_host_down``), which runs after every other test that uses
it, whatever their modules; the end of the session takes it down in any case.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opslib.lab.booted import daemonhost, install, rootfs
from opslib.lab.config import Lab
from opslib.lab.simulated import control

HERE = Path(__file__).parent
BOOTED_HOST = "dh1"  # the session's booted daemon host
TAKES_HOST_DOWN = "takes_booted_host_down"
SESSION_MARK = "lab_session"
SESSION_ENV = "OPSBOOK_TEST_LAB_SESSION"
INSTALLS_ENV = "OPSBOOK_TEST_INSTALLS"


def lab_prefix() -> str:
    return os.environ.get("OPSBOOK_TEST_LAB_PREFIX") or "obt"


def _progress(line: str) -> None:
    # shown live with -s, and in the captured output of a failing test otherwise
    print(f"lab: {line}", file=sys.stderr, flush=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{TAKES_HOST_DOWN}: runs after every other test of the booted host"
    )
    config.addinivalue_line(
        "markers", f"{SESSION_MARK}(name): the lab session the module runs in (scripts/test.sh)"
    )


def session_of(item: pytest.Item) -> str:
    """The lab session a test runs in when the lab tests run as several (scripts/test.sh):
    its module's ``lab_session`` marker, else ``booted`` for a test of the booted host,
    else ``simulated``. Every test has exactly one, so the sessions together run them all."""
    marker = item.get_closest_marker(SESSION_MARK)
    if marker is not None:
        return str(marker.args[0])
    return "booted" if "booted_host" in getattr(item, "fixturenames", ()) else "simulated"


def _this_session(config: pytest.Config, items: list[pytest.Item]) -> None:
    """$OPSBOOK_TEST_LAB_SESSION=NAME: only that session's tests; the others deselected."""
    wanted = os.environ.get(SESSION_ENV)
    if not wanted:
        return
    lab_items = [i for i in items if HERE in Path(i.path).parents]
    known = {session_of(i) for i in lab_items}
    if lab_items and wanted not in known:
        raise pytest.UsageError(
            f"${SESSION_ENV}={wanted!r} names no lab session; these tests have: "
            + ", ".join(sorted(known))
        )
    dropped = [i for i in lab_items if session_of(i) != wanted]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        gone = set(map(id, dropped))
        items[:] = [i for i in items if id(i) not in gone]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.lab)
    _this_session(config, items)
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
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The session's lab, brought up bare (after clearing what an earlier session left).

    When every test of the session is one of the booted host's, the lab is campus, NetReg
    and HE only (``lab up``'s way for booted hosts): the simulated host's libvirtd and its
    three TCG guests would only take CPU from the other sessions."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    the_lab = Lab.from_env(lab_prefix())
    keep = os.environ.get("OPSBOOK_TEST_KEEP_LAB") == "1"
    if not keep:
        control.down(the_lab, progress=_progress)
    simulated = any(
        "booted_host" not in getattr(i, "fixturenames", ())
        for i in request.session.items
        if HERE in Path(i.path).parents
    )
    control.up(the_lab, progress=_progress, simulated_host=simulated)
    yield the_lab
    if not keep:
        control.down(the_lab, progress=_progress)


def _host_progress(line: str) -> None:
    print(f"host: {line}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _one_install_per_run(lab: Lab) -> Iterator[bool]:
    """$OPSBOOK_TEST_INSTALLS=DIR (scripts/test.sh: a directory of its own per run): the
    sessions of one run install opsbook once. The first booted host installs it the lab's
    way and keeps the install as a layer in DIR (:mod:`opslib.lab.booted.install`); the
    others wait for that (a file lock) and boot on it. Yields whether to reuse; without
    the variable every booted host installs (no lock)."""
    shared = os.environ.get(INSTALLS_ENV)
    if not shared:
        yield False
        return
    install.LAYERS = Path(shared)
    install.LAYERS.mkdir(parents=True, exist_ok=True)
    with (install.LAYERS / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held while the first host installs
        image = rootfs.build(progress=_host_progress)
        if install.cached_layer(lab, image.path) is not None:
            fcntl.flock(lock, fcntl.LOCK_UN)  # installed in this run already
            _host_progress(f"opsbook as installed by another session ({install.LAYERS})")
        yield True


@pytest.fixture(scope="session")
def booted_host(lab: Lab) -> Iterator[daemonhost.Host]:
    """A booted Debian 12 daemon host on the session lab's campus, opsbook installed."""
    daemonhost.down(lab, BOOTED_HOST, progress=_host_progress)  # what an interrupted one left
    with _one_install_per_run(lab) as reuse:  # each step of up has a deadline
        host = daemonhost.up(lab, BOOTED_HOST, reuse_install=reuse, progress=_host_progress)
    yield host
    daemonhost.down(lab, BOOTED_HOST, progress=_host_progress)
