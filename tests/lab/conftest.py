"""Lab tests: one bare lab per session, built from real parts (needs root).

Prefix ``obt``, or $OPSBOOK_TEST_LAB_PREFIX so that developers can run sessions in
parallel. $OPSBOOK_TEST_KEEP_LAB=1 reuses a lab left up and leaves it up after
the session (to look at it with ``opsbook lab --prefix obt status``); by default
a session starts from ``lab down`` and ends with it.

Not root: the tests fail under CI=true (CI runs as root, a skip there would hide
everything) and are skipped otherwise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opslib.lab import control
from opslib.lab.config import Lab

HERE = Path(__file__).parent


def lab_prefix() -> str:
    return os.environ.get("OPSBOOK_TEST_LAB_PREFIX") or "obt"


def _progress(line: str) -> None:
    # shown live with -s, and in the captured output of a failing test otherwise
    print(f"lab: {line}", file=sys.stderr, flush=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.lab)


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
