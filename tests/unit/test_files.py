"""The one atomic write every module uses (opslib.core.files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opslib.core import files


def test_a_new_file_gets_the_mode_asked_for(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "unit.timer"
    files.atomic_write(target, "[Timer]\n", mode=0o600)
    assert target.read_text() == "[Timer]\n"
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_replaced_file_keeps_its_mode_and_bytes_are_written_as_given(tmp_path: Path) -> None:
    target = tmp_path / "interfaces"
    target.write_text("old\n")
    target.chmod(0o640)
    files.atomic_write(target, "auto br0\r\niface br0 inet dhcp")  # CRLF, no final newline
    assert target.read_bytes() == b"auto br0\r\niface br0 inet dhcp"
    assert target.stat().st_mode & 0o777 == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "index.sqlite"
    target.write_bytes(b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        files.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.sqlite"]


def test_parents_false_makes_no_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        files.atomic_write(tmp_path / "gone" / ".profile", "x\n", parents=False)
    assert list(tmp_path.iterdir()) == []


def test_restore_as_observed_writes_the_old_text_or_removes_what_was_made(
    tmp_path: Path,
) -> None:
    """One undo for a file (or a unit) as observe found it, like a pyroute2 NDB rollback."""
    from opslib.core.files import restore_as_observed

    kept = tmp_path / "interfaces"
    kept.write_text("changed\n")
    written: list[str] = []
    said = restore_as_observed(kept, "old\r\n", write=written.append)
    assert written == ["old\r\n"] and said == f"{kept} restored"

    made = tmp_path / "new.service"
    made.write_text("apply made this\n")
    assert restore_as_observed(made, None, write=written.append, what="new.service") == (
        "new.service removed"
    )
    assert not made.exists()
    assert restore_as_observed(made, None, write=written.append) == ""  # none then, none now
    assert written == ["old\r\n"]

    gone: list[str] = []

    def stop_and_remove() -> bool:  # a unit: disable --now, then its file
        gone.append("unit")
        return True

    assert restore_as_observed(made, None, write=written.append, remove=stop_and_remove) == (
        f"{made} removed"
    )
    assert gone == ["unit"]


def test_restore_as_observed_says_why_it_could_not_remove(tmp_path: Path) -> None:
    from opslib.core.errors import ApplyError
    from opslib.core.files import restore_as_observed

    directory = tmp_path / "interfaces.d"
    directory.mkdir()
    with pytest.raises(ApplyError, match=r"^cannot remove .*interfaces\.d: Is a directory$"):
        restore_as_observed(directory, None, write=lambda _t: None)
