"""The atomic write (opslib.core.files) giving a file an owner: needs root (chown).
The rest of it: tests/unit/test_files.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opslib.core import files


def _root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI runs as root: run the suite as root", pytrace=False)
        pytest.skip("needs root (chown)")


def test_an_owner_given_sets_exactly_that_owner_and_mode(tmp_path: Path) -> None:
    _root()
    target = tmp_path / ".profile"  # root's file, 0644, in someone's home
    target.write_text("old\n")
    target.chmod(0o644)
    files.atomic_write(target, "export X=1\n", mode=0o600, owner=(65534, 65534))
    st = target.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (65534, 65534, 0o600)
    assert target.read_text() == "export X=1\n"
