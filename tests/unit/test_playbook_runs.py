"""opslib.fleet.playbooks drives a real ansible-playbook (local connection, this machine):
its events arrive as they happen, a gated play touches no host once aborted, and what is
kept of a run holds no secret of the workstation's environment."""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from opslib.core.errors import HostError
from opslib.fleet import playbooks

pytest.importorskip("ansible")

PLAY = """\
- hosts: >-
    {{ lookup('opsbook_gate', opsbook_gate) if opsbook_gate is defined else 'daemon_hosts' }}
  gather_facts: false
  tasks:
    - name: Say hello
      ansible.builtin.command: echo hello {{ lookup('env', 'OPSBOOK_TEST_TOKEN') }}
      changed_when: false
    - name: Fail on purpose
      ansible.builtin.fail:
        msg: on purpose
      when: fail_here | default(false) | bool
"""
INVENTORY = """\
daemon_hosts:
  hosts:
    h1: {ansible_connection: local, ansible_python_interpreter: "{{ ansible_playbook_python }}"}
    h2: {ansible_connection: local, ansible_python_interpreter: "{{ ansible_playbook_python }}"}
"""
TOKEN = "tok-3f9a2c71e5d04b8f"


@pytest.fixture
def book(tmp_path: Path) -> tuple[Path, Path]:
    """A playbook beside the repository's plugins (the events callback, the gate)."""
    (tmp_path / "play.yml").write_text(PLAY)
    for plugins in ("callback_plugins", "lookup_plugins"):
        (tmp_path / plugins).symlink_to(playbooks.ansible_dir().resolve() / plugins)
    (tmp_path / "inventory.yml").write_text(INVENTORY)
    return tmp_path / "play.yml", tmp_path / "inventory.yml"


def test_events_come_as_the_play_runs_and_end_with_the_recap(book: tuple[Path, Path]) -> None:
    seen: list[tuple[str, str | None]] = []
    result = playbooks.run(
        book[0],
        book[1],
        extravars={"fail_here": False},
        limit=["h1"],
        on_event=lambda e: seen.append((e["event"], e["event_data"].get("host"))),
    )
    assert result.rc == 0 and result.status == "successful"
    assert seen[0] == ("runner_on_start", "h1")
    assert ("runner_on_ok", "h1") in seen and seen[-1] == ("playbook_on_stats", None)
    ok = next(e for e in result.events if e["event"] == "runner_on_ok")
    assert ok["event_data"]["task"] == "Say hello"
    assert ok["event_data"]["res"]["stdout"].strip() == "hello"
    assert result.events[-1]["event_data"]["ok"] == {"h1": 1}
    assert result.artifacts is None


def test_a_failed_task_is_an_event_and_the_run_fails(book: tuple[Path, Path]) -> None:
    result = playbooks.run(book[0], book[1], extravars={"fail_here": True}, limit=["h2"])
    assert result.rc != 0 and result.status == "failed"
    failed = [e for e in result.events if e["event"] == "runner_on_failed"]
    assert [e["event_data"]["res"]["msg"] for e in failed] == ["on purpose"]
    assert result.events[-1]["event_data"]["failures"] == {"h2": 1}


def test_an_aborted_gated_run_touches_no_host(book: tuple[Path, Path]) -> None:
    started = playbooks.start(book[0], book[1], extravars={}, gated=True)
    started.abort()
    result = started.wait()
    assert result.status == "canceled"
    assert not [e for e in result.events if e["event"].startswith("runner_on_")]


def test_a_gated_run_runs_on_the_hosts_it_is_given(book: tuple[Path, Path]) -> None:
    started = playbooks.start(book[0], book[1], extravars={}, gated=True)
    threading.Timer(0.2, started.open, args=(["h2"],)).start()
    result = started.wait()
    hosts = {e["event_data"]["host"] for e in result.events if e["event"] == "runner_on_ok"}
    assert result.rc == 0 and hosts == {"h2"}


def test_kept_artefacts_hold_the_run_and_no_secret_of_the_environment(
    book: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSBOOK_TEST_TOKEN", TOKEN)  # not on the allow-list: Ansible never sees it
    kept = tmp_path / "kept"
    result = playbooks.run(book[0], book[1], extravars={}, limit=["h1"], keep_artifacts=kept)
    assert result.artifacts == kept
    said: Any = next(e for e in result.events if e["event"] == "runner_on_ok")
    assert said["event_data"]["res"]["stdout"].strip() == "hello"
    events = (kept / "artifacts" / "events.jsonl").read_text()
    assert "runner_on_ok" in events and "PLAY RECAP" in (kept / "artifacts" / "stdout").read_text()
    files = [p for p in kept.rglob("*") if p.is_file()]
    assert files and not [p for p in files if TOKEN.encode() in p.read_bytes()]
    assert oct(kept.stat().st_mode & 0o777) == "0o700"


def test_without_ansible_the_fix_is_named_and_nothing_is_left(
    book: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ansible", None)  # not installed: find_spec says None
    private = tmp_path / "private"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    with pytest.raises(HostError, match=r"fleet runs need ansible-core: pip install"):
        playbooks.run(book[0], book[1], extravars={}, limit=["h1"])
    assert list(private.iterdir()) == []


def test_a_python_that_cannot_start_is_named_and_nothing_is_left(
    book: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gone = tmp_path / "nowhere" / "python"
    monkeypatch.setattr(playbooks.sys, "executable", str(gone))
    private = tmp_path / "private"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    with pytest.raises(HostError, match=rf"cannot start {gone} for ansible-playbook \(No such"):
        playbooks.run(book[0], book[1], extravars={}, limit=["h1"])
    assert list(private.iterdir()) == []


GC_STATE = """\
import gc

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        return {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count(), "changed": False}
"""


def test_the_collector_is_on_once_the_play_runs_with_ansibles_start_frozen(
    book: tuple[Path, Path],
) -> None:
    """ansible_playbook.py starts Ansible with the collector off; callback_plugins/opsbook_gc
    switches it back on at the play's start: a long run still collects."""
    (book[0].parent / "action_plugins").mkdir()
    (book[0].parent / "action_plugins" / "gc_state.py").write_text(GC_STATE)
    book[0].write_text(
        "- hosts: daemon_hosts\n  gather_facts: false\n  tasks:\n    - name: Collector\n"
        "      gc_state:\n"
    )
    result = playbooks.run(book[0], book[1], extravars={}, limit=["h1"])
    assert result.rc == 0, result
    [said] = [e["event_data"]["res"] for e in result.events if e["event"] == "runner_on_ok"]
    assert said["enabled"] is True and said["frozen"] > 10_000
